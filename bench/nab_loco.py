"""Leave-one-category-out on the NAB development subset, choosing parameters from a grid.

    PYTHONPATH=. python bench/nab_loco.py [--data ../shared/data/nab-dev] [--grid refractory=0,50,100,200]

`fleetmedic eval nab` chooses one parameter from data, the threshold. This chooses more: for each
category (artificialNoAnomaly, artificialWithAnomaly, realAWSCloudwatch), every grid point's
scores are computed once for all files (the scorer bank, all files as one vectorised run; the
same numbers as the live rule's scores), the grid point and threshold with the best standard
score on the *other* categories are picked, and the held-out category is scored with them.
Prints one line per category, the mean and the worst over the categories with windows, and the
in-sample figure (everything chosen on all 20 files) for contrast.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np

from detectors import nab
from detectors.univariate import SurpriseRecordBank


def load(folder: Path):
    labels = nab.load_windows(folder / "labels" / "combined_windows.json")
    names = sorted(labels)
    series = [nab.read_series(folder / "data" / n) for n in names]
    windows = [nab.window_rows(s.times, labels[n]) for n, s in zip(names, series, strict=True)]
    return names, series, windows


def scores_of(series, params: dict) -> list[np.ndarray]:
    """Every file's scores under `params`, as one bank run (files padded with NaN: gaps)."""
    n = max(len(s.values) for s in series)
    t = np.zeros((n, len(series)), np.int64)
    v = np.full((n, len(series)), np.nan)
    for j, s in enumerate(series):
        t[: len(s.values), j] = s.epoch_s
        t[len(s.values) :, j] = s.epoch_s[-1]
        v[: len(s.values), j] = s.values
    sc, _ = SurpriseRecordBank(capacity=len(series), **params).run_series(t, v)
    return [sc[: len(s.values), j] for j, s in enumerate(series)]


def _value(text: str):
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return int(text) if text.lstrip("-").isdigit() else float(text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "nab-dev"))
    ap.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="NAME=V1,V2",
        help="a SurpriseRecordParams field and its values (repeatable; default refractory=0,50,100,200)",
    )
    args = ap.parse_args()
    grid = args.grid or ["refractory=0,50,100,200"]
    axes = {}
    for g in grid:
        name, _, values = g.partition("=")
        axes[name] = [_value(x) for x in values.split(",")]
    names, series, windows = load(Path(args.data))
    cats = [n.split("/")[0] for n in names]
    profile = nab.PROFILES["standard"]
    points = [dict(zip(axes, combo, strict=True)) for combo in itertools.product(*axes.values())]
    runs = [scores_of(series, p) for p in points]

    def corpus(k, idx):
        return nab.Corpus([names[i] for i in idx], [runs[k][i] for i in idx], [windows[i] for i in idx])

    print(f"grid: {', '.join(f'{a}={v}' for a, v in axes.items())}; threshold swept; standard profile")
    held = []
    for cat in sorted(set(cats)):
        train = [i for i, c in enumerate(cats) if c != cat]
        test = [i for i, c in enumerate(cats) if c == cat]
        best = max(range(len(points)), key=lambda k: nab.best_threshold(corpus(k, train), profile)[1])
        thr = nab.best_threshold(corpus(best, train), profile)[0]
        r = nab.evaluate(corpus(best, test), profile, thr)
        n_win = sum(len(windows[i]) for i in test)
        shown = f"{r.normalised:6.1f}" if n_win else f"raw {r.raw:.3f}"
        print(
            f"{cat:24s} {len(test):2d} files {n_win:2d} windows  chosen {points[best]} threshold {thr:.4f}  "
            f"held-out {shown}"
        )
        if n_win:
            held.append((r.normalised, cat))
    print(f"LOCO mean {np.mean([h for h, _ in held]):.1f}, worst {min(held)[0]:.1f} ({min(held)[1]})")
    every = list(range(len(names)))
    for k, p in enumerate(points):
        r = nab.evaluate(corpus(k, every), profile)
        print(f"in-sample (all 20 files) {p}: {r.normalised:.1f} at threshold {r.threshold:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
