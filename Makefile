# fieldlink developer commands. Each target sets itself up on a fresh machine
# that has only Python 3.11: it creates .venv and installs the pinned tools.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: test demo bench venv clean

$(STAMP): requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet pip==26.2.1
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

venv: $(STAMP)

## make test: the whole suite (unit on CPython and MicroPython, integration, faults, deploy)
test: $(STAMP)
	$(BIN)/python tools/ensure_system_deps.py
	$(BIN)/python -m pytest -n 2 $(PYTEST_ARGS)

## make demo: the firmware on the virtual board streaming to the local collector
demo: $(STAMP)
	$(BIN)/fieldlink demo

## make bench: print the benchmark numbers
bench: $(STAMP)
	$(BIN)/fieldlink bench ws

clean:
	rm -rf $(VENV) var .pytest_cache .hypothesis .mypy_cache
