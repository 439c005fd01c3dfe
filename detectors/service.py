"""The detection service: `fleetmedic detect` as a consumer-group member, with state checkpoint and restore.

`DetectService` runs a `detectors.engine.Engine` on `fleetmedic.transport.ConsumerLoop`: its
handler processes each batch and adds the snapshots due; its rebalance hooks checkpoint revoked
partitions, drop lost ones and restore assigned ones from the compacted state topic (reading
only the state partitions it needs); its `ServiceLoop` adds an idle checkpoint and one on exit.
"""

from __future__ import annotations

import logging
import time as wall
import uuid
from collections.abc import Callable
from typing import Any

from kafka import TopicPartition

from fleetmedic import metrics
from fleetmedic.config import Settings
from fleetmedic.lifecycle import ReadProgress, TopicReader
from fleetmedic.logfmt import incident_fields
from fleetmedic.producer import Outgoing
from fleetmedic.schemas import Contract, DetectorState, Incident, LogEvent, MetricBatch
from fleetmedic.topics import topic_name
from fleetmedic.transport import ConsumerLoop, Received

from . import eventtime
from .engine import STATE_DETECTOR, Engine, EngineStats

log = logging.getLogger(__name__)


class DetectService:
    """`fleetmedic detect`: the engine as a consumer-group member, with state checkpoint and restore.

    Checkpoint: every `checkpoint_interval_s` (wall clock, with a batch or when idle), on partition
    revocation and on a clean stop, each host changed since its last snapshot is written to the compacted state topic
    (key = group/host, so consumer groups keep separate state) together with the input offsets
    its state covers; the snapshots go out before the batch's offsets are committed.

    Exactly-once: each batch's incidents, the snapshots due and the input offsets are committed
    in one transaction, so a snapshot never lands without the incidents of the records it covers.

    Restore, at start and on every assignment, with the new partitions paused until it is done
    (`ConsumerLoop(on_restore=...)`; a failure is retried, never skipped): read the group's
    newest snapshot of each host of the assigned partitions from the state partitions numbered
    like them (snapshots are written there), load it, and seek each input partition back to the
    oldest offset a snapshot covers (or the committed offset, if older). Hosts silent for
    `forget_host_after_s` are dropped and their snapshots tombstoned, so they neither cost
    memory nor drag the seek back. Records a host's snapshot already covers
    are skipped; records between there and the committed offset are processed without emitting
    (their incidents were produced before the commit). So a restart neither re-warms nor re-raises.
    """

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        group_id: str = "detectors",
        *,
        restore_timeout_s: float = 60.0,
        **loop_kwargs: Any,
    ):
        self.settings = settings
        self.engine = engine
        self.group_id = group_id
        self._last_checkpoint = wall.monotonic()
        # Exactly-once: incidents, snapshots and offsets in one transaction per batch. The id is
        # unique per process; a crashed member's open transaction is aborted by the broker after
        # the loop's transaction timeout.
        loop_kwargs.setdefault("transactional_id", f"{settings.client_id}-{group_id}-{uuid.uuid4().hex[:12]}")
        self.loop = ConsumerLoop(
            settings,
            group_id=group_id,
            inputs={"metrics.v1": MetricBatch, "logs.v1": LogEvent},
            handle=self.handle,
            on_assign=self.on_assign,
            on_revoke=self.on_revoke,
            on_lost=self.on_lost,
            on_restore=self.on_restore,
            **loop_kwargs,
        )
        self.state_topic = topic_name(settings, DetectorState.topic)
        engine.state_name = f"{STATE_DETECTOR}:{group_id}"
        self.assigned: set[TopicPartition] = set()
        self._layout: bool | None = None
        self.restore_timeout_s = restore_timeout_s
        self.restore_progress = ReadProgress()  # of the last restore's read
        metrics.watch_loop(self.loop, "detect")

    def handle(self, batch: list[Received]) -> list[Contract | Outgoing]:
        out: list = self.engine.process(batch)
        metrics.values("detect", sum(len(r.record.values) for r in batch if isinstance(r.record, MetricBatch)))
        for inc in out:
            if not isinstance(inc, Incident):
                continue
            metrics.incident(inc)
            log.info(
                "incident %s %s: %s on %s: %s",
                inc.status,
                inc.id,
                inc.kind,
                inc.host,
                inc.summary,
                extra={**incident_fields(inc), "status": inc.status, "kind": inc.kind},
            )
        out.extend(
            eventtime.dead_letter(item, t, self.engine.config.max_future_skew_s, self.group_id)
            for item, t in self.engine.out_of_skew
        )
        self.engine.out_of_skew.clear()
        if wall.monotonic() - self._last_checkpoint >= self.engine.config.checkpoint_interval_s:
            # In the batch's transaction: the snapshots commit with the incidents and offsets.
            gone = self.engine.silent_hosts(self.engine.config.forget_host_after_s)
            for host in gone:
                self.engine.forget(host)
            if gone:
                self.engine.compact()
            out.extend(self._state_records(self.engine.take_dirty()))
            out.extend(
                Outgoing(self.state_topic, None, f"{self.group_id}/{h}".encode(), self._state_partition(p))
                for h, p in sorted(gone.items())
            )
            self._last_checkpoint = wall.monotonic()
            metrics.checkpoint("detect")
        return out

    def checkpoint(self, partitions: set[int] | None = None) -> int:
        states = self.engine.take_dirty(partitions)
        self.loop.produce_now(self._state_records(states))
        self._last_checkpoint = wall.monotonic()
        metrics.checkpoint("detect")
        return len(states)

    def _state_records(self, states: list[DetectorState]) -> list[Outgoing]:
        """The state records that fit the record limit. One that does not (a host past what
        `max_series_per_host` allows for) is not written, counted and logged: one checkpoint that
        cannot be sent must not fail all the others. That host restores from its previous snapshot."""
        out = []
        for s in states:
            o = self._state_record(s)
            size = len(o.value or b"")  # a state record always has a value; only tombstones have none
            if size > self.settings.max_record_bytes:
                self.engine.stats.snapshots_too_large += 1
                log.error(
                    "state of %s is %d bytes, over max_record_bytes=%d: not checkpointed",
                    s.host,
                    size,
                    self.settings.max_record_bytes,
                )
                continue
            out.append(o)
        return out

    def _state_record(self, state: DetectorState) -> Outgoing:
        # Keyed by group and host: groups never overwrite each other's state in compaction.
        return Outgoing(
            self.state_topic,
            state.to_bytes(),
            f"{self.group_id}/{state.host}".encode(),
            self._state_partition(self._partition_of(state)),
        )

    def on_revoke(self, revoked: set[TopicPartition]) -> None:
        if not revoked:
            return
        parts = {tp.partition for tp in revoked}
        self.checkpoint(parts)
        for host in [h for h, hs in self.engine.hosts.items() if any(p in parts for _, p in hs.tps)]:
            self.engine.forget(host)
        self.engine.forget_partitions({(tp.topic, tp.partition) for tp in revoked})
        self.engine.compact()
        self.assigned -= revoked

    def on_lost(self, lost: set[TopicPartition]) -> None:
        """A transaction was aborted: drop the state of these partitions unsaved (it covers records
        whose results were never committed); `on_assign` restores it from the snapshots."""
        parts = {tp.partition for tp in lost}
        for host in [h for h, hs in self.engine.hosts.items() if any(p in parts for _, p in hs.tps)]:
            self.engine.forget(host)
            self.engine.dirty.discard(host)
        self.engine.forget_partitions({(tp.topic, tp.partition) for tp in lost})
        self.assigned -= lost

    def on_assign(self, assigned: set[TopicPartition]) -> None:
        """Bookkeeping only: the loop pauses these partitions until `on_restore` has run."""
        self.assigned |= assigned

    def on_restore(self, assigned: set[TopicPartition]) -> None:
        """Load the snapshots of the hosts of these partitions, then seek where their state ends.

        Runs in the loop's thread with the partitions paused; raising leaves them paused and the
        loop tries again, so a partition is never processed without its state.
        """
        states, committed_offsets = self._read_states(assigned)
        gone = self._gone(states)
        for state in states.values():
            if state.host not in gone:
                self.engine.restore(state)
        self.tombstone(gone, {s.host: self._partition_of(s) for s in states.values()})
        consumer = self.loop.consumer
        for tp in sorted(assigned, key=lambda x: (x.topic, x.partition)):
            key = (tp.topic, tp.partition)
            committed = committed_offsets.get(tp)
            covered = [
                s.source_offsets[f"{tp.topic}:{tp.partition}"]
                for s in states.values()
                if s.host not in gone and f"{tp.topic}:{tp.partition}" in s.source_offsets
            ]
            if committed is not None:
                self.engine.replay_until[key] = committed
            start = min(covered) if covered else None
            if start is not None and (committed is None or start < committed):
                consumer.seek(tp, start)
        log.info(
            "restored %d host states for %s (%d tombstoned)",
            len(states) - len(gone),
            sorted(map(tuple, assigned)),
            len(gone),
        )

    def _gone(self, states: dict[str, DetectorState]) -> set[str]:
        """Hosts of these snapshots silent for `forget_host_after_s` behind the newest of their partition."""
        newest: dict[int | None, float] = {}
        for s in states.values():
            p = self._partition_of(s)
            newest[p] = max(newest.get(p, 0.0), s.time.timestamp())
        after = self.engine.config.forget_host_after_s
        return {
            s.host
            for s in states.values()
            if s.detector == self.engine.state_name and s.time.timestamp() < newest[self._partition_of(s)] - after
        }

    def tombstone(self, hosts: set[str], partitions: dict[str, int | None]) -> int:
        """Delete these hosts' snapshots from the compacted state topic (and forget them here)."""
        for host in hosts:
            self.engine.forget(host)
        return self.loop.produce_now(
            Outgoing(self.state_topic, None, f"{self.group_id}/{h}".encode(), self._state_partition(partitions.get(h)))
            for h in sorted(hosts)
        )

    def _partition_of(self, state: DetectorState) -> int | None:
        """The input partition a snapshot covers (a host's metrics and logs share one number)."""
        for key in state.source_offsets:
            return int(key.rpartition(":")[2])
        return None

    def _state_partition(self, partition: int | None) -> int | None:
        """A snapshot goes to the state partition numbered like its input partition, so a restore
        reads only the partitions it was assigned; with another partition count, by key."""
        return partition if partition is not None and self._same_layout else None

    @property
    def _same_layout(self) -> bool:
        if self._layout is None:
            c = self.loop.consumer
            metrics = topic_name(self.settings, MetricBatch.topic)
            logs = topic_name(self.settings, LogEvent.topic)
            counts = {len(c.partitions_for_topic(t) or ()) for t in (metrics, logs, self.state_topic)}
            self._layout = len(counts) == 1
        return self._layout

    def _read_states(self, inputs: set[TopicPartition]):
        """The group's newest state of each host of these input partitions, and its committed offsets.

        Reads only the state partitions numbered like `inputs` (all of them when the state topic
        has another partition count: snapshots written by key). `restore_progress` shows how far
        it got; it raises TimeoutError after `restore_timeout_s` (the loop retries).
        """
        committed = {tp: self.loop.consumer.committed(tp) for tp in inputs}
        wanted = {f"{tp.topic}:{tp.partition}" for tp in inputs}
        parts = {tp.partition for tp in inputs} if self._same_layout else None
        newest: dict[str, DetectorState] = {}

        def unreadable(msg: Any, exc: Exception) -> None:
            log.warning("unreadable state at %s:%d@%d: %s", msg.topic, msg.partition, msg.offset, exc)

        with TopicReader(self.settings, [self.state_topic], partitions=parts, require=False, name="state") as reader:
            for batch in reader.read_to_end(timeout_s=self.restore_timeout_s, progress=self.restore_progress):
                for item in reader.records(batch, DetectorState, on_error=unreadable):
                    s = item.record
                    if (
                        s.detector in (self.engine.state_name, self.engine.forest_state_name)
                        and wanted & s.source_offsets.keys()
                    ):
                        newest[s.host] = s
        return newest, committed

    def _idle_checkpoint(self) -> None:
        """Nothing came: do not leave the last batches' state unsaved past the interval."""
        if self.engine.dirty and wall.monotonic() - self._last_checkpoint >= self.engine.config.checkpoint_interval_s:
            self.checkpoint()

    def run(self, until: Callable[[DetectService], bool] | None = None, install_signals: bool = True) -> EngineStats:
        """Until SIGTERM/SIGINT, `loop.stop()` or `until(self)`; a clean stop checkpoints every host."""
        self.loop.service_loop(on_idle=self._idle_checkpoint, on_exit=self.checkpoint, close=self.loop.close).run(
            until=until and (lambda: until(self)), install_signals=install_signals
        )
        return self.engine.stats
