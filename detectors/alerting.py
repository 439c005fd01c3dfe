"""Per-series alert lifecycle, vectorised: normal → pending → firing → (quiet long enough) → normal.

Every per-series detector kind (EWMA, static threshold, the surprise-record and likelihood banks)
is a *scorer* plus this lifecycle: the scorer (the contract: `detectors.scorer.Scorer`) says per
value whether it breaches and whether it is clear, and the lifecycle turns that into incidents.

`Lifecycle.step` then applies Prometheus-like `for` (pending until breaching for `for_s` of event
time) and resolve-after-quiet (`resolve_after_s` of consecutive clear values), and returns which
slots opened and which resolved. Alarm = the value at which a slot opens.

>>> import numpy as np
>>> lc = Lifecycle(for_s=10, resolve_after_s=20); lc.grow(1)
>>> s = np.array([0])
>>> [lc.step(s, np.array([t]), np.array([b]), np.array([not b]), np.array([t]))[0].size
...  for t, b in [(0, True), (5, True), (10, True), (15, True)]]
[0, 0, 1, 0]
"""

from __future__ import annotations

import numpy as np

NORMAL, PENDING, FIRING = 0, 1, 2


def grown(array: np.ndarray, n: int, fill: float) -> np.ndarray:
    """`array` extended to at least n entries (amortised doubling), new entries = fill.

    The size is 64 doubled as often as needed, whether the array grows by one entry or by many at
    once (a host's series are allocated together): the same capacities either way, so memory per
    series does not depend on how many series arrive at a time.
    """
    if array.shape[0] >= n:
        return array
    size = max(2 * array.shape[0], 64)
    while size < n:
        size *= 2
    out = np.full(size, fill, dtype=array.dtype)
    out[: array.shape[0]] = array
    return out


class Lifecycle:
    """State per slot: status, pending start (time, offset), firing start, start of the clear run."""

    state_fields = ("status", "pending_since", "pending_offset", "firing_since", "clear_since")

    def __init__(self, for_s: float = 0.0, resolve_after_s: float = 60.0, max_gap_s: float = float("inf")) -> None:
        self.for_s = float(for_s)
        self.resolve_after_s = float(resolve_after_s)
        self.max_gap_s = float(max_gap_s)
        self.status = np.zeros(0, np.uint8)
        self.pending_since = np.zeros(0, np.float64)
        self.pending_offset = np.zeros(0, np.int64)
        self.firing_since = np.zeros(0, np.float64)
        self.clear_since = np.zeros(0, np.float64)
        self.last_time = np.zeros(0, np.float64)

    def reset(self, slots: np.ndarray | int) -> None:
        """Slots back to their initial state (a freed slot given to a new host)."""
        self.status[slots] = NORMAL
        self.pending_since[slots] = np.nan
        self.pending_offset[slots] = -1
        self.firing_since[slots] = np.nan
        self.clear_since[slots] = np.nan
        self.last_time[slots] = -np.inf

    def grow(self, n: int) -> None:
        """Make slots 0..n-1 exist; new ones start normal."""
        self.status = grown(self.status, n, NORMAL)
        self.pending_since = grown(self.pending_since, n, np.nan)
        self.pending_offset = grown(self.pending_offset, n, -1)
        self.firing_since = grown(self.firing_since, n, np.nan)
        self.clear_since = grown(self.clear_since, n, np.nan)
        self.last_time = grown(self.last_time, n, -np.inf)

    def step(
        self, slots: np.ndarray, times: np.ndarray, breach: np.ndarray, clear: np.ndarray, offsets: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Advance the slots by one value each.

        Returns (opened, resolved, resolved_since): indexes into `slots` of the values that opened
        and resolved an incident, and the firing start of each resolved one (its incident id).

        Most values of a healthy fleet neither breach nor belong to a pending or firing slot; for
        those the only change is `last_time` (a normal slot's other fields stay NaN / -1), so only
        the rest go through the full state machine (`advance`), which gives the same result.
        """
        status = self.status[slots]
        active = breach | (status != NORMAL)
        if active.all():
            return self.advance(slots, times, breach, clear, offsets)
        self.last_time[slots[~active]] = times[~active]
        idx = np.flatnonzero(active)
        if idx.size == 0:
            return idx, idx, np.zeros(0)
        opened, resolved, since = self.advance(slots[idx], times[idx], breach[idx], clear[idx], offsets[idx])
        return idx[opened], idx[resolved], since

    def advance(
        self, slots: np.ndarray, times: np.ndarray, breach: np.ndarray, clear: np.ndarray, offsets: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`step` for every value given, without the shortcut for normal, non-breaching slots."""
        status = self.status[slots]
        gap = (times - self.last_time[slots]) > self.max_gap_s
        self.last_time[slots] = times
        # A gap interrupts a pending run: `for` needs consecutive breaching values.
        status = np.where(gap & (status == PENDING), NORMAL, status)

        start = breach & (status == NORMAL)
        ps = np.where(start, times, self.pending_since[slots])
        po = np.where(start, offsets, self.pending_offset[slots])
        status = np.where(start, PENDING, status)
        status = np.where((status == PENDING) & ~breach, NORMAL, status)
        opened = (status == PENDING) & (times - ps >= self.for_s)
        status = np.where(opened, FIRING, status)
        fs = np.where(opened, times, self.firing_since[slots])

        firing = status == FIRING
        cs = self.clear_since[slots]
        cs = np.where(firing & clear & np.isnan(cs), times, cs)
        cs = np.where(firing & ~clear, np.nan, cs)
        resolved = firing & ~opened & clear & (times - cs >= self.resolve_after_s)
        status = np.where(resolved, NORMAL, status)
        cs = np.where(resolved | ~firing, np.nan, cs)

        self.status[slots] = status
        self.pending_since[slots] = np.where(status == NORMAL, np.nan, ps)
        self.pending_offset[slots] = np.where(status == NORMAL, -1, po)
        self.firing_since[slots] = np.where(status == FIRING, fs, np.nan)
        self.clear_since[slots] = cs
        resolved_idx = np.flatnonzero(resolved)
        return np.flatnonzero(opened), resolved_idx, fs[resolved_idx]
