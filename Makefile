# Two commands on a fresh machine: `make demo` and `make test`. Both build the virtual
# environment first from requirements.lock (exact pins that install together).
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: venv demo demo-secure test check fuzz chaos schemas broker-stop bench clean dist test-py313

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements.lock
	$(BIN)/pip install -q --disable-pip-version-check -c requirements.lock -e '.[all,test]'
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

# Style and types (configured in pyproject.toml); CI runs it before the tests.
check: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Hostile input through every consumer and parser (tests/fuzz_run.py; a few examples run in `make test`).
fuzz: venv
	$(BIN)/python tests/fuzz_run.py

# The pipeline on its own 3-broker cluster under member kills, broker restarts and rebalances,
# counted from the topics (tests/chaos_run.py; ports CHAOS_PORT..+20, default 19300).
chaos: venv
	$(BIN)/python tests/chaos_run.py

schemas: venv
	$(BIN)/fleetmedic schemas export schemas

broker-stop: venv
	$(BIN)/fleetmedic broker stop

clean:
	-$(BIN)/fleetmedic broker stop
	rm -rf $(VENV) $(VENV313) .fleetmedic .pytest_cache build dist

# The wheel and sdist (dist/), as `python -m build` makes them; setuptools comes from the lock.
dist: venv
	rm -rf dist
	$(BIN)/python -m build --no-isolation --outdir dist .

# The highest supported Python: a fresh venv with the built wheel's [all,test], then the tests
# that need no broker, run against the installed wheel (docs/decisions.md says why this subset).
PY313 ?= /root/.pyenv/versions/3.13.0/bin/python3
VENV313 := .venv-py313
test-py313: dist
	@test -x $(PY313) || { echo "test-py313: no Python 3.13 at $(PY313) (set PY313=...)"; exit 1; }
	rm -rf $(VENV313)
	$(PY313) -m venv $(VENV313)
	$(VENV313)/bin/pip install -q --disable-pip-version-check --no-compile -c requirements.lock "$$(ls dist/fleetmedic-*.whl | tail -1)[all,test]"
	$(VENV313)/bin/pytest tests -m "not kafka and not slow" -p no:cacheprovider
