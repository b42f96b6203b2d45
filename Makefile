# genad: `make demo` runs the main job, `make test` the default suite. Both create .venv when missing.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

ifneq ($(wildcard ../shared/data),)
export GENAD_DATA_DIR ?= $(abspath ../shared/data)
endif
export DO_NOT_TRACK := true
export MLFLOW_DISABLE_TELEMETRY := true
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_HOME := $(abspath .state/prefect)
export PYTHONUNBUFFERED := 1

.PHONY: install demo test test-all lint format bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -U pip
	$(PY) -m pip install -q --disable-pip-version-check -e ".[dev]" -c constraints.txt
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/genad demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test: lint
	$(PY) -m pytest -q

test-all: lint
	$(PY) -m pytest -q -m "slow or not slow"

$(VENV)/.bench: $(STAMP)
	$(PY) -m pip install -q --disable-pip-version-check -e ".[dev,bench]" -c constraints.txt
	touch $@

bench: $(VENV)/.bench
	$(PY) benchmarks/iwae_scoring.py
	$(PY) benchmarks/adbench.py
	$(PY) benchmarks/platform_bench.py
	mkdir -p .state/bench
	$(PY) benchmarks/ood_likelihood.py --out .state/bench/ood_likelihood.md
	$(PY) benchmarks/one_class_novelty.py --out .state/bench/one_class_novelty.md

clean:
	rm -rf .state .pytest_cache .ruff_cache
