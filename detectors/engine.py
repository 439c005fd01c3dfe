"""The detection engine: metric batches and log events in, incident records out, by event time.

`Engine` is the Kafka-free core (feed it `Received` records, get incidents back); `DetectService`
runs it as a consumer-group member on `fleetmedic.transport.ConsumerLoop` with its state
checkpointed to the compacted state topic.

Hot path. Every (host, series name) gets a slot in a series table; a host's record layout (the
tuple of its series names) is resolved to a slot array once and cached, so a record costs one
dict lookup and one `np.array` of its values. Within a batch, the k-th record of each host goes
into round k; a round is one vector of (slot, value, time) and every rule processes it with a few
numpy operations. Processing is therefore the same as one record at a time in offset order,
whatever the batch boundaries are.

Messy streams (the documented rules):
- event time only: every decision uses record timestamps, never the wall clock;
- null values (and NaN) are gaps: the series' state is left untouched;
- a record older than its host's newest event time (on the same topic) by more than
  `late_tolerance_s` is dropped and counted (`dropped_late`); within the tolerance each value is used only if it is
  newer than its series' last value (older ones are counted as `stale_values`): per series, time only moves
  forward;
- counters (names in the record's `counters`) are turned into per-second rates between
  consecutive samples; a decrease is a counter reset (counted): the rate is taken from zero;
- a series that appears mid-stream gets its own fresh state and warms up on its own;
- a gap longer than `max_gap_s` restarts a pending `for` (it needs consecutive breaching values);
- isolation forests each follow one source partition, refit by event time and keep their own
  checkpoints and covered offsets (detectors/multivariate.py), so partition interleaving, batch
  boundaries and restarts do not change them;
- an XID burst resolves on the host's next log event after the quiet window (resolve time = last
  XID + window). Only log events decide it: metrics and logs are separate topics whose relative
  arrival order is not fixed, so letting metric time close a burst would make replays differ.
"""

from __future__ import annotations

import base64
import json
import logging
import time as wall
import uuid
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from kafka import TopicPartition

from fleetmedic import metrics
from fleetmedic.config import Settings
from fleetmedic.lifecycle import ReadProgress, TopicReader
from fleetmedic.logfmt import incident_fields
from fleetmedic.schemas import DetectorState, Incident, LogEvent, MetricBatch
from fleetmedic.topics import topic_name
from fleetmedic.transport import ConsumerLoop, Outgoing, Received

from . import eventtime, state_codec
from .alerting import Lifecycle, grown
from .config import DetectorConfig, EwmaRuleConfig, StaticRuleConfig, UnivariateRuleConfig
from .ewma import EwmaScorer, StaticScorer
from .gpu_identity import series_gpu
from .incidents import make_incident, source
from .log_rules import LogRules, load_table
from .multivariate import ForestRule

log = logging.getLogger(__name__)

STATE_DETECTOR = "engine"
STATE_VERSION = 2  # 1: the .npz payload, still restored (detectors/state_codec.py)
_STATE_DECODERS = {1: state_codec.decode_v1, 2: state_codec.decode}
MAX_LAYOUTS_PER_HOST = 1024  # cached record layouts per host (a cache: cleared when full)
MAX_RULE_CACHE = 1 << 20  # cached name → rules entries (a cache: cleared when full)


class SeriesRule:
    """One configured per-series rule: a scorer plus the alert lifecycle, over its own slots.

    `run_series(times, values)` runs one whole series through a fresh rule and returns the
    scores and the alarms exactly as the live engine raises them (alarm = the value at which an
    incident opens): `fleetmedic detect csv` uses it.
    """

    def __init__(self, cfg, scorer, max_gap_s: float, detector: str, threshold: float):
        self.cfg = cfg
        self.scorer = scorer
        self.lifecycle = Lifecycle(cfg.for_s, cfg.resolve_after_s, max_gap_s)
        self.detector = detector
        self.threshold = threshold
        self.n = 0

    @classmethod
    def from_config(cls, cfg, max_gap_s: float) -> SeriesRule:
        if isinstance(cfg, EwmaRuleConfig):
            scorer = EwmaScorer(
                cfg.alpha,
                cfg.sigmas,
                cfg.clear_sigmas,
                cfg.direction,
                cfg.warmup,
                cfg.min_std,
                cfg.min_rel_std,
                cfg.anomalous_alpha_factor,
            )
            return cls(cfg, scorer, max_gap_s, f"ewma:{cfg.name}", cfg.sigmas)
        if isinstance(cfg, StaticRuleConfig):
            return cls(
                cfg,
                StaticScorer(cfg.op, cfg.threshold, cfg.clear_threshold),
                max_gap_s,
                f"static:{cfg.name}",
                cfg.threshold,
            )
        if isinstance(cfg, UnivariateRuleConfig):
            # Both banks follow the same scorer interface (grow, update, details, state_fields).
            bank: LikelihoodBank | SurpriseRecordBank
            if getattr(cfg, "detector", "surprise") == "likelihood":
                from .likelihood import LikelihoodBank

                bank = LikelihoodBank(None, 64, **cfg.params)
            else:
                from .univariate import SurpriseRecordBank

                bank = SurpriseRecordBank(None, 64, **cfg.params)
            return cls(cfg, bank, max_gap_s, f"univariate:{cfg.name}", bank.params.threshold)
        raise TypeError(f"no per-series rule for {type(cfg).__name__}")

    def run_series(self, times, values) -> tuple[np.ndarray, np.ndarray]:
        """A whole series, value by value in order (NaN = gap): (scores, alarms) per value."""
        times = np.asarray(times, np.float64)
        values = np.asarray(values, np.float64)
        slot = np.array([self.new_slot()])
        scores = np.zeros(len(values))
        alarms = np.zeros(len(values), bool)
        for i in range(len(values)):
            if np.isnan(values[i]):
                continue
            score, breach, clear = self.scorer.update(slot, values[i : i + 1], times[i : i + 1])
            opened, _, _ = self.lifecycle.step(slot, times[i : i + 1], breach, clear, np.array([i]))
            scores[i] = score[0]
            alarms[i] = opened.size > 0
        return scores, alarms

    def new_slot(self) -> int:
        return int(self.new_slots(1)[0])

    def new_slots(self, count: int) -> np.ndarray:
        """`count` consecutive new slots; the state arrays grow once for all of them."""
        first = self.n
        self.n += count
        self.scorer.grow(self.n)
        self.lifecycle.grow(self.n)
        return np.arange(first, self.n, dtype=np.int64)

    def state_arrays(self) -> list[tuple[object, str]]:
        """(owner, attribute) of every per-slot state array: the scorer's, then the lifecycle's."""
        return [(self.scorer, f) for f in self.scorer.state_fields] + [
            (self.lifecycle, f) for f in (*Lifecycle.state_fields, "last_time")
        ]


class FaultRule:
    """The logistic fault model scored on every metric batch, one lifecycle slot per host."""

    detector = "fault_model"
    kind = "fault_risk"

    def __init__(self, cfg, max_gap_s: float):
        from .fault_model import FEATURE_NAMES, FeatureState, XidHistory

        try:
            self.model = json.loads(Path(cfg.path).read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"fault_model.path: cannot load {cfg.path}: {exc}") from None
        unknown = [n for n in self.model.get("features", ()) if n not in FEATURE_NAMES]
        if unknown:
            raise ValueError(f"fault_model.path: {cfg.path}: features this version does not compute: {unknown}")
        self.cfg = cfg
        self.threshold = cfg.threshold if cfg.threshold is not None else float(self.model.get("threshold", 0.5))
        self.features = FeatureState(XidHistory.from_model(self.model))
        # the model's columns among the computed features (a model saved before a feature existed lacks it)
        self.columns = [FEATURE_NAMES.index(n) for n in self.model["features"]]
        self.lifecycle = Lifecycle(cfg.for_s, cfg.resolve_after_s, max_gap_s)
        self.slots: dict[str, int] = {}
        self._free: list[int] = []  # slots of forgotten hosts, given to the next new host

    def slot(self, host: str) -> int:
        slot = self.slots.get(host)
        if slot is None:
            # (len(self.slots) once numbered new hosts: after a forget that collided with a live host)
            if self._free:
                slot = self._free.pop()
                self.lifecycle.reset(slot)
            else:
                slot = len(self.slots) + len(self._free)
                self.lifecycle.grow(slot + 1)
            self.slots[host] = slot
        return slot

    def step(self, hs: HostState, record: MetricBatch, item: Received, t: float) -> list[Incident]:
        from .fault_model import predict_proba

        slot = self.slot(record.host)
        if t <= self.lifecycle.last_time[slot]:
            return []  # per host, time only moves forward
        row = self.features.row(record)[self.columns]
        p = float(predict_proba(self.model, row[None, :])[0])
        s = np.array([slot])
        opened, resolved, since = self.lifecycle.step(
            s, np.array([t]), np.array([p >= self.threshold]), np.array([p < self.threshold]), np.array([item.offset])
        )
        if opened.size:
            return [
                self._incident(
                    hs,
                    item,
                    "open",
                    t,
                    t,
                    p,
                    row,
                    float(self.lifecycle.pending_since[slot]),
                    int(self.lifecycle.pending_offset[slot]),
                )
            ]
        if resolved.size:
            return [self._incident(hs, item, "resolve", t, float(since[0]), p, row, float(since[0]), item.offset)]
        return []

    def _incident(self, hs, item, status, t, opened_at, p, row, window_start, first_offset) -> Incident:
        names = self.model["features"]
        return make_incident(
            host=hs.host,
            kind=self.kind,
            subject="node",
            status=status,
            severity=self.cfg.severity,
            detector=self.detector,
            time=t,
            opened_at=opened_at,
            score=p,
            threshold=self.threshold,
            model_version=f"fault-model-{self.model['version']}",
            action_class=self.cfg.action_class,
            labels=hs.labels,
            summary=f"fault within {self.model.get('horizon_s', 0):g} s: probability {p:.3f} "
            f"(threshold {self.threshold:g})",
            series=list(names),
            values=row.tolist(),
            window_start=window_start,
            sources=[source(item.topic, item.partition, first_offset, item.offset)],
            details={"horizon_s": float(self.model.get("horizon_s", 0))},
        )

    def state_of(self, host: str) -> dict | None:
        slot = self.slots.get(host)
        if slot is None:
            return None
        lc = [getattr(self.lifecycle, f)[slot].item() for f in (*Lifecycle.state_fields, "last_time")]
        return {"prev": self.features.prev.get(host, {}), "lifecycle": lc, "xids": self.features.xid.state_of(host)}

    def observe(self, event: LogEvent) -> None:
        """A log event of the host: its XID, if any, joins the XID-history features."""
        self.features.xid.observe(event)

    def restore(self, host: str, state: dict | None) -> None:
        self.forget(host)
        if not state:
            return
        slot = self.slot(host)
        self.features.prev[host] = {k: list(v) for k, v in state["prev"].items()}
        self.features.xid.restore(host, state.get("xids"))
        # not strict: a snapshot is restored as far as its fields go, as before (no new failure on restore)
        for f, v in zip((*Lifecycle.state_fields, "last_time"), state["lifecycle"], strict=False):
            getattr(self.lifecycle, f)[slot] = v

    def forget(self, host: str) -> None:
        slot = self.slots.pop(host, None)
        if slot is not None:
            self._free.append(slot)
        self.features.prev.pop(host, None)
        self.features.xid.forget(host)


class HostState:
    __slots__ = ("host", "names", "layouts", "max_time", "log_max_time", "labels", "tps", "snapshot_index")

    def __init__(self, host: str):
        self.host = host
        self.names: dict[str, int] = {}  # series name → global slot
        # names tuple → (slots, is_counter, keep)
        self.layouts: dict[tuple, tuple[np.ndarray, np.ndarray, np.ndarray | None]] = {}
        self.max_time = -np.inf  # newest metric event time
        self.log_max_time = -np.inf  # newest log event time (topics are consumed at their own pace)
        self.labels: dict[str, str] = {}
        self.tps: set[tuple[str, int]] = set()
        self.snapshot_index: _SnapshotIndex | None = None  # cached: the parts of a snapshot that change only with names


@dataclass
class _SnapshotIndex:
    """What a host's snapshot needs that depends only on its series table, not on its values.

    A host's series table only grows (slots are appended, never removed, while the host is
    here), so this is valid as long as the host has `n_names` series and is rebuilt when it has more.
    """

    n_names: int
    table_json: bytes  # the payload's table: series names in slot order, key/dtype/shape of each array
    gslots: np.ndarray | slice  # their global slots (a slice when consecutive, the usual case)
    rules: dict[str, int]  # rule name → rule index, for rules covering at least one of the series
    positions: list[tuple[int, np.ndarray, np.ndarray | slice]]  # (rule index, positions in gslots, rule-local slots)


def _slice_if_consecutive(slots: np.ndarray) -> np.ndarray | slice:
    """`slots` as a slice when they are consecutive (a host's series are allocated together, so they
    usually are): gathering by a slice is a view, several times cheaper than indexing by an array."""
    if slots.size and int(slots[-1]) - int(slots[0]) == slots.size - 1 and bool(np.all(np.diff(slots) == 1)):
        return slice(int(slots[0]), int(slots[-1]) + 1)
    return slots


@dataclass
class EngineStats:
    records: int = 0
    values: int = 0
    null_values: int = 0
    stale_values: int = 0
    dropped_late: int = 0
    counter_resets: int = 0
    skipped_restored: int = 0
    future_dead_lettered: int = 0  # event time too far ahead of the broker timestamp (detectors/eventtime.py)
    series_over_cap: int = 0  # values of series beyond a host's max_series_per_host: not tracked
    hosts_over_cap: int = 0  # records of hosts beyond max_hosts: not used
    unreadable_states: int = 0  # snapshots that could not be restored: the host started fresh
    snapshots_too_large: int = 0  # host snapshots over the state record limit: not written (see DetectService)
    suppressed: int = 0
    incidents: int = 0
    compactions: int = 0  # series slot tables renumbered after hosts left (Engine.compact)


@dataclass
class _Row:
    host: HostState
    item: Received
    t: float
    emit: bool
    slots: np.ndarray
    is_counter: np.ndarray
    values: np.ndarray


class Engine:
    """Event-time detection over metric batches and log events; deterministic for a given input order."""

    def __init__(self, config: DetectorConfig, state_name: str = STATE_DETECTOR):
        self.config = config
        self.state_name = state_name  # the `detector` of its state records: one per consumer group
        self.rules = [
            SeriesRule.from_config(c, config.max_gap_s) for c in (*config.static, *config.ewma, *config.univariate)
        ]
        self.rule_local = [np.zeros(0, np.int32) for _ in self.rules]  # global slot → rule slot (-1: none)
        self.rule_global = [np.zeros(0, np.int64) for _ in self.rules]  # rule slot → global slot
        self.logs = (
            LogRules(load_table(config.log_rules.table), config.log_rules.burst_window_s)
            if config.log_rules.enabled
            else None
        )
        self.fault = FaultRule(config.fault_model, config.max_gap_s) if config.fault_model else None
        # isolation forests per (host class, partition): their own state and offsets (detectors/multivariate.py)
        self.forests = (
            ForestRule(config.iforest, config.max_gap_s)
            if config.iforest is not None and config.iforest.enabled
            else None
        )
        self.hosts: dict[str, HostState] = {}
        self.slot_host: list[HostState] = []
        self.slot_name: list[str] = []
        self.last_time = np.zeros(0, np.float64)
        self.prev_value = np.zeros(0, np.float64)
        self._rules_for_name: dict[str, tuple[int, ...]] = {}
        self.stats = EngineStats()
        self.positions: dict[tuple[str, int], int] = {}  # (topic, partition) → next offset processed
        self.replay_until: dict[tuple[str, int], int] = {}  # outputs below these offsets were produced already
        self.skip_below: dict[str, dict[tuple[str, int], int]] = {}  # host → offsets its restored state covers
        self.dirty: set[str] = set()
        self.out_of_skew: list[tuple[Received, float]] = []  # (record, event time) to dead-letter; taken by the service

    # -- series table ---------------------------------------------------------------------------
    def _slots(self, hs: HostState, names) -> np.ndarray:
        """The global slots of a host's series names (in order), allocating the new ones."""
        new = [n for n in dict.fromkeys(names) if n not in hs.names]
        if new:
            self._allocate(hs, new)
        return np.fromiter((hs.names[n] for n in names), np.int64, len(names))

    def _allocate(self, hs: HostState, new: list[str]) -> None:
        """Slots for a host's new series names, all at once: every state array grows once, not once per name.

        The slots are numbered as if the names had been added one at a time in this order.
        """
        first = len(self.slot_name)
        end = first + len(new)
        for k, name in enumerate(new):
            hs.names[name] = first + k
        self.slot_host.extend([hs] * len(new))
        self.slot_name.extend(new)
        self.last_time = grown(self.last_time, end, -np.inf)
        self.prev_value = grown(self.prev_value, end, np.nan)
        matching = [self._rules_matching(name) for name in new]
        for i, rule in enumerate(self.rules):
            self.rule_local[i] = grown(self.rule_local[i], end, -1)
            members = np.array([first + k for k, rules in enumerate(matching) if i in rules], np.int64)
            if members.size == 0:
                continue
            local = rule.new_slots(members.size)
            self.rule_local[i][members] = local
            self.rule_global[i] = grown(self.rule_global[i], int(local[-1]) + 1, -1)
            self.rule_global[i][local] = members

    def _rules_matching(self, name: str) -> tuple[int, ...]:
        rules = self._rules_for_name.get(name)
        if rules is None:
            if len(self._rules_for_name) >= MAX_RULE_CACHE:
                self._rules_for_name.clear()  # a cache over every name seen: bounded
            rules = tuple(i for i, r in enumerate(self.rules) if r.cfg.matches(name))
            self._rules_for_name[name] = rules
        return rules

    def _layout(self, hs: HostState, record: MetricBatch) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(slots, is_counter, keep) of a record's layout; `keep` masks the values of series that have
        a slot (None: all), the rest being over the host's `max_series_per_host`."""
        key = tuple(record.values)
        cached = hs.layouts.get((key, tuple(record.counters)))
        if cached is None:
            counters = set(record.counters)
            keep = None
            room = self.config.max_series_per_host - len(hs.names)
            new = [n for n in dict.fromkeys(key) if n not in hs.names]
            if len(new) > room:
                allowed = set(new[: max(room, 0)])
                keep = np.fromiter((n in hs.names or n in allowed for n in key), bool, len(key))
                key_kept = tuple(n for n, k in zip(key, keep, strict=True) if k)
            else:
                key_kept = key
            slots = self._slots(hs, key_kept)
            is_counter = np.fromiter((n in counters for n in key_kept), bool, len(key_kept))
            if len(hs.layouts) >= MAX_LAYOUTS_PER_HOST:
                hs.layouts.clear()  # a cache: a host sending ever new layouts must not grow it without bound
            cached = hs.layouts[(key, tuple(record.counters))] = (slots, is_counter, keep)
        return cached

    def host(self, name: str) -> HostState:
        hs = self.hosts.get(name)
        if hs is None:
            hs = self.hosts[name] = HostState(name)
        return hs

    # -- processing -----------------------------------------------------------------------------
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
            ls = local[mine]
            v, t, o, rr = values[mine], times[mine], offsets[mine], row_of[mine]
            score, breach, clear = rule.scorer.update(ls, v, t)
            opened, resolved, since = rule.lifecycle.step(ls, t, breach, clear, o)
            for j in opened:
                row = rows[rr[j]]
                self._emit(
                    out,
                    [
                        self._series_incident(
                            rule, int(ls[j]), row, "open", float(t[j]), float(t[j]), float(v[j]), float(score[j])
                        )
                    ],
                    row.item,
                    row.emit,
                )
            for j, opened_at in zip(resolved, since, strict=True):
                row = rows[rr[j]]
                self._emit(
                    out,
                    [
                        self._series_incident(
                            rule,
                            int(ls[j]),
                            row,
                            "resolve",
                            float(t[j]),
                            float(opened_at),
                            float(v[j]),
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

    # -- state ------------------------------------------------------------------------------------
    def snapshot(self, host: str) -> DetectorState:
        """The host's whole detector state as one record for the compacted state topic.

        The payload (detectors/state_codec.py, version 2) holds the host's series names, and for
        every rule the positions of the series it covers and one array per state field (gathered
        with numpy, no per-series Python work), plus a small JSON header (times, labels, open log
        bursts, the fault model's state).
        """
        hs = self.hosts[host]
        index = self._snapshot_index(hs)
        header = {
            "max_time": hs.max_time,
            "log_max_time": hs.log_max_time,
            "labels": hs.labels,
            "rules": index.rules,
            "logs": self.logs.state_of(host) if self.logs else [],
            "fault": self.fault.state_of(host) if self.fault else None,
        }
        blob = state_codec.encode(header, index.table_json, [a for _, a in self._state_arrays(index)])
        offsets = {
            f"{topic}:{p}": self.positions[(topic, p)] for topic, p in sorted(hs.tps) if (topic, p) in self.positions
        }
        return DetectorState(
            host=host,
            detector=self.state_name,
            state_version=STATE_VERSION,
            time=_dt(hs.max_time),
            source_offsets=offsets,
            state_b64=base64.b64encode(blob).decode(),
        )

    def _snapshot_index(self, hs: HostState) -> _SnapshotIndex:
        """The host's cached snapshot index, rebuilt only when the host has gained series since."""
        index = hs.snapshot_index
        if index is not None and index.n_names == len(hs.names):
            return index
        names = list(hs.names)
        gslots = np.fromiter(hs.names.values(), np.int64, len(names))
        rules, positions = {}, []
        for i, rule in enumerate(self.rules):
            local = self.rule_local[i][gslots]
            pos = np.flatnonzero(local >= 0)
            if pos.size:
                rules[rule.cfg.name] = i
                # stored in the smallest integer type that holds them: a host has few series
                positions.append((i, pos.astype(np.min_scalar_type(len(names))), _slice_if_consecutive(local[pos])))
        index = _SnapshotIndex(len(names), b"", _slice_if_consecutive(gslots), rules, positions)
        index.table_json = state_codec.encode_table(names, self._state_arrays(index))
        hs.snapshot_index = index
        return index

    def _state_arrays(self, index: _SnapshotIndex) -> list[tuple[str, np.ndarray]]:
        """(key, values) of every state array of a host, gathered by its snapshot index, in a fixed order."""
        arrays = [("last_time", self.last_time[index.gslots]), ("prev_value", self.prev_value[index.gslots])]
        for i, pos, local in index.positions:
            arrays.append((f"{i}.pos", pos))
            arrays += [(f"{i}.{f}", getattr(owner, f)[local]) for owner, f in self.rules[i].state_arrays()]
        return arrays

    @property
    def forest_state_name(self) -> str:
        """The `detector` of the forests' state records (one per forest, keyed by partition and class)."""
        return f"{self.state_name}/iforest"

    def restore(self, state: DetectorState) -> None:
        """Load a host's snapshot. One that cannot be read (corrupt, hostile, from a foreign writer)
        is logged and counted in `unreadable_states`, and the host starts fresh: never raises."""
        try:
            self._restore(state)
        except Exception as exc:  # whatever a hostile payload makes numpy, zlib or json raise
            log.warning(
                "unreadable state for %s (%s): starting fresh: %s: %s",
                state.host,
                state.detector,
                type(exc).__name__,
                exc,
            )
            self.stats.unreadable_states += 1
            if state.detector != self.forest_state_name:
                self.forget(state.host)

    def _restore(self, state: DetectorState) -> None:
        if state.detector == self.forest_state_name:
            if self.forests is not None:
                self.forests.restore(state)
            return
        decode = _STATE_DECODERS.get(state.state_version)
        if state.detector != self.state_name or decode is None:
            log.warning(
                "ignoring state for %s: detector %s version %d", state.host, state.detector, state.state_version
            )
            return
        header, names, data = decode(base64.b64decode(state.state_b64))
        self.forget(state.host)
        hs = self.host(state.host)
        hs.max_time = float(header["max_time"])
        hs.log_max_time = float(header["log_max_time"])
        hs.labels = dict(header["labels"])
        gslots = self._slots(hs, names)
        self.last_time[gslots] = data["last_time"]
        self.prev_value[gslots] = data["prev_value"]
        by_name = {r.cfg.name: i for i, r in enumerate(self.rules)}
        for rule_name, saved in header["rules"].items():
            i = by_name.get(rule_name)
            if i is None:
                continue  # a rule removed since the checkpoint
            rule = self.rules[i]
            pos = data[f"{saved}.pos"]
            local = self.rule_local[i][gslots[pos]]
            keep = local >= 0  # series the rule no longer matches start nothing
            try:
                loaded = [(owner, f, data[f"{saved}.{f}"]) for owner, f in rule.state_arrays()]
            except KeyError as exc:
                log.warning("%s/%s: state lacks %s: starting fresh", state.host, rule_name, exc)
                continue
            for owner, f, values in loaded:
                getattr(owner, f)[local[keep]] = values[keep]
        if self.logs:
            self.logs.restore(state.host, header["logs"])
        if self.fault:
            self.fault.restore(state.host, header.get("fault"))
        skip = {}
        for key, off in state.source_offsets.items():
            topic, _, p = key.rpartition(":")
            skip[(topic, int(p))] = off
            hs.tps.add((topic, int(p)))
        self.skip_below[state.host] = skip

    def forget(self, host: str) -> None:
        """Drop a host (its partition moved away). Its slots are not reused: rebalances are rare."""
        hs = self.hosts.pop(host, None)
        if hs is not None:
            gslots = np.fromiter(hs.names.values(), np.int64, len(hs.names))
            for i in range(len(self.rules)):
                self.rule_local[i][gslots] = -1
        if self.logs:
            self.logs.forget(host)
        if self.fault:
            self.fault.forget(host)
        self.skip_below.pop(host, None)
        self.dirty.discard(host)

    def compact(self, slack: float = 2.0, minimum: int = 4096) -> int:
        """Renumber the series slots densely once forgotten hosts' slots outnumber live ones
        `slack` to one (rebalances and departed hosts leave holes: without this, every rebalance
        grows every state array for good). Each live host goes through snapshot and restore, so
        its state is exactly what a restart would load. Returns the slots freed (0: not needed)."""
        live = sum(len(hs.names) for hs in self.hosts.values())
        total = len(self.slot_name)
        if total - live < max(minimum, slack * live):
            return 0
        states = [self.snapshot(h) for h in sorted(self.hosts)]
        kept = {h: (set(hs.tps), self.skip_below.get(h)) for h, hs in self.hosts.items()}
        dirty = set(self.dirty)
        self.rules = [SeriesRule.from_config(r.cfg, self.config.max_gap_s) for r in self.rules]
        self.rule_local = [np.zeros(0, np.int32) for _ in self.rules]
        self.rule_global = [np.zeros(0, np.int64) for _ in self.rules]
        self.hosts, self.slot_host, self.slot_name = {}, [], []
        self.last_time = np.zeros(0, np.float64)
        self.prev_value = np.zeros(0, np.float64)
        for state in states:
            self.restore(state)
            tps, skip = kept[state.host]
            self.hosts[state.host].tps = tps
            if skip is None:
                self.skip_below.pop(state.host, None)
            else:
                self.skip_below[state.host] = skip
        self.dirty = dirty
        self.stats.compactions += 1
        return total - len(self.slot_name)

    def silent_hosts(self, after_s: float) -> dict[str, int | None]:
        """Hosts with no event for `after_s` (event time) behind the newest host of their
        partition → that partition: gone from the fleet, their state only costs memory and seeks."""

        def last(hs: HostState) -> float:
            return max(hs.max_time, hs.log_max_time)

        part = {h: min((p for _, p in hs.tps), default=None) for h, hs in self.hosts.items()}
        newest: dict[int | None, float] = {}
        for h, hs in self.hosts.items():
            newest[part[h]] = max(newest.get(part[h], -np.inf), last(hs))
        return {h: part[h] for h, hs in self.hosts.items() if last(hs) < newest[part[h]] - after_s}

    def take_dirty(self, partitions: set[int] | None = None) -> list[DetectorState]:
        hosts = sorted(
            h
            for h in self.dirty
            if h in self.hosts and (partitions is None or any(p in partitions for _, p in self.hosts[h].tps))
        )
        self.dirty.difference_update(hosts)
        states = [self.snapshot(h) for h in hosts]
        if self.forests is not None:
            states += self.forests.take_dirty(self.forest_state_name, self.positions, partitions)
        return states

    def forget_partitions(self, partitions: set[tuple[str, int]]) -> None:
        """Drop the forests of (topic, partition)s that moved away (hosts go with `forget`)."""
        if self.forests is not None:
            self.forests.forget(partitions)

    def bytes_per_series(self) -> float:
        """Array bytes of detector state per series (excluding the Python series table)."""
        n = max(len(self.slot_name), 1)
        total = self.last_time.nbytes + self.prev_value.nbytes
        for i, rule in enumerate(self.rules):
            total += self.rule_local[i].nbytes + self.rule_global[i].nbytes
            total += sum(getattr(rule.scorer, f).nbytes for f in rule.scorer.state_fields)
            total += sum(getattr(rule.lifecycle, f).nbytes for f in (*Lifecycle.state_fields, "last_time"))
        return total / n


def _values_array(values: dict) -> np.ndarray:
    """A record's values as float64, null → NaN (a gap).

    `np.fromiter` is about a third faster than `np.array(list(...))` per record but refuses
    None, so a record with nulls takes the slower path.
    """
    try:
        return np.fromiter(values.values(), np.float64, len(values))
    except TypeError:
        return np.array(list(values.values()), dtype=np.float64)


def _dt(t: float):
    from .incidents import to_datetime

    return to_datetime(t if np.isfinite(t) else 0.0)


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
        **loop_kwargs,
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

    def handle(self, batch: list[Received]):
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

        def unreadable(msg, exc) -> None:
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

    def run(self, until=None, install_signals: bool = True) -> EngineStats:
        """Until SIGTERM/SIGINT, `loop.stop()` or `until(self)`; a clean stop checkpoints every host."""
        self.loop.service_loop(on_idle=self._idle_checkpoint, on_exit=self.checkpoint, close=self.loop.close).run(
            until=until and (lambda: until(self)), install_signals=install_signals
        )
        return self.engine.stats
