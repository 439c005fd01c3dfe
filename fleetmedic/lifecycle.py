"""The one consumer lifecycle: how every stage runs, and how every stage reads a topic.

Three parts, each written once:

- `ServiceLoop` runs a service. It calls `step` until SIGTERM/SIGINT, `stop()` or `until()`.
  After each step it calls the idle hook (when the step consumed nothing) and the periodic
  hooks that are due. On the way out it calls `on_exit` (after a clean stop only) and `close`
  (always). Other signals (SIGHUP: reload the policy) run the hook given for them.
- `fleetmedic.transport.ConsumerLoop` is the step of a consumer-group member: poll, decode,
  handle, produce, commit. It carries the rebalance hooks (`on_assign`, `on_revoke`,
  `on_restore`, `on_lost`), and `ConsumerLoop.service_loop(...)` gives its `ServiceLoop`.
- `TopicReader` reads partitions without joining a group. It assigns them and seeks to the
  beginning (or to given offsets). `read_to_end()` stops at the end offsets taken when it was
  called. `poll()` follows what comes after. It reads committed, like every consumer
  (`consumer_config`).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from .config import Settings
from .deadletter import DecodeError, decode
from .schemas import Contract
from .transport import Received, consumer_config

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
Hook = Callable[[], object]


@contextmanager
def signals_handled(handlers: Mapping[int, Hook]) -> Iterator[None]:
    """Run `handlers[sig]()` on each signal while inside; the previous handlers come back on exit.

    Signal handlers can only be installed in the main thread. Anywhere else this does nothing,
    and the caller stops the service with `stop()`.
    """
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig, hook in handlers.items():
            previous[sig] = signal.signal(sig, lambda *_, hook=hook: hook())
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def wait_for_signal(signals: Iterable[int] = STOP_SIGNALS) -> None:
    """Block the main thread until one of `signals` arrives (a service whose work runs in threads)."""
    done = threading.Event()
    with signals_handled({sig: done.set for sig in signals}):
        done.wait()


def stop_on_signals(stop: threading.Event) -> None:
    """SIGTERM and SIGINT set `stop` from now on (main thread only; for loops that own their timing)."""
    if threading.current_thread() is threading.main_thread():
        for sig in STOP_SIGNALS:
            signal.signal(sig, lambda *_: stop.set())


@dataclass
class Periodic:
    """`fn`, run after a step once `interval_s` have passed since it last ran (the first step runs it)."""

    interval_s: float
    fn: Hook
    last: float = float("-inf")

    def maybe(self, now: float) -> bool:
        """Run `fn` if it is due at `now`; True when it ran. The interval counts from its start."""
        if now - self.last < self.interval_s:
            return False
        self.last = now
        self.fn()
        return True


class ServiceLoop:
    """Run `step` until stopped, with idle and periodic hooks; close on the way out.

    `step()` returns how many records it consumed. After each step, `on_idle()` runs if it
    returned 0, then each due `periodic` hook (by `clock`). `run()` stops on SIGTERM or SIGINT
    (the step in hand finishes), on `stop()` from any thread, or when `until()` is true after a
    step. `on_exit()` runs after a clean stop (the last checkpoint), and `close()` always runs,
    also when a step raised. `signals` adds hooks for other signals or replaces these.
    `stop_event` lets the step's owner share the stop flag (`ConsumerLoop.stop()`).
    """

    def __init__(
        self,
        step: Callable[[], int],
        *,
        on_idle: Hook | None = None,
        periodic: Iterable[Periodic] = (),
        signals: Mapping[int, Hook] | None = None,
        on_exit: Hook | None = None,
        close: Hook | None = None,
        stop_event: threading.Event | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.step = step
        self.on_idle = on_idle
        self.periodic = list(periodic)
        self.on_exit = on_exit
        self.close = close
        self.clock = clock
        self._stop = stop_event if stop_event is not None else threading.Event()
        self.signals: dict[int, Hook] = {sig: self.stop for sig in STOP_SIGNALS}
        self.signals.update(signals or {})

    def stop(self) -> None:
        """Finish the step in hand, then leave `run` (thread- and signal-safe)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run_once(self) -> int:
        """One step and the hooks after it; returns what the step consumed."""
        n = self.step()
        if n == 0 and self.on_idle is not None:
            self.on_idle()
        now = self.clock()
        for hook in self.periodic:
            hook.maybe(now)
        return n

    def run(self, *, until: Callable[[], bool] | None = None, install_signals: bool = True) -> None:
        """Steps until a signal, `stop()` or `until()`; then `on_exit` and `close`."""
        with signals_handled(self.signals if install_signals else {}):
            try:
                while not self._stop.is_set():
                    self.run_once()
                    if until is not None and until():
                        break
                if self.on_exit is not None:
                    self.on_exit()
            finally:
                if self.close is not None:
                    self.close()


@dataclass
class ReadProgress:
    """How far a `read_to_end` got: offsets to read and read (summed over partitions), records seen."""

    partitions: list[tuple[str, int]] = field(default_factory=list)
    to_read: int = 0
    read: int = 0
    records: int = 0


def warn_unreadable(msg: Any, exc: DecodeError) -> None:  # a kafka ConsumerRecord (kafka-python has no types)
    """The `on_error` of readers that say so: a record they cannot decode is logged and skipped
    (dead-lettering it is the job of the consumer group that reads the topic for work)."""
    log.warning("unreadable record at %s[%d]@%d: %s", msg.topic, msg.partition, msg.offset, exc)


class TopicReader:
    """A consumer outside any group, assigned to `topics` (full names) from their beginning.

    `partitions` keeps only those partition numbers. A topic that does not exist is a
    RuntimeError when `require`, else it has no partitions here. `overrides` are consumer
    options (`name` goes into the client id). Not thread-safe: one thread reads.
    """

    def __init__(
        self,
        settings: Settings,
        topics: Iterable[str],
        *,
        partitions: Iterable[int] | None = None,
        require: bool = True,
        name: str = "reader",
        **overrides,
    ):
        self.settings = settings
        self.topics = list(topics)
        self.consumer = KafkaConsumer(
            **consumer_config(
                settings, **{"enable_auto_commit": False, "client_id": f"{settings.client_id}-{name}", **overrides}
            )
        )
        wanted = None if partitions is None else set(partitions)
        self.tps: list[TopicPartition] = []
        try:
            for topic in self.topics:
                parts = self.consumer.partitions_for_topic(topic)
                if not parts and require:
                    raise RuntimeError(f"topic {topic} does not exist: run `fleetmedic topics create`")
                self.tps += [TopicPartition(topic, p) for p in sorted(parts or ()) if wanted is None or p in wanted]
            if self.tps:
                self.consumer.assign(self.tps)
                self.consumer.seek_to_beginning(*self.tps)
        except BaseException:
            self.consumer.close()
            raise
        self.progress = ReadProgress()

    def seek(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Read these partitions from these offsets next."""
        for tp, offset in offsets.items():
            self.consumer.seek(tp, offset)

    def end_offsets(self) -> dict[TopicPartition, int]:
        """Each partition's end now: its last stable offset (read committed)."""
        return self.consumer.end_offsets(self.tps) if self.tps else {}

    def poll(self, timeout_ms: int = 0, max_records: int = 10_000) -> list:
        """What arrived since the last call (Kafka records, in offset order within a partition)."""
        if not self.tps:
            return []
        return [m for msgs in self.consumer.poll(timeout_ms=timeout_ms, max_records=max_records).values() for m in msgs]

    def read_to_end(
        self,
        *,
        timeout_s: float | None = 60.0,
        ends: Mapping[TopicPartition, int] | None = None,
        max_records: int = 10_000,
        progress: ReadProgress | None = None,
    ) -> Iterator[list]:
        """Batches of the records from the current positions up to `ends` (exclusive; default:
        the end offsets when called), so it ends even while writers go on.

        Afterwards each partition's position is its end, and `poll()` follows on from there
        with nothing skipped. `progress` (given, or a new one, also `self.progress`) shows how far
        it got. It raises TimeoutError after `timeout_s` (None: no limit); what it yielded
        before stays read.
        """
        ends = dict(ends) if ends is not None else self.end_offsets()
        begin = {tp: self.consumer.position(tp) for tp in ends}
        self.progress = progress = progress if progress is not None else ReadProgress()
        progress.partitions = sorted((tp.topic, tp.partition) for tp in ends)
        progress.to_read = sum(max(0, ends[tp] - begin[tp]) for tp in ends)
        progress.read = progress.records = 0
        todo = {tp for tp in ends if begin[tp] < ends[tp]}
        paused = set(self.tps) - todo  # nothing to read there: not fetched meanwhile
        if paused:
            self.consumer.pause(*paused)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        try:
            while todo:
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(
                        f"could not read {', '.join(self.topics)} to the end in {timeout_s:g}s "
                        f"(read {progress.read} of {progress.to_read} offsets)"
                    )
                batch = []
                for tp, msgs in self.consumer.poll(timeout_ms=200, max_records=max_records).items():
                    kept = [m for m in msgs if m.offset < ends[tp]]  # only partitions in `ends` are fetched
                    batch += kept
                    if len(kept) < len(msgs):
                        self.consumer.seek(tp, ends[tp])  # the rest is for poll(), later
                progress.records += len(batch)
                for tp in list(todo):
                    if self.consumer.position(tp) >= ends[tp]:
                        todo.discard(tp)
                        self.consumer.pause(tp)  # stays at its end while the others catch up
                        paused.add(tp)
                progress.read = sum(
                    min(self.consumer.position(tp), ends[tp]) - begin[tp] for tp in ends if ends[tp] > begin[tp]
                )
                if batch:
                    yield batch
        finally:
            if paused:
                self.consumer.resume(*paused)

    def records(
        self,
        batch: Iterable,
        model: type[Contract] | Mapping[str, type[Contract]],
        on_error: Callable[[object, DecodeError], None] | None = None,
    ) -> list[Received]:
        """`batch` decoded by `model` (or by its topic's model). A tombstone (no value) is a
        deletion and skipped; a record that does not decode goes to `on_error` (default: skipped)."""
        out = []
        for msg in batch:
            if msg.value is None:
                continue
            try:
                record = decode(
                    model if isinstance(model, type) else model[msg.topic], msg.value, self.settings.max_record_bytes
                )
            except DecodeError as exc:
                if on_error is not None:
                    on_error(msg, exc)
                continue
            out.append(Received(record, msg.topic, msg.partition, msg.offset, msg.timestamp, msg.key))
        return out

    def close(self) -> None:
        self.consumer.close(autocommit=False)

    def __enter__(self) -> TopicReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
