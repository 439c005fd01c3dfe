# Two commands on a fresh machine: `make demo` and `make test`. Both build the virtual
# environment first from requirements.lock (exact pins that install together).
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: venv demo test fuzz schemas broker-stop bench clean

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements.lock
	$(BIN)/pip install -q --disable-pip-version-check --no-deps -e .
	touch $@

venv: $(STAMP)

demo: venv
	$(BIN)/fleetmedic broker start
	$(BIN)/fleetmedic topics create
	$(BIN)/fleetmedic demo

test: venv
	$(BIN)/python -m pytest

# Hostile input through every consumer and parser (tests/fuzz_run.py; a few examples run in `make test`).
fuzz: venv
	$(BIN)/python tests/fuzz_run.py

schemas: venv
	$(BIN)/fleetmedic schemas export schemas

broker-stop: venv
	$(BIN)/fleetmedic broker stop

clean:
	-$(BIN)/fleetmedic broker stop
	rm -rf $(VENV) .fleetmedic .pytest_cache
