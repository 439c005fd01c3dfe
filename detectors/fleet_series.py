"""A labelled stress benchmark of fleet-like series, scored like NAB (`fleetmedic eval fleet`).

Each series is one signal of one simulated GPU node, every 5 minutes for 14 days (4,032 rows),
made of what fleet signals are made of, seeded so the same seed gives the same files:

- load: a diurnal curve (busier by day) times jobs that start and end (on/off periods of hours);
- signals that follow it: GPU temperature (integer °C, lagging the load), power (W, noisy),
  utilisation (%, quantised to whole percent, 0 between jobs); ECC corrected errors and network
  drops as per-interval counts (what the engine sees after its counter-to-rate step);
- nuisances that are *not* anomalies and carry no label: job starts and ends, a gap (rows
  missing for hours), a clock step (the timestamps jump forward one hour), a counter reset (a
  cumulative series drops to 0 and climbs again).

Labelled anomalies, one or two per series, each of a kind a fleet sees: a level shift (a fan
failure: temperature +8 °C at the same load), a slow drift (a clogged filter: +0.02 °C per
row for a day), power stuck low while utilisation stays high (a throttled GPU), utilisation
flat at 100 % with no job end (a hung job), an ECC error burst, a network drop storm, a spike.
Windows follow NAB's rule: 10 % of the file's rows divided by its number of anomalies, centred
on the anomaly's start. Series with no anomaly test the false-alarm side.

`write(folder, seed)` writes `data/<signal>/<name>.csv` (`timestamp,value`) and
`labels/combined_windows.json`, the layout `fleetmedic eval nab` reads; the categories are the
signals, so leave-one-category-out there means "leave one signal out".
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

STEP_S = 300
ROWS = 14 * 288
T0 = datetime(2026, 6, 1, tzinfo=UTC)


def _load(rng: np.random.Generator, n: int) -> np.ndarray:
    """Load in [0, 1]: diurnal curve times job on/off periods (jobs of 2-20 h, gaps of 0.5-6 h)."""
    hours = np.arange(n) * STEP_S / 3600
    diurnal = 0.75 + 0.25 * np.sin(2 * np.pi * (hours - 9) / 24)
    on = np.zeros(n, bool)
    i = int(rng.integers(0, 24))
    while i < n:
        length = int(rng.uniform(2, 20) * 12)
        on[i : i + length] = True
        i += length + int(rng.uniform(0.5, 6) * 12)
    return np.where(on, diurnal * rng.uniform(0.85, 1.0, n), 0.0)


def _lag(x: np.ndarray, alpha: float) -> np.ndarray:
    out = np.empty_like(x)
    acc = x[0]
    for i, v in enumerate(x):
        acc += alpha * (v - acc)
        out[i] = acc
    return out


def _signal(kind: str, load: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    n = len(load)
    if kind == "gpu_temperature":
        return np.round(34 + 42 * _lag(load, 0.3) + rng.normal(0, 0.6, n))
    if kind == "gpu_power":
        return 65 + 560 * load + rng.normal(0, 12, n) * (load > 0) + rng.normal(0, 2, n)
    if kind == "gpu_util":
        return np.clip(np.round(100 * load / np.maximum(load.max(), 1e-9) + rng.normal(0, 3, n) * (load > 0)), 0, 100)
    if kind == "ecc_corrected":
        return rng.poisson(0.02, n).astype(float)
    if kind == "net_drops":
        return rng.poisson(0.3 + 2.0 * load).astype(float)
    raise ValueError(kind)


# (signal, anomaly kinds in order; () = none). Each row of this table is one file.
LAYOUT = [
    ("gpu_temperature", ("level_shift",)),
    ("gpu_temperature", ("drift",)),
    ("gpu_temperature", ()),
    ("gpu_temperature", ("spike", "level_shift")),
    ("gpu_power", ("stuck_low",)),
    ("gpu_power", ("spike",)),
    ("gpu_power", ()),
    ("gpu_util", ("hung",)),
    ("gpu_util", ()),
    ("gpu_util", ("hung", "spike_down")),
    ("ecc_corrected", ("burst",)),
    ("ecc_corrected", ("counter_reset_ok",)),
    ("ecc_corrected", ()),
    ("net_drops", ("storm",)),
    ("net_drops", ()),
    ("net_drops", ("storm", "storm")),
]


def _inject(kind: str, x: np.ndarray, load: np.ndarray, at: int, rng: np.random.Generator) -> bool:
    """Apply one pattern at row `at`; True when it is a labelled anomaly."""
    n = len(x)
    if kind == "level_shift":
        x[at:] += 8
    elif kind == "drift":
        ramp = np.minimum(np.arange(n - at), 288) * 0.02
        x[at:] += np.round(ramp)
    elif kind == "spike":
        x[at : at + 2] += 6 * (np.std(x) + 1)
    elif kind == "spike_down":
        x[at : at + 3] = 0
    elif kind == "stuck_low":
        x[at : at + 288] = np.minimum(x[at : at + 288], 90 + rng.normal(0, 2, len(x[at : at + 288])))
    elif kind == "hung":
        x[at : at + 432] = 100
    elif kind == "burst":
        x[at : at + 144] += rng.poisson(3.0, len(x[at : at + 144]))
    elif kind == "storm":
        x[at : at + 36] += rng.poisson(60.0, len(x[at : at + 36]))
    elif kind == "counter_reset_ok":
        # a cumulative counter that resets: the cumulative series itself, not a rate (no label)
        x[:] = np.cumsum(x)
        x[at:] -= x[at]
        return False
    else:
        raise ValueError(kind)
    return True


def make(seed: int = 0) -> dict[str, tuple[list[datetime], np.ndarray, list[tuple[int, int]]]]:
    """name → (timestamps, values with NaN for nothing, label windows as row ranges)."""
    rng = np.random.default_rng(seed)
    out = {}
    for k, (signal, anomalies) in enumerate(LAYOUT):
        load = _load(rng, ROWS)
        x = _signal(signal, load, rng)
        probation = int(0.15 * ROWS)
        starts = (
            sorted(rng.choice(np.arange(probation + 300, ROWS - 300, 200), len(anomalies), replace=False))
            if anomalies
            else []
        )
        labelled = [at for kind, at in zip(anomalies, starts, strict=True) if _inject(kind, x, load, int(at), rng)]
        times = [T0 + timedelta(seconds=STEP_S * i) for i in range(ROWS)]
        keep = np.ones(ROWS, bool)
        # nuisances: a gap of 3 h and a forward clock step of 1 h, away from the anomalies
        gap = int(rng.integers(probation, ROWS - 100))
        if all(abs(gap - a) > 150 for a in starts):
            keep[gap : gap + 36] = False
        step = int(rng.integers(probation, ROWS - 100))
        if all(abs(step - a) > 150 for a in starts):
            times = times[:step] + [t + timedelta(hours=1) for t in times[step:]]
        rows = np.flatnonzero(keep)
        times = [times[i] for i in rows]
        x = x[rows]
        width = max(1, int(0.1 * len(rows) / max(1, len(labelled))))
        windows = []
        for at in labelled:
            r = int(np.searchsorted(rows, at))
            lo, hi = max(0, r - width // 2), min(len(rows) - 1, r + width // 2)
            windows.append((lo, hi))
        label = "_".join(anomalies) if anomalies else "none"
        out[f"{signal}/{signal}_{k:02d}_{label}.csv"] = (times, x, windows)
    return out


def _stamp(t: datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S")


def write(folder: str | Path, seed: int = 0) -> tuple[Path, Path]:
    """Write the benchmark under `folder`; returns (data folder, labels file)."""
    folder = Path(folder)
    labels = {}
    for name, (times, values, windows) in make(seed).items():
        path = folder / "data" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w") as fh:
            fh.write("timestamp,value\n")
            fh.writelines(f"{_stamp(t)},{v:g}\n" for t, v in zip(times, values, strict=True))
        labels[name] = [[_stamp(times[lo]) + ".000000", _stamp(times[hi]) + ".000000"] for lo, hi in windows]
    (folder / "labels").mkdir(parents=True, exist_ok=True)
    (folder / "labels" / "combined_windows.json").write_text(json.dumps(labels, indent=1) + "\n")
    return folder / "data", folder / "labels" / "combined_windows.json"
