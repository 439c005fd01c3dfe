"""Isolation forest over multivariate vectors (one per host per scrape), refitted by event time.

`ClassForest` is the scorer; `detectors/multivariate.py` runs one per (host class, source
partition) inside `fleetmedic detect` and turns its alarms into incidents.

The rule, which makes a forest a pure function of the sequence of vectors it is fed (so the same
records give the same models and scores live, replayed and after a restart):

- the forest's clock is the newest event time it has seen; refit points are the multiples of
  `refit_interval_s` (absolute event time, not counted from the first vector);
- the first vector at or past the next refit point triggers a refit *before* it is scored, on the
  window as it is then: the last `window` vectors, and of those only the ones newer than
  refit point − `window_s` when that is set; no fit while fewer than `min_train` qualify;
- every vector is scored by the model that existed when it arrived (never by a model trained on
  itself), then joins the window; vectors before the first fit get score 0 and no alarm.

Before fitting and scoring, vectors are whitened with the training window's own statistics: each
feature standardised (std floored at 0.1 % of |mean|), then rotated onto the principal axes and
scaled to unit variance (eigenvalues floored at 1e-4). Why: an isolation forest cuts one feature
at a time, so on correlated features (GPU power, temperature and utilisation all follow load) a
vector that is ordinary on every feature but off the diagonal — high power at low temperature —
looks ordinary; after whitening it lies far out on a minor axis, where a single cut isolates it.

The score is scikit-learn's anomaly score `-score_samples` (≈ 0.5 for ordinary points, towards 1
for isolated ones); alarm = score ≥ `threshold`. Each model has a version naming the class, the
partition (when given), the fit number and a hash of its training data and parameters; the
incidents it raises carry it. Vectors between two refit points are scored in one scikit-learn
call, so feeding them one at a time or all at once gives the same scores. That call is
`PackedForest`: scikit-learn's `score_samples` dispatches every tree through joblib, a fixed
cost of milliseconds per call that dominates for the few hundred vectors a consumer batch brings;
the packed form walks all trees at once with numpy and gives the same numbers, bit for bit (checked
against `score_samples` on training data at every fit; if they ever differ, for instance
under another scikit-learn, scoring falls back to `score_samples`). Above `PACKED_MAX_ROWS` rows
per call, `score_samples` is the faster of the two and is used.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> forest = ClassForest(["temp", "power"], host_class="h100", window=256, refit_interval_s=600, min_train=64)
>>> times = np.arange(256) * 10.0   # a vector every 10 s; refit points 600 (60 vectors: too few), 1200, 1800, 2400
>>> _ = forest.update(rng.normal([60, 300], [1, 5], (256, 2)), times)
>>> forest.n_fits_, forest.next_refit_
(3, 3000.0)
>>> scores, alarms, versions = forest.update(np.array([[60.5, 302.0], [75.0, 150.0]]), np.array([2560.0, 2570.0]))
>>> alarms.tolist(), versions[0] == versions[1], versions[0].startswith("iforest:h100:3:")
([False, True], True, True)
"""

from __future__ import annotations

import hashlib
import logging
import math
import time

import numpy as np
from sklearn.ensemble import IsolationForest
from sklearn.ensemble._iforest import _average_path_length

log = logging.getLogger(__name__)

PACKED_CHECK_ROWS = 256  # training rows each fit's packed form is checked on against score_samples
PACKED_MAX_ROWS = 1024  # above this, score_samples' lower per-row cost outweighs its per-call cost
STATE_FIELDS = ("buffer_", "times_", "train_")


class Whitener:
    """Standardise, then decorrelate (PCA whitening) with the statistics of the data it was fitted on.

    >>> x = np.array([[0.0, 0.0], [1.0, 1.1], [2.0, 1.9], [3.0, 3.0]])
    >>> w = Whitener().fit(x)
    >>> np.round(np.cov(w.transform(x), rowvar=False), 6).tolist()
    [[1.0, 0.0], [0.0, 1.0]]
    """

    def fit(self, data: np.ndarray) -> Whitener:
        self.mean_ = data.mean(axis=0)
        std = data.std(axis=0)
        self.scale_ = np.maximum(std, np.maximum(1e-3 * np.abs(self.mean_), 1e-12))
        z = (data - self.mean_) / self.scale_
        eig, vectors = np.linalg.eigh(np.cov(z, rowvar=False).reshape(data.shape[1], data.shape[1]))
        self.rotation_ = vectors / np.sqrt(np.maximum(eig, 1e-4))
        return self

    def transform(self, data: np.ndarray) -> np.ndarray:
        return ((data - self.mean_) / self.scale_) @ self.rotation_


class PackedForest:
    """A fitted IsolationForest's trees as flat arrays, evaluated for all trees at once.

    Reproduces `-score_samples` exactly: the same float32 comparisons as the trees, the same
    per-leaf path lengths (depth + average path length of the leaf's samples − 1), summed tree by
    tree in the same order, over the same normaliser.

    >>> import numpy as np
    >>> x = np.random.default_rng(1).normal(size=(300, 3))
    >>> model = IsolationForest(n_estimators=20, random_state=0).fit(x)
    >>> bool(np.array_equal(PackedForest(model).score(x), -model.score_samples(x)))
    True
    """

    def __init__(self, model: IsolationForest) -> None:
        lefts, rights, feats, thresholds, leaf_values, roots = [], [], [], [], [], []
        offset = 0
        for k, (est, features) in enumerate(zip(model.estimators_, model.estimators_features_, strict=True)):
            tree = est.tree_
            n = tree.node_count
            idx = np.arange(offset, offset + n)
            leaf = tree.children_left == -1
            lefts.append(np.where(leaf, idx, tree.children_left + offset))  # a leaf points at itself
            rights.append(np.where(leaf, idx, tree.children_right + offset))
            feats.append(np.where(leaf, 0, np.asarray(features)[np.maximum(tree.feature, 0)]))
            thresholds.append(tree.threshold)
            leaf_values.append(model._decision_path_lengths[k] + model._average_path_length_per_tree[k] - 1.0)
            roots.append(offset)
            offset += n
        self.left_ = np.concatenate(lefts)
        self.right_ = np.concatenate(rights)
        self.feature_ = np.concatenate(feats)
        self.threshold_ = np.concatenate(thresholds)
        self.leaf_value_ = np.concatenate(leaf_values)
        self.roots_ = np.array(roots, np.int64)
        self.depth_ = max(est.tree_.max_depth for est in model.estimators_)
        self.denominator_ = len(model.estimators_) * float(_average_path_length([model._max_samples])[0])

    def score(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float32).astype(np.float64)  # the trees compare float32 inputs
        node = np.broadcast_to(self.roots_, (len(x), len(self.roots_))).copy()
        rows = np.arange(len(x))[:, None]
        for _ in range(self.depth_):
            go_left = x[rows, self.feature_[node]] <= self.threshold_[node]
            node = np.where(go_left, self.left_[node], self.right_[node])
        # summed tree after tree, as scikit-learn does (a prefix sum adds in that order)
        depths = np.add.accumulate(self.leaf_value_[node], axis=1)[:, -1] if len(x) else np.zeros(0)
        return 2 ** (-np.divide(depths, self.denominator_))


class ClassForest:
    """One forest over one stream of vectors: score, then learn, refitted by event time (the rule above)."""

    def __init__(
        self,
        features: list[str],
        *,
        host_class: str = "default",
        partition: int | None = None,
        window: int = 1024,
        window_s: float | None = None,
        refit_interval_s: float = 600.0,
        min_train: int = 128,
        n_estimators: int = 100,
        max_samples: int = 256,
        threshold: float = 0.65,
        seed: int = 0,
        exclude_s: float = 0.0,
    ) -> None:
        if not features:
            raise ValueError("at least one feature is needed")
        if min_train > window:
            raise ValueError("min_train cannot exceed window")
        if refit_interval_s <= 0:
            raise ValueError("refit_interval_s must be positive")
        self.features = list(features)
        self.host_class = host_class
        self.partition = partition
        self.window = window
        self.window_s = window_s
        self.refit_interval_s = float(refit_interval_s)
        self.min_train = min_train
        self.n_estimators = n_estimators
        self.max_samples = max_samples
        self.threshold = threshold
        self.seed = seed
        self.exclude_s = float(exclude_s)
        self.last_alarm_: dict[str, float] = {}  # host → time of its newest alarming row (see _excluded)
        self.buffer_ = np.zeros((window, len(features)))  # ring of the most recent vectors
        self.times_ = np.full(window, -np.inf)
        self.n_seen_ = 0
        self.n_fits_ = 0
        self.clock_ = -math.inf  # newest event time seen
        self.next_refit_ = math.nan  # set by the first vector
        self.train_ = np.zeros((0, len(features)))  # what the current model was fitted on
        self.model_: IsolationForest | None = None
        self.whitener_: Whitener | None = None
        self.packed_: PackedForest | None = None
        self.fit_seconds_ = 0.0  # wall time spent fitting (for benchmarks; not checkpointed)
        self.version_: str | None = None

    def _boundary_after(self, t: float) -> float:
        return (math.floor(t / self.refit_interval_s) + 1) * self.refit_interval_s

    def _window(self, cut: float) -> np.ndarray:
        n = min(self.n_seen_, self.window)
        # oldest first: the fit does not depend on where the ring happens to start
        order = np.arange(self.n_seen_ - n, self.n_seen_) % self.window
        data, times = self.buffer_[order], self.times_[order]
        if self.window_s is not None:
            data = data[times > cut - self.window_s]
        return data

    def _fit(self, data: np.ndarray) -> None:
        started = time.perf_counter()
        self.train_ = np.array(data, dtype=np.float64)
        self.whitener_ = Whitener().fit(self.train_)
        x = self.whitener_.transform(self.train_)
        self.model_ = IsolationForest(
            n_estimators=self.n_estimators, max_samples=min(self.max_samples, len(data)), random_state=self.seed
        ).fit(x)
        try:
            self.packed_ = PackedForest(self.model_)
            probe = x[:PACKED_CHECK_ROWS]  # the fit's own data: leaves of every depth, outliers included
            if not np.array_equal(self.packed_.score(probe), -self.model_.score_samples(probe)):
                raise ValueError("packed scores differ from score_samples")
        except (AttributeError, IndexError, ValueError) as exc:  # another scikit-learn's internals
            log.warning("isolation forest: scoring with score_samples (%s)", exc)
            self.packed_ = None
        self.fit_seconds_ += time.perf_counter() - started  # a statistic only: decisions never read it

    def score(self, vectors: np.ndarray) -> np.ndarray:
        """Anomaly scores of the current model (no learning), all vectors in one call."""
        if self.whitener_ is None or self.model_ is None:
            raise RuntimeError("score before fit")  # before: an AttributeError on None
        x = self.whitener_.transform(vectors)
        if self.packed_ is not None and len(x) <= PACKED_MAX_ROWS:
            return self.packed_.score(x)
        return -self.model_.score_samples(x)  # many rows: its per-row cost is lower (same numbers)

    def _version(self) -> str:
        h = hashlib.sha256(np.ascontiguousarray(self.train_).tobytes())
        h.update(f"{self.n_estimators}|{self.max_samples}|{self.seed}".encode())
        where = f":p{self.partition}" if self.partition is not None else ""
        return f"iforest:{self.host_class}{where}:{self.n_fits_}:{h.hexdigest()[:10]}"

    def _refit(self, boundary: float) -> None:
        data = self._window(boundary)
        if len(data) < self.min_train:
            return  # not enough recent data yet: keep the model there is (if any)
        self._fit(data)
        self.n_fits_ += 1
        self.version_ = self._version()

    def _learn(self, vectors: np.ndarray, times: np.ndarray) -> None:
        n = len(vectors)
        if n == 0:
            return
        if n > self.window:  # only the newest `window` can stay
            self.n_seen_ += n - self.window
            vectors, times = vectors[-self.window :], times[-self.window :]
            n = self.window
        idx = np.arange(self.n_seen_, self.n_seen_ + n) % self.window
        self.buffer_[idx] = vectors
        self.times_[idx] = times
        self.n_seen_ += n
        self.clock_ = max(self.clock_, float(times.max()))

    def _excluded(self, alarms: np.ndarray, times: np.ndarray, hosts: list[str] | None) -> np.ndarray:
        """Rows kept out of the training window: alarming rows, and rows of a host (given) that
        alarmed less than `exclude_s` before (its incident is pending or open: a fault that lasts
        is not learned as normal). A pure function of the rows in order, so batching cannot change it."""
        out = alarms.copy()
        if hosts is None or self.exclude_s <= 0:
            return out
        last = self.last_alarm_
        if not last and not alarms.any():
            return out
        for i, (h, t, hot) in enumerate(zip(hosts, times.tolist(), alarms.tolist(), strict=True)):
            seen = last.get(h)
            if seen is not None:
                if t - seen < self.exclude_s:
                    out[i] = True
                elif not hot:
                    del last[h]  # a host's times only grow: never needed again (pruned per row, in order)
            if hot:
                last[h] = t
        return out

    def update(
        self, vectors: np.ndarray, times: np.ndarray, hosts: list[str] | None = None
    ) -> tuple[np.ndarray, np.ndarray, list[str | None]]:
        """Score, then learn, each row in order (times: event seconds); (scores, alarms, model version per row).

        Rows between two refit points are scored in one scikit-learn call. Rows that alarm, and
        with `hosts` (one name per row) rows of a host that alarmed within `exclude_s`, are scored
        but do not join the training window.
        """
        vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float64))
        times = np.asarray(times, dtype=np.float64).reshape(-1)
        if len(times) != len(vectors):
            raise ValueError("one time per vector")
        if hosts is not None and len(hosts) != len(times):
            raise ValueError("one host per vector")
        scores = np.zeros(len(vectors))
        versions: list[str | None] = [None] * len(vectors)
        i = 0
        while i < len(vectors):
            if math.isnan(self.next_refit_):
                self.next_refit_ = self._boundary_after(times[i])
            elif times[i] >= self.next_refit_:
                self._refit(self.next_refit_)  # on the window before this vector: causal
                self.next_refit_ = self._boundary_after(max(times[i], self.clock_))
            # rows until the next one that reaches the refit point, all scored by the current model
            due = np.flatnonzero(times[i + 1 :] >= self.next_refit_)
            j = i + 1 + int(due[0]) if due.size else len(vectors)
            keep = np.ones(j - i, bool)
            if self.model_ is not None:
                scores[i:j] = self.score(vectors[i:j])
                versions[i:j] = [self.version_] * (j - i)
                keep = ~self._excluded(scores[i:j] >= self.threshold, times[i:j], None if hosts is None else hosts[i:j])
            self._learn(vectors[i:j][keep], times[i:j][keep])
            self.clock_ = max(self.clock_, float(times[i:j].max()))  # excluded rows still move the clock
            i = j
        return scores, (scores >= self.threshold) & np.array([v is not None for v in versions], bool), versions

    # -- state -----------------------------------------------------------------------------------
    def state(self) -> tuple[dict, dict[str, np.ndarray]]:
        """(JSON-able counters, arrays): everything needed to continue exactly; the model is refitted."""
        header = {
            "n_seen": self.n_seen_,
            "n_fits": self.n_fits_,
            "clock": self.clock_,
            "next_refit": self.next_refit_,
            "version": self.version_,
            "last_alarm": dict(self.last_alarm_),
        }
        return header, {f: getattr(self, f) for f in STATE_FIELDS}

    def load_state(self, header: dict, arrays: dict[str, np.ndarray]) -> None:
        """Continue from `state()`: the model is refitted on the saved training data with the same
        seed, which gives the same trees; a version that does not match (another scikit-learn, say)
        is reported as ValueError, so the caller can tell the restored model is not the saved one."""
        d = len(self.features)
        wanted = {"buffer_": (self.window, d), "times_": (self.window,), "train_": (None, d)}
        for f in STATE_FIELDS:
            value = np.array(arrays[f], dtype=np.float64)
            if len(value.shape) != len(wanted[f]) or any(
                w not in (None, v) for w, v in zip(wanted[f], value.shape, strict=True)
            ):
                raise ValueError(f"state {f} has shape {value.shape}, this forest needs {wanted[f]}")
            setattr(self, f, value)
        self.n_seen_ = int(header["n_seen"])
        self.n_fits_ = int(header["n_fits"])
        self.clock_ = float(header["clock"])
        self.next_refit_ = float(header["next_refit"])
        self.last_alarm_ = {str(h): float(t) for h, t in header.get("last_alarm", {}).items()}  # absent before
        self.model_, self.version_ = None, None
        if header["version"] is not None:
            self._fit(self.train_)
            self.version_ = self._version()
            if self.version_ != header["version"]:
                raise ValueError(f"refitted model {self.version_} is not the saved {header['version']}")
