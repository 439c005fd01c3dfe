"""Every service's own metrics, through `prometheus_client`: the series, and the HTTP endpoint.

One process-wide registry (prometheus_client's default, which also carries the process and
Python collectors). Every fleetmedic series starts with ``fleetmedic_``. A long-running command
takes ``--metrics-port PORT`` and calls `serve(port)`, which answers:

- ``GET /metrics``: the Prometheus text exposition (prometheus_client's `generate_latest`);
- ``GET /ready``: 200 ``ready`` once the service said so with `MetricsServer.set_ready`, else
  503 with the reason (a consumer is ready when it holds its partitions, an exporter after its
  first publish);
- ``GET /healthz``: 200 while the process answers at all (liveness).

The stages feed the series with the small helpers below, so a stage's own code gains one line
per event: `watch_loop(loop, stage)` (consumer lag per partition, records consumed, dead letters
by reason, from the shared `fleetmedic.transport.ConsumerLoop`), `incident(record)`,
`remediation(record)` (gate skips, run outcomes and their durations), `checkpoint(stage)`,
`set_kill_switch(engaged)`, `values(stage, n)`.

A new long-running command (e.g. `fleetmedic alerts receive`) adopts all of it in three lines:
`add_arguments(parser)` when it registers (``--metrics-port``, ``--metrics-bind``,
``--log-format``), ``server = serve_for(args, "alerts receive")`` at start, then
``server.set_ready(True)`` once it listens (or ``server.ready_when(loop_ready(loop))`` for a
consumer), and ``server.close()`` at the end.

>>> from prometheus_client import generate_latest
>>> set_kill_switch(True)
>>> b'fleetmedic_kill_switch_engaged 1.0' in generate_latest()
True
>>> set_kill_switch(False)
"""

from __future__ import annotations

import argparse
import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import prometheus_client
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest

if TYPE_CHECKING:
    from .schemas import Incident, Remediation
    from .transport import ConsumerLoop

log = logging.getLogger(__name__)

# `_created` series double every counter's series count and no dashboard here uses them.
prometheus_client.disable_created_metrics()

RECORDS = Counter(
    "fleetmedic_records",
    "records consumed (stage: detect, remediate, ...) or published (stage: export-host, export-prom, ...)",
    ["stage"],
)
VALUES = Counter("fleetmedic_values", "metric values consumed or published (a batch holds many)", ["stage"])
DEAD_LETTERS = Counter(
    "fleetmedic_dead_letters",
    "records sent to the dead-letter topic, by reason (not_json, oversized, schema_version, validation)",
    ["stage", "reason"],
)
LAG = Gauge(
    "fleetmedic_consumer_lag",
    "records in the partition after the group's committed offset (high watermark - committed)",
    ["stage", "topic", "partition"],
)
INCIDENTS = Counter(
    "fleetmedic_incidents", "incident records written, by kind and status (open, update, resolve)", ["kind", "status"]
)
GATE_SKIPS = Counter("fleetmedic_gate_skips", "remediations a safety gate stopped, by gate", ["gate"])
RUNS = Counter("fleetmedic_runs", "playbook runs finished, by playbook and outcome", ["playbook", "outcome"])
RUN_SECONDS = Histogram(
    "fleetmedic_run_duration_seconds",
    "playbook run wall time, start to finish",
    ["playbook"],
    buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600),
)
PENDING_CLAIMS = Gauge("fleetmedic_pending_claims", "remediations claimed whose outcome is not recorded yet")
KILL_SWITCH = Gauge("fleetmedic_kill_switch_engaged", "1 while the fleet-wide kill switch is engaged")
CHECKPOINT_TIME = Gauge(
    "fleetmedic_last_checkpoint_timestamp_seconds",
    "unix time of the stage's last checkpoint (detector state, log position, journal cursor)",
    ["stage"],
)
CHECKPOINT_AGE = Gauge(
    "fleetmedic_last_checkpoint_age_seconds",
    "seconds since the stage's last checkpoint (computed when scraped)",
    ["stage"],
)

OUTCOMES = frozenset({"succeeded", "failed", "timed_out", "cancelled", "dry_run"})
_checkpoints: dict[str, float] = {}
_lock = threading.Lock()


def values(stage: str, n: int, records: int = 0) -> None:
    """Count `n` metric values (and `records` records) passing through `stage`."""
    if records:
        RECORDS.labels(stage).inc(records)
    if n:
        VALUES.labels(stage).inc(n)


def incident(record: Incident) -> None:
    """Count one incident record written (an `fleetmedic.schemas.Incident`)."""
    INCIDENTS.labels(record.kind, record.status).inc()


def remediation(record: Remediation) -> None:
    """Count one remediation record: a gate skip, or a finished run with its duration."""
    if record.status == "skipped" and record.gate:
        GATE_SKIPS.labels(record.gate).inc()
    elif record.status in OUTCOMES and record.gate is None:
        playbook = record.playbook or record.action
        RUNS.labels(playbook, record.status).inc()
        if record.started_at is not None and record.finished_at is not None:
            RUN_SECONDS.labels(playbook).observe(max((record.finished_at - record.started_at).total_seconds(), 0.0))


def set_kill_switch(engaged: bool) -> None:
    """The kill switch's state, as the process applying it sees it."""
    KILL_SWITCH.set(1 if engaged else 0)


def checkpoint(stage: str, at: float | None = None) -> None:
    """Record that `stage` saved its progress now (or at unix time `at`)."""
    at = time.time() if at is None else at
    with _lock:
        first = stage not in _checkpoints
        _checkpoints[stage] = at
    CHECKPOINT_TIME.labels(stage).set(at)
    if first:
        CHECKPOINT_AGE.labels(stage).set_function(lambda: time.time() - _checkpoints[stage])


class LoopWatcher:
    """Feeds lag, records and dead letters of one `ConsumerLoop` after each of its cycles.

    Runs on the loop's own thread (the consumer is not thread-safe); reads the loop's cumulative
    `stats` and counts the difference since the last call. Lag per assigned partition is the
    consumer's high watermark (learned from its fetches) minus the committed offset; the series
    of partitions the loop no longer holds are removed.
    """

    def __init__(self, stage: str, min_interval_s: float = 1.0) -> None:
        self.stage = stage
        self.min_interval_s = min_interval_s
        self._consumed = 0
        self._dead: dict[str, int] = {}
        self._lag_keys: set[tuple[str, str]] = set()
        self._last = 0.0

    def __call__(self, loop: ConsumerLoop) -> None:
        stats = loop.stats
        if stats.consumed > self._consumed:
            RECORDS.labels(self.stage).inc(stats.consumed - self._consumed)
            self._consumed = stats.consumed
        for reason, n in stats.dead_letters_by_kind.items():
            if n > self._dead.get(reason, 0):
                DEAD_LETTERS.labels(self.stage, reason).inc(n - self._dead.get(reason, 0))
                self._dead[reason] = n
        now = time.monotonic()
        if now - self._last < self.min_interval_s:
            return
        self._last = now
        self.update_lag(loop)

    def update_lag(self, loop: ConsumerLoop) -> None:
        keys = set()
        consumer = loop.consumer
        for tp in consumer.assignment():
            high = consumer.highwater(tp)
            if high is None:
                continue
            committed = loop.stats.committed.get((tp.topic, tp.partition))
            if committed is None and consumer._subscription.has_valid_position(tp):
                # nothing consumed here by this process yet: its fetch position is the committed offset
                committed = consumer._subscription.position(tp).offset
            if committed is None:
                continue
            key = (tp.topic, str(tp.partition))
            LAG.labels(self.stage, *key).set(max(high - committed, 0))
            keys.add(key)
        for gone in self._lag_keys - keys:
            try:
                LAG.remove(self.stage, *gone)
            except KeyError:
                pass
        self._lag_keys = keys


def watch_loop(loop: ConsumerLoop, stage: str) -> LoopWatcher:
    """Attach the metrics of `stage` to a consumer loop (through its `observers` hook)."""
    watcher = LoopWatcher(stage)
    loop.observers.append(watcher)
    return watcher


class MetricsServer:
    """`/metrics`, `/ready` and `/healthz` on a port, served from a daemon thread.

    Port 0 picks a free one (see `.port`). Not ready until `set_ready(True)`.
    """

    def __init__(
        self, port: int, host: str = "127.0.0.1", registry: prometheus_client.CollectorRegistry = REGISTRY
    ) -> None:
        outer = self
        self.registry = registry
        self._ready = False
        self._why = "starting"
        self._check: Callable[[], tuple[bool, str]] | None = None

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                if path in ("/metrics", "/"):
                    self._reply(200, generate_latest(outer.registry), CONTENT_TYPE_LATEST)
                elif path in ("/ready", "/readyz", "/-/ready"):
                    ok, why = outer.readiness()
                    self._reply(200 if ok else 503, (b"ready\n" if ok else f"not ready: {why}\n".encode()))
                elif path in ("/healthz", "/-/healthy"):
                    self._reply(200, b"ok\n")
                else:
                    self._reply(404, b"not found: /metrics, /ready, /healthz\n")

            def _reply(self, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:  # keep scrapes out of the service's output
                pass

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.host = host
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def set_ready(self, ready: bool, why: str = "") -> None:
        self._ready, self._why = ready, why

    def ready_when(self, check: Callable[[], tuple[bool, str]]) -> None:
        """Readiness from `check()` at each probe (it must be cheap and thread-safe)."""
        self._check = check

    def readiness(self) -> tuple[bool, str]:
        if self._check is not None:
            return self._check()
        return self._ready, self._why

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def loop_ready(loop: ConsumerLoop) -> Callable[[], tuple[bool, str]]:
    """Readiness of a consumer: it holds partitions (read from the subscription state, thread-safe enough)."""

    def check() -> tuple[bool, str]:
        if loop.stopping:
            return False, "stopping"
        assigned = loop.consumer.assignment()  # the subscription state: no network call
        return (True, "") if assigned else (False, "no partitions assigned yet")

    return check


def serve_for(args: argparse.Namespace, what: str) -> MetricsServer | None:
    """`serve` with a command's `--metrics-port/--metrics-bind`; a taken port exits with one line."""
    try:
        server = serve(args.metrics_port, args.metrics_bind)
    except OSError as exc:
        raise SystemExit(f"fleetmedic {what}: --metrics-port {args.metrics_port}: {exc}") from None
    if server is not None:
        print(f"{what}: metrics on {server.url}/metrics, readiness on {server.url}/ready", flush=True)
    return server


def serve(port: int | None, host: str = "127.0.0.1") -> MetricsServer | None:
    """Start the endpoint on `port` (None or a negative number: no endpoint; 0: any free port).

    Raises OSError when the port is taken; commands turn it into a one-line error.
    """
    if port is None or port < 0:
        return None
    server = MetricsServer(port, host)
    log.info("metrics on %s/metrics, readiness on %s/ready", server.url, server.url)
    return server


def add_arguments(parser: argparse.ArgumentParser, default: int | None = None) -> None:
    """`--metrics-port PORT`, `--metrics-bind ADDR` and `--log-format` for a long-running command."""
    from .logfmt import add_argument

    add_argument(parser)
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=default,
        metavar="PORT",
        help=f"serve /metrics and /ready on PORT (0: any free port; default: {'none' if default is None else default})",
    )
    parser.add_argument(
        "--metrics-bind",
        default="127.0.0.1",
        metavar="ADDR",
        help="address of the metrics endpoint (default 127.0.0.1)",
    )
