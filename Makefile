# The two commands a newcomer needs: `make up` (run everything) and `make test` (run every test).
# Both create the virtual environment first if it is missing.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# re-install when the dependencies change
STAMP  := $(VENV)/.installed

.PHONY: up test bench bench-quick fault-run install clean-data constraints messages

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt \
		-e '.[test,bench]'
	@touch $(STAMP)

# pin every package (dependencies of dependencies too) from a fresh virtual environment
constraints:
	rm -rf .venv-constraints && $(PYTHON) -m venv .venv-constraints
	.venv-constraints/bin/python -m pip install --quiet -e '.[test,bench]'
	{ sed -n '1,3p' constraints.txt; .venv-constraints/bin/python -m pip freeze --exclude-editable; } \
		> constraints.new && mv constraints.new constraints.txt && rm -rf .venv-constraints

install: $(STAMP)

up: $(STAMP)
	$(BIN)/sequences up

# two workers (pytest-xdist), each with its own PostgreSQL and shared stack, a whole module at a
# time (its module fixtures start once); TEST_WORKERS=0 runs in one process
TEST_WORKERS ?= 2
test: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

bench: $(STAMP)
	$(BIN)/python -m bench

bench-quick: $(STAMP)
	$(BIN)/python -m bench --quick

# 10,000 enrollments while every service is killed; FAULT_RUN_ARGS="--seed 7 --enrollments 2000"
fault-run: $(STAMP)
	$(BIN)/python -m bench.fault_run $(FAULT_RUN_ARGS)

clean-data:
	rm -rf .data

# collect the app's messages into sequences/locale/*/messages.po (then translate the new ones)
messages: $(STAMP)
	$(BIN)/pybabel -q extract -F babel.cfg -k translate:2 -k N_ --no-location --sort-output \
		-o .messages.pot .
	$(BIN)/pybabel -q update -i .messages.pot -d sequences/locale --no-fuzzy-matching \
		--ignore-obsolete --no-wrap
	rm -f .messages.pot
	@# no creation date: it would change on every run and make every branch's catalogs differ
	sed -i '/^"POT-Creation-Date/d' sequences/locale/*/LC_MESSAGES/messages.po
