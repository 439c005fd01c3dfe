"""`fleetmedic detect csv` and `fleetmedic eval nab`: run a detector over files, score it on NAB.

`detect csv FILE.csv` runs the configured univariate rule causally over a `timestamp,value` file,
through the live engine's own rule code (`SeriesRule.run_series`: the scorer and the alert
lifecycle), and writes `timestamp,value,anomaly_score,alarm`.

`eval nab --data DIR --labels FILE` does that for every labelled file and prints per-file and
overall NAB scores for the three profiles, at the best corpus-wide threshold on the anomaly
score (the benchmark's rule) and for the alarms as the engine raises them, then
leave-one-category-out (threshold chosen on the other categories, mean and worst) and artificial
vs real. `--plots DIR` writes one PNG per file (values, windows, score, alarms) and an index.html.
Without `--config` the packaged configuration's `univariate:` rule runs (detectors/default.yaml).

`eval fleet` writes the simulated fleet stress benchmark (detectors/fleet_series.py) and scores it
the same way.
"""

from __future__ import annotations

import argparse
import csv
import html
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import numpy as np

from . import nab

if TYPE_CHECKING:
    from .series_rule import SeriesRule

# a fresh live rule per series: its scorer and lifecycle start empty
NewRule = Callable[[], "SeriesRule"]

DEFAULT_RULE = {"name": "nab", "match": ["*"], "for_s": 0, "resolve_after_s": 0}


def build_rule(config_path: str | None) -> NewRule:
    """The univariate rule of a detector YAML (its first `univariate:` entry), or the default one."""
    from .config import UnivariateRuleConfig, load_config
    from .series_rule import SeriesRule

    if config_path:
        cfg = load_config(config_path)
        if not cfg.univariate:
            raise ValueError(f"{config_path}: no `univariate:` rule to run")
        rule_cfg, max_gap = cfg.univariate[0], cfg.max_gap_s
    else:
        # the packaged configuration's univariate rule: what the live engine runs is what is scored
        cfg = load_config()
        rule_cfg = cfg.univariate[0] if cfg.univariate else UnivariateRuleConfig(**DEFAULT_RULE)
        max_gap = cfg.max_gap_s
    return lambda: SeriesRule.from_config(rule_cfg, max_gap)


def detect_series(new_rule: NewRule, series: nab.Series) -> tuple[np.ndarray, np.ndarray]:
    """(anomaly score, alarm) per row, exactly as a fresh live rule computes them."""
    return new_rule().run_series(series.epoch_s.astype(np.float64), series.values)


def write_detections(out: TextIO, series: nab.Series, scores: np.ndarray, alarms: np.ndarray) -> None:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["timestamp", "value", "anomaly_score", "alarm"])
    texts = series.value_texts or [repr(float(v)) if np.isfinite(v) else "" for v in series.values]
    for stamp, text, score, alarm in zip(series.stamps, texts, scores, alarms, strict=True):
        writer.writerow([stamp, text, f"{score:.6f}", int(alarm)])


def cmd_detect_csv(args: argparse.Namespace) -> int:
    try:
        new_rule = build_rule(args.detector_config)
        series = nab.read_series(args.file)
    except (OSError, ValueError) as exc:
        print(f"fleetmedic detect csv: {exc}", file=sys.stderr)
        return 2
    scores, alarms = detect_series(new_rule, series)
    if args.output and args.output != "-":
        with open(args.output, "w", newline="") as fh:
            write_detections(fh, series, scores, alarms)
        print(f"{args.output}: {len(series.values)} rows, {int(alarms.sum())} alarms", file=sys.stderr)
    if series.late_rows:
        print(
            f"{args.file}: {series.late_rows} late rows (timestamp not after an earlier row's): "
            f"not used, like late data in the live engine",
            file=sys.stderr,
        )
    else:
        try:
            write_detections(sys.stdout, series, scores, alarms)
            sys.stdout.flush()
        except BrokenPipeError:  # `| head`: the reader has all it wanted
            # Python's documented recipe: point stdout at devnull so the exit flush is quiet.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


@dataclass
class Detected:
    name: str
    series: nab.Series
    scores: np.ndarray
    alarms: np.ndarray
    windows: list[tuple[int, int]]


def run_corpus(data_dir: str | Path, labels_path: str | Path, new_rule: NewRule) -> list[Detected]:
    """Run the detector over every file named in the labels (missing files are an error)."""
    data_dir = Path(data_dir)
    labels = nab.load_windows(labels_path)
    missing = [name for name in labels if not (data_dir / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} labelled file(s) not under {data_dir}: {', '.join(missing[:3])}")
    out = []
    for name in sorted(labels):
        series = nab.read_series(data_dir / name)
        scores, alarms = detect_series(new_rule, series)
        out.append(Detected(name, series, scores, alarms, nab.window_rows(series.times, labels[name])))
    return out


def score_corpus(
    runs: list[Detected], profiles: dict[str, nab.Profile], configured: float | None = None
) -> dict[str, dict[str, nab.ProfileResult]]:
    """{"best threshold": {profile: result}, ["configured": ...,] "engine alarms": {profile: result}}.

    `configured` (the rule's own threshold) adds the sweep's scoring at that one threshold. It
    splits the deployed-vs-swept gap in two: best − configured is what choosing the threshold on
    other data costs; configured − engine is what the engine's alarm lifecycle (refractory
    period, for_s, resolve_after_s) costs.
    """
    by_score = nab.Corpus([r.name for r in runs], [r.scores for r in runs], [r.windows for r in runs])
    by_alarm = nab.Corpus(by_score.names, [r.alarms.astype(float) for r in runs], by_score.windows)
    out = {"best threshold": {name: nab.evaluate(by_score, p) for name, p in profiles.items()}}
    if configured is not None:
        out["configured"] = {name: nab.evaluate(by_score, p, threshold=configured) for name, p in profiles.items()}
    out["engine alarms"] = {name: nab.evaluate(by_alarm, p, threshold=0.5) for name, p in profiles.items()}
    return out


def format_report(
    runs: list[Detected], results: dict[str, dict[str, nab.ProfileResult]], profiles: dict[str, nab.Profile]
) -> str:
    names = list(profiles)
    short = {"standard": "standard", "reward_low_FP_rate": "low_FP", "reward_low_FN_rate": "low_FN"}
    lines = []
    best = results["best threshold"]
    lines.append(
        "per file, raw NAB score at each profile's best corpus-wide threshold "
        "(tp/fn/fp counted on the standard profile):"
    )
    header = f"{'file':58s} {'win':>3s} " + " ".join(f"{short.get(n, n):>9s}" for n in names) + "   tp fn  fp"
    lines.append(header)
    for r in runs:
        std = best[names[0]].per_file[r.name]
        cells = " ".join(f"{best[n].per_file[r.name].score:9.3f}" for n in names)
        lines.append(f"{r.name:58s} {len(r.windows):3d} {cells}   {std.tp:2d} {std.fn:2d} {std.fp:3d}")
    lines.append("")
    lines.append(
        f"overall, normalised (100 = perfect, 0 = never fires), {sum(len(r.windows) for r in runs)} windows, "
        f"{len(runs)} files:"
    )
    lines.append(f"{'scoring':16s} " + " ".join(f"{short.get(n, n):>9s}" for n in names) + "   thresholds")
    for label, per_profile in results.items():
        cells = " ".join(f"{per_profile[n].normalised:9.1f}" for n in names)
        thresholds = (
            "alarm column"
            if label == "engine alarms"
            else ", ".join(f"{per_profile[n].threshold:.4f}" for n in names)
            + (" (the rule's threshold, scored like the sweep)" if label == "configured" else "")
        )
        lines.append(f"{label:16s} {cells}   {thresholds}")
    return "\n".join(lines)


def category(name: str) -> str:
    """A file's category: the first folder of its path in the labels (NAB's own grouping)."""
    return name.split("/", 1)[0] if "/" in name else "(top)"


def _corpus(runs: list[Detected], alarms: bool = False) -> nab.Corpus:
    return nab.Corpus(
        [r.name for r in runs],
        [r.alarms.astype(float) if alarms else r.scores for r in runs],
        [r.windows for r in runs],
    )


@dataclass
class HeldOut:
    category: str
    files: int
    windows: int
    threshold: float  # chosen on the other categories
    held_out: nab.ProfileResult  # this category at that threshold
    own_best: nab.ProfileResult  # this category at its own best threshold (optimistic)
    engine: nab.ProfileResult  # this category, the engine's alarms


def leave_one_category_out(runs: list[Detected], profile: nab.Profile) -> list[HeldOut]:
    """For each category: choose the threshold on all the other categories, score this one with it.

    The threshold is the only parameter chosen from data in a run of `eval nab` (the detector's
    other parameters are the configuration's); the engine's own alarms need no choice at all and
    are given next to it. Categories without windows get a raw score (the false-alarm cost) only.
    """
    out = []
    cats = sorted({category(r.name) for r in runs})
    for cat in cats:
        test = [r for r in runs if category(r.name) == cat]
        train = [r for r in runs if category(r.name) != cat]
        threshold = nab.best_threshold(_corpus(train), profile)[0] if train else 0.5
        out.append(
            HeldOut(
                cat,
                len(test),
                sum(len(r.windows) for r in test),
                threshold,
                nab.evaluate(_corpus(test), profile, threshold),
                nab.evaluate(_corpus(test), profile),
                nab.evaluate(_corpus(test, alarms=True), profile, threshold=0.5),
            )
        )
    return out


def kind(name: str) -> str:
    """ "artificial" or "real", from NAB's category names (artificial* / real*); else the category."""
    cat = category(name)
    return "artificial" if cat.startswith("artificial") else "real" if cat.startswith("real") else cat


def format_protocol(runs: list[Detected], profiles: dict[str, nab.Profile]) -> str:
    """Leave-one-category-out, artificial vs real, swept vs as deployed (standard profile first)."""
    profile = profiles.get("standard") or next(iter(profiles.values()))
    lines = [
        f"leave-one-category-out ({profile.name} profile): threshold chosen on the other categories, "
        "scored on the one left out"
    ]
    lines.append(
        f"{'category':28s} {'files':>5s} {'win':>3s} {'threshold':>9s} {'held-out':>9s} "
        f"{'own-best':>9s} {'engine':>9s}   tp fn  fp (held-out)"
    )
    folds = leave_one_category_out(runs, profile)
    for f in folds:
        tp = sum(x.tp for x in f.held_out.per_file.values())
        fn = sum(x.fn for x in f.held_out.per_file.values())
        fp = sum(x.fp for x in f.held_out.per_file.values())
        if f.windows:
            cells = f"{f.held_out.normalised:9.1f} {f.own_best.normalised:9.1f} {f.engine.normalised:9.1f}"
        else:  # nothing to normalise against: the raw false-alarm cost
            cells = f"{'raw ' + format(f.held_out.raw, '.3f'):>9s} {'':9s} {'raw ' + format(f.engine.raw, '.3f'):>9s}"
        lines.append(
            f"{f.category:28s} {f.files:5d} {f.windows:3d} {f.threshold:9.4f} {cells}   {tp:2d} {fn:2d} {fp:3d}"
        )
    scored = [f for f in folds if f.windows]
    if scored:
        held = [f.held_out.normalised for f in scored]
        eng = [f.engine.normalised for f in scored]
        worst = min(scored, key=lambda f: f.held_out.normalised)
        lines.append(
            f"LOCO mean {np.mean(held):.1f}, worst {worst.held_out.normalised:.1f} ({worst.category}); "
            f"engine alarms mean {np.mean(eng):.1f}, worst {min(eng):.1f} "
            f"(over the {len(scored)} categories with windows)"
        )
    lines.append("")
    lines.append(f"artificial vs real ({profile.name} profile):")
    lines.append(f"{'kind':12s} {'files':>5s} {'win':>3s} {'best thr':>9s} {'at thr':>9s} {'engine':>9s}")
    for k in sorted({kind(r.name) for r in runs}):
        part = [r for r in runs if kind(r.name) == k]
        n_win = sum(len(r.windows) for r in part)
        at_best = nab.evaluate(_corpus(part), profile)
        at_engine = nab.evaluate(_corpus(part, alarms=True), profile, threshold=0.5)
        if n_win:
            lines.append(
                f"{k:12s} {len(part):5d} {n_win:3d} {at_best.threshold:9.4f} {at_best.normalised:9.1f} "
                f"{at_engine.normalised:9.1f}"
            )
        else:
            lines.append(
                f"{k:12s} {len(part):5d} {n_win:3d} {at_best.threshold:9.4f} "
                f"{'raw ' + format(at_best.raw, '.3f'):>9s} {'raw ' + format(at_engine.raw, '.3f'):>9s}"
            )
    return "\n".join(lines)


def write_plots(runs: list[Detected], results: dict[str, dict[str, nab.ProfileResult]], folder: str | Path) -> Path:
    """One PNG per file (value, windows, score, alarms) and an index.html listing them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    std = results["best threshold"]["standard"]
    items = []
    for r in runs:
        fig, (ax_v, ax_s) = plt.subplots(2, 1, figsize=(12, 5), sharex=True, height_ratios=(2, 1))
        x = r.series.times.astype("datetime64[s]").astype(object)
        ax_v.plot(x, r.series.values, lw=0.6, color="tab:blue")
        for lo, hi in r.windows:
            for ax in (ax_v, ax_s):
                ax.axvspan(x[lo], x[hi], color="tab:red", alpha=0.15)
        probation = nab.probation_rows(len(x))
        if probation < len(x):
            for ax in (ax_v, ax_s):
                ax.axvline(x[probation], color="grey", ls=":", lw=1)
        alarm_rows = np.flatnonzero(r.alarms)
        ax_v.plot(
            [x[i] for i in alarm_rows], r.series.values[alarm_rows], "v", color="tab:red", ms=6, label="engine alarm"
        )
        ax_s.plot(x, r.scores, lw=0.6, color="tab:green", label="anomaly score")
        ax_s.axhline(std.threshold, color="tab:red", ls="--", lw=0.8, label=f"best threshold {std.threshold:.4f}")
        ax_s.set_ylim(0, 1)
        fs = std.per_file[r.name]
        ax_v.set_title(
            f"{r.name}  (standard: {fs.score:.3f}, tp={fs.tp} fn={fs.fn} fp={fs.fp}; "
            "red = label windows, dotted = end of probation)",
            fontsize=9,
        )
        ax_v.legend(loc="upper left", fontsize=7)
        ax_s.legend(loc="upper left", fontsize=7)
        fig.tight_layout()
        png = r.name.replace("/", "__").removesuffix(".csv") + ".png"
        fig.savefig(folder / png, dpi=80)
        plt.close(fig)
        items.append((r.name, png, fs))
    rows = "\n".join(
        f"<h3>{html.escape(name)} (standard {fs.score:.3f}, tp={fs.tp} fn={fs.fn} fp={fs.fp})</h3>"
        f'<img src="{html.escape(png)}" width="100%">'
        for name, png, fs in items
    )
    (folder / "index.html").write_text(
        f"<!doctype html><meta charset=utf-8><title>NAB detections</title>"
        f"<h1>NAB detections: standard {std.normalised:.1f}</h1>\n{rows}\n"
    )
    return folder / "index.html"


def cmd_eval_fleet(args: argparse.Namespace) -> int:
    """`eval fleet`: write the simulated fleet benchmark (detectors/fleet_series.py), score it like NAB."""
    import tempfile

    from . import fleet_series

    folder = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="fleet-bench-"))
    try:
        data, labels = fleet_series.write(folder, args.seed)
    except OSError as exc:
        print(f"fleetmedic eval fleet: {exc}", file=sys.stderr)
        return 2
    print(f"fleet stress benchmark, seed {args.seed}: {data} ({len(fleet_series.LAYOUT)} series)")
    args.data, args.labels, args.profiles = data, labels, None
    return cmd_eval_nab(args, command="eval fleet")


def cmd_eval_nab(args: argparse.Namespace, command: str = "eval nab") -> int:
    try:
        new_rule = build_rule(args.detector_config)
        profiles = nab.load_profiles(args.profiles) if args.profiles else dict(nab.PROFILES)
        started = time.perf_counter()
        runs = run_corpus(args.data, args.labels, new_rule)
        took = time.perf_counter() - started
    except (OSError, ValueError) as exc:
        print(f"fleetmedic {command}: {exc}", file=sys.stderr)
        return 2
    results = score_corpus(runs, profiles, new_rule().threshold)
    print(format_report(runs, results, profiles))
    print()
    print(format_protocol(runs, profiles))
    n_values = sum(len(r.series.values) for r in runs)
    print(f"\ndetector: {n_values} values in {took:.2f}s through the live rule code, one value at a time")
    late = {r.name: r.series.late_rows for r in runs if r.series.late_rows}
    print(
        f"late rows (timestamp not after an earlier row's, not used like the live engine's late data): "
        f"{sum(late.values())}" + (f" ({', '.join(f'{n}: {k}' for n, k in sorted(late.items()))})" if late else "")
    )
    if args.plots:
        print(f"plots: {write_plots(runs, results, args.plots)}")
    return 0


def _add_config_option(p) -> None:
    p.add_argument(
        "--config",
        "--detectors",
        dest="detector_config",
        metavar="FILE",
        help="detector YAML whose first `univariate:` rule to run (default: the built-in "
        "surprise-record rule with for_s 0, resolve_after_s 0)",
    )


def register_detect(detect_sub: argparse._SubParsersAction) -> None:
    """Add `csv` under the `fleetmedic detect` command's subparsers."""
    p = detect_sub.add_parser(
        "csv",
        help="run the univariate detector causally over a timestamp,value CSV",
        description="Write timestamp,value,anomaly_score,alarm: the score in [0, 1) and "
        "the alarm exactly as the live engine's rule raises it.",
    )
    p.add_argument("file", metavar="FILE.csv")
    _add_config_option(p)
    p.add_argument("-o", "--output", metavar="OUT", help="output CSV (default: standard output)")
    p.set_defaults(func=cmd_detect_csv)


def register(sub: argparse._SubParsersAction) -> None:
    """Add `fleetmedic eval nab`."""
    p = sub.add_parser(
        "eval",
        help="score detectors on a benchmark (NAB)",
        description="Evaluate the univariate detector against labelled benchmark data.",
    )
    eval_sub = p.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")
    q = eval_sub.add_parser(
        "nab",
        help="NAB standard, low-FP and low-FN scores over a folder of series",
        description="Run the detector over every file in the labels, then print per-file "
        "and overall NAB scores (best corpus-wide threshold per profile, and "
        "the engine's own alarms).",
    )
    q.add_argument("--data", required=True, metavar="DIR", help="folder the label paths are relative to")
    q.add_argument("--labels", required=True, metavar="FILE", help="combined_windows.json")
    q.add_argument("--profiles", metavar="FILE", help="profiles.json (default: the three NAB profiles)")
    _add_config_option(q)
    q.add_argument("--plots", metavar="DIR", help="write one PNG per file and an index.html here")
    q.set_defaults(func=cmd_eval_nab)
    f = eval_sub.add_parser(
        "fleet",
        help="the same scores on simulated, labelled fleet-like series",
        description="Write the fleet stress benchmark (GPU temperature, power, utilisation, "
        "ECC errors, network drops; diurnal load, jobs, gaps, clock steps, "
        "counter resets; labelled level shifts, drifts, stuck and hung GPUs, "
        "bursts) and score the detector on it as `eval nab` does.",
    )
    f.add_argument("--seed", type=int, default=0, help="the benchmark's seed (same seed, same files)")
    f.add_argument("--out", metavar="DIR", help="write the series here (default: a temporary folder)")
    _add_config_option(f)
    f.add_argument("--plots", metavar="DIR", help="write one PNG per file and an index.html here")
    f.set_defaults(func=cmd_eval_fleet)
