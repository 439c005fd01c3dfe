"""`fleetmedic model train|explain`: the fault model's commands (the model is detectors/fault_model.py).

`train` reads a labelled history, fits on its earliest part, and prints held-out precision,
recall, PR-AUC and lead times before saving the model; `explain` prints a saved model's
coefficients per feature.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path

import numpy as np

from fleetmedic.schemas import LogEvent

from .fault_model import (
    XidHistory,
    feature_matrix,
    format_lead_times,
    in_fault,
    labels,
    lead_times,
    predict_proba,
    read_fault_spans,
    read_faults,
    read_history,
    train,
)


def cmd_train(args: argparse.Namespace) -> int:
    from fleetmedic.extras import require

    require("detect", "fleetmedic model train")
    from sklearn.metrics import average_precision_score, precision_score, recall_score

    try:
        batches = read_history(args.history)
        logs = read_history(args.logs, LogEvent) if args.logs else []
        faults = read_faults(args.faults)
        spans = read_fault_spans(args.faults)
    except (OSError, ValueError) as exc:
        print(f"fleetmedic model train: {exc}", file=sys.stderr)
        return 2
    xid = XidHistory(args.xid_lag_s, XidHistory.benign_codes())
    X, hosts, times = feature_matrix(batches, logs, xid)
    y = labels(hosts, times, faults, args.horizon_s)
    cut = np.quantile(times, 1 - args.test_fraction)
    healthy = ~in_fault(hosts, times, spans)
    train_rows, test_rows = (times < cut) & healthy, (times >= cut) & healthy
    if len(set(y[train_rows])) < 2 or len(set(y[test_rows])) < 2:
        print(
            "fleetmedic model train: both the training and the held-out range need faulty and healthy "
            f"examples (train: {int(y[train_rows].sum())} of {int(train_rows.sum())} positive, held out: "
            f"{int(y[test_rows].sum())} of {int(test_rows.sum())})",
            file=sys.stderr,
        )
        return 2
    model = train(X[train_rows], y[train_rows], seed=args.seed, xid=xid)
    model.update(horizon_s=args.horizon_s, threshold=args.threshold)
    p = predict_proba(model, X[test_rows])
    pred = p >= args.threshold
    out = Path(args.out) / f"fault-model-{model['version']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(model, indent=1) + "\n")
    dropped = f", {int((~healthy).sum())} batches inside a fault left out" if spans else ""
    print(
        f"trained on {int(train_rows.sum())} examples before "
        f"{datetime.utcfromtimestamp(cut):%Y-%m-%dT%H:%M:%SZ}, held out {int(test_rows.sum())} "
        f"({int(y[test_rows].sum())} positive), horizon {args.horizon_s:g} s{dropped}"
    )
    print(
        f"held-out precision {precision_score(y[test_rows], pred, zero_division=0):.3f}  "
        f"recall {recall_score(y[test_rows], pred, zero_division=0):.3f}  "
        f"PR-AUC {average_precision_score(y[test_rows], p):.3f}  (threshold {args.threshold:g})"
    )
    test_idx = np.flatnonzero(test_rows)
    test_hosts = [hosts[i] for i in test_idx]
    # The model's threshold first, then the others: the policy, not training, picks the live one (a
    # `fault_model:` rule's `threshold`), so these show the lead time a threshold buys, at its cost.
    for th in [args.threshold, *sorted(set(args.lead_thresholds) - {args.threshold})]:
        lt = lead_times(test_hosts, times[test_idx], p, faults, args.horizon_s, th, cut)
        print(format_lead_times(lt, th))
    print(f"saved {out}")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    try:
        model = json.loads(Path(args.model).read_text())
    except (OSError, ValueError) as exc:
        print(f"fleetmedic model explain: {exc}", file=sys.stderr)
        return 2
    coef = np.mean([m["coef"] for m in model["members"]], axis=0)
    intercept = float(np.mean([m["intercept"] for m in model["members"]]))
    print(
        f"fault model {model['version']}: horizon {model.get('horizon_s', 0):g} s, "
        f"threshold {model.get('threshold', 0.5):g}; logistic coefficients per standard deviation "
        f"(mean over {len(model['members'])} calibration folds)"
    )
    for name, c in sorted(zip(model["features"], coef, strict=True), key=lambda nc: -abs(nc[1])):
        print(f"  {name:22s} {c:+.4f}")
    print(f"  {'(intercept)':22s} {intercept:+.4f}")
    return 0


def _thresholds(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of probabilities: {text!r}") from None
    if any(not 0 < v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"thresholds are probabilities between 0 and 1: {text!r}")
    return values


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "model",
        help="train or explain the logistic fault model",
        description="Train the calibrated logistic fault model on a labelled history, or "
        "print a saved model's coefficients.",
    )
    msub = p.add_subparsers(dest="model_command", required=True, metavar="ACTION")
    t = msub.add_parser("train", help="fit on a labelled history; report held-out precision, recall, PR-AUC")
    t.add_argument("--history", required=True, metavar="FILE.jsonl", help="metric batches, one JSON per line")
    t.add_argument("--faults", required=True, metavar="FILE.csv", help="host,time of each fault")
    t.add_argument("--logs", metavar="FILE.jsonl", help="log events, one JSON per line: their XIDs become features")
    t.add_argument(
        "--xid-lag-s",
        type=float,
        default=120.0,
        metavar="S",
        help="an XID counts for metric batches at least this much later (saved with the model)",
    )
    t.add_argument("--horizon-s", type=float, default=3600.0)
    t.add_argument("--test-fraction", type=float, default=0.3, help="latest share of the time range held out")
    t.add_argument("--threshold", type=float, default=0.5)
    t.add_argument(
        "--lead-thresholds",
        type=_thresholds,
        default=_thresholds("0.05,0.1,0.2,0.3"),
        metavar="P,P,...",
        help="further thresholds to print held-out lead times, recall and precision at",
    )
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", default="models", metavar="DIR")
    t.set_defaults(func=cmd_train)
    e = msub.add_parser("explain", help="print a saved model's coefficients")
    e.add_argument("model", metavar="FILE.json")
    e.set_defaults(func=cmd_explain)
