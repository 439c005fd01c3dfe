"""The engine's state: a host's snapshot for the compacted state topic, its restore, and forgetting hosts.

A snapshot (detectors/state_codec.py, version 2) holds one host's series names and, for every
rule, the positions of the series it covers and one array per state field, plus a small JSON
header; restoring it loads that state into fresh slots and records the input offsets it covers
(records below them are skipped). `forget` drops a host, `compact` renumbers the slots densely
once forgotten hosts' holes outnumber the live slots, `take_dirty` gives the snapshots due.

`EngineState` is one part of `detectors.engine.Engine`, which builds the attributes declared
here; the Kafka service (detectors/service.py) decides when to snapshot and restore.
"""

from __future__ import annotations

import base64
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from fleetmedic.schemas import DetectorState

from . import state_codec
from .fault_rule import FaultRule
from .log_rules import LogRules
from .scorer import PartitionRule
from .series_rule import SeriesRule
from .series_table import HostState, SeriesTable

if TYPE_CHECKING:
    from .engine import EngineStats

log = logging.getLogger(__name__)

STATE_VERSION = 2  # 1: the .npz payload, still restored (detectors/state_codec.py)
_STATE_DECODERS = {1: state_codec.decode_v1, 2: state_codec.decode}


@dataclass
class SnapshotIndex:
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


class EngineState(SeriesTable):
    """Snapshot, restore, forget and compact the per-host state of the engine's series table and rules."""

    state_name: str  # the `detector` of its state records: one per consumer group
    stats: EngineStats
    positions: dict[tuple[str, int], int]
    skip_below: dict[str, dict[tuple[str, int], int]]
    dirty: set[str]
    logs: LogRules | None
    fault: FaultRule | None
    forests: PartitionRule | None

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

    def _snapshot_index(self, hs: HostState) -> SnapshotIndex:
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
        index = SnapshotIndex(len(names), b"", _slice_if_consecutive(gslots), rules, positions)
        index.table_json = state_codec.encode_table(names, self._state_arrays(index))
        hs.snapshot_index = index
        return index

    def _state_arrays(self, index: SnapshotIndex) -> list[tuple[str, np.ndarray]]:
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


def _dt(t: float):
    from .incidents import to_datetime

    return to_datetime(t if np.isfinite(t) else 0.0)
