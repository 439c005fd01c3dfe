"""The engine's series table: every (host, series name) gets a slot, and every matching rule a slot of its own.

A host's record layout (the tuple of its series names, and which of them are counters) is
resolved to a slot array once and cached, so a record costs one dict lookup. New names are
allocated together, so every state array grows once per new layout, not once per name, and a
host's slots are usually consecutive (a snapshot gathers them by a slice). A host beyond
`max_series_per_host` keeps the series it has; the values of the others are not tracked.

`SeriesTable` is one part of `detectors.engine.Engine`, which builds the attributes declared
here; the round processing (detectors/rounds.py) and the state (detectors/engine_state.py) use
the table.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from fleetmedic.schemas import MetricBatch

from .alerting import Lifecycle, grown
from .config import DetectorConfig
from .series_rule import SeriesRule

if TYPE_CHECKING:
    from .engine_state import SnapshotIndex

MAX_LAYOUTS_PER_HOST = 1024  # cached record layouts per host (a cache: cleared when full)
MAX_RULE_CACHE = 1 << 20  # cached name → rules entries (a cache: cleared when full)


class HostState:
    """One host in the series table: its series' slots, cached layouts, newest event times, labels, inputs."""

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
        self.snapshot_index: SnapshotIndex | None = None  # cached: the parts of a snapshot that change only with names


class SeriesTable:
    """The slots of the engine's series and the per-slot arrays it keeps itself (last time, previous value)."""

    config: DetectorConfig
    rules: list[SeriesRule]
    rule_local: list[np.ndarray]  # per rule: global slot → rule slot (-1: none)
    rule_global: list[np.ndarray]  # per rule: rule slot → global slot
    hosts: dict[str, HostState]
    slot_host: list[HostState]
    slot_name: list[str]
    last_time: np.ndarray
    prev_value: np.ndarray
    _rules_for_name: dict[str, tuple[int, ...]]

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

    def bytes_per_series(self) -> float:
        """Array bytes of detector state per series (excluding the Python series table)."""
        n = max(len(self.slot_name), 1)
        total = self.last_time.nbytes + self.prev_value.nbytes
        for i, rule in enumerate(self.rules):
            total += self.rule_local[i].nbytes + self.rule_global[i].nbytes
            total += sum(getattr(rule.scorer, f).nbytes for f in rule.scorer.state_fields)
            total += sum(getattr(rule.lifecycle, f).nbytes for f in (*Lifecycle.state_fields, "last_time"))
        return total / n
