"""The NAB scorer against cases worked out by hand (no broker needed).

Shared arithmetic, sigma(y) = 2 / (1 + e^(5y)) - 1:
  sigma(-1)    = 2 / (1 + e^-5)     - 1 = 2 / 1.0067379 - 1 = 0.9866143
  sigma(-0.75) = 2 / (1 + e^-3.75)  - 1 = 2 / 1.0235177 - 1 = 0.9540470
  sigma(-0.5)  = 2 / (1 + e^-2.5)   - 1 = 2 / 1.0820850 - 1 = 0.8482836
  sigma(2/3)   = 2 / (1 + e^3.3333) - 1 = 2 / 29.031590 - 1 = -0.9311096
The files below have N = 20 rows, so probation = min(floor(0.15 x 20), 750) = 3 rows, and one
window over rows 10..13 (W = 4 rows), so row i in it sits at y = -(13 - i + 1) / 4.
"""

import numpy as np
import pytest

from detectors import nab

STD = nab.PROFILES["standard"]
LOW_FP = nab.PROFILES["reward_low_FP_rate"]
LOW_FN = nab.PROFILES["reward_low_FN_rate"]
WINDOW = [(10, 13)]


def detections(*rows, n=20):
    d = np.zeros(n, bool)
    d[list(rows)] = True
    return d


def test_sigmoid_and_probation_by_hand():
    assert nab.scaled_sigmoid(-1.0) == pytest.approx(0.9866143, abs=1e-7)
    assert nab.scaled_sigmoid(0.0) == 0.0
    assert nab.scaled_sigmoid(2 / 3) == pytest.approx(-0.9311096, abs=1e-7)
    assert nab.scaled_sigmoid(3.5) == -1.0  # past 3 widths: the full cost
    assert nab.probation_rows(20) == 3  # floor(3.0)
    assert nab.probation_rows(4032) == 604  # floor(604.8)
    assert nab.probation_rows(6000) == 750  # 900 capped at 0.15 x 5000


def test_detection_at_left_edge_earns_a_tp():
    # Row 10: y = -(13 - 10 + 1) / 4 = -1, credit = sigma(-1) / sigma(-1) = 1.
    fs = nab.score_file(detections(10), WINDOW, STD)
    assert (fs.score, fs.tp, fs.fn, fs.fp) == (pytest.approx(1.0), 1, 0, 0)


def test_only_the_earliest_detection_in_a_window_counts():
    # Rows 12 and 13: only row 12 counts, y = -(13 - 12 + 1) / 4 = -0.5,
    # credit = 0.8482836 / 0.9866143 = 0.8597926. Row 13 adds nothing and costs nothing.
    fs = nab.score_file(detections(12, 13), WINDOW, STD)
    assert fs.score == pytest.approx(0.8597926, abs=1e-7)
    assert (fs.tp, fs.fp, fs.first_detections) == (1, 0, [12])


def test_false_positive_before_any_window_costs_full_a_fp_and_miss_costs_a_fn():
    # Row 5: no preceding window -> -0.11; the window is missed -> -1. Total -1.11.
    fs = nab.score_file(detections(5), WINDOW, STD)
    assert fs.score == pytest.approx(-1.11)
    assert (fs.tp, fs.fn, fs.fp) == (0, 1, 1)
    # Low-FP profile: -0.22 - 1 = -1.22. Low-FN profile: -0.11 - 2 = -2.11.
    assert nab.score_file(detections(5), WINDOW, LOW_FP).score == pytest.approx(-1.22)
    assert nab.score_file(detections(5), WINDOW, LOW_FN).score == pytest.approx(-2.11)


def test_false_positive_after_a_window_is_scaled_by_distance():
    # Row 15 after window 10..13: d = |15 - 13| / (4 - 1) = 2/3, cost = 0.11 x sigma(2/3)
    # = 0.11 x -0.9311096 = -0.1024221. With the left-edge hit on row 10 (+1): 0.8975779.
    fs = nab.score_file(detections(10, 15), WINDOW, STD)
    assert fs.score == pytest.approx(0.8975779, abs=1e-7)
    # Right after the window (row 14: d = 1/3) costs less than further away (row 19: d = 2).
    near = nab.score_file(detections(14), WINDOW, STD).score
    far = nab.score_file(detections(19), WINDOW, STD).score
    assert -1.11 < far < near < -1.0


def test_probation_rows_are_ignored():
    # Row 2 < probation 3: neither cost nor credit; no windows, so 0.
    assert nab.score_file(detections(2), [], STD).score == 0.0
    assert nab.score_file(detections(3), [], STD).score == pytest.approx(-0.11)


def test_normalisation_by_hand():
    # 2 windows: perfect = 2, null = -2. Raw 0.5 -> 100 x (0.5 + 2) / 4 = 62.5.
    assert nab.normalise(0.5, 2, STD) == pytest.approx(62.5)
    assert nab.normalise(-2.0, 2, STD) == 0.0
    assert nab.normalise(2.0, 2, STD) == 100.0
    # Low-FN: null = -4, perfect = 2. Raw 0.5 -> 100 x 4.5 / 6 = 75.
    assert nab.normalise(0.5, 2, LOW_FN) == pytest.approx(75.0)


def test_best_threshold_by_hand():
    # Scores: row 5 = 0.9 (before the window), row 11 = 0.8, row 12 = 0.95.
    # threshold > 0.95: nothing fires                      -> -1
    # threshold 0.95:   row 12 (y = -0.5)                  -> 0.8597926
    # threshold 0.9:    + false positive on row 5           -> 0.8597926 - 0.11 = 0.7497926
    # threshold 0.8:    row 11 (y = -0.75) replaces row 12  -> 0.9540470 / 0.9866143 - 0.11 = 0.8569891
    # Best: 0.95 with 0.8597926 (just above 0.8569891).
    scores = np.zeros(20)
    scores[5], scores[11], scores[12] = 0.9, 0.8, 0.95
    corpus = nab.Corpus(["a.csv"], [scores], [WINDOW])
    threshold, raw = nab.best_threshold(corpus, STD)
    assert threshold == 0.95
    assert raw == pytest.approx(0.8597926, abs=1e-7)
    # Low-FN: misses cost 2, so any detection beats none; still 0.95 is best.
    assert nab.best_threshold(corpus, LOW_FN)[0] == 0.95
    result = nab.evaluate(corpus, STD)
    assert result.normalised == pytest.approx(100 * (0.8597926 + 1) / 2, abs=1e-5)
    # A given threshold is used as is: 0.8 gives the hand-computed 0.8569891.
    assert nab.evaluate(corpus, STD, threshold=0.8).raw == pytest.approx(0.8569891, abs=1e-7)


def test_sweep_agrees_with_brute_force_on_random_corpora():
    rng = np.random.default_rng(7)
    for _ in range(20):
        names, scores, windows = [], [], []
        for f in range(3):
            n = int(rng.integers(30, 80))
            lo = int(rng.integers(12, n - 10))
            windows.append([(lo, lo + int(rng.integers(1, 8)))] if rng.random() < 0.8 else [])
            scores.append(np.round(rng.random(n), 2))
            names.append(f"f{f}.csv")
        corpus = nab.Corpus(names, scores, windows)
        for profile in nab.PROFILES.values():
            threshold, raw = nab.best_threshold(corpus, profile)
            candidates = np.unique(np.concatenate(scores))
            brute = max(
                sum(nab.score_file(s >= t, w, profile).score for s, w in zip(scores, windows, strict=True))
                for t in candidates
            )
            assert raw == pytest.approx(max(brute, -profile.a_fn * corpus.n_windows))
            assert nab.evaluate(corpus, profile, threshold).raw == pytest.approx(raw)


def test_window_rows_from_timestamps_are_inclusive():
    times = np.arange(np.datetime64("2014-04-01T00:00"), np.datetime64("2014-04-01T01:00"), np.timedelta64(5, "m"))
    rows = nab.window_rows(times, [["2014-04-01 00:10:00.000000", "2014-04-01 00:25:00.000000"]])
    assert rows == [(2, 5)]


def test_profiles_file_and_bad_input(tmp_path):
    good = tmp_path / "profiles.json"
    good.write_text('{"standard": {"CostMatrix": {"tpWeight": 1.0, "fnWeight": 1.0, "fpWeight": 0.11}}}')
    assert nab.load_profiles(good)["standard"] == STD
    bad = tmp_path / "bad.json"
    bad.write_text('{"standard": {"CostMatrix": {"tpWeight": 1.0}}}')
    with pytest.raises(ValueError, match="standard"):
        nab.load_profiles(bad)
    csv = tmp_path / "x.csv"
    csv.write_text("timestamp,value\n2014-04-01 00:00:00,1.0\n2014-04-01 00:05:00,oops\n")
    with pytest.raises(ValueError, match=r"x.csv:3"):
        nab.read_series(csv)
