"""Numenta Anomaly Benchmark (NAB) scoring, implemented from the benchmark's published rules.

The rules (see shared/data/nab-dev/README.md):

- A detector emits one score per row, causally. A row is a *detection* when its score is at or
  above the threshold.
- The first ``min(floor(0.15 N), 750)`` rows of a file are probation: never scored.
- Inside a labelled window only the earliest detection counts. For row ``i`` of window
  ``[L, R]`` (inclusive row indexes, width ``W = R - L + 1``) the relative position is
  ``y = -(R - i + 1) / W`` (-1 at the left edge, -1/W at the right edge) and the detection earns
  ``A_TP * sigma(y) / sigma(-1)`` with ``sigma(y) = 2 / (1 + exp(5 y)) - 1``.
  A window with no detection costs ``A_FN``.
- A detection outside every window costs ``A_FP * sigma(d)`` (sigma is negative past a window)
  where ``d = (i - R_prev) / (W_prev - 1)`` is the distance past the preceding window in units of
  that window's width, or the full ``A_FP`` when no window precedes it.
- One threshold per profile for the whole corpus: the one that maximises the summed raw score.
- Normalised score = 100 (S - S_null) / (S_perfect - S_null) with S_perfect = A_TP x windows and
  S_null = -A_FN x windows.

Example (a 20-row file, one window over rows 10..13, probation = 3 rows):

>>> import numpy as np
>>> scores = np.zeros(20); scores[10] = 1.0
>>> fs = score_file(scores >= 0.5, [(10, 13)], PROFILES["standard"])
>>> round(fs.score, 6), fs.tp, fs.fn, fs.fp
(1.0, 1, 0, 0)
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Profile:
    """A NAB cost profile: what a true positive earns and a miss and a false alarm cost."""

    name: str
    a_tp: float
    a_fn: float
    a_fp: float


PROFILES: dict[str, Profile] = {
    "standard": Profile("standard", 1.0, 1.0, 0.11),
    "reward_low_FP_rate": Profile("reward_low_FP_rate", 1.0, 1.0, 0.22),
    "reward_low_FN_rate": Profile("reward_low_FN_rate", 1.0, 2.0, 0.11),
}


def load_profiles(path: str | Path) -> dict[str, Profile]:
    """Profiles from a NAB ``profiles.json`` (``{name: {"CostMatrix": {"tpWeight": ..}}}``)."""
    raw = json.loads(Path(path).read_text())
    out = {}
    for name, body in raw.items():
        try:
            m = body["CostMatrix"]
            out[name] = Profile(name, float(m["tpWeight"]), float(m["fnWeight"]), float(m["fpWeight"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(
                f"{path}: profile {name!r}: needs CostMatrix with tpWeight, fnWeight, fpWeight ({exc})"
            ) from exc
    return out


def probation_rows(n_rows: int, fraction: float = 0.15) -> int:
    """Rows at the start of a file that are never scored: min(floor(0.15 N), 0.15 x 5000 = 750)."""
    return int(min(math.floor(fraction * n_rows), fraction * 5000))


def scaled_sigmoid(y: float | np.ndarray) -> float | np.ndarray:
    """sigma(y) = 2 / (1 + exp(5y)) - 1: +0.987 at y=-1, 0 at y=0, -> -1 far past a window."""
    y = np.asarray(y, dtype=float)
    with np.errstate(over="ignore"):
        out = 2.0 / (1.0 + np.exp(5.0 * y)) - 1.0
    out = np.where(y > 3.0, -1.0, out)
    return float(out) if out.ndim == 0 else out


SIGMA_LEFT_EDGE = float(scaled_sigmoid(-1.0))


def window_rows(timestamps: np.ndarray, windows: list[tuple[str, str]] | list[list[str]]) -> list[tuple[int, int]]:
    """Inclusive row ranges [L, R] of the windows: the rows whose timestamp lies in [start, end].

    A row that steps back in time counts at its file position (under the newest time so far)."""
    ts = (
        np.maximum.accumulate(np.asarray(timestamps, dtype="datetime64[ns]"))
        if len(timestamps)
        else np.asarray(timestamps, dtype="datetime64[ns]")
    )
    out = []
    for start, end in windows:
        lo = int(np.searchsorted(ts, np.datetime64(_iso(start), "ns"), side="left"))
        hi = int(np.searchsorted(ts, np.datetime64(_iso(end), "ns"), side="right")) - 1
        if hi >= lo:
            out.append((lo, hi))
    return out


def _iso(text: str) -> str:
    return text.strip().replace(" ", "T")


def point_weights(
    n_rows: int, windows: list[tuple[int, int]], profile: Profile, probation: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """What a detection on each row would be worth, alone: (weight, window id or -1).

    For rows in a window the weight is the true-positive credit (counted only for the window's
    earliest detection); for rows outside, the false-positive cost (negative, always counted).
    Probation rows get weight 0 and window id -2 (ignored).
    """
    probation = probation_rows(n_rows) if probation is None else probation
    weight = np.empty(n_rows, dtype=float)
    win_id = np.full(n_rows, -1, dtype=np.int64)
    idx = np.arange(n_rows)
    # Outside windows: full cost before the first window, then scaled by distance past the
    # preceding window.
    weight[:] = -profile.a_fp
    windows = sorted(windows)
    for k, (lo, hi) in enumerate(windows):
        width = hi - lo + 1
        inside = slice(lo, hi + 1)
        y = -(hi - idx[inside] + 1) / width
        weight[inside] = profile.a_tp * scaled_sigmoid(y) / SIGMA_LEFT_EDGE
        win_id[inside] = k
        nxt = windows[k + 1][0] if k + 1 < len(windows) else n_rows
        after = slice(hi + 1, nxt)
        # A one-row window has no width to measure distance in: treat it as far.
        d = np.abs(idx[after] - hi) / (width - 1) if width > 1 else np.full(nxt - hi - 1, 3.5)
        weight[after] = profile.a_fp * scaled_sigmoid(d)
    weight[:probation] = 0.0
    win_id[:probation] = -2
    return weight, win_id


@dataclass
class FileScore:
    """The raw score of one file at one threshold, with its counts."""

    score: float
    tp: int
    fn: int
    fp: int
    windows: int
    first_detections: list[int | None] = field(default_factory=list)


def score_file(
    detections: np.ndarray, windows: list[tuple[int, int]], profile: Profile, probation: int | None = None
) -> FileScore:
    """Raw NAB score of one file given its 0/1 detections per row and its window rows."""
    det = np.asarray(detections, dtype=bool)
    windows = sorted(windows)
    weight, win_id = point_weights(len(det), windows, profile, probation)
    fp_rows = det & (win_id == -1)
    score = float(weight[fp_rows].sum())
    tp = fn = 0
    firsts: list[int | None] = []
    for k in range(len(windows)):
        hits = np.flatnonzero(det & (win_id == k))
        if hits.size:
            score += float(weight[hits[0]])
            tp += 1
            firsts.append(int(hits[0]))
        else:
            # A window entirely inside probation can be neither found nor missed.
            if np.any(win_id == k):
                score -= profile.a_fn
                fn += 1
            firsts.append(None)
    return FileScore(score, tp, fn, int(fp_rows.sum()), len(windows), firsts)


def normalise(raw: float, n_windows: int, profile: Profile) -> float:
    """100 (S - S_null) / (S_perfect - S_null); 0 for the detector that never fires.

    Undefined (NaN) for a corpus without windows: there is nothing to normalise against.
    """
    if n_windows == 0:
        return math.nan
    perfect = profile.a_tp * n_windows
    null = -profile.a_fn * n_windows
    return 100.0 * (raw - null) / (perfect - null)


@dataclass
class Corpus:
    """Scores and window rows of every file of a benchmark run."""

    names: list[str]
    scores: list[np.ndarray]
    windows: list[list[tuple[int, int]]]

    @property
    def n_windows(self) -> int:
        return sum(len(w) for w in self.windows)


def best_threshold(corpus: Corpus, profile: Profile) -> tuple[float, float]:
    """(threshold, raw total) maximising the corpus total; detection means score >= threshold.

    Sweeps every distinct score from high to low in one pass: false-positive costs add up as
    rows are switched on; a window's credit changes only when a row earlier than its current
    earliest detection is switched on.
    """
    all_w, all_win, all_s = [], [], []
    offset = 0
    for scores, windows in zip(corpus.scores, corpus.windows, strict=True):
        weight, win_id = point_weights(len(scores), windows, profile)
        all_w.append(weight)
        all_win.append(np.where(win_id >= 0, win_id + offset, win_id))
        all_s.append(np.asarray(scores, dtype=float))
        offset += len(windows)
    weight = np.concatenate(all_w) if all_w else np.zeros(0)
    win_id = np.concatenate(all_win) if all_win else np.zeros(0, dtype=np.int64)
    score = np.concatenate(all_s) if all_s else np.zeros(0)
    scorable = win_id != -2
    weight, win_id, score = weight[scorable], win_id[scorable], score[scorable]
    # Position in file order, so "earlier in the window" is "smaller global position".
    position = np.arange(len(score))
    order = np.lexsort((position, -score))
    # Windows with no scorable row can't be missed (all inside probation).
    live = np.zeros(offset, dtype=bool)
    live[win_id[win_id >= 0]] = True
    total = -profile.a_fn * float(live.sum())
    best = (float(np.nextafter(score.max(), np.inf)) if len(score) else 1.0, total)
    earliest = np.full(offset, -1, dtype=np.int64)
    credit = np.zeros(offset)
    i = 0
    n = len(order)
    while i < n:
        threshold = score[order[i]]
        j = i
        while j < n and score[order[j]] == threshold:
            r = order[j]
            k = win_id[r]
            if k == -1:
                total += weight[r]
            elif earliest[k] == -1:
                total += weight[r] + profile.a_fn
                earliest[k], credit[k] = r, weight[r]
            elif r < earliest[k]:
                total += weight[r] - credit[k]
                earliest[k], credit[k] = r, weight[r]
            j += 1
        if total > best[1] + 1e-12:
            best = (float(threshold), total)
        i = j
    return best


@dataclass
class ProfileResult:
    profile: str
    threshold: float
    raw: float
    normalised: float
    per_file: dict[str, FileScore]


def evaluate(corpus: Corpus, profile: Profile, threshold: float | None = None) -> ProfileResult:
    """Score a corpus under a profile at the best threshold (or a given one)."""
    if threshold is None:
        threshold, _ = best_threshold(corpus, profile)
    per_file = {
        name: score_file(np.asarray(s) >= threshold, w, profile)
        for name, s, w in zip(corpus.names, corpus.scores, corpus.windows, strict=True)
    }
    raw = sum(f.score for f in per_file.values())
    return ProfileResult(profile.name, threshold, raw, normalise(raw, corpus.n_windows, profile), per_file)


@dataclass
class Series:
    """One ``timestamp,value`` file: the timestamps as written, as datetime64[s], and the values."""

    stamps: list[str]
    times: np.ndarray
    values: np.ndarray
    value_texts: list[str] = field(default_factory=list)  # as written, so output repeats input
    late: np.ndarray | None = None  # rows not newer than an earlier row: their values are NaN (not used)

    @property
    def late_rows(self) -> int:
        return 0 if self.late is None else int(self.late.sum())

    @property
    def epoch_s(self) -> np.ndarray:
        """Event times in seconds since the epoch (NAB timestamps carry no zone: read as UTC)."""
        return self.times.astype(np.int64)


def late_rows(times: np.ndarray) -> np.ndarray:
    """Rows whose time is not after every earlier row's: late data.

    The live engine never moves a series back in time: a value not newer than the series' newest
    is not used (counted as `stale_values`, or `dropped_late` past the tolerance). A file whose
    clock steps back (a DST change, a re-synced clock) or repeats a time is read the same way:
    those rows are kept and written out, and their values are gaps.
    """
    if len(times) < 2:
        return np.zeros(len(times), bool)
    newest_before = np.maximum.accumulate(times)[:-1]
    return np.concatenate([[False], times[1:] <= newest_before])


def read_series(path: str | Path) -> Series:
    """A ``timestamp,value`` CSV; an empty value is NaN; bad rows fail naming ``file:line``.

    Rows that step back (or repeat a time) are late data (`late_rows`): kept, counted, their values NaN.
    """
    stamps, ts, vals, texts = [], [], [], []
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:2]] != ["timestamp", "value"]:
            raise ValueError(f"{path}:1: expected header 'timestamp,value', got {header!r}")
        for lineno, row in enumerate(reader, start=2):
            if not row:
                continue
            try:
                ts.append(np.datetime64(_iso(row[0]), "s"))
                vals.append(float(row[1]) if row[1].strip() else math.nan)
            except (ValueError, IndexError) as exc:
                raise ValueError(f"{path}:{lineno}: bad row {row!r}: {exc}") from exc
            stamps.append(row[0])
            texts.append(row[1].strip())
    times = np.array(ts, dtype="datetime64[s]")
    values = np.array(vals, dtype=float)
    late = late_rows(times)
    values[late] = np.nan
    return Series(stamps, times, values, texts, late)


def load_windows(labels_path: str | Path) -> dict[str, list[list[str]]]:
    """The ``combined_windows.json`` map of relative file path to [[start, end], ...]."""
    raw = json.loads(Path(labels_path).read_text())
    if not isinstance(raw, dict):
        raise ValueError(f"{labels_path}: expected an object of file -> windows")
    return raw
