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

.PHONY: setup sandbox-tools run test lint report status clean repro redteam aa-test

setup: $(VENV)/.installed sandbox-tools

# bubblewrap gives trials a filesystem that shows only what they need, and no network.
# Installed here where we can (root with apt-get or dnf); otherwise we say how.
sandbox-tools:
	@command -v bwrap >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get install -y -q bubblewrap >/dev/null 2>&1 || \
	     (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q bubblewrap >/dev/null 2>&1)); \
	  elif [ "$$(id -u)" = 0 ] && command -v dnf >/dev/null 2>&1; then \
	    dnf install -y -q bubblewrap >/dev/null 2>&1; \
	  fi; \
	  command -v bwrap >/dev/null 2>&1 || echo "NOTE: bubblewrap is not installed, so trials cannot be \
	isolated from the filesystem. Install it (e.g. 'sudo apt-get install bubblewrap') for isolated \
	results; without it, results are marked unisolated and an LLM proposer needs \
	sandbox.allow_unisolated: true."; }

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

redteam: setup
	$(VENV)/bin/autolab redteam $(BENCHMARK) --params $(PARAMS)

aa-test: setup
	$(VENV)/bin/autolab aa-test $(BENCHMARK) --params $(PARAMS) --n $(N)

N ?= 100

# Campaign archives and the Prefect cache that lives with them, prepared data, reports.
clean:
	rm -rf runs artifacts reports .prefect

# DVC pipeline (prepare -> campaign -> report) with the virtualenv's tools on PATH.
repro: setup
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/dvc repro
