"""The Kafka plumbing every stage uses: the one consumer loop (its producer: fleetmedic/producer.py), written once.

The producer (acks=all, idempotent, compressed, keyed by host so a host's records stay in order)
is `fleetmedic.producer`.

Consumer loop (at-least-once in): poll a batch → decode and validate each record (failures go
to the dead-letter topic with their reason and original bytes, as do records the handler keeps
failing on: `fleetmedic.deadletter`) → hand the valid ones to the stage's `handle` → produce
what it returns → flush → commit the batch's offsets (partitions changing hands in between:
`fleetmedic.handoff`). `run` is a `fleetmedic.lifecycle.ServiceLoop`: SIGTERM and SIGINT let
the batch in hand finish, commit, and return. A crash anywhere before the commit means the batch
is read again on restart: nothing is lost, a duplicate is possible.

With a `transactional_id` the loop is exactly-once instead: the batch's results, dead letters
and consumed offsets go out in one Kafka transaction (`send_offsets_to_transaction`), so either
all of them are visible to `read_committed` readers or none is, and a crash before the commit
aborts the lot (the batch is read again, and what it produced the first time is never seen).
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import CommitFailedError, KafkaError
from pydantic import BaseModel

from .config import Settings
from .deadletter import decode_batch, handle_isolated
from .handoff import PartitionHandoff, PartitionsHook, RebalanceListener
from .producer import Outgoing, Producer
from .schemas import Contract
from .topics import topic_name

if TYPE_CHECKING:
    from .lifecycle import ServiceLoop

log = logging.getLogger(__name__)
# Any pydantic model: fleetmedic's contracts, and foreign records a bridge reads (ECS from shippers).
C = TypeVar("C", bound=BaseModel)


@dataclass(frozen=True)
class Received(Generic[C]):
    """A decoded record and where it came from."""

    record: C
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None


@dataclass
class LoopStats:
    batches: int = 0
    consumed: int = 0
    dead_lettered: int = 0
    produced: int = 0
    handler_errors: int = 0  # handler calls that raised (each retry counts)
    aborted: int = 0  # transactions aborted (their batch was read again)
    restored: int = 0  # partitions whose state was restored before they were processed
    restore_failures: int = 0  # restore attempts that raised (retried)
    committed: dict[tuple[str, int], int] = field(default_factory=dict)
    dead_letters_by_kind: dict[str, int] = field(default_factory=dict)


Handler = Callable[[list[Received]], Iterable[Contract | Outgoing]]


def consumer_config(settings: Settings, **overrides: Any) -> dict:
    """Options of every KafkaConsumer: connection, and `read_committed`, so that records of an
    aborted or still-open transaction are never read (and the end of a partition is its last
    stable offset). Used by the loop and by every reader of a topic."""
    return {**settings.kafka_kwargs(), "isolation_level": "read_committed", **overrides}


class ConsumerLoop:
    """Poll → decode (bad records to dead letters) → handle → produce → flush → commit.

    `inputs` maps topic names (without the prefix) to the contract their records must satisfy.
    `handle` receives the batch's valid records in offset order per partition and returns the
    records to produce. `on_assign`, `on_revoke`, `on_restore` and `on_lost` are partition hooks
    (`fleetmedic.handoff`: `on_restore` holds newly assigned partitions paused until it brought
    their state back; `restoring` says which are held). `after_flush` runs after the results
    are acknowledged and just before the commit (tests use it to crash at the worst moment).

    `transactional_id`: results, dead letters and offsets of a batch are committed in one
    transaction (exactly-once; see the module docstring). If the commit fails, the transaction
    is aborted, `on_lost` runs for the assigned partitions (drop in-memory state that covers
    the aborted batch, without saving it), the consumer goes back to the committed offsets and
    `on_assign` runs again (restore), so the batch is processed once more from saved state.
    `transaction_timeout_ms` bounds how long a crashed member's open transaction holds back
    read_committed readers before the broker aborts it.

    `handler_retries`: how many more times a record is handed over alone after the handler
    raised on it, before it is dead-lettered with the handler's reason (`fleetmedic.deadletter`).

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
        inputs: dict[str, type[BaseModel]],
        handle: Handler,
        producer: Producer | None = None,
        on_assign: PartitionsHook | None = None,
        on_revoke: PartitionsHook | None = None,
        after_flush: Callable[[LoopStats], None] | None = None,
        max_records: int = 5000,
        poll_timeout_ms: int = 200,
        handler_retries: int = 2,
        transactional_id: str | None = None,
        transaction_timeout_ms: int = 15_000,
        on_lost: PartitionsHook | None = None,
        on_restore: PartitionsHook | None = None,
        restore_backoff_s: float = 0.5,
        **consumer_overrides,
    ):
        self.settings = settings
        self.group_id = group_id
        self.models = {topic_name(settings, name): model for name, model in inputs.items()}
        self.handle = handle
        self.after_flush = after_flush
        self.max_records = max_records
        self.poll_timeout_ms = poll_timeout_ms
        self.handler_retries = handler_retries
        self.stats = LoopStats()
        # Called with the loop after every cycle, on its thread (fleetmedic.metrics.watch_loop).
        self.observers: list[Callable[[ConsumerLoop], None]] = []
        self._stop = threading.Event()
        self._own_producer = producer is None
        if producer is None and transactional_id is not None:
            producer = Producer(
                settings, transactional_id=transactional_id, transaction_timeout_ms=transaction_timeout_ms
            )
        self.producer = producer or Producer(settings)
        self.transactional = self.producer.transactional
        config = dict(
            group_id=group_id,
            client_id=f"{settings.client_id}-{group_id}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=max_records,
            fetch_max_bytes=64 * 1024 * 1024,
            max_partition_fetch_bytes=max(settings.max_record_bytes * 2, 1_048_576),
        )
        config.update(consumer_config(settings))
        config.update(consumer_overrides)
        self.consumer = KafkaConsumer(**config)
        self.handoff = PartitionHandoff(
            self.consumer,
            self.stats,
            on_assign=on_assign,
            on_revoke=on_revoke,
            on_lost=on_lost,
            on_restore=on_restore,
            restore_backoff_s=restore_backoff_s,
        )
        self.consumer.subscribe(list(self.models), listener=RebalanceListener(self.handoff))

    @property
    def restoring(self) -> set[TopicPartition]:
        """Assigned partitions held paused until their state is restored."""
        return self.handoff.restoring

    def stop(self) -> None:
        """Ask the loop to finish the batch in hand, commit, and return (thread- and signal-safe)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run_once(self) -> int:
        """One poll-process-commit cycle; returns the number of records consumed."""
        if self.handoff.restoring:
            self.handoff.restore_pending()
        polled = self.consumer.poll(timeout_ms=self.poll_timeout_ms, max_records=self.max_records)
        if not polled:
            self._observe()
            return 0
        decoded, offsets, letters = decode_batch(
            polled, self.models, self.settings.max_record_bytes, self.group_id, self.stats
        )
        raw = {(msg.topic, msg.partition, msg.offset): msg for _, msg in decoded}
        valid = [Received(rec, msg.topic, msg.partition, msg.offset, msg.timestamp, msg.key) for rec, msg in decoded]
        results, failed = handle_isolated(
            self.handle, valid, raw, retries=self.handler_retries, group=self.group_id, stats=self.stats
        )
        letters.extend(failed)
        if self.transactional:
            self.producer.begin()
        consumed = sum(len(m) for m in polled.values())
        try:
            for letter in letters:
                self.producer.send(letter)
            for out in results:
                if isinstance(out, Outgoing):
                    self.producer.send_raw(out.topic, out.value, out.key, partition=out.partition)
                else:
                    self.producer.send(out)
            self.producer.flush()  # inside the transaction: written, visible only after the commit
            self.stats.batches += 1
            self.stats.consumed += consumed
            self.stats.dead_lettered += len(letters)
            self.stats.produced += len(results)
            if self.after_flush:
                self.after_flush(self.stats)
            if self.transactional:
                self.producer.commit(offsets, self.group_id)
            else:
                self.consumer.commit(offsets)
        except CommitFailedError as exc:
            if self.transactional:
                raise
            # The group rebalanced under us (e.g. a session expired while the batch ran): the
            # partitions' new owner reads the batch again (at least once); this member goes on.
            log.warning("commit failed (%s): the batch's partitions moved; their new owner reads it again", exc)
            return 0
        except KafkaError as exc:
            if not self.transactional:
                raise
            # Not consumed after all: the batch is read again from the committed offsets.
            self.stats.batches -= 1
            self.stats.consumed -= consumed
            self.stats.dead_lettered -= len(letters)
            self.stats.produced -= len(results)
            self._aborted(exc)
            return 0
        for tp, om in offsets.items():
            self.stats.committed[(tp.topic, tp.partition)] = om.offset
        self._observe()
        return consumed

    def _aborted(self, exc: BaseException) -> None:
        """The batch's transaction failed: abort it and go back to the last committed state."""
        log.error(
            "transaction failed (%s: %s): aborting, re-reading from the committed offsets", type(exc).__name__, exc
        )
        self.stats.aborted += 1
        try:
            self.producer.abort()
        except KafkaError as again:
            if not self._own_producer:
                # A fenced or fatally failed producer cannot abort; the broker aborts on timeout.
                raise RuntimeError(f"transaction failed ({exc}) and could not be aborted ({again})") from exc
            # E.g. a commit that timed out (its outcome unknown): a new producer with the same id
            # settles it; the committed offsets read below then say whether it committed.
            log.error(
                "the transaction could not be aborted (%s: %s): renewing the producer", type(again).__name__, again
            )
            self.producer.renew()
        self.handoff.rewind()

    def produce_now(self, outgoing: Iterable[Contract | Outgoing]) -> int:
        """Produce records outside a batch (checkpoints, timers), durably: its own transaction
        when transactional (between batches nothing else is open), else a flush."""
        items = [
            o if isinstance(o, Outgoing) else Outgoing(self.producer.topic(o.topic), o.to_bytes(), o.key())
            for o in outgoing
        ]
        return self.producer.produce_atomically(items)

    def _observe(self) -> None:
        for observer in self.observers:
            try:
                observer(self)
            except Exception:  # metrics must never stop the loop
                log.exception("loop observer failed")

    def service_loop(self, **hooks: Any) -> ServiceLoop:
        """This loop's `run_once` as the step of a `fleetmedic.lifecycle.ServiceLoop` that shares
        its stop flag (`stop()` and SIGTERM/SIGINT end it); `hooks` are the ServiceLoop's."""
        from .lifecycle import ServiceLoop  # lifecycle's readers import this module

        return ServiceLoop(self.run_once, stop_event=self._stop, **hooks)

    def run(self, *, until: Callable[[LoopStats], bool] | None = None, install_signals: bool = True) -> LoopStats:
        """Loop until SIGTERM/SIGINT, `stop()`, or `until(stats)` is true; then close cleanly."""
        self.service_loop(close=self.close).run(
            until=until and (lambda: until(self.stats)), install_signals=install_signals
        )
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


def wait_until(
    condition: Callable[[], bool], timeout_s: float, interval_s: float = 0.1, what: str = "condition"
) -> None:
    """Poll `condition` until it holds; TimeoutError naming `what` otherwise."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(interval_s)
