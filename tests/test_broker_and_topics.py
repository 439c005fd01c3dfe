"""The embedded broker's life cycle and topic provisioning, against real processes."""

import socket

import pytest
from conftest import make_settings
from examples import metric_batch
from kafka.admin import KafkaAdminClient
from kafka_helpers import free_port, read_topic, topic_config

from fleetmedic.broker import BrokerError, EmbeddedBroker
from fleetmedic.config import BrokerSettings
from fleetmedic.producer import Producer
from fleetmedic.schemas import MetricBatch
from fleetmedic.topics import create_topics, topic_name, topic_specs


def test_topics_create_is_idempotent_and_configures_each_topic(settings):
    again = create_topics(settings)
    assert set(again.values()) == {"exists"}
    assert len(again) == len(topic_specs(settings)) == 8
    admin = KafkaAdminClient(**settings.kafka_kwargs())
    try:
        described = {t["topic"]: t for t in admin.describe_topics(list(again))}
        assert len(described[topic_name(settings, "metrics.v1")]["partitions"]) == 3
        assert len(described[topic_name(settings, "approvals.v1")]["partitions"]) == 1
    finally:
        admin.close()
    assert topic_config(settings, topic_name(settings, "state.v1"))["cleanup.policy"] == "compact"
    assert topic_config(settings, topic_name(settings, "control.v1"))["cleanup.policy"] == "compact"
    assert topic_config(settings, topic_name(settings, "metrics.v1"))["retention.ms"] == str(168 * 3_600_000)


def test_embedded_broker_restarts_on_its_data_and_refuses_a_taken_port(tmp_path):
    cfg = BrokerSettings(port=free_port(), controller_port=free_port(), data_dir=tmp_path / "kafka")
    broker = EmbeddedBroker(cfg)
    broker.start(progress=lambda m: None)
    try:
        assert broker.status().answering
        assert broker.start(progress=lambda m: None) == 0.0  # already running: nothing started twice
        settings = make_settings(broker.bootstrap)
        create_topics(settings)
        with Producer(settings) as p:
            p.send(metric_batch())
        broker.stop()
        assert not broker.status().running
        broker.start(progress=lambda m: None)
        got = read_topic(settings, topic_name(settings, "metrics.v1"), MetricBatch)
        assert [r for *_, r in got] == [metric_batch()]  # the data survived the restart
    finally:
        broker.stop()

    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        other = EmbeddedBroker(BrokerSettings(port=taken, controller_port=free_port(), data_dir=tmp_path / "k2"))
        with pytest.raises(BrokerError, match=f"port {taken} on 127.0.0.1 is taken"):
            other.start(progress=lambda m: None)


def test_missing_java_or_maven_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # neither java nor mvn
    broker = EmbeddedBroker(
        BrokerSettings(
            port=free_port(), controller_port=free_port(), data_dir=tmp_path / "k", jar_cache=tmp_path / "jars"
        )
    )
    with pytest.raises(BrokerError, match="java not found on PATH: install a Java 17"):
        broker.start(progress=lambda m: None)
    from fleetmedic.broker import fetch_jars

    with pytest.raises(BrokerError, match="mvn not found on PATH: install Maven"):
        fetch_jars(broker.settings)
