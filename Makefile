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

# Wheels of syncd's dependencies (and the build backend), so that the
# pre-commit test installs the hook offline, from this folder only.
$(VENV)/wheelhouse/.done: $(BIN)/syncd
	$(BIN)/python -m pip wheel --quiet --wheel-dir $(VENV)/wheelhouse . 'setuptools>=77' wheel
	touch $@

demo: $(BIN)/syncd
	PATH="$(abspath $(BIN)):$$PATH" bash examples/demo.sh

lint: $(BIN)/syncd
	$(BIN)/ruff check syncd tests benchmarks
	$(BIN)/ruff format --check syncd tests benchmarks

typecheck: $(BIN)/syncd
	$(BIN)/mypy --strict

pytest: $(BIN)/syncd $(VENV)/wheelhouse/.done
	PATH="$(abspath $(BIN)):$$PATH" SYNCD_WHEELHOUSE="$(abspath $(VENV)/wheelhouse)" $(BIN)/pytest

test: lint typecheck pytest

bench: $(BIN)/syncd
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python benchmarks/check_scale.py
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python benchmarks/sync_scale.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
