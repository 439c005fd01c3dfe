"""The real broker for the whole session, in this order of preference:

1. FLEETMEDIC_KAFKA_BOOTSTRAP, when set (a broker someone already runs);
2. a testcontainers Kafka (KRaft) where a Docker engine answers;
3. the embedded broker from Apache Kafka's Maven jars (`fleetmedic broker`), on free ports.

Each test gets its own topic prefix, so tests never see each other's records.
"""

from __future__ import annotations

import os
import uuid

import pytest
from kafka_helpers import free_port

from fleetmedic.broker import EmbeddedBroker
from fleetmedic.config import BrokerSettings, Settings, TopicSettings
from fleetmedic.topics import create_topics


def _docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
        return True
    except Exception:  # no engine, no socket, no permission: all mean "no Docker here"
        return False


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory):
    given = os.environ.get("FLEETMEDIC_KAFKA_BOOTSTRAP")
    if given:
        yield given
        return
    if _docker_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as container:
            yield container.get_bootstrap_server()
        return
    broker = EmbeddedBroker(
        BrokerSettings(port=free_port(), controller_port=free_port(), data_dir=tmp_path_factory.mktemp("kafka"))
    )
    broker.start(progress=lambda m: None)
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


def make_settings(bootstrap: str, **overrides) -> Settings:
    base = dict(
        bootstrap_servers=[bootstrap],
        topic_prefix=f"t{uuid.uuid4().hex[:10]}.",
        client_id="fm-test",
        topics=TopicSettings(partitions=3),
    )
    base.update(overrides)
    return Settings(**base)


@pytest.fixture
def settings(kafka_bootstrap) -> Settings:
    """Settings with a fresh topic prefix, all topics created."""
    s = make_settings(kafka_bootstrap)
    create_topics(s)
    return s


# --doctest-modules imports every module it collects: not the `make fuzz` script, whose import
# turns logging off and sets the full-size fuzz budget for the whole session. The `make chaos`
# harness is collected on purpose: its imports are checked by every run of the suite (a module it
# imports once moved, and only `make chaos` noticed).
collect_ignore = ["fuzz_run.py"]

# Tests measured over about 20 s (module::test, or a module name for all of its tests), timed
# per test (setup + call + teardown) on the shared 2-core machine at load 8 to 26 on 2026-12-01;
# tests/test_deploy_install.py marks itself. `pytest -m "not kafka and not slow"` is the inner
# loop without them (README, Tests).
SLOW: frozenset[str] = frozenset(
    {
        "test_broker_and_topics.py::test_embedded_broker_restarts_on_its_data_and_refuses_a_taken_port",  # 87-97 s
        "test_cluster.py::test_three_brokers_replicate_three_ways_and_survive_one_broker_down",  # 171-292 s
        "test_demo.py",  # 216 s alone
        "test_deploy_doctor.py::test_doctor_finds_every_problem_of_a_misconfigured_deployment",  # 35 s
        "test_deploy_doctor.py::test_doctor_on_a_sound_deployment_reports_no_problem",  # 30 s
        "test_deploy_doctor.py::test_topics_check_reports_drift_and_changes_nothing",  # 25 s
        "test_ingest_simulator.py::test_false_alarms_show_precursor_signals_but_no_fault_and_no_incident",  # 38-54 s
        "test_ingest_spool.py::test_broker_outage_loses_nothing_and_keeps_each_hosts_order",  # 48 s
        "test_playbook_cli.py::test_try_runs_check_mode_with_the_policy_variables",  # 22 s
    }
)


def _is_slow(item) -> bool:
    module = item.path.name
    return module in SLOW or f"{module}::{getattr(item, 'originalname', None) or item.name}" in SLOW


def pytest_collection_modifyitems(items):
    """Mark every test that needs the session's broker `kafka`, so a job can leave them out
    (`-m "not kafka"`: the Python 3.13 job of .ci/run), and the ones in SLOW `slow`."""
    for item in items:
        if {"kafka_bootstrap", "secure_cluster"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.kafka)
        if _is_slow(item):
            item.add_marker(pytest.mark.slow)


# --- the secured broker (fleetmedic broker start --secure), for tests/test_security_*.py --------
# FM_SECURE_KAFKA_DIR names the data directory of a secured broker already running (its port is
# read from its server.properties); otherwise one is started on free ports for the session.
SECURE_DIR_ENV = "FM_SECURE_KAFKA_DIR"


class SecureCluster:
    """A running secured embedded broker and the settings of each of its role principals."""

    def __init__(self, data_dir, bootstrap: str):
        from fleetmedic.pki import SecureLayout

        self.data_dir = data_dir
        self.bootstrap = bootstrap
        self.layout = SecureLayout.of(data_dir)

    def password(self, role: str) -> str:
        return self.layout.password(role)

    def settings(self, role: str, prefix: str, **overrides) -> Settings:
        """`role`'s settings under topic `prefix`; its groups and the admin's ACLs cover that prefix."""
        from fleetmedic.pki import client_settings

        base = client_settings(self.layout, role, self.bootstrap)
        base.update(
            topic_prefix=prefix,
            topics={"partitions": 3},
            acls={
                "groups": {
                    **{r: [prefix] for r in ("exporter", "detector", "remediator", "approver", "reviewer")},
                    # `fleetmedic tail` joins a group of its own (the default ACLs' prefix)
                    "reviewer": [prefix, "fleetmedic-tail-"],
                }
            },
        )
        base.update(overrides)
        return Settings.model_validate(base)

    def new_prefix(self) -> str:
        """A fresh topic prefix with every topic created and the ACLs applied by the admin."""
        prefix = f"s{uuid.uuid4().hex[:10]}."
        create_topics(self.settings("admin", prefix))
        return prefix


@pytest.fixture(scope="session")
def secure_cluster(tmp_path_factory):
    from pathlib import Path

    given = os.environ.get(SECURE_DIR_ENV)
    if given:
        props = (Path(given) / "server.properties").read_text()
        port = next(line.rsplit(":", 1)[1] for line in props.splitlines() if line.startswith("advertised.listeners="))
        yield SecureCluster(Path(given), f"127.0.0.1:{port.strip()}")
        return
    broker = EmbeddedBroker(
        BrokerSettings(port=free_port(), controller_port=free_port(), data_dir=tmp_path_factory.mktemp("kafka-secure")),
        secure=True,
    )
    broker.start(progress=lambda m: None)
    try:
        yield SecureCluster(broker.data_dir, broker.bootstrap)
    finally:
        broker.stop()
