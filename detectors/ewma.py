"""EWMA deviation and static thresholds per series, one numpy operation for a whole round of values.

Both are *scorers* (`detectors.scorer.Scorer`): they score a value, say whether it breaches and
whether it is clear (for hysteresis), and learn. State lives in arrays indexed by slot.

EWMA: exponentially weighted mean and variance (West's incremental form); the score is the
deviation of the new value from the mean *before* learning it, in standard deviations, signed by
the configured direction. No alert until `warmup` values were seen. While a value breaches, the
mean learns `anomalous_alpha_factor` times slower and the variance not at all, so a sustained
fault keeps firing while a real new normal is still absorbed eventually.

>>> import numpy as np
>>> ew = EwmaScorer(alpha=0.1, sigmas=4, warmup=20, direction="up"); ew.grow(2)
>>> rng = np.random.default_rng(0)
>>> for t in range(50):
...     _ = ew.update(np.array([0, 1]), 50 + rng.normal(0, 1, 2), np.array([t, t], float))
>>> score, breach, clear = ew.update(np.array([0, 1]), np.array([50.5, 70.0]), np.array([50.0, 50.0]))
>>> breach.tolist(), clear.tolist()
([False, True], [True, False])
>>> ew.nbytes_per_slot == sum(getattr(ew, f)[:1].nbytes for f in ew.state_fields)  # 8 + 8 + 4
True
"""

from __future__ import annotations

import operator

import numpy as np

from .alerting import grown

_OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}


class EwmaScorer:
    state_fields = ("mean", "var", "count")

    def __init__(
        self,
        alpha: float = 0.05,
        sigmas: float = 4.0,
        clear_sigmas: float | None = None,
        direction: str = "both",
        warmup: int = 30,
        min_std: float = 1e-6,
        min_rel_std: float = 1e-3,
        anomalous_alpha_factor: float = 0.1,
    ) -> None:
        if not 0 < alpha < 1:
            raise ValueError("alpha must be in (0, 1)")
        if direction not in ("up", "down", "both"):
            raise ValueError("direction must be up, down or both")
        self.alpha = alpha
        self.sigmas = sigmas
        self.clear_sigmas = 0.75 * sigmas if clear_sigmas is None else clear_sigmas
        self.direction = direction
        self.warmup = warmup
        self.min_std = min_std
        self.min_rel_std = min_rel_std
        self.anomalous_alpha_factor = anomalous_alpha_factor
        self.mean = np.zeros(0, np.float64)
        self.var = np.zeros(0, np.float64)
        self.count = np.zeros(0, np.uint32)

    nbytes_per_slot = 8 + 8 + 4

    def grow(self, n: int) -> None:
        self.mean = grown(self.mean, n, 0.0)
        self.var = grown(self.var, n, 0.0)
        self.count = grown(self.count, n, 0)

    def update(
        self, slots: np.ndarray, values: np.ndarray, times: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        mean, var, count = self.mean[slots], self.var[slots], self.count[slots]
        std = np.maximum(np.sqrt(var), np.maximum(self.min_std, self.min_rel_std * np.abs(mean)))
        dev = (values - mean) / std
        score = dev if self.direction == "up" else -dev if self.direction == "down" else np.abs(dev)
        warm = count >= self.warmup
        breach = warm & (score >= self.sigmas)
        clear = ~warm | (score < self.clear_sigmas)

        first = count == 0
        alpha = np.where(breach, self.alpha * self.anomalous_alpha_factor, self.alpha)
        diff = values - mean
        incr = alpha * diff
        self.mean[slots] = np.where(first, values, mean + incr)
        # A breaching value moves the mean (slowly) but not the spread: otherwise a sustained
        # fault inflates the variance and talks itself back under the threshold.
        self.var[slots] = np.where(first, 0.0, np.where(breach, var, (1 - alpha) * (var + diff * incr)))
        self.count[slots] = np.minimum(count.astype(np.uint64) + 1, np.iinfo(np.uint32).max)
        return np.where(warm, score, 0.0), breach, clear

    def details(self, slot: int) -> dict[str, float]:
        return {
            "ewma_mean": round(float(self.mean[slot]), 6),
            "ewma_std": round(float(np.sqrt(self.var[slot])), 6),
            "count": int(self.count[slot]),
        }


class StaticScorer:
    """A fixed threshold (`value op threshold` breaches); clear when `value op clear_threshold` no longer holds.

    >>> import numpy as np
    >>> hot = StaticScorer(">=", 85, clear_threshold=80); hot.grow(3)
    >>> _, breach, clear = hot.update(np.arange(3), np.array([90.0, 82.0, 70.0]), np.zeros(3))
    >>> breach.tolist(), clear.tolist()
    ([True, False, False], [False, False, True])
    """

    state_fields: tuple[str, ...] = ()
    nbytes_per_slot = 0

    def __init__(self, op: str, threshold: float, clear_threshold: float | None = None) -> None:
        if op not in _OPS:
            raise ValueError(f"op must be one of {sorted(_OPS)}")
        self.op = _OPS[op]
        self.threshold = threshold
        self.clear_threshold = threshold if clear_threshold is None else clear_threshold

    def grow(self, n: int) -> None:
        pass

    def update(
        self, slots: np.ndarray, values: np.ndarray, times: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return values, self.op(values, self.threshold), ~self.op(values, self.clear_threshold)

    def details(self, slot: int) -> dict[str, float]:
        return {}
