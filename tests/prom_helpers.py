"""The real Prometheus (/usr/bin/prometheus, Debian's package) and fleetmedic services as child
processes, for the operations tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import yaml
from kafka_helpers import free_port

from fleetmedic.transport import wait_until

PROMETHEUS = "/usr/bin/prometheus"
NODE_EXPORTER = "/usr/bin/prometheus-node-exporter"
FLEETMEDIC = [sys.executable, "-m", "fleetmedic.cli"]


def http_get(url: str, timeout_s: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


class Prometheus:
    """A real Prometheus scraping `jobs` ({job: ["127.0.0.1:PORT", ...]}) every second."""

    def __init__(self, tmp: Path, jobs: dict[str, list[str]], extra_scrape_configs: list | None = None):
        self.port = free_port()
        self.dir = tmp / "prometheus"
        self.dir.mkdir(parents=True, exist_ok=True)
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "900ms", "evaluation_interval": "1s"},
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": targets}]} for job, targets in jobs.items()
            ]
            + (extra_scrape_configs or []),
        }
        (self.dir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = open(self.dir / "prometheus.log", "wb")
        self.proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={self.dir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_until(lambda: http_get(f"{self.url}/-/ready")[0] == 200, 60, what="Prometheus to be ready")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def query(self, promql: str) -> list[dict]:
        code, body = http_get(f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
        assert code == 200, (promql, code, body[:500])
        return json.loads(body)["data"]["result"]

    def wait_for(self, promql: str, timeout_s: float = 60.0, check=lambda result: bool(result)) -> list[dict]:
        got: list = []

        def ok() -> bool:
            got[:] = self.query(promql)
            return check(got)

        try:
            wait_until(ok, timeout_s, interval_s=0.5, what=f"Prometheus to return {promql}")
        except TimeoutError:
            targets = http_get(f"{self.url}/api/v1/targets")[1]
            raise AssertionError(f"{promql}: last result {got}; targets: {targets[:3000]}") from None
        return got

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


class Service:
    """A `fleetmedic ...` child process with the test's broker and topic prefix; output in a file."""

    def __init__(self, settings, args: list[str], log_path: Path, env: dict | None = None):
        self.log_path = log_path
        full_env = {
            **os.environ,
            "FLEETMEDIC_BOOTSTRAP_SERVERS": settings.bootstrap_servers[0],
            "FLEETMEDIC_TOPIC_PREFIX": settings.topic_prefix,
            **(env or {}),
        }
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            FLEETMEDIC + args, stdout=self.log, stderr=subprocess.STDOUT, env=full_env, cwd=Path(__file__).parent.parent
        )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout_s: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode
