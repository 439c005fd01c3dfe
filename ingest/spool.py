"""A bounded on-disk spool: records that could not reach the broker, kept in order.

The spool is a folder of segment files (``<seq>.spool``), one record per line as
``topic TAB key TAB value``; values are compact JSON, which never holds a raw newline or tab
outside strings (JSON escapes them inside strings). New records append to the newest segment;
delivery reads the oldest segment first, so order is kept. When appending would pass `max_bytes`
the record is dropped and counted: the spool never fills the disk.

Power loss. `fsync` says when appended records are forced to disk: "always" (each append),
"batch" (on `sync()`, which the publisher calls once per spooled batch: the default) or "never"
(the OS decides). A new or rewritten segment also syncs its folder, so its name survives. What a
crash leaves half-written is skipped and counted in `torn_` when the spool is opened: a last line
without its newline, and any line that is not ``topic TAB key TAB value`` with a topic name and
no NUL or further TAB (zeros the disk never wrote, a torn piece that a later append followed).
Such a line is never sent, and never stops the lines around it.

>>> import tempfile
>>> spool = Spool(tempfile.mkdtemp(), max_bytes=1024)
>>> spool.append("t", b"h1", b'{"a":1}'); spool.append("t", b"h1", b'{"a":2}')
True
True
>>> [v for _, _, v in spool.head()]
[b'{"a":1}', b'{"a":2}']
>>> spool.consume_head(keep=[]); spool.records_
0
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import BinaryIO

SUFFIX = ".spool"
FSYNC_POLICIES = ("always", "batch", "never")
_TOPIC = re.compile(rb"^[A-Za-z0-9._-]{1,249}$")


def _record(raw: bytes) -> tuple[str, bytes | None, bytes] | None:
    """One spool line (without its newline) → (topic, key, value), or None when it is torn."""
    parts = raw.split(b"\t", 2)
    if len(parts) != 3:
        return None
    topic, key, value = parts
    # compact JSON never holds a raw tab or NUL: a tab in the value is a torn line that a later one
    # followed, a NUL is a block the disk never wrote
    if not _TOPIC.match(topic) or not value or b"\t" in value or b"\0" in raw:
        return None
    return topic.decode(), key or None, value


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """Append-only segments on disk, bounded by `max_bytes`; dropped records are counted."""

    def __init__(
        self,
        directory: str | os.PathLike,
        max_bytes: int = 256 * 1024 * 1024,
        segment_bytes: int = 4 * 1024 * 1024,
        fsync: str = "batch",
    ) -> None:
        if max_bytes <= 0 or segment_bytes <= 0:
            raise ValueError("spool max_bytes and segment_bytes must be positive")
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"spool fsync must be one of {', '.join(FSYNC_POLICIES)}, not {fsync!r}")
        self.fsync = fsync
        self.torn_ = 0  # half-written lines found on open (a crash or power loss): skipped, never sent
        self._unsynced = False
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.dropped_ = 0
        self.bytes_ = 0
        self.records_ = 0
        for seg in self._segments():
            data = seg.read_bytes()
            self.bytes_ += len(data)
            lines = data.split(b"\n")
            self.records_ += len(lines) - 1
            self.torn_ += (lines[-1] != b"") + sum(_record(raw) is None for raw in lines[:-1])
        # open handle of the newest segment (always a new file: old ones may be rewritten)
        self._tail: BinaryIO | None = None
        self._tail_size = 0

    def _segments(self) -> list[Path]:
        return sorted(self.directory.glob("*" + SUFFIX))

    def __len__(self) -> int:
        return self.records_

    def append(self, topic: str, key: bytes | None, value: bytes) -> bool:
        """Add one record at the end; False (and counted in `dropped_`) when the spool is full."""
        line = b"%s\t%s\t%s\n" % (topic.encode(), key or b"", value)
        if self.bytes_ + len(line) > self.max_bytes:
            self.dropped_ += 1
            return False
        if self._tail is None or self._tail_size >= self.segment_bytes or not Path(self._tail.name).exists():
            if self._tail is not None:
                self._tail.close()
            segments = self._segments()
            seq = int(segments[-1].stem) + 1 if segments else 1
            self._tail = open(self.directory / f"{seq:012d}{SUFFIX}", "ab")
            self._tail_size = 0
            if self.fsync != "never":
                _fsync_dir(self.directory)
        self._tail.write(line)
        self._tail_size += len(line)
        self._tail.flush()
        self._unsynced = True
        if self.fsync == "always":
            self.sync()
        self.bytes_ += len(line)
        self.records_ += 1
        return True

    def head(self) -> list[tuple[str, bytes | None, bytes]]:
        """The records of the oldest segment, in order (empty when the spool is empty)."""
        segments = self._segments()
        if not segments:
            return []
        if self._tail is not None and Path(self._tail.name) == segments[0]:
            self._tail.flush()
        out = []
        for raw in segments[0].read_bytes().split(b"\n")[:-1]:  # a torn last line has no newline
            item = _record(raw)
            if item is not None:  # torn lines were counted when the spool was opened
                out.append(item)
        return out

    def sync(self) -> None:
        """Force what was appended to disk (unless the policy is "never")."""
        if self._tail is not None and self._unsynced and self.fsync != "never":
            os.fsync(self._tail.fileno())
        self._unsynced = False

    def consume_head(self, keep: list[tuple[str, bytes | None, bytes]]) -> None:
        """The oldest segment was sent except `keep` (still in order): remove or rewrite it."""
        segments = self._segments()
        if not segments:
            return
        head = segments[0]
        if self._tail is not None and Path(self._tail.name) == head:
            self._tail.close()
            self._tail = None
        old_size = head.stat().st_size
        old_records = head.read_bytes().count(b"\n")
        if keep:
            data = b"".join(b"%s\t%s\t%s\n" % (t.encode(), k or b"", v) for t, k, v in keep)
            tmp = head.with_suffix(".tmp")
            with open(tmp, "wb") as f:
                f.write(data)
                if self.fsync != "never":
                    f.flush()
                    os.fsync(f.fileno())
            os.replace(tmp, head)
            if self.fsync != "never":
                _fsync_dir(self.directory)
            self.bytes_ += len(data) - old_size
            self.records_ += len(keep) - old_records
        else:
            head.unlink()
            self.bytes_ -= old_size
            self.records_ -= old_records

    # A send that timed out may have been stored by the broker all the same: the time of the
    # oldest such send is kept here until a resend has checked Kafka for those records.
    @property
    def uncertain_since_ms(self) -> int | None:
        path = self.directory / "uncertain-since"
        try:
            return int(path.read_text())
        except (OSError, ValueError):
            return None

    @uncertain_since_ms.setter
    def uncertain_since_ms(self, value: int | None) -> None:
        path = self.directory / "uncertain-since"
        if value is None:
            path.unlink(missing_ok=True)
        else:
            tmp = path.with_suffix(".tmp")
            tmp.write_text(str(value))
            os.replace(tmp, path)

    def close(self) -> None:
        if self._tail is not None:
            self.sync()
            self._tail.close()
            self._tail = None
