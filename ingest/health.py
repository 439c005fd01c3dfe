"""Each exporter's own health as Prometheus metrics on a port (`GET /metrics`, `GET /ready`).

The exposition is prometheus_client's: `ExporterCollector` turns an `ExporterHealth` into metric
families when scraped, and the endpoint (`fleetmedic.metrics.MetricsServer`) serves them next
to the process-wide fleetmedic series (records and values published, checkpoint age).

>>> from ingest.publisher import ExporterHealth
>>> [l for l in render(ExporterHealth("host", sent=3)).splitlines() if l.startswith("fleetmedic_exporter_records_sent")]
['fleetmedic_exporter_records_sent_total{exporter="host"} 3.0']
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from fleetmedic.metrics import MetricsServer

from .publisher import ExporterHealth

if TYPE_CHECKING:
    from prometheus_client import Metric

_COUNTERS = [
    ("records_sent", "sent", "records acknowledged by the broker"),
    ("records_spooled", "spooled", "records written to the disk spool while the broker was unreachable"),
    ("records_resent", "resent", "records delivered later from the spool"),
    ("records_dropped", "dropped", "records lost because the spool was full"),
    ("records_already_stored", "already_stored", "spooled after a timeout but found in Kafka: not resent"),
    ("errors", "errors", "failed sends or reads"),
]
_GAUGES = [
    ("spool_records", "spool_records", "records waiting in the spool"),
    ("spool_bytes", "spool_bytes", "bytes waiting in the spool"),
    ("last_error_timestamp_seconds", "last_error_time", "unix time of the last error (0: none)"),
    ("last_success_timestamp_seconds", "last_success_time", "unix time of the last acknowledged send"),
]


class ExporterCollector:
    """A prometheus_client collector reading one exporter's `ExporterHealth` at scrape time."""

    def __init__(self, health: ExporterHealth) -> None:
        self.health = health

    def describe(self) -> list[Metric]:
        return []  # names are checked per registry; two exporters in one process may share them

    def collect(self) -> list[Metric]:
        h = self.health
        label = [h.exporter]
        families: list[Metric] = []
        with h.lock:
            for name, attr, help_ in _COUNTERS:
                counter = CounterMetricFamily(f"fleetmedic_exporter_{name}", help_, labels=["exporter"])
                counter.add_metric(label, getattr(h, attr))
                families.append(counter)
            for name, attr, help_ in _GAUGES:
                f = GaugeMetricFamily(f"fleetmedic_exporter_{name}", help_, labels=["exporter"])
                f.add_metric(label, getattr(h, attr))
                families.append(f)
            f = GaugeMetricFamily(
                "fleetmedic_exporter_last_error_info", "the last error message (value 1)", labels=["exporter", "error"]
            )
            f.add_metric([h.exporter, h.last_error], 1)
            families.append(f)
            for name, value in sorted(h.extra.items()):
                f = GaugeMetricFamily(f"fleetmedic_exporter_{name}", name.replace("_", " "), labels=["exporter"])
                f.add_metric(label, value)
                families.append(f)
        f = GaugeMetricFamily("fleetmedic_exporter_up", "1 while the exporter runs", labels=["exporter"])
        f.add_metric(label, 1)
        families.append(f)
        return families


class _Global:
    """The process-wide registry's families, inside an exporter's own registry."""

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


def registry_for(health: ExporterHealth) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ExporterCollector(health))
    registry.register(_Global())
    return registry


def render(health: ExporterHealth) -> str:
    """The Prometheus text exposition of one exporter's health (without the process-wide series)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ExporterCollector(health))
    return generate_latest(registry).decode()


class HealthServer(MetricsServer):
    """The exporter's endpoint: its health and the process-wide series; port 0 picks a free one.
    Readiness is the exporter's (`ingest.runner.Exporter`: after its first collection)."""

    def __init__(self, health: ExporterHealth, port: int, host: str = "127.0.0.1") -> None:
        self.health = health
        super().__init__(port, host, registry=registry_for(health))
        self.started = time.time()
