"""Log rules: typed log events → incidents through a declarative table (detectors/xid_table.yaml).

An XID code maps to a meaning, a severity and a recommended action class; codes not in the table
fall to `unknown` (contact support). XIDs arrive in bursts: all XIDs of one host closer together
than `burst_window_s` are one incident (fingerprint `host/xid/node`). The first XID with an
action opens it; a later XID that raises the severity or the action, or adds a new code, is an
`update` (a new log-only code just joins the evidence); `burst_window_s` of event time without
another XID resolves it: the host's next log event after the window closes it, with resolve time =
last XID + window. Other log kinds listed in the table's `kinds` (oom, hung_task, ...) follow the
same burst rule with fingerprint `host/<kind>/<service or node>`. Action class `none` (e.g. XID 43,
63) never opens an incident.

>>> rules = LogRules(load_table())
>>> from fleetmedic.schemas import LogEvent
>>> from datetime import datetime, timezone
>>> ev = LogEvent(host="n1", time=datetime(2026, 1, 1, tzinfo=timezone.utc), source="sim", kind="xid",
...               line="NVRM: Xid (PCI:0000:3b:00): 79, GPU has fallen off the bus.", fields={"xid": 79})
>>> [(i.status, i.action_class, i.summary) for i in rules.process(ev, "logs", 0, 5)]
[('open', 'reboot', 'XID 79: GPU has fallen off the bus')]
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from fleetmedic.schemas import ActionClass, LogEvent, Scalar
from fleetmedic.yamlfile import load_model

from .gpu_identity import event_gpu
from .incidents import make_incident, source

DEFAULT_TABLE = Path(__file__).with_name("xid_table.yaml")
XID_LINE = re.compile(r"NVRM: Xid \((?:PCI:)?(?P<pci>[0-9a-fA-F:.]+)\): (?P<xid>\d+),")

SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}
ACTION_RANK = {
    "none": 0,
    "restart_app": 1,
    "contact_support": 2,
    "reset_gpu": 3,
    "drain_and_reset": 4,
    "reboot": 5,
    "rma": 6,
}


class Meaning(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    meaning: str
    severity: Literal["info", "warning", "critical"]
    action_class: ActionClass


class LogTable(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    unknown: Meaning
    xids: dict[int, Meaning]
    kinds: dict[str, Meaning] = {}


def load_table(path: str | Path | None = None) -> LogTable:
    return load_model(path or DEFAULT_TABLE, LogTable)


def xid_of(event: LogEvent) -> Scalar:
    """The XID code an event reports (`fields.xid`, or parsed from a raw `NVRM: Xid` line), else None.
    Read as it came (an int, or the digits of a raw line): callers convert, and an unreadable code is unknown.

    The log rules and the fault model's XID history both read XIDs through this function.
    """
    if event.kind not in ("xid", "raw"):
        return None
    xid = event.fields.get("xid")
    if xid is None:
        m = XID_LINE.search(event.line)
        xid = m and m.group("xid")
    return xid


@dataclass
class Burst:
    kind: str
    subject: str
    opened_at: float
    last_time: float
    severity: str
    action_class: str
    codes: list[str]
    count: int
    topic: str
    partition: int
    first_offset: int
    last_offset: int
    summary: str
    labels: dict = field(default_factory=dict)


class LogRules:
    detector = "log_rules"

    def __init__(self, table: LogTable, burst_window_s: float = 180.0) -> None:
        self.table = table
        self.window = burst_window_s
        self.bursts: dict[str, dict[tuple[str, str], Burst]] = {}  # host → (kind, subject) → open burst

    def classify(self, event: LogEvent) -> tuple[str, str, str, Meaning] | None:
        """(kind, subject, code, meaning) of an event a rule covers, else None."""
        xid = xid_of(event)
        if xid is not None:
            try:
                code = int(xid)
            except (TypeError, ValueError):
                return "xid", "node", str(xid), self.table.unknown
            return "xid", "node", str(code), self.table.xids.get(code, self.table.unknown)
        meaning = self.table.kinds.get(event.kind)
        if meaning is None:
            return None
        subject = str(event.fields.get("service") or "node")
        return event.kind, subject, event.kind, meaning

    def expire(self, host: str, now: float) -> list:
        """Resolve the host's bursts that have been quiet for the window by event time `now`."""
        open_ = self.bursts.get(host)
        if not open_:
            return []
        out = []
        for key in [k for k, b in open_.items() if now - b.last_time >= self.window]:
            b = open_.pop(key)
            out.append(self._incident(host, b, "resolve", b.last_time + self.window))
        if not open_:
            del self.bursts[host]
        return out

    def process(self, event: LogEvent, topic: str, partition: int, offset: int) -> list:
        t = event.time.timestamp()
        out = self.expire(event.host, t)
        hit = self.classify(event)
        if hit is None:
            return out
        kind, subject, code, meaning = hit
        host_bursts = self.bursts.setdefault(event.host, {})
        b = host_bursts.get((kind, subject))
        label = f"XID {code}" if kind == "xid" else kind
        if b is None:
            if meaning.action_class == "none":
                if not host_bursts:
                    del self.bursts[event.host]
                return out
            # labels: the GPU the burst is about (its first event's), passed on as incident details
            b = Burst(
                kind,
                subject,
                t,
                t,
                meaning.severity,
                meaning.action_class,
                [code],
                1,
                topic,
                partition,
                offset,
                offset,
                f"{label}: {meaning.meaning}",
                event_gpu(event) if kind == "xid" else {},
            )
            host_bursts[(kind, subject)] = b
            out.append(self._incident(event.host, b, "open", t))
            return out
        b.last_time = max(b.last_time, t)
        b.count += 1
        b.last_offset = max(b.last_offset, offset)
        changed = code not in b.codes and meaning.action_class != "none"
        if code not in b.codes:
            b.codes.append(code)
        if SEVERITY_RANK[meaning.severity] > SEVERITY_RANK[b.severity]:
            b.severity, changed = meaning.severity, True
        if ACTION_RANK[meaning.action_class] > ACTION_RANK[b.action_class]:
            b.action_class, b.summary, changed = meaning.action_class, f"{label}: {meaning.meaning}", True
        if changed:
            out.append(self._incident(event.host, b, "update", t))
        return out

    def _incident(self, host: str, b: Burst, status: str, t: float):
        return make_incident(
            host=host,
            kind=b.kind,
            subject=b.subject,
            status=status,
            severity=b.severity,
            detector=self.detector,
            time=t,
            opened_at=b.opened_at,
            score=float(b.count),
            action_class=b.action_class,
            summary=b.summary,
            series=[b.kind],
            values=[float(c) if c.isdigit() else None for c in b.codes],
            window_start=b.opened_at,
            sources=[source(b.topic, b.partition, b.first_offset, b.last_offset)],
            details={"codes": ",".join(b.codes), "events": b.count, "burst_window_s": self.window, **b.labels},
        )

    # -- checkpoint ---------------------------------------------------------------------------
    def state_of(self, host: str) -> list[dict]:
        return [asdict(b) for b in self.bursts.get(host, {}).values()]

    def restore(self, host: str, state: list[dict]) -> None:
        self.bursts.pop(host, None)
        if state:
            self.bursts[host] = {(d["kind"], d["subject"]): Burst(**d) for d in state}

    def forget(self, host: str) -> None:
        self.bursts.pop(host, None)
