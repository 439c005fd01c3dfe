"""Alertmanager as an input: its webhook notifications become incidents (`fleetmedic alerts receive`).

Point a receiver of the operator's Alertmanager at this server (`webhook_configs: - url:
http://HOST:PORT/alerts`, `send_resolved: true`); any path is accepted. Each alert becomes an
incident record on incidents.v1, so existing Prometheus alert rules drive the same policy,
gates and playbooks as fleetmedic's own detectors:

- a `firing` alert opens an incident, a `resolved` one resolves it;
- the incident's fingerprint is the alert's fingerprint; its id is derived from the fingerprint
  and the alert's `startsAt` (one firing episode is one incident);
- host from the first of `alerts.host_labels` present (a `:port` is dropped), kind from
  `alerts.kind_label` (alertname), subject from `alerts.subject_label` (default: the kind),
  severity from the `severity` label; the other labels are carried through `alerts.label_map`;
- duplicates (Alertmanager repeats a firing group every `repeat_interval`, and retries) and
  out-of-order notifications (a firing retried after its resolve) change nothing: an episode is
  opened once and resolved once, and a resolved episode is never reopened. What was opened and
  resolved is read back from incidents.v1 at start, so a restart does not reopen anything.
- alerts carrying `alerts.own_label="true"` are fleetmedic's own (`alerts notify`): ignored, so a
  route that sends everything here makes no loop.

An alert that cannot be mapped (no host label, a bad host name) is not an incident: the reply
lists it with the reason and it is logged; the rest of the notification is still taken. Records
are acknowledged by the broker before the reply is 200; when the broker cannot take them the
reply is 503 and Alertmanager retries.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pydantic import ValidationError

from fleetmedic.config import AlertsSettings, Settings
from fleetmedic.lifecycle import TopicReader
from fleetmedic.producer import Producer
from fleetmedic.schemas import Evidence, Incident
from fleetmedic.topics import topic_name

log = logging.getLogger(__name__)
DETECTOR = "alertmanager"
MAX_BODY_BYTES = 16 * 1024 * 1024
MAX_REMEMBERED = 200_000  # episodes remembered for idempotence (oldest forgotten first)
_HOST_PORT = re.compile(r"^\[?([^\]]+?)\]?:[0-9]{1,5}$")
_SEVERITY = {
    "critical": "critical",
    "page": "critical",
    "error": "critical",
    "warning": "warning",
    "warn": "warning",
    "info": "info",
    "none": "info",
}


class AlertError(ValueError):
    """An alert that cannot become an incident; the message says why."""


def _time(text: str | None) -> datetime | None:
    if not text or text.startswith("0001-01-01"):
        return None  # Go's zero time: "not set"
    text = re.sub(r"(\.\d{6})\d+", r"\1", text.replace("Z", "+00:00"))
    return datetime.fromisoformat(text).astimezone(UTC)


def _host(value: str) -> str:
    m = _HOST_PORT.match(value)
    return m.group(1) if m else value


class AlertMapper:
    """One Alertmanager alert (a webhook `alerts[]` item) → one incident record."""

    def __init__(self, config: AlertsSettings):
        self.config = config

    def own(self, alert: dict) -> bool:
        return (alert.get("labels") or {}).get(self.config.own_label) == "true"

    def episode(self, alert: dict) -> tuple[str, str, datetime]:
        """(fingerprint, incident id, startsAt) of the alert's firing episode."""
        fingerprint = alert.get("fingerprint")
        if not isinstance(fingerprint, str) or not fingerprint:
            raise AlertError("no fingerprint")
        try:
            starts = _time(alert.get("startsAt"))
        except (TypeError, ValueError):
            raise AlertError(f"startsAt {alert.get('startsAt')!r} is not a time") from None
        if starts is None:
            raise AlertError("no startsAt")
        return fingerprint, f"am-{fingerprint}-{starts.strftime('%Y%m%dT%H%M%S')}", starts

    def incident(self, alert: dict, *, now: datetime | None = None) -> Incident:
        """The incident record for this alert (open when firing, resolve when resolved); AlertError otherwise."""
        now = now or datetime.now(UTC)
        labels = alert.get("labels")
        if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
            raise AlertError("labels must be an object of strings")
        annotations = alert.get("annotations") or {}
        if not isinstance(annotations, dict):
            raise AlertError("annotations must be an object")
        status = alert.get("status")
        if status not in ("firing", "resolved"):
            raise AlertError(f"status {status!r} is neither firing nor resolved")
        fingerprint, incident_id, starts = self.episode(alert)
        host_label = next((n for n in self.config.host_labels if labels.get(n)), None)
        if host_label is None:
            raise AlertError(f"no host label (looked for {', '.join(self.config.host_labels)})")
        host = _host(labels[host_label])
        kind = labels.get(self.config.kind_label)
        if not kind:
            raise AlertError(f"no {self.config.kind_label} label")
        subject = labels.get(self.config.subject_label, kind) if self.config.subject_label else kind
        carried = {}
        for name, value in labels.items():
            if name in self.config.label_map:
                carried[self.config.label_map[name]] = value
            elif not self.config.drop_unmapped:
                carried[name] = value
        if status == "resolved":
            try:
                ends = _time(alert.get("endsAt"))
            except (TypeError, ValueError):
                ends = None
            when = ends or now
        else:
            when = starts
        summary = str(annotations.get("summary") or annotations.get("description") or f"{kind} on {host}")[:4096]
        details = {"am_fingerprint": fingerprint, "generator_url": str(alert.get("generatorURL") or "")[:2048]}
        for name in ("description", "runbook_url"):
            if isinstance(annotations.get(name), str):
                details[name] = annotations[name][:2048]
        try:
            return Incident(
                id=incident_id,
                fingerprint=fingerprint,
                host=host,
                kind=kind,
                subject=subject,
                status="open" if status == "firing" else "resolve",
                severity=_SEVERITY.get(labels.get("severity", "").lower(), "warning"),
                detector=DETECTOR,
                time=when,
                opened_at=starts,
                summary=summary,
                labels=carried,
                evidence=Evidence(
                    details=details, window_start=starts, window_end=when if status == "resolved" else None
                ),
            )
        except ValidationError as exc:
            detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_url=False))
            raise AlertError(f"not a valid incident ({detail})") from None


@dataclass
class Outcome:
    """What one notification did."""

    opened: list[str] = field(default_factory=list)
    resolved: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)
    own: int = 0

    def as_json(self) -> dict:
        return {
            "opened": self.opened,
            "resolved": self.resolved,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "ignored_own": self.own,
        }


class AlertReceiver:
    """Turns webhook payloads into incident records, opening and resolving each episode once."""

    def __init__(self, settings: Settings, producer: Producer | None = None):
        self.settings = settings
        self.mapper = AlertMapper(settings.alerts)
        self.producer = producer or Producer(settings)
        self.seen: OrderedDict[str, str] = OrderedDict()  # incident id → "open" | "resolve"
        self._lock = threading.Lock()

    def recover(self, timeout_s: float = 60.0) -> int:
        """Read back what this receiver (any instance) opened and resolved; returns the episodes known."""
        topic = topic_name(self.settings, Incident.topic)
        # read committed: incidents.v1 is written in the detectors' transactions, and an aborted
        # one's incidents were never opened
        with TopicReader(self.settings, [topic], name="alerts") as reader:
            for batch in reader.read_to_end(timeout_s=timeout_s):
                # an undecodable record is not ours to judge: the writer's consumers dead-letter it
                for item in reader.records(batch, Incident):
                    if item.record.detector == DETECTOR:
                        self._remember(item.record.id, item.record.status)
        return len(self.seen)

    def _remember(self, incident_id: str, status: str) -> None:
        if self.seen.get(incident_id) == "resolve":
            return
        self.seen[incident_id] = "resolve" if status == "resolve" else "open"
        self.seen.move_to_end(incident_id)
        while len(self.seen) > MAX_REMEMBERED:
            self.seen.popitem(last=False)

    def handle(self, payload: dict) -> Outcome:
        """One webhook payload; raises (a Kafka error) when the records could not be written."""
        alerts = payload.get("alerts") if isinstance(payload, dict) else None
        if not isinstance(alerts, list):
            raise AlertError("the body is not an Alertmanager notification (no `alerts` list)")
        out = Outcome()
        with self._lock:
            pending: list[Incident] = []
            batch: dict[str, str] = {}  # this notification's own decisions, ahead of `seen`
            for alert in alerts:
                if not isinstance(alert, dict):
                    out.rejected.append({"alert": None, "reason": "not an object"})
                    continue
                if self.mapper.own(alert):
                    out.own += 1
                    continue
                try:
                    record = self.mapper.incident(alert)
                except AlertError as exc:
                    labels = alert.get("labels")
                    name = labels.get("alertname") if isinstance(labels, dict) else None
                    out.rejected.append({"alert": name, "fingerprint": alert.get("fingerprint"), "reason": str(exc)})
                    log.warning("alert %s (%s) not taken: %s", name, alert.get("fingerprint"), exc)
                    continue
                state = batch.get(record.id, self.seen.get(record.id))
                if state == "resolve" or (state == "open" and record.status == "open"):
                    out.duplicates.append(record.id)  # a repeat, or a firing retried after its resolve
                    continue
                batch[record.id] = record.status
                pending.append(record)
            for record in pending:
                self.producer.send(record)
            self.producer.flush()
            for record in pending:
                self._remember(record.id, record.status)
                (out.opened if record.status == "open" else out.resolved).append(record.id)
        if out.opened or out.resolved:
            log.info("alerts: opened %s, resolved %s", out.opened, out.resolved)
        return out

    def close(self) -> None:
        self.producer.close()


class _Handler(BaseHTTPRequestHandler):
    server: ReceiverServer

    def log_message(self, fmt: str, *args: Any) -> None:  # the default writes every request to stderr
        log.debug("%s " + fmt, self.address_string(), *args)

    def _reply(self, code: int, body: dict | str) -> None:
        data = (json.dumps(body) if isinstance(body, dict) else body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json" if isinstance(body, dict) else "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path.startswith("/-/healthy"):
            self._reply(200, "ok\n")
        elif self.path.startswith("/-/ready"):
            ready = self.server.receiver.producer.reaches_broker()
            self._reply(200 if ready else 503, "ready\n" if ready else "no broker connection\n")
        else:
            self._reply(404, {"error": "POST Alertmanager webhook notifications here; GET /-/ready, /-/healthy"})

    def do_POST(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            return self._reply(400, {"error": "bad Content-Length"})
        if length <= 0:
            return self._reply(400, {"error": "empty body: expected an Alertmanager notification (JSON)"})
        if length > MAX_BODY_BYTES:
            return self._reply(413, {"error": f"body of {length} bytes exceeds {MAX_BODY_BYTES}"})
        raw = self.rfile.read(length)
        try:
            payload = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return self._reply(400, {"error": f"not JSON: {exc}"})
        try:
            outcome = self.server.receiver.handle(payload)
        except AlertError as exc:
            return self._reply(400, {"error": str(exc)})
        except Exception as exc:  # the broker could not take it: Alertmanager retries a 5xx
            log.exception("alerts could not be written")
            return self._reply(503, {"error": f"could not write incidents: {type(exc).__name__}: {exc}"})
        self._reply(200, outcome.as_json())


class ReceiverServer(ThreadingHTTPServer):
    """The HTTP side of `fleetmedic alerts receive`."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], receiver: AlertReceiver):
        self.receiver = receiver
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        if isinstance(host, bytes):  # the stub allows bytes (AF_UNIX); a TCP server's host is a str
            host = host.decode()
        return f"http://{host}:{port}/alerts"


__all__ = ["AlertMapper", "AlertReceiver", "AlertError", "ReceiverServer", "Outcome", "DETECTOR"]
