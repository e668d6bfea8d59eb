# Everything sets itself up: a virtualenv in .venv with every dependency.
# TORCH_SPEC picks the torch build; on a GPU box use a CUDA build, e.g. TORCH_SPEC="torch==2.13.0".
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
PARAMS ?= params.yaml
BENCHMARK ?= tinylm

export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1
export MLFLOW_DISABLE_TELEMETRY := true
export PREFECT_LOGGING_LEVEL ?= WARNING

.PHONY: setup run test lint report status clean repro

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

run: setup
	$(VENV)/bin/autolab run $(BENCHMARK) --params $(PARAMS)
	$(VENV)/bin/autolab report --params $(PARAMS)

test: setup
	$(VENV)/bin/pytest -q

lint: setup
	$(VENV)/bin/ruff check autolab flows tasks benchmarks tests perf

status: setup
	$(VENV)/bin/autolab status --params $(PARAMS)

report: setup
	$(VENV)/bin/autolab report --params $(PARAMS)

clean:
	rm -rf runs artifacts reports .prefect

# DVC pipeline (prepare -> campaign -> report) with the virtualenv's tools on PATH.
repro: setup
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/dvc repro
