"""Isolation forest per host class over multivariate vectors (one per host per scrape).

NOT YET WIRED INTO `fleetmedic detect`: this is the scorer, tested on its own. What wiring needs
is in docs/detectors.md ("Not done yet").

`ClassForest` keeps a sliding window of the class's most recent vectors, refits a seeded
scikit-learn IsolationForest on it every `refit_every` vectors (once `min_train` are there), and
scores every vector with the model that existed *before* the vector arrived (causal). The score
is scikit-learn's anomaly score `-score_samples` (≈ 0.5 for ordinary points, towards 1 for
isolated ones); alarm = score ≥ `threshold`. Each model has a version naming the class, the fit
number and a hash of its training data, to go into the incidents it raises. The same vectors in
the same order give the same models and scores.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> forest = ClassForest(["temp", "power"], host_class="h100", window=256, refit_every=64, min_train=64)
>>> _ = forest.update(rng.normal([60, 300], [1, 5], (256, 2)))
>>> scores, alarms, versions = forest.update(np.array([[60.5, 302.0], [75.0, 150.0]]))
>>> alarms.tolist(), versions[0] == versions[1], versions[0].startswith("iforest:h100:4:")
([False, True], True, True)
"""

from __future__ import annotations

import hashlib

import numpy as np
from sklearn.ensemble import IsolationForest


class ClassForest:
    def __init__(self, features: list[str], *, host_class: str = "default", window: int = 1024,
                 refit_every: int = 256, min_train: int = 128, n_estimators: int = 100, threshold: float = 0.65,
                 seed: int = 0):
        if not features:
            raise ValueError("at least one feature is needed")
        if min_train > window:
            raise ValueError("min_train cannot exceed window")
        self.features = list(features)
        self.host_class = host_class
        self.window = window
        self.refit_every = refit_every
        self.min_train = min_train
        self.n_estimators = n_estimators
        self.threshold = threshold
        self.seed = seed
        self.buffer_ = np.zeros((window, len(features)))
        self.n_seen_ = 0
        self.n_fits_ = 0
        self.model_: IsolationForest | None = None
        self.version_: str | None = None

    def vector_of(self, values: dict) -> np.ndarray | None:
        """The feature vector of one metric batch's values, or None when a feature is missing or null."""
        out = [values.get(f) for f in self.features]
        return None if any(v is None for v in out) else np.array(out, dtype=float)

    def _window(self) -> np.ndarray:
        n = min(self.n_seen_, self.window)
        if self.n_seen_ <= self.window:
            return self.buffer_[:n]
        start = self.n_seen_ % self.window  # oldest first: the fit does not depend on where the ring is
        return np.concatenate([self.buffer_[start:], self.buffer_[:start]])

    def _refit(self) -> None:
        data = self._window()
        self.model_ = IsolationForest(n_estimators=self.n_estimators, random_state=self.seed).fit(data)
        self.n_fits_ += 1
        digest = hashlib.sha256(np.ascontiguousarray(data).tobytes()).hexdigest()[:10]
        self.version_ = f"iforest:{self.host_class}:{self.n_fits_}:{digest}"

    def update(self, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[str | None]]:
        """Score, then learn, each row in order; returns (scores, alarms, model version per row).

        Rows between two refit points are scored in one scikit-learn call.
        """
        vectors = np.atleast_2d(np.asarray(vectors, dtype=float))
        scores = np.zeros(len(vectors))
        versions: list[str | None] = [None] * len(vectors)
        i = 0
        while i < len(vectors):
            # rows until the next refit point, all scored by the current model
            until_refit = self.refit_every - (self.n_seen_ % self.refit_every)
            chunk = vectors[i:i + until_refit]
            if self.model_ is not None:
                scores[i:i + len(chunk)] = -self.model_.score_samples(chunk)
                versions[i:i + len(chunk)] = [self.version_] * len(chunk)
            for row in chunk:
                self.buffer_[self.n_seen_ % self.window] = row
                self.n_seen_ += 1
            if self.n_seen_ % self.refit_every == 0 and min(self.n_seen_, self.window) >= self.min_train:
                self._refit()
            i += len(chunk)
        return scores, scores >= self.threshold, versions
