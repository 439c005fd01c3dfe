# Two commands on a fresh machine: `make demo` and `make test`. Both build the virtual
# environment first from requirements.lock (exact pins that install together).
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: venv demo demo-secure test schemas broker-stop bench clean

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

# The same loop on a secured broker (TLS + SASL/SCRAM, ACLs; docs/security.md), in its own data dir.
SECURE_ENV := FLEETMEDIC_BROKER__DATA_DIR=$(HOME)/.local/share/fleetmedic/kafka-secure \
	FLEETMEDIC_BROKER__PORT=19094 FLEETMEDIC_BROKER__CONTROLLER_PORT=19095
demo-secure: venv
	$(SECURE_ENV) $(BIN)/fleetmedic broker start --secure
	$(SECURE_ENV) $(BIN)/fleetmedic demo --secure

test: venv
	$(BIN)/python -m pytest

schemas: venv
	$(BIN)/fleetmedic schemas export schemas

broker-stop: venv
	$(BIN)/fleetmedic broker stop

clean:
	-$(BIN)/fleetmedic broker stop
	rm -rf $(VENV) .fleetmedic .pytest_cache
