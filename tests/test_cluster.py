"""`fleetmedic broker start --nodes 3`: a three-broker KRaft cluster, and durability on it.

The cluster test starts its own three JVMs (about a minute on a loaded machine) unless
FLEETMEDIC_CLUSTER_BOOTSTRAP names a running cluster whose node 1 may be killed and restarted
with FLEETMEDIC_BROKER__* pointing at its data (the one `broker start --nodes 3` made).
"""

from __future__ import annotations

import os
import signal

import pytest
from conftest import make_settings
from examples import metric_batch
from kafka.admin import KafkaAdminClient
from kafka_helpers import free_port, read_topic, topic_config

from fleetmedic.broker import BrokerError, _port_free
from fleetmedic.cluster import EmbeddedCluster
from fleetmedic.config import BrokerSettings
from fleetmedic.producer import Producer
from fleetmedic.schemas import MetricBatch
from fleetmedic.topics import create_topics, topic_name
from fleetmedic.transport import ConsumerLoop, wait_until


def test_node_properties_name_every_voter_and_replicate_internal_topics(tmp_path):
    cluster = EmbeddedCluster(BrokerSettings(port=30000, controller_port=30001, data_dir=tmp_path), nodes=3)
    props = dict(line.split("=", 1) for line in cluster.node(1).properties().splitlines() if "=" in line)
    assert props["node.id"] == "2"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:30001,2@127.0.0.1:30003,3@127.0.0.1:30005"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:30002,CONTROLLER://127.0.0.1:30003"
    assert props["offsets.topic.replication.factor"] == props["transaction.state.log.replication.factor"] == "3"
    assert props["min.insync.replicas"] == props["transaction.state.log.min.isr"] == "2"
    assert cluster.bootstrap == "127.0.0.1:30000,127.0.0.1:30002,127.0.0.1:30004"
    with pytest.raises(BrokerError, match="overlap"):
        EmbeddedCluster(BrokerSettings(port=30000, controller_port=30002, data_dir=tmp_path), nodes=3)


def _free_base() -> int:
    for _ in range(50):
        base = free_port()
        if all(_port_free(base + i) for i in range(6)):
            return base
    raise RuntimeError("no six consecutive free ports")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    base = _free_base()
    c = EmbeddedCluster(
        BrokerSettings(
            port=base, controller_port=base + 1, start_timeout_s=300, data_dir=tmp_path_factory.mktemp("cluster")
        ),
        nodes=3,
    )
    c.start(progress=lambda m: None)
    try:
        yield c
    finally:
        c.stop()


def test_three_brokers_replicate_three_ways_and_survive_one_broker_down(cluster):
    settings = make_settings(cluster.nodes[1].bootstrap)
    settings = settings.model_copy(update={"bootstrap_servers": cluster.bootstrap.split(",")})
    create_topics(settings)
    admin = KafkaAdminClient(**settings.kafka_kwargs())
    try:
        [metrics] = admin.describe_topics([topic_name(settings, "metrics.v1")])
        assert {len(p["replicas"]) for p in metrics["partitions"]} == {3}
    finally:
        admin.close()
    # a broker may describe the new topic before its metadata has it: ask until it answers
    wait_until(
        lambda: "min.insync.replicas" in topic_config(settings, topic_name(settings, "remediations.v1")),
        30,
        what="the topic's configuration",
    )
    assert topic_config(settings, topic_name(settings, "remediations.v1"))["min.insync.replicas"] == "2"

    victim = cluster.node(0)
    os.kill(victim.pid(), signal.SIGKILL)
    wait_until(lambda: victim.pid() is None, 30, what="node 1 to die")
    # acks=all with min.insync 2: two of three brokers still take writes, and a transactional
    # stage still commits
    with Producer(settings) as producer:
        for i in range(5):
            producer.send(metric_batch(i=i))
    seen = []
    loop = ConsumerLoop(
        settings,
        group_id=settings.topic_prefix + "ha",
        inputs={"metrics.v1": MetricBatch},
        handle=lambda b: seen.extend(b) or (),
        transactional_id=settings.topic_prefix + "ha",
    )
    loop.run(until=lambda s: s.consumed >= 5, install_signals=False)
    assert len(seen) == 5
    victim.start(progress=lambda m: None)
    got = read_topic(settings, topic_name(settings, "metrics.v1"), MetricBatch, timeout_s=60)
    assert sorted(r.values["gpu0.temperature_c"] for *_, r in got) == [71.5 + i for i in range(5)]
