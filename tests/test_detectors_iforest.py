"""The isolation-forest scorer on its own (not yet wired into `fleetmedic detect`)."""

import numpy as np
import pytest

from detectors.iforest import ClassForest


def normal(rng, n):
    return rng.normal([62.0, 300.0, 2e11], [0.6, 4.0, 1e8], (n, 3))


def test_quiet_on_normal_vectors_alarms_on_faulty_ones_with_a_model_version():
    rng = np.random.default_rng(3)
    forest = ClassForest(["temp", "power", "mem"], host_class="h100x8", window=512, refit_every=128, min_train=128,
                         n_estimators=100, threshold=0.68, seed=1)
    scores, alarms, versions = forest.update(normal(rng, 512))
    assert versions[0] is None and scores[:128].tolist() == [0.0] * 128  # nothing scored before the first fit
    assert forest.n_fits_ == 4
    scores, alarms, versions = forest.update(normal(rng, 200))
    assert alarms.sum() == 0
    # a host off on every signal at once (an isolation forest, trained on the data's range, scores a
    # point beyond the range of one feature only like the most extreme training points: single
    # series excursions are the EWMA and static rules' job)
    faulty = np.array([[66.0, 315.0, 2.004e11], [57.0, 285, 1.996e11], [90, 120, 1e10]])
    scores, alarms, versions = forest.update(faulty)
    assert alarms.all() and (scores > 0.7).all()
    assert len(set(versions)) == 1 and versions[0].startswith("iforest:h100x8:5:")


def test_same_vectors_same_models_and_scores_whatever_the_chunking():
    data = normal(np.random.default_rng(5), 700)
    a = ClassForest(["a", "b", "c"], window=256, refit_every=100, min_train=100, n_estimators=30)
    b = ClassForest(["a", "b", "c"], window=256, refit_every=100, min_train=100, n_estimators=30)
    whole = a.update(data)
    parts = [b.update(data[lo:lo + 37]) for lo in range(0, 700, 37)]
    assert np.array_equal(whole[0], np.concatenate([p[0] for p in parts]))
    assert whole[2] == [v for p in parts for v in p[2]]
    assert a.version_ == b.version_


def test_vectors_need_every_feature():
    forest = ClassForest(["gpu0.temperature_c", "gpu0.power_w"])
    assert forest.vector_of({"gpu0.temperature_c": 60.0, "gpu0.power_w": 300.0}).tolist() == [60.0, 300.0]
    assert forest.vector_of({"gpu0.temperature_c": 60.0, "gpu0.power_w": None}) is None
    assert forest.vector_of({"gpu0.temperature_c": 60.0}) is None
    with pytest.raises(ValueError):
        ClassForest([])
