"""The fault-model rule adapter: the logistic fault model (detectors/fault_model.py) scored live.

`FaultRule` loads a trained model, keeps each host's features (previous values, XID history)
and one alert-lifecycle slot per host, scores every metric batch by event time and turns the
lifecycle's openings and resolutions into `fault_risk` incidents. Its per-host state goes into
the host's snapshot (detectors/engine_state.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fleetmedic.schemas import Incident, LogEvent, MetricBatch
from fleetmedic.transport import Received

from .alerting import Lifecycle
from .config import FaultModelConfig
from .incidents import make_incident, source

if TYPE_CHECKING:
    from .series_table import HostState


class FaultRule:
    """The logistic fault model scored on every metric batch, one lifecycle slot per host."""

    detector = "fault_model"
    kind = "fault_risk"

    def __init__(self, cfg: FaultModelConfig, max_gap_s: float):
        from .fault_model import FEATURE_NAMES, FeatureState, XidHistory

        try:
            self.model = json.loads(Path(cfg.path).read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"fault_model.path: cannot load {cfg.path}: {exc}") from None
        unknown = [n for n in self.model.get("features", ()) if n not in FEATURE_NAMES]
        if unknown:
            raise ValueError(f"fault_model.path: {cfg.path}: features this version does not compute: {unknown}")
        self.cfg = cfg
        self.threshold = cfg.threshold if cfg.threshold is not None else float(self.model.get("threshold", 0.5))
        self.features = FeatureState(XidHistory.from_model(self.model))
        # the model's columns among the computed features (a model saved before a feature existed lacks it)
        self.columns = [FEATURE_NAMES.index(n) for n in self.model["features"]]
        self.lifecycle = Lifecycle(cfg.for_s, cfg.resolve_after_s, max_gap_s)
        self.slots: dict[str, int] = {}
        self._free: list[int] = []  # slots of forgotten hosts, given to the next new host

    def slot(self, host: str) -> int:
        slot = self.slots.get(host)
        if slot is None:
            # (len(self.slots) once numbered new hosts: after a forget that collided with a live host)
            if self._free:
                slot = self._free.pop()
                self.lifecycle.reset(slot)
            else:
                slot = len(self.slots) + len(self._free)
                self.lifecycle.grow(slot + 1)
            self.slots[host] = slot
        return slot

    def step(self, hs: HostState, record: MetricBatch, item: Received, t: float) -> list[Incident]:
        from .fault_model import predict_proba

        slot = self.slot(record.host)
        if t <= self.lifecycle.last_time[slot]:
            return []  # per host, time only moves forward
        row = self.features.row(record)[self.columns]
        p = float(predict_proba(self.model, row[None, :])[0])
        s = np.array([slot])
        opened, resolved, since = self.lifecycle.step(
            s, np.array([t]), np.array([p >= self.threshold]), np.array([p < self.threshold]), np.array([item.offset])
        )
        if opened.size:
            return [
                self._incident(
                    hs,
                    item,
                    "open",
                    t,
                    t,
                    p,
                    row,
                    float(self.lifecycle.pending_since[slot]),
                    int(self.lifecycle.pending_offset[slot]),
                )
            ]
        if resolved.size:
            return [self._incident(hs, item, "resolve", t, float(since[0]), p, row, float(since[0]), item.offset)]
        return []

    def _incident(self, hs, item, status, t, opened_at, p, row, window_start, first_offset) -> Incident:
        names = self.model["features"]
        return make_incident(
            host=hs.host,
            kind=self.kind,
            subject="node",
            status=status,
            severity=self.cfg.severity,
            detector=self.detector,
            time=t,
            opened_at=opened_at,
            score=p,
            threshold=self.threshold,
            model_version=f"fault-model-{self.model['version']}",
            action_class=self.cfg.action_class,
            labels=hs.labels,
            summary=f"fault within {self.model.get('horizon_s', 0):g} s: probability {p:.3f} "
            f"(threshold {self.threshold:g})",
            series=list(names),
            values=row.tolist(),
            window_start=window_start,
            sources=[source(item.topic, item.partition, first_offset, item.offset)],
            details={"horizon_s": float(self.model.get("horizon_s", 0))},
        )

    def state_of(self, host: str) -> dict | None:
        slot = self.slots.get(host)
        if slot is None:
            return None
        lc = [getattr(self.lifecycle, f)[slot].item() for f in (*Lifecycle.state_fields, "last_time")]
        return {"prev": self.features.prev.get(host, {}), "lifecycle": lc, "xids": self.features.xid.state_of(host)}

    def observe(self, event: LogEvent) -> None:
        """A log event of the host: its XID, if any, joins the XID-history features."""
        self.features.xid.observe(event)

    def restore(self, host: str, state: dict | None) -> None:
        self.forget(host)
        if not state:
            return
        slot = self.slot(host)
        self.features.prev[host] = {k: list(v) for k, v in state["prev"].items()}
        self.features.xid.restore(host, state.get("xids"))
        # not strict: a snapshot is restored as far as its fields go, as before (no new failure on restore)
        for f, v in zip((*Lifecycle.state_fields, "last_time"), state["lifecycle"], strict=False):
            getattr(self.lifecycle, f)[slot] = v

    def forget(self, host: str) -> None:
        slot = self.slots.pop(host, None)
        if slot is not None:
            self._free.append(slot)
        self.features.prev.pop(host, None)
        self.features.xid.forget(host)
