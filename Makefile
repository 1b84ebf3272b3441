# realtime-analytics — every target installs what it needs itself (idempotently).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: help run test lint unit streaming integration services-up services-down services-status clean bench

help:  ## Show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

$(STAMP): setup.py
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip wheel
	@$(PY) -m pip install -q -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)  ## Create the venv and install the project with test extras

run: $(STAMP)  ## Run the main job on its embedded default (no cloud, no flags) and print a summary
	@$(PY) -m pipelines.streaming_analytics $(ARGS)

test: $(STAMP)  ## Install everything and run the whole test suite (lint, unit, streaming, integration)
	@$(PY) -m ruff check .
	@$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)  ## ruff
	@$(PY) -m ruff check .

unit: $(STAMP)  ## Unit tests only
	@$(PY) -m pytest tests/unit $(PYTEST_ARGS)

streaming: $(STAMP)  ## TestStream timeline tests only
	@$(PY) -m pytest tests/streaming $(PYTEST_ARGS)

integration: $(STAMP)  ## Integration tests (real local services) only
	@$(PY) -m pytest tests/integration $(PYTEST_ARGS)

services-up: $(STAMP)  ## Start the local services (Kafka, Pub/Sub, BigQuery emulators) in the background
	@$(PY) -m services up

services-down: $(STAMP)  ## Stop the local services
	@$(PY) -m services down

services-status: $(STAMP)  ## Show which local services run
	@$(PY) -m services status

BENCH_SIZES ?= 100000,1000000,5000000
BENCH_REPEAT ?= 3
BENCH_STAMP := $(VENV)/.installed-bench

$(BENCH_STAMP): $(STAMP)
	@$(PY) -m pip install -q -e '.[test,bench]'
	@touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)  ## Speed and memory vs the plain-Python limit -> docs/benchmarks.md (quick: BENCH_SIZES=100000)
	@$(PY) -m benchmarks --sizes $(BENCH_SIZES) --repeat $(BENCH_REPEAT)

clean:  ## Remove outputs and build leftovers (keeps the download cache)
	rm -rf output build dist *.egg-info .pytest_cache .ruff_cache

.PHONY: template
template: $(STAMP)  ## Check the flex template offline: metadata, Dockerfile pins, labels, scripts, Dataflow dry run
	@$(PY) -m pipelines.template_metadata --check
	@$(PY) -m pipelines.labels --check
	@bash -n templates/deploy.sh && bash -n templates/schedule.sh
	@if command -v shellcheck >/dev/null; then shellcheck templates/*.sh; else echo "shellcheck not installed: skipped"; fi
	@$(PY) -m pytest -q tests/unit/test_template_metadata.py tests/unit/test_cloudbuild.py \
		tests/unit/test_transform_labels.py tests/integration/test_dataflow_dry_run.py $(PYTEST_ARGS)
