# The two commands a newcomer needs: `make up` (run everything) and `make test` (run every test).
# Both create the virtual environment first if it is missing.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# re-install when the dependencies change
STAMP  := $(VENV)/.installed

.PHONY: up test bench bench-quick install clean-data

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test,bench]'
	@touch $(STAMP)

install: $(STAMP)

up: $(STAMP)
	$(BIN)/sequences up

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python -m bench

bench-quick: $(STAMP)
	$(BIN)/python -m bench --quick

clean-data:
	rm -rf .data
