"""The disk spool, and a real broker outage: every record delivered once and in order per host.

The outage test starts its own embedded broker on free ports (never the shared one), stops it
mid-run, restarts it on the same data, and reads everything back.
"""

import threading
import urllib.request
from datetime import UTC, datetime, timedelta

import pytest
from conftest import make_settings
from kafka.errors import KafkaTimeoutError
from kafka_helpers import free_port, read_topic

from fleetmedic.broker import EmbeddedBroker
from fleetmedic.config import BrokerSettings
from fleetmedic.producer import Producer
from fleetmedic.schemas import MetricBatch
from fleetmedic.topics import create_topics, topic_name
from fleetmedic.transport import wait_until
from ingest.promtext import parse
from ingest.publisher import ExporterHealth, Publisher
from ingest.runner import Exporter, ExporterOptions
from ingest.spool import Spool

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_spool_keeps_order_survives_reopen_and_ignores_a_torn_line(tmp_path):
    spool = Spool(tmp_path, max_bytes=10_000, segment_bytes=100)
    for i in range(10):
        assert spool.append("topic", b"h%d" % (i % 2), b'{"i":%d}' % i)
    spool.close()
    segments = sorted(tmp_path.glob("*.spool"))
    assert len(segments) > 1  # small segments: several files
    with open(segments[-1], "ab") as f:
        f.write(b'topic\th0\t{"i":99')  # a crash mid-write: no newline
    again = Spool(tmp_path, max_bytes=10_000, segment_bytes=100)
    assert len(again) == 10
    seen = []
    while len(again):
        head = again.head()
        seen += [v for _, _, v in head]
        again.consume_head(keep=[])
    assert seen == [b'{"i":%d}' % i for i in range(10)]
    assert again.bytes_ == 0 or again.bytes_ == len(b'topic\th0\t{"i":99')


def test_spool_is_bounded_and_counts_what_it_drops(tmp_path):
    spool = Spool(tmp_path, max_bytes=100)
    accepted = [spool.append("t", b"k", b"x" * 20) for _ in range(10)]
    assert accepted.count(True) == 4  # 25 bytes a line: four fit in 100
    assert spool.dropped_ == 6 and len(spool) == 4
    head = spool.head()
    spool.consume_head(keep=head[2:])  # two delivered, two left, still first in line
    assert len(spool) == 2 and spool.head() == head[2:]
    assert spool.append("t", b"k", b"y" * 20)  # room again


def test_publisher_without_a_broker_spools_and_reports_in_health(tmp_path):
    settings = make_settings(f"127.0.0.1:{free_port()}")  # nothing listens there
    health = ExporterHealth("test")
    pub = Publisher(settings, health, Spool(tmp_path / "spool", max_bytes=600), ack_timeout_s=1.0, retry_s=60)
    batches = [
        MetricBatch(host="h1", time=T0 + timedelta(seconds=i), source="test", values={"x": float(i)}) for i in range(5)
    ]
    assert pub.publish(batches) == 0
    assert health.sent == 0 and health.errors >= 1 and "connect" in health.last_error
    assert health.spooled + health.dropped == 5 and health.dropped > 0  # 600 bytes hold only some
    assert health.spool_records == health.spooled
    pub.close()


def _batch(host: str, seq: int) -> MetricBatch:
    return MetricBatch(host=host, time=T0 + timedelta(seconds=seq), source="outage-test", values={"seq": float(seq)})


def _health(port: int) -> dict[str, float]:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {s.name.replace("fleetmedic_exporter_", ""): s.value for s in parse(body)}


def test_broker_outage_loses_nothing_and_keeps_each_hosts_order(tmp_path):
    """An exporter runs on its interval in a thread while its broker is stopped and restarted."""
    broker = EmbeddedBroker(BrokerSettings(port=free_port(), controller_port=free_port(), data_dir=tmp_path / "kafka"))
    broker.start(progress=lambda m: None)
    exporter = None
    try:
        settings = make_settings(broker.bootstrap)
        create_topics(settings)
        opts = ExporterOptions(
            spool_dir=tmp_path / "spool", health_port=-1, ack_timeout_s=2.0, retry_s=0.5, drain_on_exit_s=30
        )
        exporter = Exporter("outage", settings, opts)
        hosts = ["node-a", "node-b", "node-c"]
        seq = [0]

        def collect():
            seq[0] += 1
            return [_batch(h, seq[0] - 1) for h in hosts]

        runner = threading.Thread(target=exporter.run, args=(collect, 0.1), daemon=True)
        runner.start()
        health = exporter.health
        wait_until(lambda: health.sent >= 15, 30, what="records before the outage")
        orphan = Producer(settings, request_timeout_ms=1500, delivery_timeout_ms=2000, max_block_ms=2000)
        orphan.send_raw(topic_name(settings, "approvals.v1"), b"{}", b"k")
        orphan.flush(10)  # metadata known: the next send is accepted and stays pending
        broker.stop()
        # closing a producer whose records cannot be delivered raises, and still stops its thread
        orphan.send_raw(topic_name(settings, "approvals.v1"), b"{}", b"k")
        with pytest.raises(KafkaTimeoutError):
            orphan.close(timeout_s=0)
        wait_until(lambda: not orphan._producer._sender.is_alive(), 5, what="the closed producer's thread to stop")
        wait_until(lambda: health.spool_records >= 15, 60, what="records spooled during the outage")
        during = _health(exporter.server.port)
        assert during["records_spooled_total"] >= 15 and during["spool_records"] >= 15
        assert during["last_error_timestamp_seconds"] > 0
        broker.start(progress=lambda m: None)
        wait_until(
            lambda: health.spool_records == 0 and health.resent >= 15,
            90,
            what="the spool to drain after the broker came back",
        )
        after = health.sent
        wait_until(lambda: health.sent >= after + 9, 30, what="live records after the drain")
        exporter.stop.set()
        runner.join(30)
        exporter.close()
        assert health.dropped == 0 and health.spool_records == 0
        got = read_topic(settings, topic_name(settings, "metrics.v1"), MetricBatch)
        per_host: dict[str, list[int]] = {}
        for _, _, _, record in got:
            per_host.setdefault(record.host, []).append(int(record.values["seq"]))
        assert set(per_host) == set(hosts)
        for host in hosts:
            assert per_host[host] == list(range(seq[0])), host  # once each, in order
    finally:
        if exporter is not None:
            exporter.stop.set()
        broker.stop()


def test_records_the_broker_stored_before_a_timeout_are_not_sent_twice(settings, tmp_path):
    """The broker wrote a batch but its answer was lost: the spool holds it, and the resend must skip it."""
    health = ExporterHealth("dedupe")
    spool = Spool(tmp_path / "spool")
    pub = Publisher(settings, health, spool, retry_s=0)
    stored = [_batch("node-a", i) for i in range(3)]
    since = int(datetime.now(UTC).timestamp() * 1000)
    assert pub.publish(stored) == 3
    # As if those three had timed out: spooled, marked uncertain, followed by two never sent.
    topic = topic_name(settings, "metrics.v1")
    for record in stored + [_batch("node-a", 3), _batch("node-a", 4)]:
        spool.append(topic, record.key(), record.to_bytes())
    spool.uncertain_since_ms = since - 50
    assert pub.publish([_batch("node-a", 5)]) == 1
    pub.close()
    assert health.already_stored == 3 and spool.uncertain_since_ms is None and len(spool) == 0
    got = [int(r.values["seq"]) for *_, r in read_topic(settings, topic, MetricBatch)]
    assert got == [0, 1, 2, 3, 4, 5]
