"""The loop every exporter shares: collect on a steady interval, publish, expose health, stop cleanly."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fleetmedic import metrics
from fleetmedic.config import Settings
from fleetmedic.resources import default_state_dir
from fleetmedic.schemas import Contract

from .health import HealthServer
from .publisher import ExporterHealth, Publisher
from .spool import Spool

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExporterOptions:
    spool_dir: Path | None = field(default_factory=lambda: default_state_dir() / "spool")
    spool_max_bytes: int = 256 * 1024 * 1024
    spool_fsync: str = "batch"  # ingest/spool.py: always | batch | never
    health_port: int | None = None  # None or 0: no health endpoint; -1: any free port
    health_bind: str = "127.0.0.1"
    ack_timeout_s: float = 10.0
    retry_s: float = 5.0
    drain_on_exit_s: float = 10.0


class Exporter:
    """Publisher + spool + health endpoint for one exporter; use as a context manager."""

    def __init__(self, name: str, settings: Settings, options: ExporterOptions) -> None:
        self.name = name
        self.health = ExporterHealth(name)
        spool = None
        if options.spool_dir is not None:
            spool = Spool(Path(options.spool_dir) / name, max_bytes=options.spool_max_bytes, fsync=options.spool_fsync)
        self.publisher = Publisher(
            settings, self.health, spool, ack_timeout_s=options.ack_timeout_s, retry_s=options.retry_s
        )
        self.server = None
        if options.health_port is not None and options.health_port != 0:
            self.server = HealthServer(self.health, max(options.health_port, 0), options.health_bind)
            self.server.ready_when(self._readiness)
        self.cycles = 0  # collections done (readiness: after the first)
        self.options = options
        self.stop = threading.Event()
        self.clock: Callable[[], float] = time.monotonic  # the pacing clock (a test may pass its own)

    def publish(self, records: Sequence[Contract]) -> int:
        metrics.values(f"export-{self.name}", sum(len(getattr(r, "values", ())) for r in records), len(records))
        return self.publisher.publish(records)

    def run(
        self,
        collect: Callable[[], Sequence[Contract]],
        interval_s: float,
        count: int | None = None,
        wait: Callable[[float], Sequence[Contract]] | None = None,
        until: Callable[[], bool] | None = None,
    ) -> None:
        """Call `collect` every `interval_s` (steady, not drifting) and publish what it returns.
        `wait(seconds)` replaces the sleep between collections when the exporter also listens for
        events (GPU XIDs): whatever it returns is published at once. `until()` true after a
        collection ends the loop too."""
        n = 0
        next_at = self.clock()
        while not self.stop.is_set() and (count is None or n < count):
            try:
                records = collect()
            except Exception as exc:  # one bad read must not end the exporter
                log.exception("%s: collect failed", self.name)
                self.health.error(f"collect: {type(exc).__name__}: {exc}")
                records = []
            self.publish(records)
            n += 1
            self.cycles += 1
            if (count is not None and n >= count) or (until is not None and until()):
                break
            next_at += interval_s
            while not self.stop.is_set() and (left := next_at - self.clock()) > 0:
                if wait is None:
                    self.stop.wait(left)
                else:
                    events = wait(min(left, 1.0))
                    if events:
                        self.publish(events)
            if self.clock() - next_at > interval_s:
                next_at = self.clock()  # fell far behind (suspend, slow broker): do not burst to catch up

    def _readiness(self) -> tuple[bool, str]:
        if self.stop.is_set():
            return False, "stopping"
        if not self.cycles:
            return False, "first collection not done yet"
        return True, ""

    def close(self) -> None:
        self.publisher.close(drain_timeout_s=self.options.drain_on_exit_s)
        if self.server is not None:
            self.server.close()

    def __enter__(self) -> Exporter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
