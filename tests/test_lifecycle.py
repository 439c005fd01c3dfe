"""The one consumer lifecycle (fleetmedic/lifecycle.py): the run loop's signals and hooks, in
process with a counting step and a fake clock, and `TopicReader` against the real broker."""

from __future__ import annotations

import os
import signal

import pytest
from examples import metric_batch

from fleetmedic.lifecycle import Periodic, ServiceLoop, TopicReader
from fleetmedic.producer import Producer
from fleetmedic.schemas import MetricBatch
from fleetmedic.topics import topic_name


class Steps:
    """A step that returns the next of `consumed` (0 once they run out) and can act on call n."""

    def __init__(self, consumed=(), at=None):
        self.consumed = list(consumed)
        self.at = at or {}
        self.calls = 0

    def __call__(self) -> int:
        self.calls += 1
        if self.calls in self.at:
            self.at[self.calls]()
        return self.consumed[self.calls - 1] if self.calls <= len(self.consumed) else 0


def test_sigterm_ends_the_run_after_the_step_in_hand_then_on_exit_and_close_run_and_the_handler_returns():
    events = []
    step = Steps([1] * 10, at={3: lambda: os.kill(os.getpid(), signal.SIGTERM)})
    before = signal.getsignal(signal.SIGTERM)
    life = ServiceLoop(step, on_exit=lambda: events.append("exit"), close=lambda: events.append("close"))
    life.run()
    assert step.calls == 3  # the signal arrived during step 3: that step finished, no 4th began
    assert events == ["exit", "close"]
    assert life.stopping
    assert signal.getsignal(signal.SIGTERM) is before


def test_sigint_stops_too_and_sighup_runs_its_hook_without_stopping():
    reloads = []
    step = Steps(
        [1] * 10, at={2: lambda: os.kill(os.getpid(), signal.SIGHUP), 4: lambda: os.kill(os.getpid(), signal.SIGINT)}
    )
    ServiceLoop(step, signals={signal.SIGHUP: lambda: reloads.append(step.calls)}).run()
    assert reloads == [2]
    assert step.calls == 4


def test_without_signals_installed_the_handlers_are_left_alone_and_until_ends_it():
    before = signal.getsignal(signal.SIGTERM)
    seen = []
    step = Steps([1] * 5, at={1: lambda: seen.append(signal.getsignal(signal.SIGTERM))})
    ServiceLoop(step).run(until=lambda: step.calls == 5, install_signals=False)
    assert seen == [before] and step.calls == 5


def test_stop_from_the_step_ends_the_run():
    life = None
    step = Steps([1] * 10, at={2: lambda: life.stop()})
    life = ServiceLoop(step)
    life.run(install_signals=False)
    assert step.calls == 2


def test_periodic_hooks_run_on_their_cadence_by_the_clock():
    now = [0.0]
    ran = {"fast": [], "slow": []}
    step = Steps(at={n: (lambda n=n: now.__setitem__(0, float(n - 1))) for n in range(1, 11)})
    life = ServiceLoop(
        step,
        clock=lambda: now[0],
        periodic=[
            Periodic(3.0, lambda: ran["fast"].append(now[0])),
            Periodic(10.0, lambda: ran["slow"].append(now[0])),
        ],
    )
    life.run(until=lambda: step.calls == 10, install_signals=False)
    # steps at t = 0, 1, ..., 9; a hook runs at its first step, then once `interval` has passed
    assert ran["fast"] == [0.0, 3.0, 6.0, 9.0]
    assert ran["slow"] == [0.0]


def test_periodic_counts_from_its_last_run():
    calls = []
    hook = Periodic(5.0, lambda: calls.append(1), last=100.0)
    assert [hook.maybe(t) for t in (101.0, 104.9, 105.0, 109.0, 110.0)] == [False, False, True, False, True]
    assert len(calls) == 2


def test_the_idle_hook_runs_only_after_steps_that_consumed_nothing():
    idle_at = []
    step = Steps([5, 0, 3, 0, 0])
    ServiceLoop(step, on_idle=lambda: idle_at.append(step.calls)).run(
        until=lambda: step.calls == 5, install_signals=False
    )
    assert idle_at == [2, 4, 5]


def test_a_step_that_raises_skips_on_exit_but_still_closes():
    events = []

    def boom():
        raise RuntimeError("injected")

    life = ServiceLoop(Steps(at={2: boom}), on_exit=lambda: events.append("exit"), close=lambda: events.append("close"))
    with pytest.raises(RuntimeError, match="injected"):
        life.run(install_signals=False)
    assert events == ["close"]


# --- TopicReader, on the real broker --------------------------------------------------------


def _fill(settings, topic: str, per_partition: dict[int, int]) -> None:
    with Producer(settings) as producer:
        for partition, n in per_partition.items():
            for i in range(n):
                batch = metric_batch(host=f"h{partition}", i=i)
                producer.send_raw(topic, batch.to_bytes(), batch.key(), partition=partition)
        producer.flush()


def test_read_to_end_reads_every_partition_and_stops_at_the_ends_taken_at_its_start(settings):
    topic = topic_name(settings, MetricBatch.topic)
    _fill(settings, topic, {0: 40, 1: 7})  # partitions 2.. stay empty
    with TopicReader(settings, [topic], name="test") as reader:
        assert len(reader.tps) == settings.topics.partitions > 2
        ends = reader.end_offsets()
        _fill(settings, topic, {0: 5, 2: 3})  # written after the ends were taken
        got = [m for batch in reader.read_to_end(ends=ends, max_records=10) for m in batch]
        assert sorted((m.partition, m.offset) for m in got) == [(0, o) for o in range(40)] + [(1, o) for o in range(7)]
        assert reader.progress.to_read == reader.progress.read == reader.progress.records == 47
        # what came after the ends is followed on from there: nothing skipped, nothing twice
        later = []
        for _ in range(50):
            later += reader.poll(200)
            if len(later) >= 8:
                break
        assert sorted((m.partition, m.offset) for m in later) == [(0, o) for o in range(40, 45)] + [
            (2, o) for o in range(3)
        ]
        decoded = reader.records(later, MetricBatch)
        assert {(d.record.host, d.partition) for d in decoded} == {("h0", 0), ("h2", 2)}


def test_read_to_end_of_an_empty_topic_and_of_some_partitions(settings):
    topic = topic_name(settings, MetricBatch.topic)
    with TopicReader(settings, [topic], name="test") as reader:
        assert list(reader.read_to_end(timeout_s=30)) == []
        assert reader.progress.to_read == 0
    _fill(settings, topic, {0: 4, 1: 6})
    with TopicReader(settings, [topic], partitions=[1, 2], name="test") as reader:
        got = [m for batch in reader.read_to_end(timeout_s=30) for m in batch]
        assert {m.partition for m in got} == {1} and len(got) == 6


def test_records_skips_tombstones_and_hands_undecodable_ones_to_on_error(settings):
    topic = topic_name(settings, MetricBatch.topic)
    with Producer(settings) as producer:
        producer.send_raw(topic, metric_batch().to_bytes(), b"a", partition=0)
        producer.send_raw(topic, None, b"a", partition=0)
        producer.send_raw(topic, b"{not json", b"a", partition=0)
        producer.flush()
    bad = []
    with TopicReader(settings, [topic], partitions=[0], name="test") as reader:
        batch = [m for b in reader.read_to_end(timeout_s=30) for m in b]
        items = reader.records(batch, MetricBatch, on_error=lambda msg, exc: bad.append((msg.offset, exc.kind)))
    assert [i.offset for i in items] == [0]
    assert bad == [(2, "not_json")]


def test_a_missing_topic_is_a_clear_error_unless_not_required(settings):
    missing = topic_name(settings, "no-such-topic")
    with pytest.raises(RuntimeError, match="does not exist: run `fleetmedic topics create`"):
        TopicReader(settings, [missing])
    with TopicReader(settings, [missing], require=False) as reader:
        assert reader.tps == [] and reader.poll(0) == [] and list(reader.read_to_end()) == []
