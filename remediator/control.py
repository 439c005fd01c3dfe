"""Runtime control without files on hosts: the control topic (and Alertmanager's silences) as live state.

`ControlState` reads the compacted control topic (`fleetmedic pause|resume`, `fleetmedic silence
...`, `fleetmedic maintenance ...`) from its beginning at start and then follows it in a thread,
so every remediator sees the same decisions within a poll (200 ms). While the kill switch is
engaged its `cancel` event is set: the runner passes it to ansible-runner's cancel callback, so a
running playbook is stopped too, not only the next one.

When `alerts.alertmanager_url` is set the same thread re-reads Alertmanager's active silences
every `alerts.silence_refresh_s`; the silence gate honours both sources. When Alertmanager cannot
be reached the last silences read are kept (and the failure is logged): a network blip neither
lifts a silence nor blocks the fleet.

The labels a matcher sees for an incident (`incident_labels`): host, kind, subject, severity,
detector, plus the incident's own labels (an incident from `alerts receive` carries its alert's).

Example::

    >>> from fleetmedic.schemas import Matcher
    >>> matches([Matcher(name="host", op="=~", value="gpu-0[1-3]")], {"host": "gpu-02"})
    True
    >>> matches([Matcher(name="host", value="gpu-01"), Matcher(name="rack", value="")], {"host": "gpu-01"})
    True
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache

from fleetmedic.config import Settings
from fleetmedic.lifecycle import Periodic, ServiceLoop, TopicReader, warn_unreadable
from fleetmedic.schemas import Control, Incident, Matcher
from fleetmedic.topics import topic_name

log = logging.getLogger(__name__)
KILL_SWITCH_ID = "kill_switch"


class MatcherError(ValueError):
    """A matcher that cannot be parsed (the message says which and why)."""


_MATCHER = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.]*)\s*(=~|!~|!=|=)\s*(.*?)\s*$")


def parse_matcher(text: str) -> Matcher:
    """`name=value`, `name!=value`, `name=~regex`, `name!~regex` (quotes around the value optional)."""
    m = _MATCHER.match(text)
    if not m:
        raise MatcherError(f"{text!r}: a matcher is name=value, name!=value, name=~regex or name!~regex")
    name, op, value = m.groups()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        value = value[1:-1]
    if op in ("=~", "!~"):
        try:
            re.compile(value)
        except re.error as exc:
            raise MatcherError(f"{text!r}: bad regex: {exc}") from None
    return Matcher(name=name, op=op, value=value)


@lru_cache(maxsize=1024)
def _regex(value: str) -> re.Pattern:
    return re.compile(value)


def matches(matchers: list[Matcher], labels: dict[str, str]) -> bool:
    """Do all matchers hold for these labels? (An empty list matches nothing: silence all with `pause`.)"""
    if not matchers:
        return False
    for m in matchers:
        have = labels.get(m.name, "")
        if m.op == "=":
            ok = have == m.value
        elif m.op == "!=":
            ok = have != m.value
        else:
            try:
                ok = _regex(m.value).fullmatch(have) is not None
            except re.error:
                return False  # a bad regex (from Alertmanager) matches nothing rather than everything
            ok = ok if m.op == "=~" else not ok
        if not ok:
            return False
    return True


def incident_labels(incident: Incident) -> dict[str, str]:
    """The label set silences and maintenance records are matched against."""
    return {
        **incident.labels,
        "host": incident.host,
        "kind": incident.kind,
        "subject": incident.subject,
        "severity": incident.severity,
        "detector": incident.detector,
    }


def describe_matchers(matchers: list[Matcher]) -> str:
    """Matchers as `name="value"` pairs joined by commas (as the records and reasons show them)."""
    return ",".join(f"{m.name}{m.op}{json.dumps(m.value)}" for m in matchers)


@dataclass(frozen=True)
class ActiveStop:
    """A silence or maintenance record that covers an incident now, and where it came from."""

    id: str
    source: str  # "fleetmedic" or "alertmanager"
    by: str
    reason: str
    ends_at: datetime
    matchers: tuple[Matcher, ...]

    def describe(self) -> str:
        """Where the stop comes from, what it matches, who set it, until when, and why."""
        src = "Alertmanager silence" if self.source == "alertmanager" else "silence"
        note = f": {self.reason}" if self.reason else ""
        return (
            f"{src} {self.id} ({describe_matchers(list(self.matchers))}) by {self.by} until "
            f"{self.ends_at.isoformat()}{note}"
        )


def _am_time(text: str) -> datetime:
    # Alertmanager writes RFC 3339 with nanoseconds; Python reads at most microseconds
    text = re.sub(r"(\.\d{6})\d+", r"\1", text.replace("Z", "+00:00"))
    return datetime.fromisoformat(text).astimezone(UTC)


def alertmanager_silences(url: str, timeout_s: float = 5.0) -> list[ActiveStop]:
    """The active silences of the Alertmanager at `url` (GET /api/v2/silences); raises OSError/ValueError."""
    with urllib.request.urlopen(url.rstrip("/") + "/api/v2/silences", timeout=timeout_s) as resp:
        body = json.loads(resp.read())
    out = []
    for s in body:
        if (s.get("status") or {}).get("state") != "active":
            continue
        matchers = []
        for m in s.get("matchers") or ():
            regex, equal = bool(m.get("isRegex")), m.get("isEqual", True)
            op = ("=~" if equal else "!~") if regex else ("=" if equal else "!=")
            matchers.append(Matcher(name=m["name"], op=op, value=m.get("value", "")))
        out.append(
            ActiveStop(
                id=s["id"],
                source="alertmanager",
                by=s.get("createdBy") or "?",
                reason=s.get("comment") or "",
                ends_at=_am_time(s["endsAt"]),
                matchers=tuple(matchers),
            )
        )
    return out


class ControlState:
    """The newest control record per id, kept current by a thread; what the gates and the runner read.

    `start()` reads the topic to its end before returning (so a pause written before this process
    started is honoured by its first decision), then follows it. Thread-safe: the follower thread
    replaces whole values; readers take them as they are.

    The topic's consumer (`reader`, or the one passed in) is opened on first use (`start`,
    `catch_up`, `poll`), not here: a state fed records with `apply` needs no broker (the gates'
    unit tests).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        poll_ms: int = 200,
        read_alertmanager: bool = True,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        reader: TopicReader | None = None,
    ) -> None:
        self.settings = settings
        self.poll_ms = poll_ms
        self.clock = clock
        self.topic = topic_name(settings, Control.topic)
        self.records: dict[str, Control] = {}
        self.cancel = threading.Event()  # set while the kill switch is engaged
        self.am_silences: list[ActiveStop] = []
        self.am_error: str | None = None
        self.am_url = settings.alerts.alertmanager_url if read_alertmanager else None
        self.applied = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._reader = reader

    @property
    def reader(self) -> TopicReader:
        """The control topic's consumer, opened on first use."""
        if self._reader is None:
            self._reader = TopicReader(self.settings, [self.topic], name="control", fetch_max_wait_ms=100)
        return self._reader

    # --- reading ---------------------------------------------------------------------------
    def apply(self, record: Control) -> None:
        """Take one control record (the newest per id wins; an engaged kill switch sets `cancel`)."""
        old = self.records.get(record.id)
        if old is not None and old.time > record.time:
            return  # an older decision arriving late never overrides a newer one
        self.records[record.id] = record
        self.applied += 1
        if record.id == KILL_SWITCH_ID:
            if record.active:
                self.cancel.set()
                log.warning("kill switch engaged by %s: %s", record.by, record.reason or "(no reason)")
            else:
                self.cancel.clear()
                log.warning("kill switch released by %s", record.by)

    def poll(self, timeout_ms: int = 0) -> int:
        """Apply what is new on the topic (waiting up to `timeout_ms`); returns the records read."""
        return self._apply_all(self.reader.poll(timeout_ms))

    def _apply_all(self, batch: list) -> int:
        records = self.reader.records(batch, Control, on_error=warn_unreadable)
        for item in records:
            self.apply(item.record)
        return len(records)

    def catch_up(self, timeout_s: float = 30.0) -> None:
        """Apply everything written to the topic up to now."""
        for batch in self.reader.read_to_end(timeout_s=timeout_s):
            self._apply_all(batch)

    def refresh_alertmanager(self) -> None:
        """Re-read Alertmanager's active silences (kept as they were when it cannot be read)."""
        if not self.am_url:
            return
        try:
            self.am_silences = alertmanager_silences(self.am_url, self.settings.alerts.timeout_s)
            if self.am_error:
                log.warning("Alertmanager %s answers again", self.am_url)
            self.am_error = None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            if self.am_error is None:
                log.warning(
                    "Alertmanager silences unreadable at %s (keeping the %d read before): %s",
                    self.am_url,
                    len(self.am_silences),
                    exc,
                )
            self.am_error = str(exc)

    def start(self) -> ControlState:
        """Read the topic to its end, then follow it in a thread; returns self."""
        self.catch_up()
        self.refresh_alertmanager()
        refresh = (
            [Periodic(self.settings.alerts.silence_refresh_s, self.refresh_alertmanager, last=time.monotonic())]
            if self.am_url
            else []
        )
        follower = ServiceLoop(self._follow_once, periodic=refresh, stop_event=self._stop)
        self._thread = threading.Thread(
            target=follower.run, kwargs={"install_signals": False}, name="fleetmedic-control", daemon=True
        )
        self._thread.start()
        return self

    def _follow_once(self) -> int:
        try:
            return self.poll(self.poll_ms)
        except Exception:  # the follower must outlive a broker hiccup
            log.exception("reading %s failed; retrying", self.topic)
            self._stop.wait(1.0)
            return 0

    def close(self) -> None:
        """Stop the follower thread and close the consumer (when one was opened)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._reader is not None:
            self._reader.close()

    # --- what the gates ask -----------------------------------------------------------------
    @property
    def kill_switch(self) -> Control | None:
        """The engaging record while the kill switch is on, else None."""
        record = self.records.get(KILL_SWITCH_ID)
        return record if record is not None and record.active else None

    def active(self, kind: str, now: datetime | None = None) -> list[Control]:
        """Active silence or maintenance records (started, not ended, not expired)."""
        now = now or self.clock()
        return [
            r
            for r in list(self.records.values())
            if r.kind == kind
            and r.active
            and (r.starts_at is None or r.starts_at <= now)
            and r.ends_at is not None
            and now < r.ends_at
        ]

    def stop_for(self, kind: str, incident: Incident, now: datetime) -> ActiveStop | None:
        """The first silence (kind "silence": ours, then Alertmanager's) or maintenance record covering `incident`."""
        labels = incident_labels(incident)
        for r in self.active(kind, now):
            if r.ends_at is not None and matches(r.matchers, labels):  # active() keeps only records with an end
                return ActiveStop(
                    id=r.id,
                    source="fleetmedic",
                    by=r.by,
                    reason=r.reason,
                    ends_at=r.ends_at,
                    matchers=tuple(r.matchers),
                )
        if kind == "silence":
            for s in list(self.am_silences):
                if now < s.ends_at and matches(list(s.matchers), labels):
                    return s
        return None


__all__ = [
    "ControlState",
    "ActiveStop",
    "parse_matcher",
    "matches",
    "incident_labels",
    "MatcherError",
    "alertmanager_silences",
    "KILL_SWITCH_ID",
    "describe_matchers",
]
