# The README's two set-up commands: `make run` and `make test`. Both create .venv on first use and
# install into it: torch==2.13.0 (CPU build) first, so that the project's `torch>=2.4` is already
# met and pip never pulls the multi-GB CUDA build; then the project itself with its dev extras.
# The stamp makes that happen once, and again only when pyproject.toml changes.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH := torch==2.13.0

HOST ?= 127.0.0.1
PORT ?= 8420
DATA_DIR ?= ./memsvc-data
LOCOMO ?= ../shared/data/locomo-dev.json

.PHONY: install run test lint bench

install: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install '$(TORCH)'
	$(BIN)/python -m pip install -e '.[dev]'
	touch $@

run: $(STAMP)
	$(BIN)/memsvc serve --host $(HOST) --port $(PORT) --data-dir $(DATA_DIR)

# One command for every environment: the tests use the embedded PostgreSQL by default, and the
# server in MEMSVC_TEST_DATABASE_URL when that is set. pytest exits 5 when it collects no test,
# which make reports as a failure.
test: $(STAMP)
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy memsvc

bench: $(STAMP)
	mkdir -p bench-out
	$(BIN)/memsvc bench locomo --data $(LOCOMO) --json bench-out/locomo.json
