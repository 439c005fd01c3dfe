"""The isolation-forest scorer on its own: event-time refits, causal scores, versions, state."""

import numpy as np
import pytest

from detectors.iforest import ClassForest


def normal(rng, n):
    return rng.normal([62.0, 300.0, 2e11], [0.6, 4.0, 1e8], (n, 3))


def every_10s(n, start=0):
    return (start + np.arange(n)) * 10.0


def test_quiet_on_normal_vectors_alarms_on_faulty_ones_with_a_model_version():
    rng = np.random.default_rng(3)
    forest = ClassForest(
        ["temp", "power", "mem"],
        host_class="h100x8",
        window=512,
        refit_interval_s=1280,
        min_train=128,
        n_estimators=100,
        threshold=0.68,
        seed=1,
    )
    scores, alarms, versions = forest.update(normal(rng, 512), every_10s(512))
    # the first refit point is 1280 s (vector 128); nothing is scored before it
    assert versions[127] is None and scores[:128].tolist() == [0.0] * 128 and versions[128] is not None
    assert forest.n_fits_ == 3 and forest.next_refit_ == 5120
    scores, alarms, versions = forest.update(normal(rng, 200), every_10s(200, 512))
    assert alarms.sum() == 0
    # a host off on every signal at once (an isolation forest, trained on the data's range, scores a
    # point beyond the range of one feature only like the most extreme training points: single
    # series excursions are the EWMA and static rules' job)
    faulty = np.array([[66.0, 315.0, 2.004e11], [57.0, 285, 1.996e11], [90, 120, 1e10]])
    scores, alarms, versions = forest.update(faulty, every_10s(3, 712))
    assert alarms.all()
    assert len(set(versions)) == 1 and versions[0].startswith("iforest:h100x8:5:")


def test_whitening_sees_a_combination_no_single_feature_shows():
    rng = np.random.default_rng(8)
    load = rng.uniform(0.1, 0.9, 600)
    data = np.column_stack([33 + 42 * load, 75 + 590 * load, 100 * load]) + rng.normal(0, [0.4, 6, 1], (600, 3))
    forest = ClassForest(["temp", "power", "util"], window=600, refit_interval_s=6000, min_train=100, threshold=0.65)
    forest.update(data, every_10s(600))
    normal_scores, _, _ = forest.update(data[:100], every_10s(100, 600))
    # high-load power at low-load temperature and utilisation: each value inside the fleet's range
    odd = np.array([[33 + 42 * 0.3, 75 + 590 * 0.8, 30.0]])
    assert (data.min(axis=0) < odd[0]).all() and (odd[0] < data.max(axis=0)).all()
    scores, alarms, _ = forest.update(odd, np.array([7000.0]))
    assert alarms[0] and scores[0] > normal_scores.max()


def test_refits_follow_event_time_not_vector_count():
    rng = np.random.default_rng(4)
    forest = ClassForest(["a", "b", "c"], window=256, refit_interval_s=600, min_train=50, n_estimators=10)
    # 4 hosts reporting every 10 s: 240 vectors per 600 s; refit points are 600, 1200, ... whatever the rate
    times = np.repeat(np.arange(300) * 10.0, 4)
    _, _, versions = forest.update(normal(rng, len(times)), times)
    assert forest.n_fits_ == 4  # at 600, 1200, 1800, 2400 s
    first_scored = versions.index(next(v for v in versions if v))
    assert times[first_scored] == 600 and times[first_scored - 1] == 590  # causal: fitted on what came before
    # a slightly late vector (older than the forest's clock) does not trigger or undo a refit
    forest.update(normal(rng, 1), np.array([2990.0]))
    assert forest.n_fits_ == 4 and forest.next_refit_ == 3000


def test_window_s_keeps_only_recent_vectors_for_the_fit():
    rng = np.random.default_rng(5)
    forest = ClassForest(
        ["a", "b", "c"], window=1000, window_s=300, refit_interval_s=600, min_train=10, n_estimators=10
    )
    forest.update(normal(rng, 100), every_10s(100))  # refit at 600 s on the vectors of (300, 600)
    assert forest.n_fits_ == 1 and len(forest.train_) == 29


def test_same_vectors_same_models_and_scores_whatever_the_chunking():
    data = normal(np.random.default_rng(5), 700)
    times = every_10s(700)
    a = ClassForest(["a", "b", "c"], window=256, refit_interval_s=1000, min_train=100, n_estimators=30)
    b = ClassForest(["a", "b", "c"], window=256, refit_interval_s=1000, min_train=100, n_estimators=30)
    whole = a.update(data, times)
    parts = [b.update(data[lo : lo + 37], times[lo : lo + 37]) for lo in range(0, 700, 37)]
    assert np.array_equal(whole[0], np.concatenate([p[0] for p in parts]))
    assert whole[2] == [v for p in parts for v in p[2]]
    assert a.version_ == b.version_ and a.n_fits_ == 6


def test_state_round_trip_refits_the_same_model():
    rng = np.random.default_rng(6)
    data, times = normal(rng, 900), every_10s(900)
    straight = ClassForest(
        ["a", "b", "c"],
        host_class="x",
        partition=2,
        window=300,
        refit_interval_s=1000,
        min_train=100,
        n_estimators=20,
        seed=7,
    )
    scores = straight.update(data, times)
    first = ClassForest(
        ["a", "b", "c"],
        host_class="x",
        partition=2,
        window=300,
        refit_interval_s=1000,
        min_train=100,
        n_estimators=20,
        seed=7,
    )
    head = first.update(data[:450], times[:450])
    header, arrays = first.state()
    second = ClassForest(
        ["a", "b", "c"],
        host_class="x",
        partition=2,
        window=300,
        refit_interval_s=1000,
        min_train=100,
        n_estimators=20,
        seed=7,
    )
    second.load_state(header, arrays)
    assert second.version_ == first.version_ and second.version_.startswith("iforest:x:p2:4:")
    tail = second.update(data[450:], times[450:])
    assert np.array_equal(np.concatenate([head[0], tail[0]]), scores[0]) and head[2] + tail[2] == scores[2]
    # another seed refits other trees: the version says so, and loading refuses to pretend otherwise
    other = ClassForest(
        ["a", "b", "c"],
        host_class="x",
        partition=2,
        window=300,
        refit_interval_s=1000,
        min_train=100,
        n_estimators=20,
        seed=8,
    )
    with pytest.raises(ValueError, match="is not the saved"):
        other.load_state(header, arrays)


def test_parameters_are_checked():
    with pytest.raises(ValueError):
        ClassForest([])
    with pytest.raises(ValueError):
        ClassForest(["a"], window=10, min_train=20)


def test_packed_scores_are_score_samples_bit_for_bit():
    from sklearn.ensemble import IsolationForest

    from detectors.iforest import PackedForest

    rng = np.random.default_rng(9)
    train = rng.normal(size=(700, 4)) * [1, 10, 100, 1000]
    model = IsolationForest(n_estimators=60, max_samples=200, random_state=4).fit(train)
    probe = np.vstack([rng.normal(size=(500, 4)) * [3, 30, 300, 3000], train[:50], np.zeros((1, 4))])
    assert np.array_equal(PackedForest(model).score(probe), -model.score_samples(probe))
    forest = ClassForest(["a", "b", "c", "d"], window=700, refit_interval_s=5000, min_train=100, n_estimators=30)
    forest.update(train, every_10s(700))
    assert forest.packed_ is not None  # verified at the fit, in use


def test_docstring_examples_run():
    import doctest

    from detectors import iforest, multivariate

    for module in (iforest, multivariate):
        result = doctest.testmod(module)
        assert result.failed == 0 and result.attempted > 0, module.__name__


def test_alarming_vectors_and_recently_alarming_hosts_stay_out_of_the_training_window():
    rng = np.random.default_rng(5)
    forest = ClassForest(
        ["temp", "power", "mem"],
        window=512,
        refit_interval_s=1280,
        min_train=128,
        seed=1,
        threshold=0.68,
        exclude_s=100,
    )
    forest.update(normal(rng, 256), every_10s(256), hosts=["a", "b"] * 128)
    seen = forest.n_seen_
    # host a alarms at 2560 s: scored, not learned; the clock still moves
    faulty = np.array([[90.0, 120.0, 1e10]])
    scores, alarms, _ = forest.update(faulty, [2560.0], hosts=["a"])
    assert alarms.all() and forest.n_seen_ == seen and forest.clock_ == 2560.0
    # ordinary vectors: host a's within 100 s of its alarm stay out, host b's and a's later one go in
    scores, alarms, _ = forest.update(normal(rng, 4), [2570.0, 2580.0, 2650.0, 2670.0], hosts=["a", "b", "a", "a"])
    assert not alarms.any() and forest.n_seen_ == seen + 2
    assert forest.last_alarm_ == {}  # host a is past exclude_s again: forgotten
    assert not (forest.buffer_[:, 0] == 90.0).any()
    # the same rows one at a time: the same window (a pure function of the rows in order)
    again = ClassForest(
        ["temp", "power", "mem"],
        window=512,
        refit_interval_s=1280,
        min_train=128,
        seed=1,
        threshold=0.68,
        exclude_s=100,
    )
    rng = np.random.default_rng(5)
    rows = [(v, t, h) for v, t, h in zip(normal(rng, 256), every_10s(256), ["a", "b"] * 128, strict=True)]
    rows += [(faulty[0], 2560.0, "a")] + list(
        zip(normal(rng, 4), [2570.0, 2580.0, 2650.0, 2670.0], "abaa", strict=True)
    )
    for v, t, h in rows:
        again.update(v[None, :], [t], hosts=[h])
    assert again.n_seen_ == forest.n_seen_ and np.array_equal(again.buffer_, forest.buffer_)
