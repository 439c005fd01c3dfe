"""The shared producer and consumer loop against the real broker."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from conftest import make_settings
from examples import examples, metric_batch
from kafka_helpers import caught_up, committed, free_port, read_topic

from fleetmedic.producer import Producer
from fleetmedic.schemas import DeadLetter, LogEvent, MetricBatch
from fleetmedic.topics import create_topics, topic_name
from fleetmedic.transport import ConsumerLoop, wait_until

HERE = Path(__file__).resolve().parent


def test_every_contract_round_trips_through_kafka(settings):
    sent = examples()
    with Producer(settings) as producer:
        for record in sent:
            producer.send(record)
    got = []
    inputs = {type(r).topic: type(r) for r in sent}
    loop = ConsumerLoop(
        settings, group_id=settings.topic_prefix + "roundtrip", inputs=inputs, handle=lambda b: got.extend(b) or ()
    )
    stats = loop.run(until=lambda s: s.consumed >= len(sent), install_signals=False)
    assert stats.dead_lettered == 0
    by_type = {type(item.record): item for item in got}
    for record in sent:
        item = by_type[type(record)]
        assert item.record == record
        assert item.record.to_bytes() == record.to_bytes()
        assert item.key == record.key()  # keyed by host (dead letters: by the source key)


def test_bad_records_go_to_dead_letters_and_the_loop_keeps_consuming(kafka_bootstrap):
    settings = make_settings(kafka_bootstrap, max_record_bytes=4096)
    create_topics(settings)
    good = metric_batch().model_dump(mode="json")
    wrong_version = {**good, "schema_version": 2}
    missing = {k: v for k, v in good.items() if k not in ("host", "values")}
    bad = {
        "not_json": b"\xff\xfe\x00 definitely not json",
        "schema_version": json.dumps(wrong_version).encode(),
        "missing": json.dumps(missing).encode(),
        "nan": json.dumps(good).replace("71.5", "NaN").encode(),
        "infinity": json.dumps(good).replace("71.5", "Infinity").encode(),
        "oversized": json.dumps({**good, "labels": {"pad": "x" * 10_000}}).encode(),
    }
    topic = topic_name(settings, "metrics.v1")
    with Producer(settings) as producer:
        producer.send(metric_batch(i=1))
        for value in bad.values():
            producer.send_raw(topic, value, b"gpu-node-07")  # same key: one partition, this order
        producer.send(metric_batch(i=2))

    got = []
    group = settings.topic_prefix + "dlq"
    loop = ConsumerLoop(
        settings,
        group_id=group,
        inputs={"metrics.v1": MetricBatch},
        handle=lambda b: got.extend(b) or (),
        max_records=3,
    )  # several batches
    stats = loop.run(until=lambda s: s.consumed >= 8, install_signals=False)

    assert [g.record.values["gpu0.temperature_c"] for g in got] == [72.5, 73.5]  # the good ones, both
    assert stats.dead_lettered == 6
    letters = [v for _, _, _, v in read_topic(settings, topic_name(settings, "deadletter.v1"), DeadLetter)]
    letters.sort(key=lambda d: d.source_offset)
    assert [d.kind for d in letters] == [
        "not_json",
        "schema_version",
        "validation",
        "validation",
        "validation",
        "oversized",
    ]
    first = got[0].offset
    assert [d.source_offset for d in letters] == list(range(first + 1, first + 7))
    reasons = [d.error for d in letters]
    assert "not valid UTF-8 JSON" in reasons[0]
    assert "schema_version 2 is not supported" in reasons[1]
    assert "host: Field required" in reasons[2] and "values: Field required" in reasons[2]
    assert "finite number" in reasons[3] and "finite number" in reasons[4]
    assert "exceeds max_record_bytes=4096" in reasons[5]
    for letter, original in zip(letters, bad.values(), strict=True):
        assert letter.source_topic == topic and letter.consumer_group == group
        assert letter.key() == b"gpu-node-07"
        assert letter.original_size == len(original)
        assert letter.original_sha256 == hashlib.sha256(original).hexdigest()
        assert not letter.truncated and base64.b64decode(letter.original_b64) == original
    assert committed(settings, group)[(topic, got[0].partition)] == got[-1].offset + 1


def _echo(settings, group, *extra) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), str(HERE)])}
    return subprocess.Popen(
        [
            sys.executable,
            str(HERE / "stage_echo.py"),
            settings.bootstrap_servers[0],
            settings.topic_prefix,
            group,
            *map(str, extra),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _echoed(settings) -> list[tuple[int, int]]:
    return [
        (e.fields["src_partition"], e.fields["src_offset"])
        for *_, e in read_topic(settings, topic_name(settings, "logs.v1"), LogEvent)
    ]


def test_sigkill_after_produce_before_commit_reprocesses_and_loses_nothing(settings, tmp_path):
    n = 60
    with Producer(settings) as producer:
        for i in range(n):
            producer.send(metric_batch(host=f"node{i % 7}", i=i))
    marker = tmp_path / "flushed"
    group = settings.topic_prefix + "echo"  # groups outlive topics on a shared broker
    proc = _echo(settings, group, "--pause-after-flush", marker)
    try:
        wait_until(marker.exists, 60, what="the stage to produce its first batch")
        first_batch = int(marker.read_text())
        assert len(_echoed(settings)) == first_batch > 0  # produced and acknowledged ...
        assert committed(settings, group) == {}  # ... but not committed
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert proc.returncode == -signal.SIGKILL

    proc = _echo(settings, group)
    try:
        source = topic_name(settings, "metrics.v1")
        wait_until(lambda: caught_up(settings, group, source), 60, what="the restarted stage to commit everything")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    echoed = _echoed(settings)
    inputs = {(p, o) for p, o, _, _ in read_topic(settings, source)}
    assert set(echoed) == inputs  # nothing lost
    assert len(echoed) == n + first_batch  # the uncommitted batch, and only it, came again
    assert len(set(echoed)) == n


def test_sigterm_finishes_the_batch_commits_and_exits_zero(settings, tmp_path):
    ready = tmp_path / "ready"
    group = settings.topic_prefix + "echo-term"
    proc = _echo(settings, group, "--ready-file", ready)
    try:
        wait_until(ready.exists, 60, what="partition assignment")
        with Producer(settings) as producer:
            for i in range(30):
                producer.send(metric_batch(host=f"node{i % 5}", i=i))
        source = topic_name(settings, "metrics.v1")
        wait_until(lambda: caught_up(settings, group, source), 60, what="the stage to commit what was produced")
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert "stopped after 30 records" in out
    assert len(_echoed(settings)) == 30


def test_rebalance_hooks_see_the_assignment(settings):
    assigned, revoked = [], []
    loop = ConsumerLoop(
        settings,
        group_id=f"hooks-{uuid.uuid4().hex[:6]}",
        inputs={"logs.v1": LogEvent},
        handle=lambda b: (),
        on_assign=assigned.append,
        on_revoke=revoked.append,
    )
    deadline = time.monotonic() + 30
    while not any(assigned) and time.monotonic() < deadline:
        loop.run_once()
    loop.close()
    topic = topic_name(settings, "logs.v1")
    assert {(tp.topic, tp.partition) for tp in set().union(*assigned)} == {(topic, p) for p in range(3)}


def test_reaches_broker_holds_after_kafka_python_drops_its_connections(settings):
    """The receiver's readiness: a healthy producer stays "reaching a broker" after kafka-python
    has closed every connection it had (here its idle timeout, set to 1 s), because the probe
    reopens one; it says False within its wait where no broker answers."""
    producer = Producer(settings, connections_max_idle_ms=1000)
    try:
        producer.send(metric_batch("node1"))
        producer.flush()
        client = producer._producer._sender._client
        wait_until(
            lambda: not any(client.connected(n) for n in list(client._conns)), 30, what="idle connections closed"
        )
        assert producer.reaches_broker(wait_s=10.0)
    finally:
        producer.close()
    dead = Producer(make_settings(f"127.0.0.1:{free_port()}"), api_version=(2, 8, 0))  # nothing listens there
    try:
        assert not dead.reaches_broker(wait_s=1.0)
    finally:
        dead.close(timeout_s=1.0)
