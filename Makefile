# The two commands of the README: `make demo` and `make test`. Both build .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

$(BIN)/jobferry: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

.PHONY: demo test lint
demo: $(BIN)/jobferry
	$(BIN)/jobferry demo

test: $(BIN)/jobferry
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(BIN)/jobferry
	$(BIN)/ruff check scheduler workers tests && $(BIN)/ruff format --check scheduler workers
	$(BIN)/mypy && $(BIN)/lint-imports
