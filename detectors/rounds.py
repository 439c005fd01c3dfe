"""Round processing: a batch of metric and log records in, the incident records they cause out.

Within a batch, the k-th record of each host goes into round k; a round is one vector of
(slot, value, time) and every rule processes it with a few numpy operations. Processing is
therefore the same as one record at a time in offset order, whatever the batch boundaries are.
The messy-stream rules this applies (event time only, gaps, late and stale values, counters,
caps) are listed in detectors/engine.py.

`RoundProcessing` is one part of `detectors.engine.Engine`, which builds the attributes declared
here; the log rules, the fault rule and the isolation forests see each record on the way.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from fleetmedic.schemas import Incident, LogEvent
from fleetmedic.transport import Received

from . import eventtime
from .fault_rule import FaultRule
from .gpu_identity import series_gpu
from .incidents import make_incident, source
from .log_rules import LogRules
from .scorer import PartitionRule
from .series_rule import SeriesRule
from .series_table import HostState, SeriesTable

if TYPE_CHECKING:
    from .engine import EngineStats


@dataclass
class _Row:
    host: HostState
    item: Received
    t: float
    emit: bool
    slots: np.ndarray
    is_counter: np.ndarray
    values: np.ndarray


class RoundProcessing(SeriesTable):
    """`process`: records in offset order → incidents, round by round over the series table."""

    stats: EngineStats
    positions: dict[tuple[str, int], int]  # (topic, partition) → next offset processed
    replay_until: dict[tuple[str, int], int]  # outputs below these offsets were produced already
    skip_below: dict[str, dict[tuple[str, int], int]]  # host → offsets its restored state covers
    dirty: set[str]
    out_of_skew: list[tuple[Received, float]]  # (record, event time) to dead-letter; taken by the service
    logs: LogRules | None
    fault: FaultRule | None
    forests: PartitionRule | None

    def process(self, batch: list[Received]) -> list[Incident]:
        """Records in offset order → the incident records they cause (open, update, resolve)."""
        out: list[tuple[tuple, Incident]] = []
        rounds: dict[int, list[_Row]] = defaultdict(list)
        rank: dict[str, int] = defaultdict(int)
        tolerance = self.config.late_tolerance_s
        for item in batch:
            record = item.record
            tp = (item.topic, item.partition)
            if item.offset + 1 > self.positions.get(tp, 0):
                self.positions[tp] = item.offset + 1
            emit = item.offset >= self.replay_until.get(tp, -1)
            if eventtime.out_of_skew(item, record.time.timestamp(), self.config.max_future_skew_s):
                self.stats.future_dead_lettered += 1
                if emit:  # below replay_until its dead letter went out before the commit
                    self.out_of_skew.append((item, record.time.timestamp()))
                continue
            values = None
            if self.forests is not None and not isinstance(record, LogEvent):
                # before the host's skip: a forest's checkpoint covers its own offsets
                values = _values_array(record.values)  # shared with the row below
                hs_known = self.hosts.get(record.host)
                self.forests.offer(item, record, values, hs_known.labels if hs_known else None, emit)
            skip = self.skip_below.get(record.host)
            if skip and item.offset < skip.get(tp, -1):
                self.stats.skipped_restored += 1  # already inside the restored state
                continue
            if record.host not in self.hosts and len(self.hosts) >= self.config.max_hosts:
                self.stats.hosts_over_cap += 1
                continue
            hs = self.host(record.host)
            hs.tps.add(tp)
            self.dirty.add(record.host)
            self.stats.records += 1
            t = record.time.timestamp()
            if isinstance(record, LogEvent):
                if t < hs.log_max_time - tolerance:
                    self.stats.dropped_late += 1
                elif self.logs or self.fault:
                    hs.log_max_time = max(hs.log_max_time, t)
                    if self.fault:
                        self.fault.observe(record)
                    if self.logs:
                        self._emit(out, self.logs.process(record, item.topic, item.partition, item.offset), item, emit)
                continue
            if t < hs.max_time - tolerance:
                self.stats.dropped_late += 1
                continue
            if t > hs.max_time:
                hs.max_time = t
            if record.labels and record.labels != hs.labels:
                hs.labels = dict(record.labels)
            if self.fault:
                self._emit(out, self.fault.step(hs, record, item, t), item, emit)
            slots, is_counter, keep = self._layout(hs, record)
            if values is None:
                values = _values_array(record.values)
            if keep is not None:
                self.stats.series_over_cap += len(keep) - int(keep.sum())
                values = values[keep]
            row = _Row(hs, item, t, emit, slots, is_counter, values)
            rounds[rank[record.host]].append(row)
            rank[record.host] += 1
        for k in range(len(rounds)):
            self._round(rounds[k], out)
        if self.forests is not None:
            for item, emit, incident in self.forests.flush():
                self._emit(out, [incident], item, emit)
        # In input order (per source partition), so batch boundaries do not change the output order.
        out.sort(key=lambda pair: pair[0])
        return [incident for _, incident in out]

    def _emit(self, out: list, incidents: list, item: Received, emit: bool) -> None:
        if emit:
            key = (item.topic, item.partition, item.offset)
            out.extend((key, incident) for incident in incidents)
            self.stats.incidents += len(incidents)
        else:
            self.stats.suppressed += len(incidents)

    def _round(self, rows: list[_Row], out: list) -> None:
        lengths = np.fromiter((len(r.slots) for r in rows), np.int64, len(rows))
        slots = np.concatenate([r.slots for r in rows])
        values = np.concatenate([r.values for r in rows])
        is_counter = np.concatenate([r.is_counter for r in rows])
        row_of = np.repeat(np.arange(len(rows)), lengths)
        times = np.repeat(np.fromiter((r.t for r in rows), np.float64, len(rows)), lengths)
        offsets = np.repeat(np.fromiter((r.item.offset for r in rows), np.int64, len(rows)), lengths)
        self.stats.values += len(values)

        present = ~np.isnan(values)
        last = self.last_time[slots]
        fresh = times > last
        self.stats.null_values += int((~present).sum())
        self.stats.stale_values += int((present & ~fresh).sum())
        use = present & fresh
        if is_counter.any():
            c = use & is_counter
            prev = self.prev_value[slots[c]]
            dt = times[c] - last[c]
            raw = values[c]
            reset = raw < prev
            self.stats.counter_resets += int(reset.sum())
            with np.errstate(invalid="ignore", divide="ignore"):
                rate = np.where(reset, raw, raw - prev) / dt
            self.prev_value[slots[c]] = raw
            values = values.copy()
            values[c] = rate  # NaN for a counter's first sample (no rate yet): a gap
            use &= ~np.isnan(values)
        self.last_time[slots[present & fresh]] = times[present & fresh]
        if not use.all():
            slots, values, times, offsets, row_of = slots[use], values[use], times[use], offsets[use], row_of[use]
        for i, rule in enumerate(self.rules):
            local = self.rule_local[i][slots]
            mine = local >= 0
            if not mine.any():
                continue
            rule_slots = local[mine]
            rule_values, rule_times = values[mine], times[mine]
            rule_offsets, rule_rows = offsets[mine], row_of[mine]
            score, breach, clear = rule.scorer.update(rule_slots, rule_values, rule_times)
            opened, resolved, since = rule.lifecycle.step(rule_slots, rule_times, breach, clear, rule_offsets)
            for j in opened:
                row = rows[rule_rows[j]]
                self._emit(
                    out,
                    [
                        self._series_incident(
                            rule,
                            int(rule_slots[j]),
                            row,
                            "open",
                            float(rule_times[j]),
                            float(rule_times[j]),
                            float(rule_values[j]),
                            float(score[j]),
                        )
                    ],
                    row.item,
                    row.emit,
                )
            for j, opened_at in zip(resolved, since, strict=True):
                row = rows[rule_rows[j]]
                self._emit(
                    out,
                    [
                        self._series_incident(
                            rule,
                            int(rule_slots[j]),
                            row,
                            "resolve",
                            float(rule_times[j]),
                            float(opened_at),
                            float(rule_values[j]),
                            float(score[j]),
                        )
                    ],
                    row.item,
                    row.emit,
                )

    def _series_incident(
        self,
        rule: SeriesRule,
        local: int,
        row: _Row,
        status: str,
        t: float,
        opened_at: float,
        value: float,
        score: float,
    ) -> Incident:
        g = int(self.rule_global[self.rules.index(rule)][local])
        name = self.slot_name[g]
        lc = rule.lifecycle
        item = row.item
        first = int(lc.pending_offset[local]) if status == "open" else item.offset
        window_start = float(lc.pending_since[local]) if status == "open" else opened_at
        cfg = rule.cfg
        verb = "breached" if status == "open" else "back to normal"
        return make_incident(
            host=row.host.host,
            kind=cfg.incident_kind,
            subject=name,
            status=status,
            severity=cfg.severity,
            detector=rule.detector,
            time=t,
            opened_at=opened_at,
            score=score,
            threshold=rule.threshold,
            action_class=cfg.action_class,
            labels=row.host.labels,
            summary=f"{cfg.name}: {name} {verb} (value {value:.6g}, score {score:.4g}, threshold {rule.threshold:g})",
            series=[name],
            values=[value],
            window_start=window_start,
            sources=[source(item.topic, item.partition, first, item.offset)],
            details={
                **rule.scorer.details(local),
                "for_s": cfg.for_s,
                "resolve_after_s": cfg.resolve_after_s,
                **series_gpu(name, row.host.labels),
            },
        )


def _values_array(values: dict) -> np.ndarray:
    """A record's values as float64, null → NaN (a gap).

    `np.fromiter` is about a third faster than `np.array(list(...))` per record but refuses
    None, so a record with nulls takes the slower path.
    """
    try:
        return np.fromiter(values.values(), np.float64, len(values))
    except TypeError:
        return np.array(list(values.values()), dtype=np.float64)
