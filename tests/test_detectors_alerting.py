"""The alert lifecycle's shortcut for quiet slots changes nothing: `step` ≡ `advance` on every value."""

from __future__ import annotations

import numpy as np

from detectors.alerting import Lifecycle


def _state(lc: Lifecycle) -> list:
    return [getattr(lc, f).copy() for f in (*Lifecycle.state_fields, "last_time")]


def test_step_with_the_quiet_slot_shortcut_equals_the_full_state_machine():
    rng = np.random.default_rng(7)
    n = 200
    fast, full = Lifecycle(for_s=20, resolve_after_s=30, max_gap_s=50), Lifecycle(20, 30, 50)
    fast.grow(n)
    full.grow(n)
    t = np.zeros(n)
    opened_total = resolved_total = 0
    for k in range(400):
        slots = np.sort(rng.choice(n, size=int(rng.integers(1, n)), replace=False))
        t[slots] += rng.choice([10.0, 10.0, 10.0, 80.0], size=slots.size)  # some gaps beyond max_gap_s
        times = t[slots]
        # bursts of breaching values on a few slots, mostly quiet, some values neither breach nor clear
        hot = (slots % 17 == k // 40 % 17) & (rng.random(slots.size) < 0.9)
        breach = hot | (rng.random(slots.size) < 0.01)
        clear = ~breach & (rng.random(slots.size) < 0.9)
        offsets = np.full(slots.size, k)
        a = fast.step(slots, times, breach, clear, offsets)
        b = full.advance(slots, times, breach, clear, offsets)
        for x, y in zip(a, b, strict=True):
            assert np.array_equal(x, y)
        opened_total += a[0].size
        resolved_total += a[1].size
        for x, y in zip(_state(fast), _state(full), strict=True):
            assert np.array_equal(x, y, equal_nan=True)
    assert opened_total > 10 and resolved_total > 10  # the scenario exercises both transitions
