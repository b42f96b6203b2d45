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

.PHONY: install demo test test-slow test-model-env test-all lint format bench bench-gan bench-progressive clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -U pip
	$(PY) -m pip install -q --disable-pip-version-check -e ".[dev]" -c constraints.txt
	touch $(STAMP)

# Prefect creates PREFECT_HOME with a plain mkdir: a fresh clone has no .state/ to hold it.
$(PREFECT_HOME):
	mkdir -p $@

install: $(STAMP)

demo: $(STAMP) | $(PREFECT_HOME)
	$(VENV)/bin/genad demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test: lint | $(PREFECT_HOME)
	$(PY) -m pytest -q

# The long tests (marked slow) but the two with targets of their own (Spark needs the spark
# extra; the model environment builds a venv): CI runs them after the default suite.
test-slow: $(STAMP) | $(PREFECT_HOME)
	$(PY) -m pytest -q -m slow --ignore=tests/test_spark.py --ignore=tests/test_model_env.py

# A registered model's environment built from its requirements.txt alone (a fresh venv, ~3 min):
# slow tests that CI runs after the default suite.
test-model-env: $(STAMP) | $(PREFECT_HOME)
	$(PY) -m pytest -q -m slow tests/test_model_env.py

# The slow tests include scoring through Spark: the spark extra (pyspark) comes first.
test-all: lint $(VENV)/.spark | $(PREFECT_HOME)
	$(PY) -m pytest -q -m "slow or not slow"

$(VENV)/.spark: $(STAMP)
	$(PY) -m pip install -q --disable-pip-version-check -e ".[dev,spark]" -c constraints.txt
	touch $@

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
	$(MAKE) bench-gan
	$(MAKE) bench-progressive

# GAN family (issue 5): about 50 min on 1 thread; figures go beside the reports.
bench-gan: $(STAMP)
	mkdir -p .state/bench
	$(PY) benchmarks/gan_throughput.py --out .state/bench/gan_throughput.md
	$(PY) benchmarks/gan_modes.py --out .state/bench/gan_modes.md --figure .state/bench/gan_modes.png
	$(PY) benchmarks/gan_quality.py --out .state/bench/gan_quality.md --figure .state/bench/gan_samples.png
	$(PY) benchmarks/gan_augmentation.py --out .state/bench/gan_augmentation.md
	$(PY) benchmarks/gan_arithmetic.py --out .state/bench/gan_arithmetic.md --figure .state/bench/gan_arithmetic.png

# Progressive GAN / StyleGAN / DCGAN at equal CPU time, and CycleGAN translation (issue 6):
# about 60 min on 1 thread; figures go to docs/.
bench-progressive: $(STAMP)
	mkdir -p .state/bench
	$(PY) benchmarks/progressive_quality.py --out .state/bench/progressive_quality.md
	$(PY) benchmarks/cyclegan_translation.py --minutes 10 --out .state/bench/cyclegan_translation.md --figure docs/cyclegan_translation.png

clean:
	rm -rf .state .pytest_cache .ruff_cache
