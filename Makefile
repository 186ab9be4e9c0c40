# Everything runs inside .venv, built from pyproject.toml by the first target that needs it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck bench bytes chaos clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo.py

lint: $(STAMP)
	$(BIN)/ruff check runtime actors tests benchmarks examples
	$(BIN)/ruff format --check runtime actors tests benchmarks examples

typecheck: $(STAMP)
	$(BIN)/mypy

# Two processes per core, at most 4 (each PostgreSQL test process starts its own cluster):
# most tests wait (on child processes, servers, timers), so two cores run four at once in
# about 300 s where two processes took about 470 s. TEST_PROCESSES=0 runs them in one.
TEST_PROCESSES ?= $(shell $(PYTHON) -c 'import os; print(min(4, 2 * (os.cpu_count() or 1)))')

test: lint typecheck
	$(BIN)/python -m pytest -n $(TEST_PROCESSES)

bench: $(STAMP)
	$(BIN)/python benchmarks/bench.py
	$(BIN)/python benchmarks/fleet.py
	$(BIN)/python benchmarks/queues.py
	$(BIN)/python benchmarks/testkit.py
	$(BIN)/python benchmarks/time_skipping.py
	$(BIN)/python benchmarks/loop_lag.py
	$(BIN)/python benchmarks/in_flight.py

bytes: $(STAMP)
	$(BIN)/python benchmarks/bytes.py

chaos: $(STAMP)
	$(BIN)/python benchmarks/chaos.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
