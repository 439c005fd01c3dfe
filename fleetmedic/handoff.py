"""Partitions changing hands in a rebalance: the consumer loop's partition hooks, and the state
hand-off that holds newly assigned partitions paused until their state is restored.

`on_assign` / `on_revoke` run inside the rebalance, between batches, when nothing is
uncommitted. `on_restore`: newly assigned partitions are paused inside the rebalance; before the
next poll the loop calls `on_restore(partitions)` in its own thread, and resumes them only once it
returned. If it raises, the partitions stay paused (never processed cold), the error is logged,
and it is tried again after a backoff (`restore_backoff_s`, doubling up to 30 s); `restoring` and
`stats.restore_failures` show where it stands. `on_lost` runs for the assigned partitions when a
batch's transaction was aborted (`rewind`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition

if TYPE_CHECKING:
    from .transport import LoopStats

log = logging.getLogger("fleetmedic.transport")  # the loop's logger: its hand-off is part of it

PartitionsHook = Callable[[set[TopicPartition]], None]


class RebalanceListener(ConsumerRebalanceListener):
    """Routes rebalance callbacks to the hand-off (kafka-python swallows what a callback raises)."""

    def __init__(self, handoff: PartitionHandoff):
        self.handoff = handoff

    def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        self.handoff.revoked(set(revoked))

    def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        self.handoff.assigned(set(assigned))


class PartitionHandoff:
    """A consumer's partition hooks, and its partitions held for restore (see the module docstring)."""

    def __init__(
        self,
        consumer: KafkaConsumer,
        stats: LoopStats,
        *,
        on_assign: PartitionsHook | None = None,
        on_revoke: PartitionsHook | None = None,
        on_lost: PartitionsHook | None = None,
        on_restore: PartitionsHook | None = None,
        restore_backoff_s: float = 0.5,
    ):
        self.consumer = consumer
        self.stats = stats
        self.on_assign, self.on_revoke, self.on_lost, self.on_restore = on_assign, on_revoke, on_lost, on_restore
        self.restoring: set[TopicPartition] = set()  # assigned, paused until their state is restored
        self.restore_backoff_s = restore_backoff_s
        self._restore_failures_in_row = 0
        self._restore_next = 0.0

    def assigned(self, tps: set[TopicPartition]) -> None:
        """`tps` were assigned: hold them for restore (when there is `on_restore`), run `on_assign`."""
        if self.on_restore is not None and tps:
            self.consumer.pause(*tps)
            self.restoring |= tps
            self._restore_next = 0.0
        if self.on_assign:
            try:
                self.on_assign(tps)
            except Exception:  # noqa: BLE001 - kafka-python would swallow it: say it loudly
                log.exception("on_assign hook failed for %s", sorted(map(tuple, tps)))

    def revoked(self, tps: set[TopicPartition]) -> None:
        """`tps` were revoked: they are no longer held for restore; run `on_revoke`."""
        self.restoring -= tps
        if self.on_revoke:
            try:
                self.on_revoke(tps)
            except Exception:  # noqa: BLE001
                log.exception("on_revoke hook failed for %s", sorted(map(tuple, tps)))

    def restore_pending(self) -> None:
        """Restore the paused partitions' state; resume them only when that succeeded."""
        pending = self.restoring & set(self.consumer.assignment())
        self.restoring = set(pending)  # a copy: `restoring` shrinks below, `pending` must not
        hook = self.on_restore  # never None here: partitions are held for restore only when it is set
        if hook is None or not pending or time.monotonic() < self._restore_next:
            return
        try:
            hook(set(pending))
        except Exception as exc:  # noqa: BLE001 - retried; the partitions stay paused meanwhile
            self.stats.restore_failures += 1
            self._restore_failures_in_row += 1
            delay = min(self.restore_backoff_s * 2 ** (self._restore_failures_in_row - 1), 30.0)
            self._restore_next = time.monotonic() + delay
            log.error(
                "restoring the state of %s failed (%s: %s, attempt %d): they stay paused; retrying in %.1fs",
                sorted(map(tuple, pending)),
                type(exc).__name__,
                exc,
                self._restore_failures_in_row,
                delay,
            )
            return
        self._restore_failures_in_row = 0
        self.consumer.resume(*pending)
        self.restoring -= pending
        self.stats.restored += len(pending)

    def rewind(self) -> None:
        """After an aborted transaction: `on_lost` for the assigned partitions, back to their
        committed offsets, and as if newly assigned (restored, paused, before processing)."""
        assigned = set(self.consumer.assignment())
        if self.on_lost:
            self.on_lost(assigned)
        for tp in assigned:
            committed = self.consumer.committed(tp)
            if committed is None:
                self.consumer.seek_to_beginning(tp)
            else:
                self.consumer.seek(tp, committed)
        self.assigned(assigned)  # as if newly assigned: restore (paused) before processing
