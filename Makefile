# Two commands matter: `make run` and `make test`. Both install what they need into .venv.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEVSTAMP := $(VENV)/.installed-dev

.PHONY: install install-dev run test lint typecheck bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[embedded,cli,bench]'
	touch $@

$(DEVSTAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP) $@

install: $(STAMP)

install-dev: $(DEVSTAMP)

run: install
	$(BIN)/timeline serve

# pytest on TEST_WORKERS processes (pytest-xdist, each with its own embedded server), then the
# modules marked `serial` (state shared across a module) in one process: README, "Testing".
TEST_WORKERS ?= 2

test: install-dev
	$(BIN)/ruff check app entrypoints fanout benchmarks migrations tests
	$(BIN)/mypy
	$(BIN)/pytest -n $(TEST_WORKERS) --dist worksteal -m "not serial"
	$(BIN)/pytest -m serial

lint: install-dev
	$(BIN)/ruff check app entrypoints fanout benchmarks migrations tests
	$(BIN)/ruff format --check app entrypoints fanout benchmarks migrations tests

typecheck: install-dev
	$(BIN)/mypy

bench: install
	$(BIN)/python -m benchmarks run --out bench-out

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache
