# Everything sets itself up: a virtualenv in .venv with every dependency.
# TORCH_SPEC picks the torch build; on a GPU box use a CUDA build, e.g. TORCH_SPEC="torch==2.13.0".
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
PARAMS ?= params.yaml
BENCHMARK ?= tinylm
# test processes side by side (pytest-xdist); most of the suite waits on subprocesses
TEST_WORKERS ?= 2

export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1
export MLFLOW_DISABLE_TELEMETRY := true
export PREFECT_LOGGING_LEVEL ?= WARNING

.PHONY: setup sandbox-tools run test lint report status clean repro redteam aa-test \
	wheelhouse install-offline

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

ifneq ($(wildcard $(VENV)/.offline),)
# A virtualenv made by install-offline stays offline: installed again from the wheelhouse,
# never from an index, and never with a torch of its own.
$(VENV)/.installed: pyproject.toml
	$(INSTALL_OFFLINE)
else
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@
endif

# Installing on a host with no network access that has its own (CUDA) torch:
# `make wheelhouse` on a machine with network access builds wheelhouse/, the wheels of
# everything autolab needs except torch and the NVIDIA/CUDA/Triton wheels it brings, for
# the host's Python (WHEEL_PY) and platforms (WHEEL_PLATFORMS, default manylinux x86_64
# up to glibc 2.28), whatever Python runs it. WHEEL_PROFILE=run leaves out what only
# development needs (DVC, pytest, ruff); WHEEL_EXTRAS / WHEEL_OMIT set that by hand.
# WHEEL_SKIP="numpy scipy==1.18.1 ..." leaves out what the host has; HOST_PACKAGES=FILE (the
# host's `python3 -m pip list --format=freeze`) leaves out each one whose version fits.
# Copy the project with wheelhouse/ to the host; `make install-offline` there makes
# $(VENV) with --system-site-packages from HOST_PYTHON (default python3, the interpreter
# with the host's torch) and installs with --no-index.
WHEELHOUSE ?= wheelhouse
WHEEL_PY ?= 3.12
WHEEL_PLATFORMS ?=
WHEEL_PROFILE ?= full
WHEEL_SKIP ?=
HOST_PACKAGES ?=
HOST_PYTHON ?=
EDITABLE ?= 1
INSTALL_OFFLINE = HOST_PYTHON="$(HOST_PYTHON)" VENV="$(VENV)" WHEELHOUSE="$(WHEELHOUSE)" \
	EDITABLE="$(EDITABLE)" scripts/install_offline.sh

wheelhouse:
	python3 scripts/wheelhouse.py --dest "$(WHEELHOUSE)" --python-version "$(WHEEL_PY)" \
	  --profile "$(WHEEL_PROFILE)" \
	  $(if $(WHEEL_PLATFORMS),--platform "$(WHEEL_PLATFORMS)") \
	  $(if $(filter undefined,$(origin WHEEL_EXTRAS)),,--extras "$(WHEEL_EXTRAS)") \
	  $(if $(filter undefined,$(origin WHEEL_OMIT)),,--omit "$(WHEEL_OMIT)") \
	  $(if $(WHEEL_SKIP),--skip "$(WHEEL_SKIP)") $(if $(HOST_PACKAGES),--host-packages "$(HOST_PACKAGES)")

install-offline:
	$(INSTALL_OFFLINE)

run: setup
	$(VENV)/bin/autolab run $(BENCHMARK) --params $(PARAMS)
	$(VENV)/bin/autolab report --params $(PARAMS)

test: setup
	$(VENV)/bin/pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=30

lint: setup
	$(VENV)/bin/ruff check autolab flows tasks benchmarks tests perf scripts

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
