"""The isolation forest inside `fleetmedic detect`: one vector per host per metric batch, one forest
per (host class, source partition), per-host incidents, checkpointed per forest.

Why per source partition: a class's hosts are spread over partitions whose interleaving is not
fixed (live, replayed, after a restart the consumer interleaves them differently), while one
partition's records always come in offset order. A forest fed by one partition only is therefore
a pure function of that partition's record sequence — window, refits (by event time, see
`detectors/iforest.py`), scores — and so are its incidents. The price: each forest sees about
1/partitions of its class (a class needs enough hosts per partition to fill `min_train`).

Pieces, one job each:

- `VectorBuilder`: a metric batch's values → the feature vector (each feature an aggregate over
  the gauges matching its globs; a host lacking a feature gives no vector);
- `ForestStream`: one (class, partition): the `ClassForest`, a `Lifecycle` slot per host, the
  incidents, and its own checkpoint (`DetectorState` keyed `iforest:p<partition>:<class>`);
- `ForestRule`: routes records to streams, collects a batch's vectors and runs them at the end of
  the batch (one scikit-learn call per stream between refit points), checkpoints and restores;
  the engine's contract with it is `detectors.scorer.PartitionRule`.

>>> from detectors.config import ForestFeatureConfig
>>> b = VectorBuilder([ForestFeatureConfig(name="temp", match=["gpu*.temperature_c"], agg="max"),
...                    ForestFeatureConfig(name="util", match=["gpu*.util_pct"], agg="mean")])
>>> names = ("gpu0.temperature_c", "gpu1.temperature_c", "gpu0.util_pct", "gpu1.util_pct")
>>> b.vectors(names, (), np.array([[60.0, 71.0, 40.0, 60.0], [60.0, np.nan, np.nan, np.nan]])).tolist()
[[71.0, 50.0], [60.0, nan]]
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import re
import zlib
from dataclasses import dataclass

import numpy as np

from fleetmedic.schemas import DetectorState, Incident, MetricBatch
from fleetmedic.transport import Received

from .alerting import NORMAL, Lifecycle
from .config import ForestFeatureConfig, IsolationForestConfig
from .iforest import ClassForest
from .incidents import make_incident, source, to_datetime

log = logging.getLogger(__name__)

STATE_VERSION = 1
DEFAULT_CLASS = "default"


class VectorBuilder:
    """Feature vectors from metric values, one per batch; NaN where a feature has no value.

    A batch layout (its tuple of series names) is resolved to index arrays once and cached. Counters
    (names in the batch's `counters`) are never matched: their raw values are not comparable
    between hosts.
    """

    def __init__(self, features: list[ForestFeatureConfig]) -> None:
        self.features = list(features)
        self.layouts_: dict[tuple, list[np.ndarray]] = {}

    def _layout(self, names: tuple, counters: tuple) -> list[np.ndarray]:
        key = (names, counters)
        cached = self.layouts_.get(key)
        if cached is None:
            skip = set(counters)
            cached = self.layouts_[key] = [
                np.array([i for i, n in enumerate(names) if n not in skip and f.matches(n)], np.int64)
                for f in self.features
            ]
        return cached

    def vectors(self, names: tuple, counters: tuple, values: np.ndarray) -> np.ndarray:
        """Rows of values sharing one layout (NaN = null) → one feature vector per row."""
        out = np.full((len(values), len(self.features)), np.nan)
        for k, (f, idx) in enumerate(zip(self.features, self._layout(names, counters), strict=True)):
            if idx.size == 0:
                continue
            sub = values[:, idx]
            present = ~np.isnan(sub)
            count = present.sum(axis=1)
            if f.agg == "max":
                agg = np.where(present, sub, -np.inf).max(axis=1)
            elif f.agg == "min":
                agg = np.where(present, sub, np.inf).min(axis=1)
            else:
                agg = np.where(present, sub, 0.0).sum(axis=1)
                if f.agg == "mean":
                    agg = agg / np.maximum(count, 1)
            out[:, k] = np.where(count > 0, agg, np.nan)
        return out


@dataclass
class ForestStats:
    vectors: int = 0
    missing_feature: int = 0  # batches that gave no vector
    stale: int = 0  # not newer than the host's previous vector
    skipped_restored: int = 0  # already inside a restored forest's state


@dataclass
class _Offer:
    item: Received
    host: str
    t: float
    labels: dict
    emit: bool


class ForestStream:
    """One forest (host class × source partition), its hosts' incident lifecycles and its checkpoint."""

    def __init__(
        self, cfg: IsolationForestConfig, host_class: str, topic: str, partition: int, max_gap_s: float
    ) -> None:
        self.cfg = cfg
        self.host_class = host_class
        self.topic = topic
        self.partition = partition
        self.forest = ClassForest(
            [f.name for f in cfg.features],
            host_class=host_class,
            partition=partition,
            window=cfg.window,
            window_s=cfg.window_s,
            refit_interval_s=cfg.refit_interval_s,
            min_train=cfg.min_train,
            n_estimators=cfg.n_estimators,
            max_samples=cfg.max_samples,
            threshold=cfg.threshold,
            seed=cfg.seed,
            # a host that alarmed this recently has an incident pending or open
            # (it resolves resolve_after_s after its last alarm): keep it out of training
            exclude_s=cfg.for_s + cfg.resolve_after_s,
        )
        self.clear_threshold = cfg.clear_threshold if cfg.clear_threshold is not None else cfg.threshold
        self.lifecycle = Lifecycle(cfg.for_s, cfg.resolve_after_s, max_gap_s)
        self.slots_: dict[str, int] = {}  # host → lifecycle slot
        self.last_time_: dict[str, float] = {}  # host → newest vector time: per host, time only moves forward
        self.labels_: dict[str, dict] = {}  # host → labels of its latest batch (for the incidents)
        self.covered_ = -1  # records below this offset are inside the restored state
        self.pending: list[tuple[_Offer, MetricBatch, np.ndarray]] = []
        self.dirty = False

    @property
    def state_key(self) -> str:
        return state_key(self.partition, self.host_class)

    def _slot(self, host: str) -> int:
        slot = self.slots_.get(host)
        if slot is None:
            slot = self.slots_[host] = len(self.slots_)
            self.lifecycle.grow(slot + 1)
        return slot

    def offer(self, offer: _Offer, record: MetricBatch, values: np.ndarray, stats: ForestStats) -> None:
        if offer.item.offset < self.covered_:
            stats.skipped_restored += 1
            return
        if offer.t <= self.last_time_.get(offer.host, -np.inf):
            stats.stale += 1
            return
        self.last_time_[offer.host] = offer.t
        self.labels_[offer.host] = offer.labels
        self.pending.append((offer, record, values))
        self.dirty = True

    def _vectors(self, builder: VectorBuilder) -> np.ndarray:
        """The pending batches' vectors, in offer order (grouped by layout for numpy)."""
        groups: dict[tuple, list[int]] = {}
        for i, (_, record, _) in enumerate(self.pending):
            groups.setdefault((tuple(record.values), tuple(record.counters)), []).append(i)
        out = np.empty((len(self.pending), len(builder.features)))
        for (names, counters), rows in groups.items():
            values = np.stack([self.pending[i][2] for i in rows]).reshape(len(rows), len(names))
            out[rows] = builder.vectors(names, counters, values)
        return out

    def flush(self, builder: VectorBuilder, stats: ForestStats) -> list[tuple[Received, bool, Incident]]:
        """Score the pending vectors in order, step their hosts' lifecycles; the incidents, in offer order."""
        if not self.pending:
            return []
        vectors = self._vectors(builder)
        ok = ~np.isnan(vectors).any(axis=1)
        stats.missing_feature += int((~ok).sum())
        offers = [o for (o, _, _), keep in zip(self.pending, ok, strict=True) if keep]
        self.pending = []
        vectors = vectors[ok]
        stats.vectors += len(offers)
        if not offers:
            return []
        times = np.fromiter((o.t for o in offers), np.float64, len(offers))
        slots = np.fromiter((self._slot(o.host) for o in offers), np.int64, len(offers))
        scores, alarms, versions = self.forest.update(vectors, times, hosts=[o.host for o in offers])
        clear = scores < self.clear_threshold
        offsets = np.fromiter((o.item.offset for o in offers), np.int64, len(offers))
        # A host that is normal and does not breach in this batch stays normal: its lifecycle only
        # needs the time of its newest vector (a host's times only grow: the maximum is the last).
        # Only the others go through the lifecycle, in rounds: round k = every such host's k-th vector.
        busy = np.zeros(len(self.slots_), bool)
        busy[slots[alarms]] = True
        busy[: len(self.slots_)] |= self.lifecycle.status[: len(self.slots_)] != NORMAL
        quiet = ~busy[slots]
        np.maximum.at(self.lifecycle.last_time, slots[quiet], times[quiet])
        rank = np.full(len(offers), -1, np.int64)
        seen: dict[int, int] = {}
        for pos in np.flatnonzero(~quiet):
            rank[pos] = seen[slots[pos]] = seen.get(slots[pos], -1) + 1
        out = []
        for k in range(int(rank.max()) + 1):
            sel = np.flatnonzero(rank == k)
            opened, resolved, since = self.lifecycle.step(slots[sel], times[sel], alarms[sel], clear[sel], offsets[sel])
            for j in opened:
                i = int(sel[j])
                slot = int(slots[i])
                out.append(
                    (
                        i,
                        self._incident(
                            offers[i],
                            "open",
                            times[i],
                            times[i],
                            scores[i],
                            vectors[i],
                            versions[i],
                            float(self.lifecycle.pending_since[slot]),
                            int(self.lifecycle.pending_offset[slot]),
                        ),
                    )
                )
            for j, opened_at in zip(resolved, since, strict=True):
                i = int(sel[j])
                out.append(
                    (
                        i,
                        self._incident(
                            offers[i],
                            "resolve",
                            times[i],
                            float(opened_at),
                            scores[i],
                            vectors[i],
                            versions[i],
                            float(opened_at),
                            int(offsets[i]),
                        ),
                    )
                )
        out.sort(key=lambda pair: pair[0])
        return [(offers[i].item, offers[i].emit, incident) for i, incident in out]

    def _incident(
        self,
        offer: _Offer,
        status: str,
        t: float,
        opened_at: float,
        score: float,
        vector: np.ndarray,
        version: str | None,
        window_start: float,
        first_offset: int,
    ) -> Incident:
        cfg = self.cfg
        names = [f.name for f in cfg.features]
        shown = ", ".join(f"{n}={v:.6g}" for n, v in zip(names, vector, strict=True))
        verb = "unusual" if status == "open" else "back to normal"
        item = offer.item
        return make_incident(
            host=offer.host,
            kind=cfg.kind,
            subject="host",
            status=status,
            severity=cfg.severity,
            detector="iforest",
            time=float(t),
            opened_at=opened_at,
            score=float(score),
            threshold=cfg.threshold,
            model_version=version,
            action_class=cfg.action_class,
            labels=offer.labels,
            summary=f"{cfg.kind}: {verb} for class {self.host_class} (score {score:.4g}, threshold "
            f"{cfg.threshold:g}): {shown}",
            series=names,
            values=vector.tolist(),
            window_start=window_start,
            sources=[source(item.topic, item.partition, first_offset, item.offset)],
            details={"host_class": self.host_class, "for_s": cfg.for_s, "resolve_after_s": cfg.resolve_after_s},
        )

    # -- state ------------------------------------------------------------------------------------
    def snapshot(self, detector: str, next_offset: int) -> DetectorState:
        """The forest (window, training data, counters, refit schedule) and its hosts' lifecycles."""
        header, arrays = self.forest.state()
        hosts = list(self.slots_)
        n = len(hosts)
        for f in (*Lifecycle.state_fields, "last_time"):
            arrays[f"lc.{f}"] = getattr(self.lifecycle, f)[:n]
        meta = {
            "topic": self.topic,
            "partition": self.partition,
            "class": self.host_class,
            "config": config_digest(self.cfg),
            "forest": header,
            "hosts": hosts,
            "last_time": self.last_time_,
            "labels": self.labels_,
        }
        arrays["header"] = np.frombuffer(json.dumps(meta, separators=(",", ":")).encode(), np.uint8)
        buf = io.BytesIO()
        np.savez(buf, allow_pickle=True, **arrays)  # the default, named: numpy's stub lets **kwds fill it
        clock = self.forest.clock_
        return DetectorState(
            host=self.state_key,
            detector=detector,
            state_version=STATE_VERSION,
            time=to_datetime(clock if np.isfinite(clock) else 0.0),
            source_offsets={f"{self.topic}:{self.partition}": next_offset},
            state_b64=base64.b64encode(zlib.compress(buf.getvalue(), 1)).decode(),
        )

    @classmethod
    def restored(cls, cfg: IsolationForestConfig, max_gap_s: float, state: DetectorState) -> ForestStream | None:
        data = np.load(io.BytesIO(zlib.decompress(base64.b64decode(state.state_b64))), allow_pickle=False)
        meta = json.loads(data["header"].tobytes())
        if meta["config"] != config_digest(cfg):
            log.warning("%s: forest configuration changed since the checkpoint: starting it fresh", state.host)
            return None
        stream = cls(cfg, meta["class"], meta["topic"], int(meta["partition"]), max_gap_s)
        try:
            stream.forest.load_state(meta["forest"], {k: data[k] for k in ("buffer_", "times_", "train_")})
        except ValueError as exc:  # e.g. another scikit-learn: the model goes on, under its new version
            log.warning("%s: %s", state.host, exc)
        for host in meta["hosts"]:
            stream._slot(host)
        n = len(meta["hosts"])
        for f in (*Lifecycle.state_fields, "last_time"):
            getattr(stream.lifecycle, f)[:n] = data[f"lc.{f}"]
        stream.last_time_ = {h: float(t) for h, t in meta["last_time"].items()}
        stream.labels_ = {h: dict(v) for h, v in meta["labels"].items()}
        stream.covered_ = state.source_offsets.get(f"{stream.topic}:{stream.partition}", -1)
        return stream


def config_digest(cfg: IsolationForestConfig) -> str:
    """What a forest's state depends on: a checkpoint made under other settings is not restored."""
    keep = cfg.model_dump(mode="json", exclude={"enabled", "kind", "severity", "action_class"})
    return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]


def state_key(partition: int, host_class: str) -> str:
    """The forest's key on the state topic (a class name that is not key-safe is hashed)."""
    safe = (
        host_class
        if re.fullmatch(r"[A-Za-z0-9._-]{1,128}", host_class)
        else "h" + hashlib.sha256(host_class.encode()).hexdigest()[:16]
    )
    return f"iforest:p{partition}:{safe}"


class ForestRule:
    """All forests of one engine: route each metric batch to its (class, partition) forest; score at flush.

    A `detectors.scorer.PartitionRule`.
    """

    def __init__(self, cfg: IsolationForestConfig, max_gap_s: float) -> None:
        self.cfg = cfg
        self.max_gap_s = max_gap_s
        self.builder = VectorBuilder(cfg.features)
        self.streams: dict[tuple[str, int, str], ForestStream] = {}
        self.stats = ForestStats()
        self._pending: dict[tuple[str, int, str], ForestStream] = {}

    def offer(
        self, item: Received, record: MetricBatch, values: np.ndarray, host_labels: dict[str, str] | None, emit: bool
    ) -> None:
        """Note one metric batch (in offset order; `values` = its values as floats); nothing is scored before `flush`.

        The class comes from the batch's labels, or the host's last known ones when the batch has none.
        """
        labels = record.labels or host_labels or {}
        key = (item.topic, item.partition, labels.get(self.cfg.class_label, DEFAULT_CLASS))
        stream = self.streams.get(key)
        if stream is None:
            stream = self.streams[key] = ForestStream(self.cfg, key[2], item.topic, item.partition, self.max_gap_s)
        stream.offer(_Offer(item, record.host, record.time.timestamp(), dict(labels), emit), record, values, self.stats)
        self._pending[key] = stream

    def flush(self) -> list[tuple[Received, bool, Incident]]:
        out = []
        for key in sorted(self._pending):  # streams are independent; a fixed order keeps output stable
            out.extend(self._pending[key].flush(self.builder, self.stats))
        self._pending.clear()
        return out

    def take_dirty(
        self, detector: str, positions: dict[tuple[str, int], int], partitions: set[int] | None = None
    ) -> list[DetectorState]:
        out = []
        for key in sorted(self.streams):
            stream = self.streams[key]
            if stream.dirty and (partitions is None or stream.partition in partitions):
                out.append(stream.snapshot(detector, positions.get((stream.topic, stream.partition), 0)))
                stream.dirty = False
        return out

    def restore(self, state: DetectorState) -> None:
        stream = ForestStream.restored(self.cfg, self.max_gap_s, state)
        if stream is not None:
            self.streams[(stream.topic, stream.partition, stream.host_class)] = stream

    def forget(self, partitions: set[tuple[str, int]]) -> None:
        """Drop the forests of partitions that moved away (their state is on the state topic)."""
        for key in [k for k in self.streams if (k[0], k[1]) in partitions]:
            del self.streams[key]
            self._pending.pop(key, None)
