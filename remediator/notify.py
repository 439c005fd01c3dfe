"""Alertmanager as the way to reach people: incidents that need a person become alerts (`fleetmedic alerts notify`).

The notifier reads the remediations topic (every remediator's decisions, through the same
`LedgerReader` the remediator uses) and the control topic, and keeps one Alertmanager alert per
need, pushed to Alertmanager's v2 API (`POST /api/v2/alerts`). The operator's existing routes
(Slack, PagerDuty, e-mail) do the notifying. A need, per incident still open (no closed-loop
record), is one of:

=========================== =================================================== ==========
alertname                   when                                                severity
=========================== =================================================== ==========
FleetmedicAwaitingApproval  a remediation waits for `fleetmedic approve`        warning
FleetmedicEscalated         the ladder ended with a person (`escalated` last)   critical
FleetmedicRunFailed         a run failed or timed out                           critical
FleetmedicHostUnreachable   a run could not reach its host                      critical
FleetmedicKillSwitch        `fleetmedic pause` is engaged (one, fleet-wide)     warning
=========================== =================================================== ==========

Labels: alertname, incident_id, host, severity and `fleetmedic="true"` (so `alerts receive`
never turns them back into incidents). Annotations: summary, reason, report_command (`fleetmedic
report --incident ID`), and approve_command / remediation_id for approvals. Active alerts are
re-sent every `alerts.resend_s` with `endsAt` four periods ahead (so they lapse on their own if
the notifier stops); when the need ends (approved, denied, resolved, resumed) the alert is sent
once more with `endsAt` = now, which resolves it in Alertmanager.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from fleetmedic.config import Settings
from fleetmedic.lifecycle import ServiceLoop

from .claims import Ledger, LedgerReader
from .control import ControlState

if TYPE_CHECKING:
    from fleetmedic.schemas import Control

log = logging.getLogger(__name__)
CLOSED_LOOP = "closed_loop"


@dataclass(frozen=True)
class Need:
    """One alert: identified by its labels (which never change while it lasts)."""

    labels: tuple[tuple[str, str], ...]
    annotations: tuple[tuple[str, str], ...]
    starts_at: datetime

    @property
    def key(self) -> tuple:
        return self.labels

    def body(self, ends_at: datetime) -> dict:
        return {
            "labels": dict(self.labels),
            "annotations": dict(self.annotations),
            "startsAt": self.starts_at.isoformat(),
            "endsAt": ends_at.isoformat(),
        }


def _need(
    alertname: str,
    severity: str,
    incident_id: str | None,
    host: str | None,
    starts_at: datetime,
    own_label: str,
    **annotations: str,
) -> Need:
    labels = {"alertname": alertname, own_label: "true", "severity": severity}
    if incident_id:
        labels["incident_id"] = incident_id
    if host:
        labels["host"] = host
    return Need(
        labels=tuple(sorted(labels.items())),
        annotations=tuple(sorted((k, v[:4096]) for k, v in annotations.items() if v)),
        starts_at=starts_at,
    )


def report_command(incident_id: str) -> str:
    return f"fleetmedic report --incident {incident_id} -o report-{incident_id}.html"


def needs(ledger: Ledger, kill_switch: Control | None = None, *, own_label: str = "fleetmedic") -> dict[tuple, Need]:
    """Every need for a person that the ledger (and the kill switch record, when engaged) shows now."""
    out: dict[tuple, Need] = {}

    def add(n: Need) -> None:
        out[n.key] = n

    if kill_switch is not None:
        add(
            _need(
                "FleetmedicKillSwitch",
                "warning",
                None,
                None,
                kill_switch.time,
                own_label,
                summary=f"fleetmedic kill switch engaged by {kill_switch.by}: no remediation runs anywhere",
                reason=kill_switch.reason,
                resume_command="fleetmedic resume",
            )
        )
    for incident_id, ids in ledger.by_incident.items():
        entries = [ledger.entries[i] for i in ids]
        if any(e.first.gate == CLOSED_LOOP for e in entries):
            continue  # the incident resolved: nothing needs anyone
        report = report_command(incident_id)
        for e in entries:
            r = e.latest
            if r.status == "awaiting_approval":
                add(
                    _need(
                        "FleetmedicAwaitingApproval",
                        "warning",
                        incident_id,
                        r.host,
                        r.time,
                        own_label,
                        summary=f"{r.action} ({r.playbook}) on {r.host} waits for approval",
                        reason=r.reason or "",
                        remediation_id=r.id,
                        report_command=report,
                        approve_command=f"fleetmedic approve {r.id}",
                        deny_command=f"fleetmedic approve {r.id} --deny",
                    )
                )
            run_ended = next((s for s in reversed(e.statuses) if s in ("failed", "timed_out")), None)
            if run_ended and e.claimed_at is not None:
                unreachable = r.run is not None and r.run.unreachable > 0
                if unreachable:
                    add(
                        _need(
                            "FleetmedicHostUnreachable",
                            "critical",
                            incident_id,
                            r.host,
                            r.time,
                            own_label,
                            summary=f"{r.action} could not reach {r.host}",
                            reason=r.reason or "",
                            remediation_id=r.id,
                            report_command=report,
                        )
                    )
                else:
                    add(
                        _need(
                            "FleetmedicRunFailed",
                            "critical",
                            incident_id,
                            r.host,
                            r.time,
                            own_label,
                            summary=f"{r.action} ({r.playbook}) on {r.host} ended {run_ended}",
                            reason=r.reason or "",
                            remediation_id=r.id,
                            report_command=report,
                        )
                    )
        top = max(entries, key=lambda e: e.first.step).latest
        if top.status == "escalated":
            add(
                _need(
                    "FleetmedicEscalated",
                    "critical",
                    incident_id,
                    top.host,
                    top.time,
                    own_label,
                    summary=f"incident {incident_id} on {top.host} needs a person",
                    reason=top.reason or "",
                    remediation_id=top.id,
                    report_command=report,
                )
            )
    return out


class AlertmanagerClient:
    """POST /api/v2/alerts to one Alertmanager."""

    def __init__(self, url: str, timeout_s: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s

    def post(self, alerts: list[dict]) -> None:
        req = urllib.request.Request(
            self.url + "/api/v2/alerts",
            data=json.dumps(alerts).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
            resp.read()


class Notifier:
    """Keeps Alertmanager's view of "needs a person" equal to the ledger's (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        url: str | None = None,
        *,
        resend_s: float | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        url = url or settings.alerts.alertmanager_url
        if not url:
            raise ValueError("no Alertmanager URL: give --alertmanager URL or set alerts.alertmanager_url")
        self.settings = settings
        self.client = AlertmanagerClient(url, settings.alerts.timeout_s)
        self.resend_s = resend_s or settings.alerts.resend_s
        self.clock = clock
        self.reader = LedgerReader(settings)
        self.reader.catch_up()
        self.control = ControlState(settings, read_alertmanager=False).start()
        self.active: dict[tuple, Need] = {}
        self.ending: dict[tuple, Need] = {}  # ended needs whose resolve is not yet delivered
        self.sent = 0
        self.errors = 0
        self._last_send = 0.0
        self._failing = False
        self._stop = threading.Event()

    def step(self) -> int:
        """Bring Alertmanager up to date; returns the alerts posted (0 when nothing changed and none is due)."""
        self.reader.poll(0)
        current = needs(self.reader.ledger, self.control.kill_switch, own_label=self.settings.alerts.own_label)
        for key in set(self.active) - set(current):
            self.ending[key] = self.active[key]
        for key in current:
            self.ending.pop(key, None)
        changed = set(current) != set(self.active) or bool(self.ending)
        self.active = current
        due = time.monotonic() - self._last_send >= self.resend_s
        if not (changed or (due and current)):
            return 0
        now = self.clock()
        body = [n.body(now + timedelta(seconds=4 * self.resend_s)) for n in current.values()]
        body += [n.body(now) for n in self.ending.values()]
        try:
            self.client.post(body)
        except (OSError, ValueError) as exc:
            self.errors += 1
            if not self._failing:  # once per outage, not once per retry
                log.warning("Alertmanager %s did not take %d alerts (retrying): %s", self.client.url, len(body), exc)
            self._failing = True
            return 0
        if self._failing:
            log.warning("Alertmanager %s takes alerts again", self.client.url)
        self._failing = False
        self.ending.clear()
        self._last_send = time.monotonic()
        self.sent += len(body)
        return len(body)

    def stop(self) -> None:
        self._stop.set()

    def run(self, interval_s: float = 0.5) -> None:
        """`step` every `interval_s` until `stop()` (a thread: the caller takes the signals); then close."""

        def step_then_wait() -> int:
            posted = self.step()
            self._stop.wait(interval_s)
            return posted

        ServiceLoop(step_then_wait, stop_event=self._stop, close=self.close).run(install_signals=False)

    def close(self) -> None:
        try:
            self.reader.close()
        finally:
            self.control.close()


__all__ = ["Notifier", "Need", "needs", "AlertmanagerClient", "report_command"]
