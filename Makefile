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

# A process per core, at most 4 (each PostgreSQL test process starts its own cluster).
test: lint typecheck
	$(BIN)/python -m pytest -n auto --maxprocesses=4

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
