"""The real Prometheus, Alertmanager and node_exporter (the Debian packages), on free loopback ports.

Each is started from its own binary with a config written for the test, waited on through its
readiness endpoint, and stopped (SIGTERM, then SIGKILL) at the end. Intervals are 1 s so that
alerts move in seconds.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import urllib.request
from pathlib import Path

import yaml
from kafka_helpers import free_port

from fleetmedic.transport import wait_until

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
ALERTMANAGER = shutil.which("prometheus-alertmanager") or "/usr/bin/prometheus-alertmanager"
NODE_EXPORTER = shutil.which("prometheus-node-exporter") or "/usr/bin/prometheus-node-exporter"


def http_json(url: str, body=None, method: str | None = None, timeout_s: float = 5.0):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        url, data=data, method=method or ("POST" if data else "GET"), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=timeout_s) as resp:
        raw = resp.read()
    return json.loads(raw) if raw else None


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return resp.status == 200
    except OSError:
        return False


class Service:
    """One binary with its arguments; `start()` waits until `ready_path` answers 200."""

    def __init__(self, name: str, argv: list[str], workdir: Path, port: int, ready_path: str):
        self.name, self.argv, self.workdir, self.port, self.ready_path = name, argv, workdir, port, ready_path
        self.proc: subprocess.Popen | None = None
        self.log = workdir / f"{name}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30.0) -> Service:
        self.proc = subprocess.Popen(
            self.argv, stdout=self.log.open("wb"), stderr=subprocess.STDOUT, cwd=self.workdir, start_new_session=True
        )

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            return _answers(self.url + self.ready_path)

        wait_until(ready, timeout_s, interval_s=0.1, what=f"{self.name} ready on {self.url}")
        return self

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def alertmanager(workdir: Path, webhook_url: str | None = None) -> Service:
    """Alertmanager grouping each alert on its own (group_by: ['...']) and notifying after 1 s."""
    workdir.mkdir(parents=True, exist_ok=True)
    receivers = [{"name": "none"}]
    if webhook_url:
        receivers.append({"name": "fleetmedic", "webhook_configs": [{"url": webhook_url, "send_resolved": True}]})
    config = {
        "route": {
            "receiver": "fleetmedic" if webhook_url else "none",
            "group_by": ["..."],
            "group_wait": "1s",
            "group_interval": "1s",
            "repeat_interval": "1h",
        },
        "receivers": receivers,
    }
    (workdir / "alertmanager.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    return Service(
        "alertmanager",
        [
            ALERTMANAGER,
            f"--config.file={workdir / 'alertmanager.yml'}",
            f"--storage.path={workdir / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
            "--log.level=warn",
        ],
        workdir,
        port,
        "/-/ready",
    )


class NodeExporter(Service):
    """node_exporter with only the textfile collector: `set(text)` publishes metrics the test chooses."""

    def __init__(self, workdir: Path):
        workdir.mkdir(parents=True, exist_ok=True)
        self.textfiles = workdir / "textfile"
        self.textfiles.mkdir(exist_ok=True)
        port = free_port()
        super().__init__(
            "node_exporter",
            [
                NODE_EXPORTER,
                f"--web.listen-address=127.0.0.1:{port}",
                "--collector.disable-defaults",
                "--collector.textfile",
                f"--collector.textfile.directory={self.textfiles}",
                "--log.level=warn",
            ],
            workdir,
            port,
            "/metrics",
        )

    def set(self, text: str) -> None:
        tmp = self.textfiles / ".fleetmedic_test.prom.tmp"
        tmp.write_text(text)
        tmp.rename(self.textfiles / "fleetmedic_test.prom")  # atomic: never a half-written file scraped


def prometheus(workdir: Path, *, targets: list[tuple[str, dict]], rules: list[dict], alertmanager_port: int) -> Service:
    """Prometheus scraping `targets` (address, labels) and evaluating `rules` every second."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "rules.yml").write_text(yaml.safe_dump({"groups": [{"name": "test", "rules": rules}]}))
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
        "rule_files": [str(workdir / "rules.yml")],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{alertmanager_port}"]}]}]},
        "scrape_configs": [
            {"job_name": "node", "static_configs": [{"targets": [t], "labels": labels} for t, labels in targets]}
        ],
    }
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    return Service(
        "prometheus",
        [
            PROMETHEUS,
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        workdir,
        port,
        "/-/ready",
    )


__all__ = ["Service", "alertmanager", "NodeExporter", "prometheus", "http_json"]
