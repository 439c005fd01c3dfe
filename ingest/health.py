"""Each exporter's own health as Prometheus metrics on a port (`GET /metrics`).

>>> from ingest.publisher import ExporterHealth
>>> print(render(ExporterHealth("host", sent=3)).splitlines()[2])
fleetmedic_exporter_records_sent_total{exporter="host"} 3
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .publisher import ExporterHealth

_COUNTERS = [
    ("records_sent_total", "sent", "records acknowledged by the broker"),
    ("records_spooled_total", "spooled", "records written to the disk spool while the broker was unreachable"),
    ("records_resent_total", "resent", "records delivered later from the spool"),
    ("records_dropped_total", "dropped", "records lost because the spool was full"),
    ("records_already_stored_total", "already_stored", "spooled after a timeout but found in Kafka: not resent"),
    ("errors_total", "errors", "failed sends or reads"),
]
_GAUGES = [
    ("spool_records", "spool_records", "records waiting in the spool"),
    ("spool_bytes", "spool_bytes", "bytes waiting in the spool"),
    ("last_error_timestamp_seconds", "last_error_time", "unix time of the last error (0: none)"),
    ("last_success_timestamp_seconds", "last_success_time", "unix time of the last acknowledged send"),
]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render(health: ExporterHealth) -> str:
    """The Prometheus text exposition of one exporter's health."""
    label = f'exporter="{_escape(health.exporter)}"'
    lines = []
    with health.lock:
        for name, attr, help_ in _COUNTERS:
            lines += [f"# HELP fleetmedic_exporter_{name} {help_}", f"# TYPE fleetmedic_exporter_{name} counter",
                      f"fleetmedic_exporter_{name}{{{label}}} {getattr(health, attr)}"]
        for name, attr, help_ in _GAUGES:
            lines += [f"# HELP fleetmedic_exporter_{name} {help_}", f"# TYPE fleetmedic_exporter_{name} gauge",
                      f"fleetmedic_exporter_{name}{{{label}}} {getattr(health, attr)}"]
        lines += ["# HELP fleetmedic_exporter_last_error_info the last error message (value 1)",
                  "# TYPE fleetmedic_exporter_last_error_info gauge",
                  f'fleetmedic_exporter_last_error_info{{{label},error="{_escape(health.last_error)}"}} 1']
        for name, value in sorted(health.extra.items()):
            lines += [f"# TYPE fleetmedic_exporter_{name} gauge", f"fleetmedic_exporter_{name}{{{label}}} {value}"]
    lines.append(f"fleetmedic_exporter_up{{{label}}} 1")
    return "\n".join(lines) + "\n"


class HealthServer:
    """A tiny HTTP server in a daemon thread; port 0 picks a free one (see `.port`)."""

    def __init__(self, health: ExporterHealth, port: int, host: str = "127.0.0.1"):
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                if self.path.split("?")[0] not in ("/metrics", "/"):
                    self.send_error(404, "only /metrics here")
                    return
                body = render(outer.health).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):  # keep scrapes out of the exporter's output
                pass

        self.health = health
        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.started = time.time()
        self._thread = threading.Thread(target=self._server.serve_forever, name="health", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
