# Two entry points for a fresh clone: `make repro` (the pipeline) and `make test` (the suite).
# Both create .venv and install everything on first use; later runs reuse it.
VENV ?= .venv
PYTHON ?= python3
# The torch build to install; override for your platform, e.g. TORCH="torch==2.9.1 torchvision==0.24.1",
# or the CPU-only build: TORCH="torch==2.14.1 torchvision==0.29.1 --index-url https://download.pytorch.org/whl/cpu".
TORCH ?= torch==2.14.1 torchvision==0.29.1
# One stamp per torch request, so another TORCH= installs it into an existing .venv.
TORCH_STAMP := $(VENV)/.torch-$(shell printf '%s' '$(TORCH)' | cksum | cut -d' ' -f1)
export PATH := $(abspath $(VENV))/bin:$(PATH)
export I2I_QUIET ?=

.PHONY: setup repro test
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml $(TORCH_STAMP)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

$(TORCH_STAMP):
	test -x $(VENV)/bin/pip || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check $(TORCH)
	rm -f $(VENV)/.torch-*
	touch $@

repro: setup
	dvc repro

# Lint first, then the suite in two workers, one test file each at a time (module fixtures run
# once), the longest files first (tests/conftest.py): most of it is single-threaded process
# start-up, so two cores take about half the time.
test: setup
	ruff check . && ruff format --check .
	pytest -q -n 2 --dist loadfile --no-loadscope-reorder
