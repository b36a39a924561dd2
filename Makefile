# The commands the README names. Each target makes .venv and installs what it needs by itself.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Two stamps: `make run` installs what running needs; test, bench, lint and docs add the dev tools.
RUN_STAMP := $(VENV)/.installed-run-stamp
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: run test test-fast bench lint format docs clean services

$(RUN_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $(RUN_STAMP)

$(STAMP): $(RUN_STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## run: start the system (embedded default with nothing configured; MySQL/RabbitMQ when BOXTASKS_* URLs are set)
run: $(RUN_STAMP)
	$(BIN)/boxtasks run

## test: the whole suite against the real services (MariaDB, PostgreSQL, RabbitMQ, SQLite)
test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## test-fast: everything but the tests marked slow
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m 'not slow' $(PYTEST_ARGS)

## bench: benchmarks, each printing its figures beside a baseline measured in the same run; then docs/lock-pairs.png
bench: $(STAMP)
	$(BIN)/python -m bench.locks
	$(BIN)/python -m bench.task_rates
	$(BIN)/python -m bench.scale
	$(BIN)/python -m bench.cli_speed
	$(BIN)/python -m bench.app_backup
	mkdir -p var
	$(BIN)/python -m bench.locks --json --seconds 1 > var/bench-locks.json
	$(BIN)/python -m bench.plot var/bench-locks.json -o docs/lock-pairs.png \
		--title "bench/locks.py --json --seconds 1, $$(nproc) CPUs"

## lint: ruff and mypy as configured in pyproject.toml
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

## docs: regenerate docs/configuration.md from the settings' descriptions (a test fails when it is stale)
docs: $(STAMP)
	$(BIN)/python -m config.reference

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis var
