"""Logs from where fleets already send them: the systemd journal, and shippers' ECS records on Kafka.

Both go through the same parse rules as log files (`ingest.logparse.parse_line`), into `logs.v1`.

**journald** (`JournalFollower`): runs ``journalctl -o json --follow`` and reads one JSON entry per
line. The cursor of the last *delivered* entry (published or spooled) is written to a cursor file
(atomically: temporary file, fsync, rename) by `commit()`; a restart passes ``--after-cursor``, so
an entry is neither read twice nor lost across restarts. If journalctl exits, it is restarted
after the last entry read. The event time is the entry's ``__REALTIME_TIMESTAMP``; the source is
``journal:<SYSLOG_IDENTIFIER or _SYSTEMD_UNIT>``; a ``MESSAGE`` journald stored as bytes (a JSON
array of numbers) is decoded as UTF-8 with replacement.

**ECS** (`EcsRecord`, `ecs_events`): Filebeat, Fluent Bit and Vector records in Elastic Common
Schema, read by `fleetmedic export ecs TOPIC` through the shared `fleetmedic.transport.ConsumerLoop`
(a record that is not such JSON goes to the dead-letter topic with its reason). Fields used:
``@timestamp`` (the event time), ``host.name``, ``message`` and ``log.file.path`` (the source),
nested (``{"host": {"name": ...}}``) or dotted (``{"host.name": ...}``); the rest is ignored.

>>> r = EcsRecord.model_validate_json(b'{"@timestamp": "2026-11-25T04:00:01.5Z", "host": {"name": "gpu7"}, '
...     b'"message": "kernel: NVRM: Xid (PCI:0000:3b:00): 79, pid=1911, GPU has fallen off the bus.", '
...     b'"log": {"file": {"path": "/var/log/kern.log"}}, "agent": {"type": "filebeat"}}')
>>> [(e.host, e.kind, e.source, e.time.isoformat()) for e in ecs_events([r])]
[('gpu7', 'xid', '/var/log/kern.log', '2026-11-25T04:00:01.500000+00:00')]
"""

from __future__ import annotations

import json
import logging
import os
import queue
import subprocess
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from fleetmedic.schemas import LogEvent

from .logparse import parse_line
from .series import host_name

log = logging.getLogger(__name__)

MAX_LINE = 65536


def _event(host: str, when: datetime, source: str, line: str) -> LogEvent:
    line = line[:MAX_LINE]
    p = parse_line(line, now=when)
    return LogEvent(
        host=host,
        time=when,
        source=source[:512] or "unknown",
        line=line,
        kind=p.kind,
        severity=p.severity,
        fields=p.fields,
    )


# --- ECS ---------------------------------------------------------------------------------------


class EcsRecord(BaseModel):
    """The ECS fields fleetmedic reads from a shipper's JSON record; every other field is ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)
    topic: ClassVar[str | None] = None  # read from an existing topic named on the command line

    timestamp: AwareDatetime = Field(alias="@timestamp")
    host: str = Field(min_length=1)
    message: str
    path: str = "ecs"

    @model_validator(mode="before")
    @classmethod
    def _flatten(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data

        def get(dotted: str) -> Any:
            if dotted in data:
                return data[dotted]
            node: Any = data
            for part in dotted.split("."):
                if not isinstance(node, dict) or part not in node:
                    return None
                node = node[part]
            return node

        out = {
            "@timestamp": data.get("@timestamp"),
            "host": get("host.name") or get("host.hostname"),
            "message": get("message"),
        }
        path = get("log.file.path")
        if isinstance(path, str) and path:
            out["path"] = path
        return {k: v for k, v in out.items() if v is not None}

    @field_validator("timestamp", mode="before")
    @classmethod
    def _naive_is_utc(cls, value: Any) -> Any:
        if (
            isinstance(value, str)
            and value
            and not value.endswith(("Z", "z"))
            and "+" not in value[10:]
            and "-" not in value[10:]
        ):
            return value + "Z"
        return value


def ecs_events(records: list[EcsRecord]) -> list[LogEvent]:
    """ECS records → LogEvents through the log-file parse rules, stamped with `@timestamp`."""
    return [_event(host_name(r.host), r.timestamp.astimezone(UTC), r.path, r.message) for r in records]


# --- journald ----------------------------------------------------------------------------------


def journal_event(entry: dict, host: str) -> LogEvent | None:
    """One `journalctl -o json` entry → a LogEvent (None for an entry without a message)."""
    message = entry.get("MESSAGE")
    if isinstance(message, list):  # journald's encoding of a non-UTF-8 message
        message = bytes(b & 0xFF for b in message if isinstance(b, int)).decode("utf-8", "replace")
    if not isinstance(message, str) or not message:
        return None
    try:
        when = datetime.fromtimestamp(int(entry["__REALTIME_TIMESTAMP"]) / 1e6, UTC)
    except (KeyError, ValueError, TypeError, OverflowError):
        when = datetime.now(UTC)
    ident = entry.get("SYSLOG_IDENTIFIER") or entry.get("_SYSTEMD_UNIT") or entry.get("_COMM") or "journal"
    line = f"kernel: {message}" if entry.get("_TRANSPORT") == "kernel" or ident == "kernel" else message
    return _event(host, when, f"journal:{ident}", line)


class JournalFollower:
    """`journalctl -o json --follow` with a cursor file: `poll()` new entries, `commit()` once delivered.

    `directory` reads journal files from a folder (``journalctl --directory``) instead of the
    system journal; `matches` are journalctl matches (``_SYSTEMD_UNIT=slurmd.service``,
    ``_TRANSPORT=kernel``); `from_end`: without a cursor, start at the journal's end rather than
    at its oldest entry.
    """

    def __init__(
        self,
        cursor_file: str | Path,
        *,
        directory: str | None = None,
        matches: list[str] | None = None,
        from_end: bool = False,
        journalctl: str = "journalctl",
        max_batch: int = 5000,
    ) -> None:
        self.cursor_file = Path(cursor_file)
        self.directory = directory
        self.matches = list(matches or [])
        self.from_end = from_end
        self.journalctl = journalctl
        self.max_batch = max_batch
        self.committed = self._load_cursor()
        self._read_cursor = self.committed  # last entry taken off the pipe
        self._pending_cursor: str | None = None  # last entry handed out by poll()
        self._queue: queue.Queue = queue.Queue(maxsize=50_000)
        self._proc: subprocess.Popen | None = None
        self._reader: threading.Thread | None = None
        self._closed = False
        self.restarts = 0
        self.bad_lines = 0
        self._start()

    def _load_cursor(self) -> str | None:
        try:
            text = self.cursor_file.read_text().strip()
        except FileNotFoundError:
            return None
        return text or None

    def command(self) -> list[str]:
        cmd = [self.journalctl, "-o", "json", "--follow", "--no-pager"]
        if self.directory:
            cmd.append(f"--directory={self.directory}")
        if self._read_cursor:
            cmd.append(f"--after-cursor={self._read_cursor}")
        else:
            cmd.append("--lines=0" if self.from_end else "--lines=all")
        return cmd + self.matches

    def _start(self) -> None:
        self._proc = subprocess.Popen(self.command(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self._reader = threading.Thread(target=self._read, args=(self._proc,), name="journalctl", daemon=True)
        self._reader.start()

    def _read(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None  # started with stdout=PIPE
        for raw in proc.stdout:
            try:
                entry = json.loads(raw)
            except ValueError:
                self.bad_lines += 1
                continue
            if isinstance(entry, dict):
                self._queue.put(entry)  # blocks when full: journalctl waits, nothing is dropped
        proc.stdout.close()

    def _alive(self) -> None:
        if self._closed or self._proc is None or self._proc.poll() is None:
            return
        if self._reader is not None and self._reader.is_alive():
            return  # still draining what it wrote before it exited
        err = self._proc.stderr.read().decode(errors="replace").strip() if self._proc.stderr else ""
        log.warning(
            "journalctl exited with %s%s; restarting after the last entry read",
            self._proc.returncode,
            f": {err[:300]}" if err else "",
        )
        self._proc.stderr and self._proc.stderr.close()
        self.restarts += 1
        self._start()

    def poll(self, host: str) -> list[LogEvent]:
        """The entries read since the last call, as LogEvents (at most `max_batch`)."""
        self._alive()
        out: list[LogEvent] = []
        while len(out) < self.max_batch:
            try:
                entry = self._queue.get_nowait()
            except queue.Empty:
                break
            cursor = entry.get("__CURSOR")
            if isinstance(cursor, str):
                self._read_cursor = self._pending_cursor = cursor
            event = journal_event(entry, host)
            if event is not None:
                out.append(event)
        return out

    def commit(self) -> None:
        """The entries poll() returned are delivered: move the cursor file past them."""
        cursor = self._pending_cursor
        if cursor is None or cursor == self.committed:
            return
        tmp = self.cursor_file.with_name(self.cursor_file.name + ".tmp")
        self.cursor_file.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w") as f:
            f.write(cursor + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.cursor_file)
        self.committed = cursor

    def close(self) -> None:
        self._closed = True
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._proc is not None and self._proc.stderr:
            self._proc.stderr.close()
