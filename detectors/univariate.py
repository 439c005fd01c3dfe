"""A causal, streaming anomaly detector for single series: surprise records.

Each new value is compared with four cheap, constant-memory models of its own series:

- ``level``: distance from an exponentially weighted mean, in exponentially weighted standard
  deviations (a spike, a drop);
- ``shift``: the same for a slow EW average of the values (a lasting level shift, which a
  single big spike does not imitate);
- ``season``: distance of the lightly smoothed value from what the same time of day looked like
  on earlier days (one EW mean and mean absolute deviation per time-of-day bucket), relative to
  that bucket's deviation plus the series' typical season error, so a day that skips its peak or
  stays flat is surprising even when every value is within the usual range;
- ``density``: short-term mean of |x_t - x_{t-1}| over its long-term mean (spikes getting more
  frequent, a quiet series turning noisy).

A surprise is only alarming when it is a *record*: larger than every surprise of the same kind
seen recently (the running maximum decays slowly, so old records fade). A series that always has
spikes of the same height keeps quiet; a higher spike, a new kind of shape or a first level shift
stands out. For a surprise ``r`` and record ``M`` the feature's score is ``q/2`` when
``q = r / M <= 1`` and ``1 - 1/(2q)`` above, so 0.5 means "equals the record" and the score is
in [0, 1). The anomaly score of a value is the largest of its feature scores, and ``alarm`` is
``score >= threshold``. The detector is causal: a value is scored before it is learned.

Three rules make it hold on series unlike the ones it was designed on (docs/evaluation.md):

- a series that never moved has records of exactly 0; its first move is infinitely new and
  scores 1 (``zero_record_alarms``; before, a record of 0 never scored: flat-then-change was missed);
- after an alarm the series' score is 0 for ``refractory`` values (default 100 = 1 / alpha_level,
  the time the level model takes to absorb a change): one event gives one detection, not a
  train of them (NAB counts only the first detection in a window and charges later ones outside
  it; a pager is no different);
- the season records are set over ``season_record_cycles`` periods of *time*
  (``season_record_by_time``): an hourly series fills 24 of the 288 buckets a day, and counting
  2 x 288 season surprises made it wait 24 days.

Warm-up, per series and per feature: the first ``warmup`` valid values only train the models,
the next ``warmup`` set the records, and only then are scores above 0 emitted. The season model
starts counting once each time-of-day bucket has seen ``season_min_cycles`` days and sets its
records over ``season_record_cycles`` full cycles (a day holds more shapes than 120 values). A series that
appears mid-stream warms up on its own. NaN values are neither scored (score 0, no alarm) nor
learned. Time gaps need no special rule: the season bucket comes from the timestamp and the EW
models count values, not seconds.

Two entry points that compute exactly the same numbers:

- ``SurpriseRecordBank``: state for many series as numpy arrays; ``update(rows, values, times)``
  scores and learns one value for each of several series at once (the live engine's hot path:
  a `detectors.scorer.Scorer`, a slot being a row).
- ``SurpriseRecord``: one series, River-like ``score_one`` / ``learn_one`` (a bank of one).

>>> det = SurpriseRecord(warmup=20, season_buckets=0)
>>> t0 = 1_700_000_000
>>> out = [det.update(t0 + 300 * i, 10.0 + (i % 3) * 0.1) for i in range(60)]
>>> max(score for score, alarm in out) < 0.7
True
>>> score, alarm = det.update(t0 + 300 * 60, 50.0)
>>> alarm, score > 0.9
(True, True)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .scorer import SlotBank

FEATURES = ("level", "shift", "season", "density")
_TINY = 1e-12


@dataclass(frozen=True)
class SurpriseRecordParams:
    """Parameters of the surprise-record detector (one configuration for every series)."""

    alpha_level: float = 0.01
    alpha_fast: float = 0.05
    alpha_shift: float = 0.05
    alpha_density_short: float = 0.02
    alpha_density_long: float = 0.002
    season_period_s: int = 86400
    season_buckets: int = 288
    alpha_season: float = 0.3
    season_min_cycles: int = 3
    record_decay: float = 0.9999
    warmup: int = 120
    season_record_cycles: int = 2
    # season records are set over season_record_cycles periods of *time* (an hourly series has
    # 24 values a day, not 288: counting values made its season feature wait 24 days)
    season_record_by_time: bool = True
    # a series that never moved (record exactly 0) alarms on its first move (flat-then-change)
    zero_record_alarms: bool = True
    # after an alarm the score is 0 for this many values: one detection per event (NAB counts only
    # the first detection in a window and charges every later one outside it), 1 / alpha_level
    refractory: int = 100
    threshold: float = 0.529

    def __post_init__(self) -> None:
        for name in (
            "alpha_level",
            "alpha_fast",
            "alpha_shift",
            "alpha_density_short",
            "alpha_density_long",
            "alpha_season",
        ):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {value}")
        if not 0.0 < self.record_decay <= 1.0:
            raise ValueError(f"record_decay must be in (0, 1], got {self.record_decay}")
        if self.season_buckets < 0 or (self.season_buckets and self.season_period_s % self.season_buckets):
            raise ValueError("season_buckets must be 0 (off) or divide season_period_s")
        if self.season_record_cycles < 0:
            raise ValueError(f"season_record_cycles must be >= 0, got {self.season_record_cycles}")
        if self.warmup < 1:
            raise ValueError(f"warmup must be >= 1, got {self.warmup}")
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold}")


class SurpriseRecordBank(SlotBank):
    """Surprise-record state for ``capacity`` series, grown on demand; row i is one series.

    The learned state is public (trailing underscore, scikit-learn style): ``count_`` values
    learned, ``mean_``/``var_`` level model, ``fast_`` smoothed value, ``prev_`` last value,
    ``dens_short_``/``dens_long_`` mean absolute step, ``season_mean_``/``season_dev_``/
    ``season_count_`` per time-of-day bucket, ``record_`` running maximum per feature and
    ``feature_count_`` valid surprises per feature.
    """

    count_: np.ndarray
    mean_: np.ndarray
    var_: np.ndarray
    fast_: np.ndarray
    slow_: np.ndarray
    prev_: np.ndarray
    dens_short_: np.ndarray
    dens_long_: np.ndarray
    season_mean_: np.ndarray
    season_dev_: np.ndarray
    season_count_: np.ndarray
    season_err_: np.ndarray
    season_start_: np.ndarray
    quiet_: np.ndarray
    record_: np.ndarray
    feature_count_: np.ndarray

    def __init__(self, params: SurpriseRecordParams | None = None, capacity: int = 16, **overrides: Any) -> None:
        self.params = SurpriseRecordParams(**{**(asdict(params) if params else {}), **overrides})
        self.n_series = 0
        self._alloc(max(1, capacity))

    def _fresh(self, capacity: int) -> dict[str, np.ndarray]:
        b = max(1, self.params.season_buckets)
        return {
            "count_": np.zeros(capacity, np.int64),
            "mean_": np.zeros(capacity),
            "var_": np.zeros(capacity),
            "fast_": np.zeros(capacity),
            "slow_": np.zeros(capacity),
            "prev_": np.zeros(capacity),
            "dens_short_": np.zeros(capacity),
            "dens_long_": np.zeros(capacity),
            # float32 and a saturating 1-byte count: the season table is most of the state.
            "season_mean_": np.zeros((capacity, b), np.float32),
            "season_dev_": np.zeros((capacity, b), np.float32),
            "season_count_": np.zeros((capacity, b), np.uint8),
            "season_err_": np.zeros(capacity),
            "season_start_": np.zeros(capacity),
            "quiet_": np.zeros(capacity, np.int64),
            "record_": np.zeros((capacity, len(FEATURES))),
            "feature_count_": np.zeros((capacity, len(FEATURES)), np.int64),
        }

    state_fields = (
        "count_",
        "mean_",
        "var_",
        "fast_",
        "slow_",
        "prev_",
        "dens_short_",
        "dens_long_",
        "season_mean_",
        "season_dev_",
        "season_count_",
        "season_err_",
        "season_start_",
        "quiet_",
        "record_",
        "feature_count_",
    )

    def details(self, slot: int) -> dict[str, float]:
        """Flat scalars for an incident's evidence: values learned, level mean, record per feature."""
        out = {"count": int(self.count_[slot]), "mean": round(float(self.mean_[slot]), 6)}
        out.update({f"record_{f}": round(float(r), 6) for f, r in zip(FEATURES, self.record_[slot], strict=True)})
        return out

    def update(
        self, rows: np.ndarray, values: np.ndarray, times: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Score, then learn, one value per series. ``rows`` must not repeat within a call.

        ``times`` is event time in seconds since the epoch. Returns per row
        ``(score in [0, 1), alarm = score >= threshold, clear = score < 0.5)``; "clear" means
        "below every record", the engine's hysteresis signal.
        """
        p = self.params
        rows = np.asarray(rows, dtype=np.int64)
        t = np.asarray(times, dtype=float).astype(np.int64)
        x = np.asarray(values, dtype=float)
        score = np.zeros(len(rows))
        ok = np.isfinite(x)
        if not ok.all():
            rows, t, x = rows[ok], t[ok], x[ok]
        first = self.count_[rows] == 0
        mean = np.where(first, x, self.mean_[rows])
        var = self.var_[rows]
        fast = np.where(first, x, self.fast_[rows])
        slow = np.where(first, x, self.slow_[rows])
        prev = np.where(first, x, self.prev_[rows])
        dens_s, dens_l = self.dens_short_[rows], self.dens_long_[rows]

        scale = np.sqrt(var) + 1e-6 * np.abs(mean) + _TINY
        step = np.abs(x - prev)
        fast_new = fast + p.alpha_fast * (x - fast)
        slow_new = slow + p.alpha_shift * (x - slow)
        dens_s_new = dens_s + p.alpha_density_short * (step - dens_s)

        surprise = np.zeros((len(rows), len(FEATURES)))
        valid = np.zeros_like(surprise, dtype=bool)
        surprise[:, 0] = np.abs(x - mean) / scale
        valid[:, 0] = ~first
        surprise[:, 1] = np.abs(slow_new - mean) / scale
        valid[:, 1] = ~first
        if p.season_buckets:
            width = p.season_period_s // p.season_buckets
            bucket = (t % p.season_period_s) // width
            s_mean = self.season_mean_[rows, bucket]
            s_dev = self.season_dev_[rows, bucket]
            s_count = self.season_count_[rows, bucket]
            s_err = self.season_err_[rows]
            # Per-bucket spread comes from a handful of days and can be tiny by chance; the
            # series' typical season error over all buckets keeps the ratio steady.
            surprise[:, 2] = np.abs(fast_new - s_mean) / (s_dev + s_err + _TINY)
            valid[:, 2] = s_count >= p.season_min_cycles
        surprise[:, 3] = np.where(dens_l > 0, dens_s_new / (dens_l + _TINY), 0.0)
        valid[:, 3] = ~first

        # Records: train-only, then record-setting, then scoring (per feature).
        fcount = self.feature_count_[rows] + valid
        record = self.record_[rows]
        if p.season_record_by_time:
            record_warm = np.array([p.warmup] * len(FEATURES))
        else:
            record_warm = np.array(
                [p.warmup, p.warmup, max(p.warmup, p.season_record_cycles * p.season_buckets), p.warmup]
            )
        scoring = valid & (fcount > p.warmup + record_warm)
        if not p.zero_record_alarms:
            scoring &= record > 0
        if p.season_buckets and p.season_record_by_time:
            start = np.where(valid[:, 2] & (self.season_start_[rows] == 0), t, self.season_start_[rows])
            self.season_start_[rows] = start
            scoring[:, 2] &= (t - start) >= p.season_record_cycles * p.season_period_s
        # A surprise above a record of exactly 0 (a series that never moved) is infinitely new.
        q = np.where(
            scoring,
            np.where(record > 0, surprise / np.where(record > 0, record, 1.0), np.where(surprise > 0, np.inf, 0.0)),
            0.0,
        )
        fscore = np.where(q <= 1.0, 0.5 * q, 1.0 - 0.5 / np.maximum(q, 1.0))
        sub = fscore.max(axis=1)
        setting = valid & (fcount > p.warmup)
        if p.refractory:
            quiet = self.quiet_[rows]
            fired = (sub >= p.threshold) & (quiet == 0)
            sub = np.where(quiet > 0, 0.0, sub)
            self.quiet_[rows] = np.where(fired, p.refractory, np.maximum(quiet - 1, 0))
        self.record_[rows] = np.where(setting, np.maximum(record * p.record_decay, surprise), record)
        self.feature_count_[rows] = fcount

        # Learn.
        diff = x - mean
        self.mean_[rows] = mean + p.alpha_level * diff
        self.var_[rows] = np.where(first, 0.0, (1 - p.alpha_level) * (var + p.alpha_level * diff * diff))
        self.fast_[rows] = fast_new
        self.slow_[rows] = slow_new
        self.prev_[rows] = x
        self.dens_short_[rows] = np.where(first, 0.0, dens_s_new)
        self.dens_long_[rows] = np.where(first, 0.0, dens_l + p.alpha_density_long * (step - dens_l))
        if p.season_buckets:
            new_bucket = s_count == 0
            err = fast_new - s_mean
            self.season_mean_[rows, bucket] = np.where(new_bucket, fast_new, s_mean + p.alpha_season * err)
            self.season_dev_[rows, bucket] = np.where(new_bucket, 0.0, s_dev + p.alpha_season * (np.abs(err) - s_dev))
            self.season_count_[rows, bucket] = np.minimum(s_count.astype(np.int64) + 1, 255)
            self.season_err_[rows] = np.where(valid[:, 2], s_err + p.alpha_level * (np.abs(err) - s_err), s_err)
        self.count_[rows] += 1

        if ok.all():
            score = sub
        else:
            score[ok] = sub
        return score, score >= p.threshold, score < 0.5

    def run_series(self, t: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Run whole series at once: ``t`` and ``values`` are [n_steps, n_series] (NaN pads)."""
        t = np.asarray(t, dtype=np.int64)
        values = np.asarray(values, dtype=float)
        rows = self.add_series(values.shape[1])
        scores = np.zeros(values.shape)
        alarms = np.zeros(values.shape, dtype=bool)
        for i in range(values.shape[0]):
            scores[i], alarms[i], _ = self.update(rows, values[i], t[i])
        return scores, alarms


class SurpriseRecord:
    """One series, River-style: ``score_one`` (no state change), ``learn_one``, ``update``."""

    def __init__(self, params: SurpriseRecordParams | None = None, **overrides: Any) -> None:
        self.bank = SurpriseRecordBank(params, capacity=1, **overrides)
        self.params = self.bank.params
        self._row = self.bank.add_series(1)

    def _copy_bank(self) -> SurpriseRecordBank:
        clone = SurpriseRecordBank(self.params, capacity=1)
        for name in vars(self.bank):
            if name.endswith("_"):
                setattr(clone, name, getattr(self.bank, name).copy())
        clone.n_series = 1
        return clone

    def score_one(self, t: int, x: float) -> float:
        """The anomaly score the next ``update(t, x)`` would return, without learning."""
        score, _, _ = self._copy_bank().update(self._row, np.array([x], dtype=float), np.array([t]))
        return float(score[0])

    def learn_one(self, t: int, x: float) -> SurpriseRecord:
        self.bank.update(self._row, np.array([x], dtype=float), np.array([t]))
        return self

    def update(self, t: int, x: float) -> tuple[float, bool]:
        """Score, then learn; returns ``(score, alarm)``."""
        score, alarm, _ = self.bank.update(self._row, np.array([x], dtype=float), np.array([t]))
        return float(score[0]), bool(alarm[0])
