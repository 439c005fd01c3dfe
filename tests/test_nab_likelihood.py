"""The likelihood univariate detector (detectors/likelihood.py): behaviour, batch/single, state."""

import doctest

import numpy as np
import pytest

from detectors import likelihood
from detectors.config import UnivariateRuleConfig
from detectors.likelihood import LikelihoodBank
from detectors.series_rule import SeriesRule

T0 = 1_700_000_000
STEP = 300


def run(bank, values, row=None, t0=0):
    row = bank.add_series(1) if row is None else row
    return np.array([bank.update(row, [v], [T0 + STEP * (t0 + i)])[0][0] for i, v in enumerate(values)]), row


def test_docstring_examples():
    assert doctest.testmod(likelihood).failed == 0


def test_spike_alarms_and_noise_before_it_does_not():
    values = 50 + np.random.default_rng(1).normal(0, 1, 900)
    values[800] = 70.0  # 20 sigmas: u ~ 25 mean absolute residuals, beyond anything in memory
    scores, _ = run(LikelihoodBank(season_buckets=0), values)
    assert scores[:50].max() == 0.0  # warm-up: the first 50 values only train
    # p <= (0 + 10 e^-25) / (n + 10): far below 1e-10, so the score saturates at 1
    assert scores[800] == 1.0
    # HTM's scale: 0.5 is a tail probability of 1e-5 per value; 750 values of noise stay under it
    assert scores[50:800].max() < 0.5


def test_a_spike_the_series_has_shown_before_is_routine():
    values = 50 + np.random.default_rng(2).normal(0, 0.5, 2000)
    spikes = list(range(700, 2000, 150))
    values[spikes] = 70.0
    scores, _ = run(LikelihoodBank(season_buckets=0), values)
    assert scores[700] == 1.0
    # after k >= 1 spikes of that size in memory the tail probability is at least k / (n + prior),
    # with n <= 2000 values: the score is at most -log10(2 * 1 / 2010) / 10 = 0.3002
    assert max(scores[s] for s in spikes[1:]) <= 0.3003


def test_flat_series_first_move_is_infinitely_surprising():
    values = np.full(400, 3.0)
    values[300] = 3.5
    scores, _ = run(LikelihoodBank(season_buckets=0), values)
    assert scores[:300].max() == 0.0 and scores[300] == 1.0


def test_level_shift_alarms_once_then_refractory():
    values = 10 + np.random.default_rng(3).normal(0, 1, 1000)
    values[600:] += 8.0
    bank = LikelihoodBank(season_buckets=0)
    row = bank.add_series(1)
    alarms = np.array([bank.update(row, [v], [T0 + STEP * i])[1][0] for i, v in enumerate(values)])
    fired = np.flatnonzero(alarms)
    assert fired[0] == 600  # the first shifted value: 8 sigmas from the slow predictions
    assert not alarms[601:700].any()  # refractory: 100 values


def test_nan_is_neither_scored_nor_learned():
    values = 50 + np.random.default_rng(4).normal(0, 1, 300)
    a, b = LikelihoodBank(), LikelihoodBank()
    ra, rb = a.add_series(1), b.add_series(1)
    for i, v in enumerate(values):
        a.update(ra, [v], [T0 + STEP * i])
        sb, _, _ = b.update(rb, [v], [T0 + STEP * i])
        if i % 7 == 0:
            s_nan, alarm, _ = b.update(rb, [np.nan], [T0 + STEP * i + 1])
            assert s_nan[0] == 0.0 and not alarm[0]
    for f in LikelihoodBank.state_fields:
        np.testing.assert_array_equal(getattr(a, f)[:1], getattr(b, f)[:1])


def test_bank_equals_one_series_at_a_time_and_state_round_trips():
    rng = np.random.default_rng(5)
    n, width = 800, 4
    t = np.repeat(
        (T0 + 3600 * np.arange(n))[:, None], width, axis=1
    )  # hourly, 24 slots a day: the slot predictor runs too
    values = np.cumsum(rng.normal(0, 1, (n, width)), axis=0) + 10 * np.sin(np.arange(n) / 24 * 2 * np.pi)[:, None]
    values[600, 1] += 60
    together, _ = LikelihoodBank(season_buckets=24).run_series(t, values)
    for j in range(width):
        alone, _ = LikelihoodBank(season_buckets=24).run_series(t[:, j : j + 1], values[:, j : j + 1])
        np.testing.assert_allclose(together[:, j], alone[:, 0], rtol=0, atol=1e-12)
    # snapshot after 500 rounds, restore into a fresh bank: the rest is the same, bit for bit
    first = LikelihoodBank(season_buckets=24)
    first.run_series(t[:500], values[:500])
    restored = LikelihoodBank(capacity=1, season_buckets=24)
    restored.grow(width)
    for f in LikelihoodBank.state_fields:
        setattr(restored, f, getattr(first, f)[:width].copy())
    rows = np.arange(width)
    for i in range(500, n):
        s1, _, _ = first.update(rows, values[i], t[i])
        s2, _, _ = restored.update(rows, values[i], t[i])
        np.testing.assert_array_equal(s1, s2)
        np.testing.assert_array_equal(s1, together[i])


def test_config_names_the_detector_and_checks_its_parameters():
    cfg = UnivariateRuleConfig(name="lik", match=["*"], detector="likelihood", params={"threshold": 0.4})
    rule = SeriesRule.from_config(cfg, 600.0)
    assert isinstance(rule.scorer, LikelihoodBank) and rule.threshold == 0.4
    with pytest.raises(ValueError, match="record_decay"):
        UnivariateRuleConfig(name="lik", match=["*"], detector="likelihood", params={"record_decay": 0.9})


def test_engine_snapshot_restore_carries_likelihood_state():
    # the engine checkpoints a scorer through its state_fields: a restore mid-stream continues
    # exactly (the same incidents, byte for byte, as a run without the restart)
    from detector_scenarios import fleet, received

    from detectors.config import DetectorConfig
    from detectors.engine import Engine

    cfg = DetectorConfig.model_validate(
        {"univariate": [{"name": "lik", "match": ["gpu0.power_w"], "detector": "likelihood", "params": {"warmup": 10}}]}
    )
    records = received(fleet(power_spike={2: (60, 70)}))
    straight = [i.to_bytes() for i in Engine(cfg).process(records)]
    first = Engine(cfg)
    head = [i.to_bytes() for i in first.process(records[:250])]
    second = Engine(cfg)
    for s in first.take_dirty():
        second.restore(s)
    tail = [i.to_bytes() for i in second.process(records[250:])]
    assert b'"status":"open"' in b"".join(straight) and head + tail == straight
