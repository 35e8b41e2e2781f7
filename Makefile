# One command runs the default lab, one command runs the tests (see README).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: lab test lint venv clean compose-test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# The editable install compiles emulator/compiled.py's modules next to their sources (setup.py):
# when one of them changes, it is compiled again.
COMPILED := $(shell $(PYTHON) emulator/compiled.py)

$(STAMP): pyproject.toml setup.py $(COMPILED) | $(BIN)/python
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

lab: $(STAMP)
	$(BIN)/siplab up

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The lab in containers on a Docker engine this starts and stops (root, Debian's docker.io,
# docker-compose and debootstrap; see tests/containers/run.sh).
compose-test: $(STAMP)
	bash tests/containers/run.sh

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
