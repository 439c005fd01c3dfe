"""The loop under faults: a handler that raises, a record too awkward to dead-letter, and
exactly-once batches (results and offsets in one transaction) against the real broker."""

from __future__ import annotations

import base64

from examples import metric_batch
from kafka import KafkaConsumer, TopicPartition
from kafka_helpers import committed, read_topic

from fleetmedic.producer import Outgoing, Producer
from fleetmedic.schemas import DEAD_LETTER_KEY_BYTES, DeadLetter, Incident, MetricBatch
from fleetmedic.topics import topic_name
from fleetmedic.transport import ConsumerLoop


def _send(settings, *records, key=b"gpu-node-07"):
    topic = topic_name(settings, "metrics.v1")
    with Producer(settings) as producer:
        for r in records:
            producer.send_raw(topic, r if isinstance(r, bytes) else r.to_bytes(), key)


def test_a_poison_record_is_dead_lettered_with_the_handlers_reason_and_the_loop_goes_on(settings):
    _send(settings, *(metric_batch(i=i) for i in range(6)))
    seen: list[int] = []
    calls = []

    def handle(batch):
        calls.append(len(batch))
        for item in batch:
            if item.record.values["gpu0.temperature_c"] == 74.5:  # metric_batch(i=3)
                raise ZeroDivisionError("poison in gpu0.temperature_c")
        seen.extend(item.offset for item in batch)
        return ()

    loop = ConsumerLoop(
        settings,
        group_id=settings.topic_prefix + "poison",
        inputs={"metrics.v1": MetricBatch},
        handle=handle,
        handler_retries=2,
    )
    stats = loop.run(until=lambda s: s.consumed >= 6, install_signals=False)
    letters = [v for *_, v in read_topic(settings, topic_name(settings, "deadletter.v1"), DeadLetter)]
    assert [(d.kind, d.source_offset) for d in letters] == [("handler", 3)]
    assert "ZeroDivisionError" in letters[0].error and "poison in gpu0.temperature_c" in letters[0].error
    assert "tried 3 times" in letters[0].error
    assert sorted(set(seen)) == [0, 1, 2, 4, 5]  # the rest went through (one at a time after the failure)
    assert stats.dead_lettered == 1 and stats.handler_errors >= 3
    part = letters[0].source_partition
    assert committed(settings, settings.topic_prefix + "poison")[(topic_name(settings, "metrics.v1"), part)] == 6


def test_a_record_with_a_huge_key_is_dead_lettered_not_a_crash(settings):
    """The dead letter used to carry the whole key twice (as its key and in base64): a 1.5 MB key
    on an invalid record made the dead letter too big to send, and the loop died on every restart."""
    key = b"k" * 1_500_000
    _send(settings, b"not json at all", metric_batch(i=1), key=key)
    got = []
    loop = ConsumerLoop(
        settings,
        group_id=settings.topic_prefix + "bigkey",
        inputs={"metrics.v1": MetricBatch},
        handle=lambda b: got.extend(b) or (),
    )
    stats = loop.run(until=lambda s: s.consumed >= 2, install_signals=False)
    assert stats.dead_lettered == 1 and len(got) == 1
    [(_, _, dl_key, letter)] = read_topic(settings, topic_name(settings, "deadletter.v1"), DeadLetter)
    assert letter.kind == "not_json" and letter.source_key_truncated
    assert base64.b64decode(letter.source_key_b64) == key[:DEAD_LETTER_KEY_BYTES] == dl_key


def test_a_transactional_batch_is_all_or_nothing(settings):
    """Results and offsets commit together: a batch whose commit fails is aborted, nothing it
    produced is visible to read_committed readers, and it is processed again from the last commit."""
    _send(settings, *(metric_batch(i=i) for i in range(4)))
    out_topic = topic_name(settings, Incident.topic)
    lost, assigned, attempts = [], [], []

    def handle(batch):
        attempts.append([i.offset for i in batch])
        return [Outgoing(out_topic, f"seen {i.offset} try {len(attempts)}".encode(), b"k") for i in batch]

    def fail_first_commit(stats):
        if len(attempts) == 1:
            raise __import__("kafka").errors.KafkaError("injected: the commit failed")

    group = settings.topic_prefix + "txn"
    loop = ConsumerLoop(
        settings,
        group_id=group,
        inputs={"metrics.v1": MetricBatch},
        handle=handle,
        transactional_id=settings.topic_prefix + "txn-1",
        after_flush=fail_first_commit,
        on_lost=lambda tps: lost.append(tps),
        on_assign=lambda tps: assigned.append(tps),
    )
    stats = loop.run(until=lambda s: s.consumed >= 4, install_signals=False)
    assert stats.aborted == 1 and len(lost) == 1 and len(assigned) >= 2
    assert attempts[0] == attempts[1] == [0, 1, 2, 3]  # read again from the committed offsets
    values = [v for *_, v in read_topic(settings, out_topic)]
    assert values == [f"seen {o} try 2".encode() for o in range(4)]  # try 1 was aborted: never seen
    assert sorted(committed(settings, group).values()) == [4]

    # a read_uncommitted reader does see the aborted try: the records were written, then aborted
    raw = KafkaConsumer(enable_auto_commit=False, **settings.kafka_kwargs())
    try:
        tps = [TopicPartition(out_topic, p) for p in sorted(raw.partitions_for_topic(out_topic))]
        raw.assign(tps)
        raw.seek_to_beginning(*tps)
        seen = []
        for _ in range(20):
            for msgs in raw.poll(timeout_ms=300).values():
                seen += [m.value for m in msgs]
            if len(seen) >= 8:
                break
        assert sum(v.endswith(b"try 1") for v in seen) == 4
    finally:
        raw.close()


def test_a_failed_restore_keeps_the_partitions_paused_and_is_retried(settings):
    """State hand-off that fails loudly: no record of a partition is handled before its restore
    succeeded, and a restore that raises is tried again (kafka-python would swallow it)."""
    _send(settings, *(metric_batch(i=i) for i in range(3)))
    restores, handled_when = [], []

    def on_restore(tps):
        restores.append(set(tps))
        if len(restores) == 1:
            raise TimeoutError("state topic unreadable (injected)")

    loop = ConsumerLoop(
        settings,
        group_id=settings.topic_prefix + "restore",
        inputs={"metrics.v1": MetricBatch},
        handle=lambda b: handled_when.append(len(restores)) or (),
        on_restore=on_restore,
        restore_backoff_s=0.05,
    )
    stats = loop.run(until=lambda s: s.consumed >= 3, install_signals=False)
    assert stats.restore_failures == 1 and stats.restored == 3
    assert len(restores) >= 2 and restores[0] == restores[1]
    assert handled_when and min(handled_when) >= 2  # nothing handled before the second, successful restore
    assert loop.restoring == set()
