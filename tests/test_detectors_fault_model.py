"""The logistic fault model: features, time-split training, saved model, explain (not yet in detect)."""

from __future__ import annotations

import csv
import json
from datetime import timedelta

import numpy as np

from fleetmedic.cli import main
from fleetmedic.schemas import MetricBatch

from detector_scenarios import T0
from detectors import fault_model


def history(tmp_path, n_hosts=30, steps=200, seed=0):
    """Hosts report every 60 s; a third of them fault, their corrected-ECC rate and temperature
    climbing in the 20 minutes before."""
    rng = np.random.default_rng(seed)
    faults = {f"n{h:02d}": int(rng.integers(60, steps)) for h in range(n_hosts) if h % 3 == 0}
    lines, ecc = [], dict.fromkeys(range(n_hosts), 0.0)
    for s in range(steps):
        for h in range(n_hosts):
            host = f"n{h:02d}"
            lead = faults.get(host, 10**9) - s
            sick = 0 < lead <= 20
            ecc[h] += rng.poisson(40 if sick else 1)
            batch = MetricBatch(host=host, time=T0 + timedelta(seconds=60 * s), source="sim",
                                values={"gpu0.ecc.volatile.corrected": ecc[h], "gpu1.ecc.volatile.corrected": 0.0,
                                        "gpu0.temperature_c": float(62 + rng.normal(0, 1) + (6 if sick else 0)),
                                        "gpu0.power_w": float(300 + rng.normal(0, 5))},
                                counters=["gpu0.ecc.volatile.corrected", "gpu1.ecc.volatile.corrected"])
            lines.append(batch.model_dump_json())
    hist = tmp_path / "history.jsonl"
    hist.write_text("\n".join(lines) + "\n")
    fpath = tmp_path / "faults.csv"
    with open(fpath, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["host", "time"])
        for host, s in faults.items():
            w.writerow([host, (T0 + timedelta(seconds=60 * s)).isoformat()])
    return hist, fpath


def test_features_are_rates_and_maxima_over_gpus():
    b = lambda s, v: MetricBatch(host="h", time=T0 + timedelta(seconds=s), source="t",
                                 values={"gpu0.ecc.volatile.corrected": v, "gpu1.temperature_c": 70.0,
                                         "gpu0.temperature_c": 60.0}, counters=["gpu0.ecc.volatile.corrected"])
    X, hosts, times = fault_model.feature_matrix([b(0, 10.0), b(10, 30.0), b(20, 5.0)])
    names = [f[0] for f in fault_model.FEATURES]
    assert X[:, names.index("ecc_corrected_rate")].tolist() == [0.0, 2.0, 0.5]  # reset: rate from zero
    assert X[:, names.index("temperature_c")].tolist() == [70.0, 70.0, 70.0]


def test_train_reports_held_out_scores_saves_a_model_and_explains_it(tmp_path, capsys):
    hist, faults = history(tmp_path)
    out = tmp_path / "models"
    assert main(["model", "train", "--history", str(hist), "--faults", str(faults), "--horizon-s", "1200",
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    line = next(l for l in text.splitlines() if l.startswith("held-out"))
    precision, recall, prauc = (float(line.split(k)[1].split()[0]) for k in ("precision", "recall", "PR-AUC"))
    assert precision > 0.5 and recall > 0.5 and prauc > 0.6
    [saved] = out.glob("fault-model-*.json")
    model = json.loads(saved.read_text())
    assert saved.name == f"fault-model-{model['version']}.json"
    # the saved numbers reproduce sklearn's calibrated probabilities
    X, hosts, times = fault_model.feature_matrix(fault_model.read_history(hist))
    p = fault_model.predict_proba(model, X)
    assert ((0 <= p) & (p <= 1)).all()
    # deterministic: the same history gives the same model version
    assert main(["model", "train", "--history", str(hist), "--faults", str(faults), "--horizon-s", "1200",
                 "--out", str(out)]) == 0
    assert len(list(out.glob("fault-model-*.json"))) == 1
    capsys.readouterr()
    assert main(["model", "explain", str(saved)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[0] in ("ecc_corrected_rate", "temperature_c")  # the strongest feature first
    assert float(lines[1].split()[1]) > 0


def test_bad_history_line_is_named(tmp_path, capsys):
    hist = tmp_path / "h.jsonl"
    hist.write_text('{"nope": 1}\n')
    faults = tmp_path / "f.csv"
    faults.write_text("host,time\n")
    assert main(["model", "train", "--history", str(hist), "--faults", str(faults)]) == 2
    assert f"{hist}:1: not a metric batch" in capsys.readouterr().err


def test_saved_numbers_give_sklearns_calibrated_probabilities():
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, len(fault_model.FEATURES)))
    y = (X[:, 0] + rng.normal(size=400) > 1).astype(int)
    model = fault_model.train(X, y)
    scaler = StandardScaler().fit(X)
    clf = CalibratedClassifierCV(LogisticRegression(class_weight="balanced", max_iter=1000, random_state=0),
                                 method="sigmoid", cv=3).fit(scaler.transform(X), y)
    assert np.allclose(fault_model.predict_proba(model, X), clf.predict_proba(scaler.transform(X))[:, 1])


def test_detect_scores_the_model_live_raises_before_the_fault_and_restores_exactly(tmp_path, capsys):
    from detectors.config import DetectorConfig
    from detectors.engine import Engine
    from detector_scenarios import received

    hist, faults = history(tmp_path, n_hosts=30, steps=200, seed=0)
    out = tmp_path / "models"
    assert main(["model", "train", "--history", str(hist), "--faults", str(faults), "--horizon-s", "1200",
                 "--threshold", "0.7", "--out", str(out)]) == 0
    [saved] = out.glob("fault-model-*.json")
    config = DetectorConfig.model_validate({"fault_model": {"path": str(saved), "for_s": 120,
                                                            "resolve_after_s": 600}})
    # a fresh stretch of fleet life (another seed): does the live engine warn before the faults?
    live = tmp_path / "live"
    live.mkdir()
    live_hist, live_faults = history(live, n_hosts=9, steps=200, seed=11)
    records = received(fault_model.read_history(live_hist))
    incidents = Engine(config).process(records)
    truth = fault_model.read_faults(live_faults)
    opened = [i for i in incidents if i.status == "open"]
    assert {i.host for i in opened} == set(truth)  # each faulty host warned, no healthy host
    for inc in opened:
        lead = truth[inc.host][0] - inc.time.timestamp()
        assert 0 < lead <= 1200 and inc.model_version == saved.stem and inc.kind == "fault_risk"
    # snapshot and restore mid-stream continue exactly
    first = Engine(config)
    head = first.process(records[:900])
    second = Engine(config)
    for s in first.take_dirty():
        second.restore(s)
    assert [i.to_bytes() for i in head + second.process(records[900:])] == [i.to_bytes() for i in incidents]
