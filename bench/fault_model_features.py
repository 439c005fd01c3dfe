"""Fault-model PR-AUC with and without the windowed and rising rates: the same split as `model train`.

    PYTHONPATH=. python bench/fault_model_features.py [FOLDER]

FOLDER holds `bench/fault_model_sim.py --out FOLDER`'s metrics.jsonl and faults.csv (default
/tmp/d16/fmsim). Metric features only (no XID history), horizon 3600 s, the later 40 % held out,
batches inside a fault left out, as `fleetmedic model train` does; each variant is fitted by the
same scaler + calibrated logistic regression. Prints one PR-AUC per variant. About 8 minutes
(reading 1.2 GB of batches is most of it).
"""

import sys
import time

import numpy as np
from sklearn.calibration import CalibratedClassifierCV
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score
from sklearn.preprocessing import StandardScaler

from detectors import fault_model as fm

# The model's features no longer include the windowed `_1h` rates (docs/evaluation.md); this
# measurement is about them too, so it computes the three `_1h` columns as an earlier main had them,
# beside the `_rise` columns (the row code reads these module names when it runs).
fm.WINDOWED = ["ecc_corrected_rate", "pcie_replay_rate", "nvlink_crc_rate"]
fm._WINDOWED_AT = {name: len(fm.FEATURES) + k for k, name in enumerate(fm.WINDOWED)}
fm._RISING_AT = {name: len(fm.FEATURES) + len(fm.WINDOWED) + k for k, name in enumerate(fm.RISING)}
fm.FEATURE_NAMES = (
    [f[0] for f in fm.FEATURES]
    + [f"{n}_1h" for n in fm.WINDOWED]
    + [f"{n}_rise" for n in fm.RISING]
    + list(fm.XidHistory.names)
)
fm._XID_AT = len(fm.FEATURES) + len(fm.WINDOWED) + len(fm.RISING)

D = sys.argv[1] if len(sys.argv) > 1 else "/tmp/d16/fmsim"
t0 = time.time()
batches = fm.read_history(f"{D}/metrics.jsonl")
print("read", len(batches), f"{time.time() - t0:.0f}s", flush=True)
faults = fm.read_faults(f"{D}/faults.csv")
spans = fm.read_fault_spans(f"{D}/faults.csv")
X, hosts, times = fm.feature_matrix(batches, [], fm.XidHistory())
del batches
print("features", X.shape, f"{time.time() - t0:.0f}s", flush=True)
y = fm.labels(hosts, times, faults, 3600.0)
cut = np.quantile(times, 0.6)
healthy = ~fm.in_fault(hosts, times, spans)
after = np.array(
    [any(b <= t < b + fm.WINDOW_S for a, b in spans.get(h, ())) for h, t in zip(hosts, times, strict=True)]
)
tr, te = (times < cut) & healthy, (times >= cut) & healthy
names = fm.FEATURE_NAMES
win = [i for i, n in enumerate(names) if n.endswith("_1h") and not n.startswith("xid")]
rising = [i for i, n in enumerate(names) if n.endswith("_rise")]
xidc = [i for i, n in enumerate(names) if n.startswith("xid")]
base = [i for i in range(len(names)) if i not in win and i not in rising and i not in xidc]
base_without_rates = [i for i in base if names[i] not in fm.RISING]


def fit(cols, train_rows, transform=None):
    Xt = X[:, cols].copy()
    if transform:
        Xt = transform(Xt)
    sc = StandardScaler().fit(Xt[train_rows])
    clf = CalibratedClassifierCV(
        LogisticRegression(C=1.0, class_weight="balanced", max_iter=1000, random_state=0), method="sigmoid", cv=3
    ).fit(sc.transform(Xt[train_rows]), y[train_rows])
    p = clf.predict_proba(sc.transform(Xt[te]))[:, 1]
    return average_precision_score(y[te], p), p


print(
    f"held out {te.sum()} rows, {y[te].sum()} positive (chance {y[te].mean():.4f}); "
    f"train {tr.sum()}, positive {y[tr].sum()}; "
    f"train rows within 1 h after a fault end: {(tr & after).sum()} ({y[tr & after].sum()} positive)",
    flush=True,
)
for label, cols, rows, tf in [
    ("per-batch features only (as before the _1h columns)", base, tr, None),
    ("with the _1h columns (as on main)", base + win, tr, None),
    ("with _1h, log1p of every column (negatives clipped to 0)", base + win, tr, np.log1p),
    ("with _1h, train rows within 1 h after a fault's end left out", base + win, tr & ~after, None),
    ("per-batch only, train rows within 1 h after a fault's end left out", base, tr & ~after, None),
    ("with the _rise columns (the model's features now)", base + rising, tr, None),
    ("_rise instead of the per-batch ECC, PCIe and NVLink rates", base_without_rates + rising, tr, None),
    ("with _rise and _1h", base + rising + win, tr, None),
]:
    try:
        auc, p = fit(cols, rows, tf if tf is None else (lambda Z: np.log1p(np.maximum(Z, 0))))
        print(f"{label}: PR-AUC {auc:.3f}; p>=0.5 on {(p >= 0.5).sum()} rows", flush=True)
    except Exception as exc:
        print(label, "failed", exc, flush=True)
print(f"done {time.time() - t0:.0f}s")
