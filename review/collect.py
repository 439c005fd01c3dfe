"""Gather what happened to one host in a time window: series, log lines, incidents, decisions."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TypeVar

import numpy as np

from fleetmedic.config import Settings
from fleetmedic.ranges import RangeSpec, read_range
from fleetmedic.schemas import Contract, Incident, LogEvent, MetricBatch, Remediation
from fleetmedic.topics import topic_name

C = TypeVar("C", bound=Contract)


@dataclass
class Series:
    times: np.ndarray  # datetime64[ms]
    values: np.ndarray  # float64, NaN where the exporter sent null


@dataclass
class HostReview:
    host: str
    start: datetime
    end: datetime
    series: dict[str, Series] = field(default_factory=dict)
    logs: list[LogEvent] = field(default_factory=list)
    incidents: list[Incident] = field(default_factory=list)
    remediations: list[Remediation] = field(default_factory=list)


def _read_all(settings: Settings, name: str, model: type[C], host: str) -> Iterator[C]:
    spec = RangeSpec(topic=topic_name(settings, name))
    for batch in read_range(settings, spec, model, keep=lambda r: getattr(r, "host", None) == host):
        yield from (item.record for item in batch)


def find_incident(settings: Settings, incident_id: str) -> list[Incident]:
    spec = RangeSpec(topic=topic_name(settings, Incident.topic))
    found = [
        item.record
        for batch in read_range(
            settings, spec, Incident, keep=lambda r: isinstance(r, Incident) and r.id == incident_id
        )
        for item in batch
    ]
    if not found:
        raise LookupError(f"no incident {incident_id!r} in {spec.topic}")
    return sorted(found, key=lambda r: r.time)


def incident_window(records: list[Incident], margin: timedelta) -> tuple[datetime, datetime]:
    start = min(r.opened_at for r in records)
    end = max(r.time for r in records)
    return start - margin, end + margin


def collect(settings: Settings, host: str, start: datetime, end: datetime) -> HostReview:
    """Everything recorded about `host` with event time in [start, end]."""
    review = HostReview(host, start, end)
    points: dict[str, list[tuple[datetime, float]]] = defaultdict(list)
    for batch in _read_all(settings, MetricBatch.topic, MetricBatch, host):
        if start <= batch.time <= end:
            for name, value in batch.values.items():
                points[name].append((batch.time, np.nan if value is None else value))
    for name, pts in points.items():
        pts.sort(key=lambda p: p[0])
        times = np.array([np.datetime64(t.replace(tzinfo=None), "ms") for t, _ in pts])
        review.series[name] = Series(times, np.array([v for _, v in pts], dtype=float))
    review.logs = sorted(
        (r for r in _read_all(settings, LogEvent.topic, LogEvent, host) if start <= r.time <= end), key=lambda r: r.time
    )
    review.incidents = sorted(
        (r for r in _read_all(settings, Incident.topic, Incident, host) if r.time >= start and r.opened_at <= end),
        key=lambda r: r.time,
    )
    ids = {i.id for i in review.incidents}
    review.remediations = sorted(
        (
            r
            for r in _read_all(settings, Remediation.topic, Remediation, host)
            if r.incident_id in ids or start <= r.time <= end
        ),
        key=lambda r: r.time,
    )
    return review
