# realtime-analytics — every target installs what it needs itself (idempotently).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: help run test lint unit streaming integration services-up services-down services-status clean fuzz bench

help:  ## Show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

# Runtime dependencies are installed at exactly the versions the flex template image pins (templates/requirements.txt,
# hashes stripped into a constraints file), so the tests run what production runs.
CONSTRAINTS := $(VENV)/constraints.txt

# `pip install -e .` also builds the JSON fast path's C extension in place (transforms/_fastjson.*.so); a changed
# transforms/_fastjson.c makes the install run again, which rebuilds it.
$(STAMP): setup.py templates/requirements.txt transforms/_fastjson.c
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip wheel
	@sed -e 's/[[:space:]]*\\$$//' -e '/^[[:space:]]*--hash/d' -e '/^[[:space:]]*#/d' -e '/^[[:space:]]*$$/d' \
		templates/requirements.txt > $(CONSTRAINTS)
	@$(PY) -m pip install -q -c $(CONSTRAINTS) -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)  ## Create the venv and install the project with test extras

run: $(STAMP)  ## Run the main job on its embedded default (no cloud, no flags) and print a summary
	@$(PY) -m pipelines.streaming_analytics $(ARGS)

# The unit and streaming tests run on both cores (pytest-xdist); the integration tests one at a time, since they share
# the session's services and each Flink or Kafka test wants both cores. Both parts run even when the first fails.
test: $(STAMP)  ## Install everything and run the whole test suite (lint, unit, streaming, integration)
	@$(PY) -m ruff check .
	@status=0; \
	$(PY) -m pytest -n 2 tests/unit tests/streaming $(PYTEST_ARGS) || status=$$?; \
	$(PY) -m pytest tests/integration $(PYTEST_ARGS) || status=$$?; \
	exit $$status

lint: $(STAMP)  ## ruff
	@$(PY) -m ruff check .

unit: $(STAMP)  ## Unit tests only
	@$(PY) -m pytest tests/unit $(PYTEST_ARGS)

streaming: $(STAMP)  ## TestStream timeline tests only
	@$(PY) -m pytest tests/streaming $(PYTEST_ARGS)

integration: $(STAMP)  ## Integration tests (real local services) only
	@$(PY) -m pytest tests/integration $(PYTEST_ARGS)

FUZZ_INPUTS ?= 5000000
FUZZ_SEED ?= 7
FUZZ_SECONDS ?= 600
fuzz: $(STAMP)  ## Long fuzz of parse/validate: FUZZ_INPUTS seeded inputs, then atheris for FUZZ_SECONDS
	@$(PY) -m pip install -q -e '.[test,fuzz]'
	@$(PY) -m tests.fuzz.run --inputs $(FUZZ_INPUTS) --seed $(FUZZ_SEED)
	@mkdir -p .cache/fuzz/corpus .cache/fuzz/crashes
	@$(PY) -m tests.fuzz.run --inputs 20000 --seed $(FUZZ_SEED) --write-corpus .cache/fuzz/corpus
	@$(PY) -m tests.fuzz.atheris_target -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 -max_len=65536 \
		-artifact_prefix=.cache/fuzz/crashes/ .cache/fuzz/corpus

services-up: $(STAMP)  ## Start the local services (Kafka, Flink session cluster, Pub/Sub, BigQuery emulators, Prometheus) in the background
	@$(PY) -m services up

services-down: $(STAMP)  ## Stop the local services
	@$(PY) -m services down

services-status: $(STAMP)  ## Show which local services run
	@$(PY) -m services status

BENCH_SIZES ?= 100000,1000000,5000000
BENCH_REPEAT ?= 3
BENCH_STAMP := $(VENV)/.installed-bench

$(BENCH_STAMP): $(STAMP)
	@$(PY) -m pip install -q -c $(CONSTRAINTS) -e '.[test,bench]'
	@touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)  ## Speed and memory vs the plain-Python limit -> docs/benchmarks.md (quick: BENCH_SIZES=100000)
	@$(PY) -m benchmarks --sizes $(BENCH_SIZES) --repeat $(BENCH_REPEAT)

clean:  ## Remove outputs and build leftovers (keeps the download cache)
	rm -rf output build dist *.egg-info .pytest_cache .ruff_cache

.PHONY: template
template: $(STAMP)  ## Check the flex template offline: metadata, Dockerfile pins, labels, scripts, Dataflow dry run
	@$(PY) -m pipelines.release.template_metadata --check
	@$(PY) -m pipelines.release.labels --check
	@bash -n templates/deploy.sh && bash -n templates/schedule.sh
	@if command -v shellcheck >/dev/null; then shellcheck templates/*.sh; else echo "shellcheck not installed: skipped"; fi
	@$(PY) -m pytest -q tests/unit/test_template_metadata.py tests/unit/test_cloudbuild.py \
		tests/unit/test_transform_labels.py tests/integration/test_dataflow_dry_run.py $(PYTEST_ARGS)
