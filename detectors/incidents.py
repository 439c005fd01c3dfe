"""Incident records: fingerprint (host + kind + subject), content-derived ids, lifecycle steps.

One fault is one incident: every detector names its fault by a fingerprint, and the incident id
is derived from the fingerprint and the event time the incident opened, so a replay of the same
input produces the same ids, byte for byte.

>>> fingerprint("gpu-node-07", "gpu_overheat", "gpu0.temperature_c")
'gpu-node-07/gpu_overheat/gpu0.temperature_c'
>>> incident_id("gpu-node-07/xid/node", 1764043200.0)
'inc-b5b3622a72c0a4b66bf3'
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import SupportsFloat

from fleetmedic.schemas import Evidence, Incident, SourceRange


def fingerprint(host: str, kind: str, subject: str) -> str:
    return f"{host}/{kind}/{subject}"


def to_datetime(t: float) -> datetime:
    """Event time in seconds → aware UTC datetime, rounded to the microsecond (what JSON keeps)."""
    return datetime.fromtimestamp(round(float(t), 6), tz=UTC)


def incident_id(fp: str, opened_at: float) -> str:
    stamp = to_datetime(opened_at).isoformat()
    return "inc-" + hashlib.sha256(f"{fp}|{stamp}".encode()).hexdigest()[:20]


def finite(x: SupportsFloat) -> float | None:
    """A float the wire accepts (NaN and infinity are not JSON): None instead."""
    x = float(x)
    return None if x != x or x in (float("inf"), float("-inf")) else round(x, 9)


def source(topic: str, partition: int, first_offset: int, last_offset: int) -> SourceRange:
    first = first_offset if 0 <= first_offset <= last_offset else last_offset
    return SourceRange(topic=topic, partition=partition, first_offset=first, last_offset=last_offset)


def make_incident(
    *,
    host: str,
    kind: str,
    subject: str,
    status: str,
    severity: str,
    detector: str,
    time: float,
    opened_at: float,
    score: float | None = None,
    threshold: float | None = None,
    model_version: str | None = None,
    action_class: str | None = None,
    summary: str = "",
    labels: dict | None = None,
    series: Sequence[str] = (),
    values: Sequence[float | None] = (),
    window_start: float | None = None,
    sources: Sequence[SourceRange] = (),
    details: dict | None = None,
) -> Incident:
    fp = fingerprint(host, kind, subject)
    return Incident(
        id=incident_id(fp, opened_at),
        fingerprint=fp,
        host=host,
        kind=kind,
        subject=subject,
        status=status,
        severity=severity,
        detector=detector,
        time=to_datetime(time),
        opened_at=to_datetime(opened_at),
        score=None if score is None else finite(score),
        threshold=None if threshold is None else finite(threshold),
        model_version=model_version,
        action_class=action_class,
        summary=summary[:4096],
        labels=dict(labels or {}),
        evidence=Evidence(
            series=list(series),
            values=[None if v is None else finite(v) for v in values],
            window_start=None if window_start is None else to_datetime(window_start),
            window_end=to_datetime(time),
            sources=list(sources),
            details=dict(details or {}),
        ),
    )
