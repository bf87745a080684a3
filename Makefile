# Two entry points for a new user:
#   make demo   -- set up .venv and show syncd at work on examples/repo
#   make test   -- set up .venv and run ruff, mypy --strict and the tests
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint typecheck pytest bench clean

$(BIN)/syncd: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

demo: $(BIN)/syncd
	PATH="$(abspath $(BIN)):$$PATH" bash examples/demo.sh

lint: $(BIN)/syncd
	$(BIN)/ruff check syncd tests benchmarks
	$(BIN)/ruff format --check syncd tests benchmarks

typecheck: $(BIN)/syncd
	$(BIN)/mypy --strict

pytest: $(BIN)/syncd
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/pytest

test: lint typecheck pytest

bench: $(BIN)/syncd
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python benchmarks/check_scale.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
