# The two commands of the README: `make demo` and `make test`. Both build .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

$(BIN)/jobferry: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

.PHONY: demo test lint bench
demo: $(BIN)/jobferry
	$(BIN)/jobferry demo

test: $(BIN)/jobferry
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(BIN)/jobferry
	$(BIN)/ruff check scheduler workers tests bench && $(BIN)/ruff format --check scheduler workers tests bench
	$(BIN)/mypy && $(BIN)/lint-imports

# The scale benchmark (README, "Performance"); not part of `make test`. Writes bench/results/.
# Threads pool, two identical workers consuming both queues, 4 threads each; the lease picks
# the one that holds the watch (`--watch`). The goal is worker RSS under 500 MB. The API
# budget is raised from its conservative default (20/s) so the run measures jobferry, not
# the budget.
BENCH_ARGS ?= --n 100 1000 5000 --pool threads --shared-workers 2 --watcher embedded --worker-env JOBFERRY_API_QPS=500 --worker-env JOBFERRY_API_BURST=500
bench: $(BIN)/jobferry
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m bench $(BENCH_ARGS)
