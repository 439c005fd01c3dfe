"""The scorer contract (`detectors.scorer.Scorer`), checked on every scorer the configuration can name.

River-style shared checks: each test runs over every per-series scorer the engine can build,
found from the configuration itself (every list of per-series rules in `DetectorConfig`, and for
a rule kind with a `detector` choice, every choice), built the engine's way
(`SeriesRule.from_config`). A new rule kind or detector choice is checked without touching this
file; one that needs a required field gets it from `REQUIRED`. In-process, no broker.
"""

from __future__ import annotations

import json
from typing import Any, get_args, get_origin

import numpy as np
import pytest

from detectors.config import DetectorConfig, SeriesRuleConfig, StaticRuleConfig
from detectors.multivariate import ForestRule
from detectors.scorer import PartitionRule, Scorer
from detectors.series_rule import SeriesRule

# Fields a rule kind cannot be built without (its defaults cover the rest), and short warm-ups (and
# refractory periods: one alarm must not silence a bank for the rest of the run) so the checks
# below run on warm scorers: 120 values, the first 20 or so being warm-up.
REQUIRED: dict[type, dict[str, Any]] = {StaticRuleConfig: {"threshold": 60.0, "clear_threshold": 55.0}}
SHORT_WARMUP: dict[str, Any] = {"warmup": 5, "params": {"warmup": 10, "refractory": 5}}

T0 = 1_700_000_000.0  # event time of the first value (a fixed instant, not "now")
STEP = 60.0
N_SLOTS = 5
N_STEPS = 120


def _rule_configs() -> list[SeriesRuleConfig]:
    """One configuration per (rule kind, detector choice) the detector configuration can hold."""
    out = []
    for field in DetectorConfig.model_fields.values():
        if get_origin(field.annotation) is not list:
            continue
        (kind,) = get_args(field.annotation)
        if not (isinstance(kind, type) and issubclass(kind, SeriesRuleConfig)):
            continue
        choice = kind.model_fields.get("detector")
        for detector in get_args(choice.annotation) if choice is not None else (None,):
            fields = {"name": "contract", "match": ["*"], **REQUIRED.get(kind, {})}
            fields.update({k: v for k, v in SHORT_WARMUP.items() if k in kind.model_fields})
            if detector is not None:
                fields["detector"] = detector
            out.append(kind(**fields))
    return out


CONFIGS = _rule_configs()


def _name(cfg: SeriesRuleConfig) -> str:
    return type(cfg).__name__ + (f"-{cfg.detector}" if "detector" in type(cfg).model_fields else "")


def test_every_scorer_kind_is_found():
    # ewma, static, univariate × (surprise, likelihood): at least these four (so never none)
    kinds = {type(SeriesRule.from_config(cfg, 600.0).scorer).__name__ for cfg in CONFIGS}
    assert {"EwmaScorer", "StaticScorer", "SurpriseRecordBank", "LikelihoodBank"} <= kinds


@pytest.fixture(params=CONFIGS, ids=_name)
def make(request):
    """A factory of fresh scorers, built the engine's way from one rule configuration."""
    factory = lambda: SeriesRule.from_config(request.param, 600.0).scorer
    factory.cfg = request.param
    return factory


def _warmup(cfg: SeriesRuleConfig) -> int | None:
    """The rule's warm-up (values learned before it may alert), where it has one: a field of its
    own or one of its detector's parameters."""
    if "warmup" in type(cfg).model_fields:
        return int(cfg.warmup)
    params = getattr(cfg, "params", {})
    return int(params["warmup"]) if "warmup" in params else None


def _grown(make, n: int = N_SLOTS) -> Scorer:
    scorer = make()
    scorer.grow(n)
    return scorer


def _series(
    seed: int, n_steps: int = N_STEPS, n_slots: int = N_SLOTS, noise: float = 2.0
) -> tuple[np.ndarray, np.ndarray]:
    """(times, values), each [n_steps, n_slots]: noise around 50 with spikes of +40 on a few values,
    a slot's level differing from the next (so a slot's output tells which history it saw).
    With noise=0 every slot is flat at its level (no spikes): a scorer past its warm-up has then
    never breached (no refractory period running) and sees any move as new."""
    rng = np.random.default_rng(seed)
    values = 50.0 + 3.0 * np.arange(n_slots) + rng.normal(0, noise, (n_steps, n_slots))
    if noise:
        values[rng.random((n_steps, n_slots)) < 0.03] += 40.0
    times = T0 + STEP * np.repeat(np.arange(n_steps, dtype=float)[:, None], n_slots, axis=1)
    return times, values


def _run(scorer: Scorer, times: np.ndarray, values: np.ndarray, slots: np.ndarray | None = None) -> list:
    """Every row of (times, values) as one call over `slots` (default 0..n-1): the outputs, copied."""
    slots = np.arange(values.shape[1]) if slots is None else slots
    out = []
    for t, v in zip(times, values, strict=True):
        out.append(tuple(np.array(a, copy=True) for a in scorer.update(slots, v, t)))
    return out


def _assert_same(a: list, b: list) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        for p, q in zip(x, y, strict=True):
            np.testing.assert_array_equal(p, q)


def _state(scorer: Scorer, rows: slice | np.ndarray) -> dict[str, np.ndarray]:
    return {f: np.array(getattr(scorer, f)[rows], copy=True) for f in scorer.state_fields}


def _assert_same_state(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for f in a:
        np.testing.assert_array_equal(a[f], b[f], err_msg=f)


def test_is_a_scorer_and_its_state_fields_are_slot_arrays(make):
    scorer = make()
    assert isinstance(scorer, Scorer)
    scorer.grow(N_SLOTS)
    for f in scorer.state_fields:
        arr = getattr(scorer, f)
        assert isinstance(arr, np.ndarray) and arr.shape[0] >= N_SLOTS, f
    # the declared size per slot is what the state arrays hold per slot
    assert scorer.nbytes_per_slot == sum(getattr(scorer, f)[:1].nbytes for f in scorer.state_fields)


def test_the_data_exercises_the_scorer(make):
    # not a contract check: makes sure the checks below see warm scorers that breach and clear
    out = _run(_grown(make), *_series(1))
    scores = np.array([s for s, _, _ in out])
    assert np.unique(scores).size > N_STEPS
    assert any(b.any() for _, b, _ in out) and any(c.any() for _, _, c in out)


def test_grow_gives_new_slots_fresh_state_and_leaves_existing_ones_untouched(make):
    scorer = make()
    scorer.grow(3)
    times, values = _series(2, n_slots=3)
    _run(scorer, times, values)
    before = _state(scorer, slice(0, 3))
    n = 1000  # past every initial capacity (16, 64): the arrays are replaced
    scorer.grow(n)
    fresh = make()
    fresh.grow(n)
    _assert_same_state(_state(scorer, slice(0, 3)), before)
    _assert_same_state(_state(scorer, slice(3, n)), _state(fresh, slice(3, n)))
    scorer.grow(2)  # never shrinks, changes nothing
    _assert_same_state(_state(scorer, slice(0, 3)), before)
    assert all(getattr(scorer, f).shape[0] >= n for f in scorer.state_fields)
    # a new slot behaves like slot 0 of a fresh scorer
    t2, v2 = _series(3, n_slots=1)
    other = make()
    other.grow(1)
    _assert_same(_run(scorer, t2, v2, np.array([n - 1])), _run(other, t2, v2))


def test_the_first_value_of_a_fresh_slot_is_scored_against_the_empty_state(make):
    scorer = make()
    scorer.grow(3)
    times, values = _series(4, n_slots=1, noise=0.0)
    _run(scorer, times, values)  # slot 0 has a history: flat at 50
    t = np.full(3, times[-1, 0] + STEP)
    # slots 1 and 2 are fresh: 1e6 and 50 are their first values, slot 0's is 1e6 too
    score, breach, clear = scorer.update(np.array([0, 1, 2]), np.array([1e6, 1e6, 50.0]), t)
    lone = make()
    lone.grow(1)
    expected = lone.update(np.array([0]), np.array([1e6]), t[:1])
    assert (score[1], breach[1], clear[1]) == tuple(a[0] for a in expected)  # other slots' history is not used
    if scorer.state_fields:  # a learning scorer knows nothing yet: no value can breach
        assert not breach[1] and not breach[2] and score[1] == score[2]
        assert breach[0]  # ...while slot 0, which has learned its level, sees 1e6 as a breach


def test_a_value_is_scored_before_it_is_learned(make):
    # Two copies fed the same history score the next value identically, whatever the other slots
    # get in the same call: the score comes from the slot's own state before the value, and
    # nothing of the call (this value or the others) is learned before scoring.
    a, b = _grown(make), _grown(make)
    times, values = _series(5)
    _run(a, times[:-1], values[:-1])
    _run(b, times[:-1], values[:-1])
    other = values[-1].copy()
    other[1:] = -other[1:]  # every other slot gets a different value in b's call
    sa, ba, ca = a.update(np.arange(N_SLOTS), values[-1], times[-1])
    sb, bb, cb = b.update(np.arange(N_SLOTS), other, times[-1])
    assert (sa[0], ba[0], ca[0]) == (sb[0], bb[0], cb[0])
    if not a.state_fields:
        return
    # A learning scorer past its warm-up on a flat history: the state before a spike has no
    # spread, so the spike breaches; then the spike is learned (the state moves).
    flat = _grown(make)
    times, values = _series(5, noise=0.0)
    _run(flat, times[:-1], values[:-1])
    before = _state(flat, slice(0, N_SLOTS))
    spike = values[-1] + 1e3
    _, breach, _ = flat.update(np.arange(N_SLOTS), spike, times[-1])
    assert breach.all()
    after = _state(flat, slice(0, N_SLOTS))
    assert any(not np.array_equal(before[f], after[f]) for f in after)


def test_no_value_of_the_warm_up_alerts_not_even_a_spike_as_the_last_one(make):
    # A value is scored against the values learned before it: with a warm-up of W, the W-th value
    # is scored with W - 1 learned, so nothing up to it may breach, a spike included. (A scorer
    # that learned first would count W and could alert on it.)
    warmup = _warmup(make.cfg)
    if warmup is None:
        pytest.skip("no warm-up: a stateless rule")
    scorer = _grown(make, warmup)
    for j in range(warmup):  # slot j: j flat values, then a spike as its (j + 1)-th value
        times = T0 + STEP * np.arange(j + 1)
        values = np.r_[np.full(j, 50.0), 1e3]
        breach = [scorer.update(np.array([j]), values[i : i + 1], times[i : i + 1])[1][0] for i in range(j + 1)]
        assert not any(breach), j


def test_snapshot_round_trip_continues_exactly_even_at_other_slots(make):
    times, values = _series(6)
    straight = _run(_grown(make), times, values)
    k = 80
    first = make()
    first.grow(N_SLOTS)
    head = _run(first, times[:k], values[:k])
    # the engine's restore: a fresh scorer, grown, state rows written in place at its own slots
    restored = make()
    restored.grow(3 + N_SLOTS)
    at = np.array([7, 3, 5, 4, 6])  # restored slot of each original slot
    for f in first.state_fields:
        getattr(restored, f)[at] = getattr(first, f)[:N_SLOTS]
    tail = _run(restored, times[k:], values[k:], at)
    _assert_same(head + tail, straight)


def test_same_input_same_output(make):
    times, values = _series(7)
    a, b = _grown(make), _grown(make)
    _assert_same(_run(a, times, values), _run(b, times, values))
    _assert_same_state(_state(a, slice(0, N_SLOTS)), _state(b, slice(0, N_SLOTS)))


def test_one_call_over_many_slots_equals_one_call_per_slot_in_any_order(make):
    times, values = _series(8)
    together = _run(_grown(make), times, values)
    alone = make()
    alone.grow(N_SLOTS)
    rng = np.random.default_rng(9)
    for i in range(N_STEPS):
        # every slot's value alone, or a random subset in a random order (the rest alone after)
        order = rng.permutation(N_SLOTS)
        cut = int(rng.integers(0, N_SLOTS + 1))
        got: dict[int, tuple] = {}
        if cut:
            sub = order[:cut]
            out = alone.update(sub, values[i, sub], times[i, sub])
            got.update({int(s): tuple(a[j] for a in out) for j, s in enumerate(sub)})
        for s in order[cut:]:
            out = alone.update(np.array([s]), values[i, [s]], times[i, [s]])
            got[int(s)] = tuple(a[0] for a in out)
        for s in range(N_SLOTS):
            assert got[s] == tuple(a[s] for a in together[i]), (i, s)


def test_details_are_flat_json_scalars_and_change_nothing(make):
    scorer = _grown(make)
    times, values = _series(10)
    _run(scorer, times, values)
    before = _state(scorer, slice(0, N_SLOTS))
    details = scorer.details(2)
    assert all(isinstance(k, str) and type(v) in (int, float) for k, v in details.items())
    assert json.loads(json.dumps(details)) == details
    _assert_same_state(_state(scorer, slice(0, N_SLOTS)), before)


def test_the_forest_rule_is_a_partition_rule():
    from detectors.config import IsolationForestConfig

    cfg = IsolationForestConfig(features=[{"name": "temp", "match": ["gpu*.temperature_c"]}])
    assert isinstance(ForestRule(cfg, 600.0), PartitionRule)
