"""The surprise-record univariate detector: behaviour, batch/single equivalence, messy input."""

import doctest

import numpy as np
import pytest

from detectors import univariate
from detectors.univariate import SurpriseRecord, SurpriseRecordBank, SurpriseRecordParams

T0 = 1_700_000_000  # a midnight-aligned day would not matter: buckets come from t mod period
STEP = 300
QUIET = 0.65  # the threshold for live use: no alarm on 100,000 values of Gaussian noise (below)


def noisy(n, seed, level=50.0, sd=1.0):
    return level + np.random.default_rng(seed).normal(0, sd, n)


def test_docstring_examples():
    assert doctest.testmod(univariate).failed == 0


def test_spike_alarms_once_and_quiet_before():
    values = noisy(900, 1)
    values[800] = 60.0  # 10 sigmas
    det = SurpriseRecord(threshold=QUIET)
    out = [det.update(T0 + STEP * i, v) for i, v in enumerate(values)]
    scores = np.array([s for s, _ in out])
    alarms = np.array([a for _, a in out])
    assert np.flatnonzero(alarms).tolist() == [800]
    assert scores[:240].max() == 0.0  # 120 train-only, 120 record-setting: no score yet
    assert scores[800] > 0.8  # q = r / M = 2.8: score = 1 - 1 / (2 q)
    assert 0.0 <= scores.min() and scores.max() < 1.0


def test_repeated_spikes_of_the_same_height_fire_only_the_first_time():
    values = noisy(2000, 2, sd=0.5)
    spikes = list(range(700, 2000, 150))
    values[spikes] = 70.0
    det = SurpriseRecord(threshold=QUIET)
    alarms = np.array([det.update(T0 + STEP * i, v)[1] for i, v in enumerate(values)])
    assert np.flatnonzero(alarms).tolist() == [700]
    # A higher one is a new record.
    score, alarm = det.update(T0 + STEP * 2000, 95.0)
    assert alarm and score > 0.6


def test_season_model_catches_a_missing_daily_peak():
    # Square wave: high (80) for the middle third of every day, low (20) otherwise. On day 6 the
    # peak never comes: every value is within the usual range, only the time of day is wrong.
    # (Day 1's first peak is itself a surprise, as it would be in NAB's probation period.)
    per_day, bad_day = 288, 9
    t = T0 - T0 % 86400 + STEP * np.arange(11 * per_day)
    tod = np.arange(len(t)) % per_day
    values = np.where((tod >= 96) & (tod < 192), 80.0, 20.0) + noisy(len(t), 3, level=0.0, sd=0.5)
    peak = slice(bad_day * per_day + 96, bad_day * per_day + 192)
    values[peak] = 20.0 + noisy(96, 4, level=0.0, sd=0.5)
    runs = {}
    for name, buckets in (("season", 288), ("no season", 0)):
        bank = SurpriseRecordBank(season_buckets=buckets, threshold=QUIET)
        rows = bank.add_series(1)
        runs[name] = np.array([bank.update(rows, [v], [ti])[1][0] for ti, v in zip(t, values, strict=True)])
    alarms = np.flatnonzero(runs["season"][5 * per_day :]) + 5 * per_day
    assert alarms.size and bad_day * per_day + 96 <= alarms[0] < bad_day * per_day + 110
    # Without the season model the missing peak goes unseen: every value is a usual value.
    assert not runs["no season"][peak].any()


def test_false_alarm_rate_on_gaussian_noise():
    # 20 series x 5000 values of N(50, 1): the NAB-tuned default threshold (0.529) is on the
    # edge of noise records (measured: 107 alarms, 1.07 per 1000 values; 133 before the refractory
    # period); QUIET fires none.
    n, width = 5000, 20
    values = 50 + np.random.default_rng(1).normal(0, 1, (n, width))
    t = np.repeat((T0 + STEP * np.arange(n))[:, None], width, axis=1)
    _, alarms = SurpriseRecordBank().run_series(t, values)
    assert alarms.sum() == 107
    _, alarms = SurpriseRecordBank(threshold=QUIET).run_series(t, values)
    assert alarms.sum() == 0


def test_bank_over_many_series_equals_one_detector_per_series():
    n_steps, n_series = 700, 5
    t = T0 + STEP * np.arange(n_steps)
    values = np.stack([noisy(n_steps, 10 + j, level=10 * j, sd=1 + j) for j in range(n_series)], axis=1)
    values[400, 1] += 30
    values[500:, 3] += 40  # level shift, 10 sigmas
    bank = SurpriseRecordBank(warmup=80)
    scores, alarms = bank.run_series(np.repeat(t[:, None], n_series, axis=1), values)
    for j in range(n_series):
        det = SurpriseRecord(warmup=80)
        single = np.array([det.update(ti, v) for ti, v in zip(t, values[:, j], strict=True)])
        np.testing.assert_array_equal(single[:, 0], scores[:, j])
        np.testing.assert_array_equal(single[:, 1].astype(bool), alarms[:, j])
    assert alarms[400, 1]
    # series 3: a noise record at 469 alarms, and the refractory period (100 values) covers the
    # shift at 500; without it the shift alarms at once
    assert np.flatnonzero(alarms[:, 3]).tolist() == [469]
    _, alarms = SurpriseRecordBank(warmup=80, refractory=0).run_series(np.repeat(t[:, None], n_series, axis=1), values)
    assert alarms[500, 3]


def test_score_one_does_not_learn_and_learn_one_does():
    det = SurpriseRecord(season_buckets=0, warmup=10)
    for i, v in enumerate(noisy(50, 5)):
        det.learn_one(T0 + STEP * i, v)
    before = {f: getattr(det.bank, f).copy() for f in det.bank.state_fields}
    s1 = det.score_one(T0 + STEP * 50, 70.0)
    s2 = det.score_one(T0 + STEP * 50, 70.0)
    assert s1 == s2 > 0.5
    for f, arr in before.items():
        np.testing.assert_array_equal(getattr(det.bank, f), arr)
    assert det.update(T0 + STEP * 50, 70.0)[0] == s1


def test_nan_is_neither_scored_nor_learned_and_late_series_warm_up_alone():
    bank = SurpriseRecordBank(warmup=20, season_buckets=0)
    a = bank.add_series(1)
    for i, v in enumerate(noisy(100, 6)):
        bank.update(a, [v], [T0 + STEP * i])
    count = bank.count_[a].copy()
    score, alarm, _ = bank.update(a, [np.nan], [T0 + STEP * 100])
    assert score.tolist() == [0.0] and not alarm.any()
    assert bank.count_[a] == count
    # A series appearing now, in the same call as the warm one, scores 0 until warm.
    b = bank.add_series(1)
    both = np.array([a[0], b[0]])
    for i in range(39):
        scores, _, _ = bank.update(both, [50.0, 1000.0 + i % 3], [T0 + STEP * (101 + i)] * 2)
        assert scores[1] == 0.0
    assert bank.count_[b] == 39


def test_same_input_same_output():
    values = noisy(800, 8)
    values[600] = 90
    runs = []
    for _ in range(2):
        det = SurpriseRecord(warmup=100)
        runs.append([det.update(T0 + STEP * i, v) for i, v in enumerate(values)])
    assert runs[0] == runs[1]


def test_params_are_checked():
    with pytest.raises(ValueError, match="alpha_level"):
        SurpriseRecordParams(alpha_level=0)
    with pytest.raises(ValueError, match="season_buckets"):
        SurpriseRecordParams(season_period_s=86400, season_buckets=7)
    with pytest.raises(ValueError, match="threshold"):
        SurpriseRecordParams(threshold=1.5)
    with pytest.raises(TypeError):
        SurpriseRecordBank(no_such_param=1)


def test_a_flat_series_alarms_on_its_first_move_and_an_alarm_is_followed_by_quiet():
    # Flat for 600 values (every surprise record is exactly 0), then one step up: the step is
    # infinitely new (score -> 1). The scores of the next `refractory` values are 0 (one event,
    # one detection), after which scoring resumes.
    n = 900
    values = np.full(n, 7.0)
    values[600:] = 8.0
    t = T0 + STEP * np.arange(n)
    det = SurpriseRecord(season_buckets=0, warmup=50, refractory=100)
    out = np.array([det.update(ti, v) for ti, v in zip(t, values, strict=True)])
    assert not out[:600, 1].any()
    assert out[600, 1] and out[600, 0] == 1.0
    assert (out[601:701, 0] == 0).all() and not out[601:701, 1].any()
    # the old behaviour: a record of 0 never scores, so the move is missed
    old = SurpriseRecord(season_buckets=0, warmup=50, zero_record_alarms=False, refractory=0)
    assert not np.array([old.update(ti, v)[1] for ti, v in zip(t, values, strict=True)])[600]


def test_season_records_of_an_hourly_series_are_set_over_days_not_288_values_each():
    # An hourly series fills 24 of the 288 day buckets: counting 2 x 288 season surprises made its
    # season feature wait 24 days; by time it scores after 3 days of learning + 2 of records.
    hours = 24 * 12
    t = T0 + 3600 * np.arange(hours)
    values = 10 + 5 * np.sin(2 * np.pi * np.arange(hours) / 24) + np.random.default_rng(4).normal(0, 0.1, hours)
    by_time = SurpriseRecordBank(warmup=20)
    by_count = SurpriseRecordBank(warmup=20, season_record_by_time=False)
    for bank in (by_time, by_count):
        rows = bank.add_series(1)
        for ti, v in zip(t, values, strict=True):
            bank.update(rows, [v], [ti])
    # the season feature's record is set, and scoring started (count of season surprises > warmup*2)
    assert by_time.season_start_[0] > 0
    assert (t[-1] - by_time.season_start_[0]) >= 2 * 86400
    assert by_count.feature_count_[0, 2] < 2 * 288 + 20  # by count it would still be setting records
