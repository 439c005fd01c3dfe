"""The per-series rule adapter: a configured scorer (EWMA, static, univariate) plus its alert lifecycle.

`SeriesRule` turns one per-series rule of the detector configuration into the scorer it names
(detectors/ewma.py, detectors/univariate.py, detectors/likelihood.py) and the lifecycle of
detectors/alerting.py over its own slots. The engine's series table (detectors/series_table.py)
gives every series the rules matching it a slot in each; `run_series` runs one whole series the
same way for `fleetmedic detect csv` and `eval nab`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

from .alerting import Lifecycle
from .config import EwmaRuleConfig, SeriesRuleConfig, StaticRuleConfig, UnivariateRuleConfig
from .ewma import EwmaScorer, StaticScorer
from .scorer import Scorer

if TYPE_CHECKING:
    from .likelihood import LikelihoodBank
    from .univariate import SurpriseRecordBank


class SeriesRule:
    """One configured per-series rule: a scorer plus the alert lifecycle, over its own slots.

    `run_series(times, values)` runs one whole series through a fresh rule and returns the
    scores and the alarms exactly as the live engine raises them (alarm = the value at which an
    incident opens): `fleetmedic detect csv` uses it.
    """

    def __init__(self, cfg: SeriesRuleConfig, scorer: Scorer, max_gap_s: float, detector: str, threshold: float):
        self.cfg = cfg
        self.scorer = scorer
        self.lifecycle = Lifecycle(cfg.for_s, cfg.resolve_after_s, max_gap_s)
        self.detector = detector
        self.threshold = threshold
        self.n = 0

    @classmethod
    def from_config(cls, cfg: SeriesRuleConfig, max_gap_s: float) -> SeriesRule:
        if isinstance(cfg, EwmaRuleConfig):
            scorer = EwmaScorer(
                cfg.alpha,
                cfg.sigmas,
                cfg.clear_sigmas,
                cfg.direction,
                cfg.warmup,
                cfg.min_std,
                cfg.min_rel_std,
                cfg.anomalous_alpha_factor,
            )
            return cls(cfg, scorer, max_gap_s, f"ewma:{cfg.name}", cfg.sigmas)
        if isinstance(cfg, StaticRuleConfig):
            return cls(
                cfg,
                StaticScorer(cfg.op, cfg.threshold, cfg.clear_threshold),
                max_gap_s,
                f"static:{cfg.name}",
                cfg.threshold,
            )
        if isinstance(cfg, UnivariateRuleConfig):
            # Both banks are Scorers (detectors/scorer.py); the shared checks run over each.
            bank: LikelihoodBank | SurpriseRecordBank
            if getattr(cfg, "detector", "surprise") == "likelihood":
                from .likelihood import LikelihoodBank

                bank = LikelihoodBank(None, 64, **cfg.params)
            else:
                from .univariate import SurpriseRecordBank

                bank = SurpriseRecordBank(None, 64, **cfg.params)
            return cls(cfg, bank, max_gap_s, f"univariate:{cfg.name}", bank.params.threshold)
        raise TypeError(f"no per-series rule for {type(cfg).__name__}")

    def run_series(self, times: ArrayLike, values: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """A whole series, value by value in order (NaN = gap): (scores, alarms) per value."""
        times = np.asarray(times, np.float64)
        values = np.asarray(values, np.float64)
        slot = np.array([self.new_slot()])
        scores = np.zeros(len(values))
        alarms = np.zeros(len(values), bool)
        for i in range(len(values)):
            if np.isnan(values[i]):
                continue
            score, breach, clear = self.scorer.update(slot, values[i : i + 1], times[i : i + 1])
            opened, _, _ = self.lifecycle.step(slot, times[i : i + 1], breach, clear, np.array([i]))
            scores[i] = score[0]
            alarms[i] = opened.size > 0
        return scores, alarms

    def new_slot(self) -> int:
        return int(self.new_slots(1)[0])

    def new_slots(self, count: int) -> np.ndarray:
        """`count` consecutive new slots; the state arrays grow once for all of them."""
        first = self.n
        self.n += count
        self.scorer.grow(self.n)
        self.lifecycle.grow(self.n)
        return np.arange(first, self.n, dtype=np.int64)

    def state_arrays(self) -> list[tuple[object, str]]:
        """(owner, attribute) of every per-slot state array: the scorer's, then the lifecycle's."""
        return [(self.scorer, f) for f in self.scorer.state_fields] + [
            (self.lifecycle, f) for f in (*Lifecycle.state_fields, "last_time")
        ]
