"""The Kafka plumbing every stage uses: one producer and one consumer loop, written once.

Producer: acks=all, idempotent, compressed, keyed by host so a host's records stay in order.

Consumer loop (at-least-once in): poll a batch → decode and validate each record (failures go
to the dead-letter topic with their reason and original bytes) → hand the valid ones to the
stage's `handle` → produce what it returns → flush → commit the batch's offsets. SIGTERM and
SIGINT let the batch in hand finish, commit, and return. A crash anywhere before the commit
means the batch is read again on restart: nothing is lost, a duplicate is possible.
"""

from __future__ import annotations

import gc
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaTimeoutError
from kafka.structs import OffsetAndMetadata
from pydantic import ValidationError

from .config import Settings
from .schemas import Contract, DeadLetter, DeadLetterKind
from .topics import topic_name

log = logging.getLogger(__name__)
C = TypeVar("C", bound=Contract)

# Bytes of an undecodable record kept inline in its dead letter; the full record stays in its
# source topic at the recorded offset, and its size and sha256 are in the dead letter.
DEAD_LETTER_KEEP_BYTES = 256 * 1024


class DecodeError(ValueError):
    def __init__(self, kind: DeadLetterKind, message: str):
        super().__init__(message)
        self.kind = kind


def decode(model: type[C], value: bytes | None, max_bytes: int) -> C:
    """Bytes → validated contract, or DecodeError saying which rule failed and why."""
    if value is None or len(value) == 0:
        raise DecodeError("not_json", "empty record (no value)")
    if len(value) > max_bytes:
        raise DecodeError("oversized", f"record of {len(value)} bytes exceeds max_record_bytes={max_bytes}")
    try:
        return model.model_validate_json(value)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        for err in errors:
            if err["type"] == "json_invalid":
                raise DecodeError("not_json", f"not valid UTF-8 JSON: {err['msg']}") from None
            if tuple(err["loc"]) == ("schema_version",):
                raise DecodeError(
                    "schema_version",
                    f"schema_version {err.get('input')!r} is not supported by {model.__name__} "
                    f"(this consumer reads {model.model_fields['schema_version'].default})",
                ) from None
        detail = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(record)'}: {e['msg']}" for e in errors[:20])
        raise DecodeError("validation", f"{model.__name__}: {detail}") from None


@dataclass(frozen=True)
class Received(Generic[C]):
    """A decoded record and where it came from."""

    record: C
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None


@dataclass(frozen=True)
class Outgoing:
    """A record to produce: raw bytes to a full topic name (use `Producer.send` for contracts)."""

    topic: str
    value: bytes
    key: bytes | None = None


class Producer:
    """The one producer: acks=all, idempotence, compression, key = host."""

    def __init__(self, settings: Settings, **overrides):
        self.settings = settings
        config = dict(
            client_id=f"{settings.client_id}-producer",
            acks="all",
            enable_idempotence=True,
            compression_type="gzip",
            linger_ms=5,
            batch_size=256 * 1024,
            max_request_size=max(settings.max_record_bytes * 2, 1_048_576),
        )
        config.update(settings.kafka_kwargs())
        config.update(overrides)
        self._producer = KafkaProducer(**config)
        self._pending: list = []

    def topic(self, name: str) -> str:
        return topic_name(self.settings, name)

    def send(self, record: Contract, topic: str | None = None):
        """Send a contract to its topic (or `topic`, a name without the prefix), keyed by host."""
        return self.send_raw(self.topic(topic or record.topic), record.to_bytes(), record.key())

    def send_raw(self, topic: str, value: bytes, key: bytes | None = None, timestamp_ms: int | None = None):
        future = self._producer.send(topic, value=value, key=key, timestamp_ms=timestamp_ms)
        self._pending.append(future)
        return future

    def flush(self, timeout_s: float | None = 60.0) -> int:
        """Block until everything sent is acknowledged; raises the first delivery error."""
        self._producer.flush(timeout=timeout_s)
        pending, self._pending = self._pending, []
        for future in pending:
            future.get(timeout=0)  # raises the delivery error, if any
        return len(pending)

    def close(self, timeout_s: float = 30.0) -> None:
        """Flush (raising what could not be delivered), then close; the sender thread always stops."""
        try:
            self.flush(timeout_s)
        finally:
            try:
                self._producer.close(timeout=timeout_s)
            except KafkaTimeoutError:
                # kafka-python 2.3.3's close() flushes first and, with records it cannot deliver
                # (broker gone), raises before it stops its network thread or marks itself closed:
                # an exporter recreating its producer through an outage would leak one thread per
                # retry, and __del__ would raise again later. What was pending is abandoned on
                # purpose here (the caller spools it), so stop the thread without sending.
                sender = self._producer._sender
                if sender is not None:
                    sender.force_close()
                    sender.join(timeout_s)
                self._producer._closed = True

    def __enter__(self) -> "Producer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class LoopStats:
    batches: int = 0
    consumed: int = 0
    dead_lettered: int = 0
    produced: int = 0
    committed: dict[tuple[str, int], int] = field(default_factory=dict)
    dead_letters_by_kind: dict[str, int] = field(default_factory=dict)


Handler = Callable[[list[Received]], Iterable[Contract | Outgoing]]
PartitionsHook = Callable[[set[TopicPartition]], None]


class _Listener(ConsumerRebalanceListener):
    def __init__(self, on_assign: PartitionsHook | None, on_revoke: PartitionsHook | None):
        self.on_assign, self.on_revoke = on_assign, on_revoke

    def on_partitions_revoked(self, revoked):
        if self.on_revoke:
            self.on_revoke(set(revoked))

    def on_partitions_assigned(self, assigned):
        if self.on_assign:
            self.on_assign(set(assigned))


class ConsumerLoop:
    """Poll → decode (bad records to dead letters) → handle → produce → flush → commit.

    `inputs` maps topic names (without the prefix) to the contract their records must satisfy.
    `handle` receives the batch's valid records in offset order per partition and returns the
    records to produce. `on_assign` / `on_revoke` run inside the rebalance, between batches,
    when nothing is uncommitted. `after_flush` runs after the results are acknowledged and just
    before the commit (tests use it to crash at the worst moment).

    `max_records` bounds a batch. 5000 rather than 2000: a poll drains one partition's fetch
    before the next, so a small batch holds few hosts, and the detector's per-round numpy work
    (one round = the k-th record of every host in the batch) is then spread over few values
    (bench/detect_bench.py, docs/detectors.md). A batch of 5000 records of 100 values is about
    40 MB of decoded records while in hand.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        group_id: str,
        inputs: dict[str, type[Contract]],
        handle: Handler,
        producer: Producer | None = None,
        on_assign: PartitionsHook | None = None,
        on_revoke: PartitionsHook | None = None,
        after_flush: Callable[[LoopStats], None] | None = None,
        max_records: int = 5000,
        poll_timeout_ms: int = 200,
        **consumer_overrides,
    ):
        self.settings = settings
        self.group_id = group_id
        self.models = {topic_name(settings, name): model for name, model in inputs.items()}
        self.handle = handle
        self.after_flush = after_flush
        self.max_records = max_records
        self.poll_timeout_ms = poll_timeout_ms
        self.stats = LoopStats()
        # Called with the loop after every cycle, on its thread (fleetmedic.metrics.watch_loop).
        self.observers: list[Callable[["ConsumerLoop"], None]] = []
        self._stop = threading.Event()
        self._own_producer = producer is None
        self.producer = producer or Producer(settings)
        config = dict(
            group_id=group_id,
            client_id=f"{settings.client_id}-{group_id}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=max_records,
            fetch_max_bytes=64 * 1024 * 1024,
            max_partition_fetch_bytes=max(settings.max_record_bytes * 2, 1_048_576),
        )
        config.update(settings.kafka_kwargs())
        config.update(consumer_overrides)
        self.consumer = KafkaConsumer(**config)
        self.consumer.subscribe(list(self.models), listener=_Listener(on_assign, on_revoke))

    def stop(self) -> None:
        """Ask the loop to finish the batch in hand, commit, and return (thread- and signal-safe)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def _dead_letter(self, msg, kind: DeadLetterKind, error: str) -> DeadLetter:
        return DeadLetter.of(
            topic=msg.topic, partition=msg.partition, offset=msg.offset, timestamp_ms=msg.timestamp,
            key=msg.key, value=msg.value, group=self.group_id, kind=kind, error=error,
            keep_bytes=DEAD_LETTER_KEEP_BYTES,
        )

    def run_once(self) -> int:
        """One poll-process-commit cycle; returns the number of records consumed."""
        polled = self.consumer.poll(timeout_ms=self.poll_timeout_ms, max_records=self.max_records)
        if not polled:
            self._observe()
            return 0
        valid: list[Received] = []
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        dead = 0
        for tp, messages in polled.items():
            model = self.models[tp.topic]
            for msg in messages:
                try:
                    record = decode(model, msg.value, self.settings.max_record_bytes)
                except DecodeError as exc:
                    log.warning("dead letter %s[%d]@%d: %s: %s", msg.topic, msg.partition, msg.offset, exc.kind, exc)
                    self.producer.send(self._dead_letter(msg, exc.kind, str(exc)))
                    dead += 1
                    self.stats.dead_letters_by_kind[exc.kind] = self.stats.dead_letters_by_kind.get(exc.kind, 0) + 1
                    continue
                valid.append(Received(record, msg.topic, msg.partition, msg.offset, msg.timestamp, msg.key))
            offsets[tp] = OffsetAndMetadata(messages[-1].offset + 1, "", -1)
        produced = 0
        for out in self.handle(valid) if valid else ():
            if isinstance(out, Outgoing):
                self.producer.send_raw(out.topic, out.value, out.key)
            else:
                self.producer.send(out)
            produced += 1
        self.producer.flush()
        consumed = sum(len(m) for m in polled.values())
        self.stats.batches += 1
        self.stats.consumed += consumed
        self.stats.dead_lettered += dead
        self.stats.produced += produced
        if self.after_flush:
            self.after_flush(self.stats)
        self.consumer.commit(offsets)
        for tp, om in offsets.items():
            self.stats.committed[(tp.topic, tp.partition)] = om.offset
        self._observe()
        return consumed

    def _observe(self) -> None:
        for observer in self.observers:
            try:
                observer(self)
            except Exception:  # metrics must never stop the loop
                log.exception("loop observer failed")

    def run(self, *, until: Callable[[LoopStats], bool] | None = None, install_signals: bool = True) -> LoopStats:
        """Loop until SIGTERM/SIGINT, `stop()`, or `until(stats)` is true; then close cleanly."""
        previous = {}
        if install_signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                previous[sig] = signal.signal(sig, lambda *_: self._stop.set())
        try:
            while not self._stop.is_set():
                self.run_once()
                if until and until(self.stats):
                    break
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.close()
        return self.stats

    def close(self) -> None:
        try:
            if self._own_producer:
                self.producer.close()
        finally:
            self.consumer.close(autocommit=False)


def freeze_heap() -> None:
    """Exempt everything allocated so far (modules, configuration, clients) from garbage collection.

    Call once in a long-running consumer process, after start-up. A consumer allocates many
    short-lived containers per record, so collections run often, and each full collection would
    walk the whole start-up heap again: in the detector benchmark that walk was about 8 % of the
    time per record. Frozen objects are still freed by reference counting; only cycles among
    them are never collected, and start-up objects live as long as the process anyway.
    """
    gc.collect()
    gc.freeze()


def wait_until(condition: Callable[[], bool], timeout_s: float, interval_s: float = 0.1, what: str = "condition") -> None:
    """Poll `condition` until it holds; TimeoutError naming `what` otherwise."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(interval_s)
