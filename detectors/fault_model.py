"""Logistic fault model: the probability that a node faults within a horizon, from engineered features.

`fleetmedic model train` fits a calibrated LogisticRegression (scaled features → logistic
regression, sigmoid calibration by cross-validation, seeded) on a labelled history:

- `--history FILE.jsonl`: metric batches, one JSON record per line (what `fleetmedic tail
  metrics --from-beginning` or the simulator writes);
- `--faults FILE.csv`: `host,time` (ISO 8601) of each fault (the simulator's ground truth, or past
  incidents with outcomes), optionally `host,time,end`: batches of a host inside one of its
  faults are then left out of training and of the held-out figures (the fault has started, so
  there is nothing left to predict, and its own signals are not a lead-up);
- `--logs FILE.jsonl` (optional): log events, one JSON record per line (`fleetmedic tail logs
  --from-beginning`), whose XIDs become the XID-history features.

Each metric batch is one example: its features (below) and label 1 when its host faults within
`--horizon-s` after the batch's time. The history is split by time: the earliest part trains,
the later `--test-fraction` is held out, and precision, recall and PR-AUC on it are printed. The
model is saved as `fault-model-<version>.json`: the version is a hash of the coefficients, and the
file holds everything needed to score (scaler, coefficients, calibration), no pickle.
`fleetmedic model explain FILE` prints the coefficients per feature (in standard deviations).
Both commands live in detectors/model_cli.py; this module is the model.

Live: a `fault_model:` section in the detector configuration names a saved model; `detect` then
scores every metric batch and opens an incident (kind `fault_risk`, subject `node`) when the
probability has been at or above the threshold for `for_s`, resolving after `resolve_after_s`
below it.

Features (each the maximum over the GPUs matching the pattern; counters as per-second rates,
reset-aware): corrected and uncorrected ECC rates, remapped rows, temperature, power, PCIe
replay rate, throttle-reason bits, XID count rate when the exporter counts them; the rising ECC,
PCIe and NVLink rates (`RISING`: a series' hourly rate above its own day-long rate); and the host's
XID history from its log events (`XidHistory`): XIDs in the last hour, in the last 24 hours, and
hours since the last one.

XID history and event time. Metrics and logs are separate topics, read at their own pace, so
when a metric batch is scored the log events of the same moment may or may not have been read.
The rule: an XID counts for a batch at time t only when its event time is at or before
t - `lag_s` (saved with the model, default 120 s, the default late tolerance). Training sees
every log event, so there it is exact. Live, the features (and so the incidents) are the same
for every replay of the same range as long as, whenever a batch at t is scored, the log
events of its host up to t - lag_s have been read; a log stream more than lag_s behind the
metric stream breaks that (the XIDs it has not delivered yet are missing from the features).
XIDs whose action class is `none` in the XID table (43, 45, 63, 92: benign) are left out.

>>> from datetime import datetime, timezone
>>> from fleetmedic.schemas import LogEvent
>>> xids = XidHistory(lag_s=60, ignored_codes=[43])
>>> at = lambda s: datetime.fromtimestamp(s, timezone.utc)
>>> for s, code in [(0, 79), (600, 43), (1200, 48)]:
...     _ = xids.observe(LogEvent(host="n1", time=at(s), source="sim", kind="xid", line="", fields={"xid": code}))
>>> xids.features("n1", 1230).tolist()  # the XID at 1200 is younger than the lag: not yet
[1.0, 1.0, 0.325]
>>> xids.features("n1", 1260).tolist()
[2.0, 2.0, 0.0]
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
from bisect import bisect_right, insort
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime
from fnmatch import fnmatchcase
from pathlib import Path

import numpy as np

from fleetmedic.schemas import LogEvent, MetricBatch

from .log_rules import LogTable, load_table, xid_of

# (feature name, series glob, rate?)
FEATURES: list[tuple[str, str, bool]] = [
    ("ecc_corrected_rate", "gpu*.ecc.volatile.corrected", True),
    ("ecc_uncorrected_rate", "gpu*.ecc.volatile.uncorrected", True),
    ("remapped_rows", "gpu*.remap.*correctable", False),  # remap.correctable, remap.uncorrectable
    ("temperature_c", "gpu*.temperature_c", False),
    ("power_w", "gpu*.power_w", False),
    ("pcie_replay_rate", "gpu*.pcie.replay*", True),
    ("nvlink_crc_rate", "gpu*.nvlink*.crc_*", True),  # crc_flit, crc_data: they climb before NVLink faults
    ("throttle_reasons", "gpu*.throttle.*_*", False),  # 1 when hw_slowdown, sw/hw_thermal or power_brake is set
    ("xid_rate", "gpu*.xid_count", True),
]


class XidHistory:
    """Each host's XIDs by event time, turned into features of a metric batch at time t.

    Features: XIDs in the hour and in the 24 hours up to t - lag_s, and hours since the last
    one (24 when there was none in that day). Only XIDs at or before t - lag_s count (see the
    module docstring); codes in `ignored_codes` never count. Per host, `features` is asked
    for times that only move forward, so XIDs older than a day before the cut are dropped.
    """

    names = ("xid_1h", "xid_24h", "xid_hours_since")
    HOUR, DAY = 3600.0, 86400.0

    def __init__(self, lag_s: float = 120.0, ignored_codes: Iterable[int] = ()):
        self.lag_s = float(lag_s)
        self.ignored_codes = frozenset(int(c) for c in ignored_codes)
        self.times_: dict[str, list[float]] = {}  # host → XID event times, sorted

    @classmethod
    def from_model(cls, model: dict) -> XidHistory:
        saved = model.get("xid_history") or {}
        return cls(saved.get("lag_s", 120.0), saved.get("ignored_codes", ()))

    @staticmethod
    def benign_codes(table: LogTable | None = None) -> list[int]:
        """The codes whose action class is `none` in the XID table (default: the packaged one)."""
        table = table or load_table()
        return sorted(code for code, m in table.xids.items() if m.action_class == "none")

    def observe(self, event: LogEvent) -> bool:
        """Remember the event if it is a counted XID; True when it was."""
        xid = xid_of(event)
        if xid is None:
            return False
        try:
            if int(xid) in self.ignored_codes:
                return False
        except (TypeError, ValueError):
            pass  # an unreadable code is an unknown XID: it counts
        insort(self.times_.setdefault(event.host, []), event.time.timestamp())
        return True

    def features(self, host: str, t: float) -> np.ndarray:
        times = self.times_.get(host)
        if not times:
            return np.array([0.0, 0.0, 24.0])
        cut = t - self.lag_s
        del times[: bisect_right(times, cut - self.DAY)]  # never needed again: t only moves forward
        upto = bisect_right(times, cut)
        hour = upto - bisect_right(times, cut - self.HOUR)
        since = (cut - times[upto - 1]) / self.HOUR if upto else 24.0
        return np.array([float(hour), float(upto), since])

    def state_of(self, host: str) -> list[float]:
        return list(self.times_.get(host, ()))

    def restore(self, host: str, times: list[float] | None) -> None:
        self.forget(host)
        if times:
            self.times_[host] = sorted(float(x) for x in times)

    def forget(self, host: str) -> None:
        self.times_.pop(host, None)


# Windowed rates: a precursor adds a Poisson count or two a minute, so the per-batch rate is often 0;
# the increase of the counter over about the last hour (an exponential window, time constant
# WINDOW_S: one number of state per series, exact under any batch spacing) sees the trend.
# Measured on held-out simulated history (bench/fault_model_features.py, docs/evaluation.md), the
# windowed ECC, PCIe and NVLink rates lowered the PR-AUC from 0.218 to 0.158: their hour-long sums
# are dominated by GPUs that count errors with no fault following, and drift between time ranges.
# So no feature uses them now; the window is still kept per series (`prev[name][2]`), and naming a
# rate feature here (e.g. "ecc_corrected_rate") adds its `_1h` column back.
WINDOWED: list[str] = []
WINDOW_S = 3600.0
_WINDOWED_AT = {name: len(FEATURES) + k for k, name in enumerate(WINDOWED)}

# Rising rates: what the `_1h` columns lacked is the series' own baseline. A GPU that has counted
# errors all day is not about to fail because it counted some this hour; one whose hourly rate
# climbs above its own day-long rate may be. So the `_rise` column of a rate is, per series and
# then the maximum over GPUs and links, max(0, hourly rate − day-long rate), each an exponential
# window (time constants WINDOW_S and BASELINE_S) normalised by the time the series has been seen
# (1 − e^(−seen/τ): the same bias correction as an EWMA's warm-up), so a new series is compared with
# the rate it has shown so far rather than with zero. A steady rate, however high, gives about 0.
RISING: list[str] = ["ecc_corrected_rate", "pcie_replay_rate", "nvlink_crc_rate"]
BASELINE_S = 86400.0
_RISING_AT = {name: len(FEATURES) + len(WINDOWED) + k for k, name in enumerate(RISING)}

FEATURE_NAMES: list[str] = (
    [f[0] for f in FEATURES] + [f"{n}_1h" for n in WINDOWED] + [f"{n}_rise" for n in RISING] + list(XidHistory.names)
)
_XID_AT = len(FEATURES) + len(WINDOWED) + len(RISING)


def rise(window: float, baseline: float, seen_s: float) -> float:
    """max(0, hourly − day-long rate) from the two windows and the seconds the series has been seen.

    >>> rise(0.01, 0.01, 864000.0)  # 0.01 errors/s for days: the hour is not above the day
    0.0
    >>> round(rise(0.0356, 0.0103, 176400.0), 4)  # that GPU after an hour at 0.05/s
    0.0238
    """
    if seen_s <= 0:
        return 0.0
    hourly = window / -math.expm1(-seen_s / WINDOW_S)
    daily = baseline / -math.expm1(-seen_s / BASELINE_S)
    return max(0.0, hourly - daily)


class FeatureState:
    """Features of one metric batch after another; the same code serves training and live scoring.

    State per host: the last (time, value) of each rate series, so rates are reset-aware and
    never cross hosts, with its hourly and day-long windows and when it was first seen (the
    `_1h` and `_rise` columns), and the host's XID history (`xid`, fed with `xid.observe(log_event)`).
    The matching of series names to features is cached per name. A row has one column per
    name of `FEATURE_NAMES`.
    """

    def __init__(self, xid: XidHistory | None = None):
        self.prev: dict[str, dict[str, list[float]]] = {}
        self.xid = xid or XidHistory()
        self._match: dict[str, tuple[int, ...]] = {}

    def row(self, b: MetricBatch) -> np.ndarray:
        t = b.time.timestamp()
        row = np.zeros(len(FEATURE_NAMES))
        row[_XID_AT:] = self.xid.features(b.host, t)
        prev = self.prev.setdefault(b.host, {})
        for name, value in b.values.items():
            if value is None:
                continue
            match = self._match.get(name)
            if match is None:
                match = self._match[name] = tuple(j for j, f in enumerate(FEATURES) if fnmatchcase(name, f[1]))
            if not match:
                continue
            # one increase per counter series, whatever features it feeds
            # (prev: [time, value, hourly window, day-long window, first time])
            last = prev.get(name)
            rate = window = rising = None
            if any(FEATURES[j][2] for j in match) and (last is None or t > last[0]):
                if last is None:
                    prev[name] = [t, value, 0.0, 0.0, t]
                else:
                    dt = t - last[0]
                    increase = value if value < last[1] else value - last[1]  # a decrease is a reset
                    rate = increase / dt
                    # a snapshot from before the day-long window ([time, value(, window)]) starts both
                    # windows afresh, together, so their comparison stays fair
                    w, base, first = last[2:5] if len(last) >= 5 else (0.0, 0.0, last[0])
                    window = w * math.exp(-dt / WINDOW_S) + increase / WINDOW_S  # per s, about the last hour
                    base = base * math.exp(-dt / BASELINE_S) + increase / BASELINE_S
                    rising = rise(window, base, t - first)
                    prev[name] = [t, value, window, base, first]
            for j in match:
                if FEATURES[j][2]:
                    if rate is None:
                        continue
                    row[j] = max(row[j], rate)
                    k = _WINDOWED_AT.get(FEATURES[j][0])
                    if k is not None:
                        row[k] = max(row[k], window)
                    k = _RISING_AT.get(FEATURES[j][0])
                    if k is not None:
                        row[k] = max(row[k], rising)
                else:
                    row[j] = max(row[j], value)
        return row


def feature_matrix(
    batches: list[MetricBatch], logs: Sequence[LogEvent] = (), xid: XidHistory | None = None
) -> tuple[np.ndarray, list[str], np.ndarray]:
    """(X, hosts, times) with one row per batch, in the order given (sort by time first).

    Every log event is observed first: the lag rule already keeps each row to the XIDs it
    may see, exactly as live scoring with a log stream that is not behind.
    """
    state = FeatureState(xid)
    for event in logs:
        state.xid.observe(event)
    rows = [state.row(b) for b in batches]
    hosts = [b.host for b in batches]
    times = np.array([b.time.timestamp() for b in batches])
    return np.array(rows).reshape(-1, len(FEATURE_NAMES)), hosts, times


def labels(hosts: list[str], times: np.ndarray, faults: dict[str, list[float]], horizon_s: float) -> np.ndarray:
    y = np.zeros(len(hosts), dtype=int)
    for i, (h, t) in enumerate(zip(hosts, times, strict=True)):
        y[i] = any(t < f <= t + horizon_s for f in faults.get(h, ()))
    return y


def read_history(path: str | Path, model: type[MetricBatch] | type[LogEvent] = MetricBatch) -> list:
    """Records of one contract (metric batches, or log events), one JSON per line, sorted by time."""
    what = "a metric batch" if model is MetricBatch else "a log event"
    out = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if line.strip():
                try:
                    out.append(model.model_validate_json(line))
                except ValueError as exc:
                    raise ValueError(f"{path}:{n}: not {what}: {str(exc).splitlines()[0]}") from None
    out.sort(key=lambda b: (b.time, b.host))
    return out


def read_faults(path: str | Path) -> dict[str, list[float]]:
    faults: dict[str, list[float]] = defaultdict(list)
    with open(path, newline="", encoding="utf-8") as fh:
        for n, row in enumerate(csv.reader(fh), 1):
            if n == 1 and row[:2] == ["host", "time"]:
                continue
            try:
                faults[row[0]].append(datetime.fromisoformat(row[1].replace("Z", "+00:00")).timestamp())
            except (IndexError, ValueError) as exc:
                raise ValueError(f"{path}:{n}: expected host,time (ISO 8601): {exc}") from None
    return faults


def read_fault_spans(path: str | Path) -> dict[str, list[tuple[float, float]]]:
    """host → (start, end) of each fault whose row has a third column, `end` (ISO 8601)."""
    spans: dict[str, list[tuple[float, float]]] = defaultdict(list)
    with open(path, newline="", encoding="utf-8") as fh:
        for n, row in enumerate(csv.reader(fh), 1):
            if len(row) < 3 or not row[2] or (n == 1 and row[:2] == ["host", "time"]):
                continue
            try:
                start, end = (datetime.fromisoformat(x.replace("Z", "+00:00")).timestamp() for x in row[1:3])
            except ValueError as exc:
                raise ValueError(f"{path}:{n}: expected host,time,end (ISO 8601): {exc}") from None
            spans[row[0]].append((start, end))
    return spans


def in_fault(hosts: list[str], times: np.ndarray, spans: dict[str, list[tuple[float, float]]]) -> np.ndarray:
    """True for the rows whose host is inside one of its faults: not a prediction example (the fault
    has started already), and its signals, the fault's own, would teach the model the wrong thing."""
    return np.array(
        [any(a <= t < b for a, b in spans.get(h, ())) for h, t in zip(hosts, times, strict=True)], dtype=bool
    )


def train(X: np.ndarray, y: np.ndarray, seed: int = 0, xid: XidHistory | None = None) -> dict:
    """Fit scaler + calibrated logistic regression; returns the model as plain JSON-able numbers.

    X has one column per name of FEATURE_NAMES; `xid` (the history the XID columns came from)
    is saved so live scoring counts XIDs by the same rule.
    """
    if X.shape[1] != len(FEATURE_NAMES):
        raise ValueError(f"X has {X.shape[1]} columns, the features are {len(FEATURE_NAMES)}")
    xid = xid or XidHistory()
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(X)
    Z = scaler.transform(X)
    clf = CalibratedClassifierCV(
        LogisticRegression(C=1.0, class_weight="balanced", max_iter=1000, random_state=seed), method="sigmoid", cv=3
    ).fit(Z, y)
    members = []
    for cc in clf.calibrated_classifiers_:
        lr, cal = cc.estimator, cc.calibrators[0]
        members.append(
            {"coef": lr.coef_[0].tolist(), "intercept": float(lr.intercept_[0]), "a": float(cal.a_), "b": float(cal.b_)}
        )
    model = {
        "features": list(FEATURE_NAMES),
        "mean": scaler.mean_.tolist(),
        "scale": scaler.scale_.tolist(),
        "members": members,
        "xid_history": {"lag_s": xid.lag_s, "ignored_codes": sorted(xid.ignored_codes)},
    }
    model["version"] = hashlib.sha256(json.dumps(model, sort_keys=True).encode()).hexdigest()[:12]
    return model


def predict_proba(model: dict, X: np.ndarray) -> np.ndarray:
    """The calibrated probability of a fault within the horizon, per row."""
    Z = (X - np.array(model["mean"])) / np.array(model["scale"])
    probs = []
    for m in model["members"]:
        f = Z @ np.array(m["coef"]) + m["intercept"]
        probs.append(1.0 / (1.0 + np.exp(m["a"] * f + m["b"])))
    return np.mean(probs, axis=0)


def lead_times(
    hosts: list[str],
    times: np.ndarray,
    p: np.ndarray,
    faults: dict[str, list[float]],
    horizon_s: float,
    threshold: float,
    since: float,
) -> dict:
    """Fault-level figures of a probability series at a threshold (the rows: one host's in time order).

    A *warning* is a crossing: a row at or above the threshold whose host's previous row was below
    it. For each fault starting at or after `since`, on a host that has rows, its lead time is the
    start minus the earliest row in [start - horizon, start) at or above the threshold (none: missed).
    Returns faults, warned, lead times (s), warnings and the warnings followed by a fault of their
    host within the horizon.
    """
    by_host: dict[str, list[int]] = defaultdict(list)
    for i, h in enumerate(hosts):
        by_host[h].append(i)
    leads, n_faults, n_warn, n_true = [], 0, 0, 0
    for h, host_rows in by_host.items():
        rows = np.array(host_rows)[np.argsort(times[host_rows], kind="stable")]
        t, hot = times[rows], p[rows] >= threshold
        crossing = hot & ~np.concatenate([[False], hot[:-1]])
        starts = np.array(sorted(f for f in faults.get(h, ()) if f >= since))
        for tc in t[crossing]:
            n_warn += 1
            n_true += bool(((starts > tc) & (starts <= tc + horizon_s)).any())
        for f in starts:
            n_faults += 1
            warned = hot & (t >= f - horizon_s) & (t < f)
            if warned.any():
                leads.append(float(f - t[warned][0]))
    return {"faults": n_faults, "warned": len(leads), "leads": leads, "warnings": n_warn, "true_warnings": n_true}


def format_lead_times(r: dict, threshold: float) -> str:
    recall = r["warned"] / r["faults"] if r["faults"] else float("nan")
    precision = r["true_warnings"] / r["warnings"] if r["warnings"] else float("nan")
    leads = np.array(r["leads"])
    lead = (
        f"lead time median {np.median(leads) / 60:.1f} min (min {leads.min() / 60:.1f}, max {leads.max() / 60:.1f})"
        if leads.size
        else "lead time: none warned"
    )
    return (
        f"held-out faults warned at threshold {threshold:g}: {r['warned']} of {r['faults']} (recall {recall:.3f}); "
        f"{lead}; warnings followed by a fault within the horizon: {r['true_warnings']} of {r['warnings']} "
        f"(precision {precision:.3f})"
    )
