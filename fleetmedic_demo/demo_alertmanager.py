"""The demo's Alertmanager: the real binary (Debian `prometheus-alertmanager`) on a loopback port.

`fleetmedic alerts notify` pushes the demo's needs for a person to it; the demo prints where they
can be seen, and shows the kill switch as an alert (`fleetmedic pause`, then `resume`).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

BINARY = "prometheus-alertmanager"
CONFIG = """route: {receiver: none, group_by: ['...'], group_wait: 1s, group_interval: 1s, repeat_interval: 1h}
receivers: [{name: none}]
"""


def alertmanager_missing_reason() -> str | None:
    return None if shutil.which(BINARY) else f"{BINARY} is not installed (apt-get install prometheus-alertmanager)"


class DemoAlertmanager:
    """Alertmanager with no receivers (the demo only shows its API and UI), stopped on exit."""

    def __init__(self, workdir: Path, port: int):
        self.workdir, self.port = Path(workdir), port
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> DemoAlertmanager:
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "alertmanager.yml").write_text(CONFIG)
        log = (self.workdir / "alertmanager.log").open("wb")
        self.proc = subprocess.Popen(
            [
                shutil.which(BINARY) or BINARY,  # missing: Popen's FileNotFoundError names it
                f"--config.file={self.workdir / 'alertmanager.yml'}",
                f"--storage.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--cluster.listen-address=",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while not self._ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.__exit__()
                raise RuntimeError(f"Alertmanager did not start: see {self.workdir / 'alertmanager.log'}")
            time.sleep(0.2)
        return self

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/-/ready", timeout=1) as resp:
                return resp.status == 200
        except OSError:
            return False

    def alerts(self, alertname: str | None = None) -> list[dict]:
        """fleetmedic's active alerts (optionally of one alertname)."""
        query = [("filter", 'fleetmedic="true"')] + ([("filter", f'alertname="{alertname}"')] if alertname else [])
        with urllib.request.urlopen(f"{self.url}/api/v2/alerts?{urllib.parse.urlencode(query)}", timeout=5) as resp:
            return [a for a in json.loads(resp.read()) if a["status"]["state"] != "resolved"]

    def wait(self, condition: Callable[[], object], timeout_s: float) -> bool:
        """True once `condition()` is truthy (polled every 0.3 s), False after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if condition():
                return True
            time.sleep(0.3)
        return False

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def describe(alert: dict) -> str:
    labels, notes = alert["labels"], alert.get("annotations", {})
    where = " ".join(f"{k}={labels[k]}" for k in ("incident_id", "host") if k in labels)
    hint = notes.get("report_command") or notes.get("resume_command") or ""
    return f"{labels['alertname']} {where} {notes.get('summary', '')}".strip() + (f" ({hint})" if hint else "")


def kill_switch_scene(am: DemoAlertmanager, cli: list[str], env: dict) -> None:
    """`fleetmedic pause` shows up in Alertmanager as FleetmedicKillSwitch; `resume` resolves it."""
    subprocess.run(
        cli + ["pause", "--by", "demo", "--reason", "demo: the kill switch as an alert"],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    try:
        if am.wait(lambda: am.alerts("FleetmedicKillSwitch"), 30):
            print(f"alertmanager: fleetmedic pause → {describe(am.alerts('FleetmedicKillSwitch')[0])}", flush=True)
        else:
            print("alertmanager: the kill switch alert did not appear within 30 s", flush=True)
    finally:
        subprocess.run(cli + ["resume", "--by", "demo"], env=env, check=True, stdout=subprocess.DEVNULL)
    gone = am.wait(lambda: not am.alerts("FleetmedicKillSwitch"), 30)
    print(f"alertmanager: fleetmedic resume → {'resolved' if gone else 'still firing after 30 s'}", flush=True)


def print_alerts(am: DemoAlertmanager, limit: int = 5) -> None:
    alerts = am.alerts()
    print(
        f"\nalertmanager: {len(alerts)} fleetmedic alert(s) at {am.url}/#/alerts "
        f"(API {am.url}/api/v2/alerts?filter=fleetmedic%3D%22true%22)",
        flush=True,
    )
    for alert in alerts[:limit]:
        print(f"  {describe(alert)}", flush=True)
