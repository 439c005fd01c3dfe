"""Follow log files like `tail -F`, remembering positions so a restart neither re-sends nor skips.

Each path is followed by name: a file that does not exist yet is picked up when it appears; a
rotated file (same name, new inode) is read to its end before the new one is opened from its
start; a truncated file (shorter than our offset) is read again from its start. Only whole
lines (ending in a newline) are taken. The position file records, per path, the device, inode
and offset of the last line *delivered or spooled*: the follower calls `commit()` after the
publisher took the lines. On start, a path whose inode changed while we were away is first
finished from its rotated sibling (``name.1``, ``name-20261125``...) when one has the old inode.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

# A line is at most this many bytes (LogEvent.line holds at most 65536 characters); a longer one is
# cut to fit, ending in TRUNCATED, and the rest of it is skipped.
MAX_LINE = 65536
TRUNCATED = " [fleetmedic: line truncated]"


@dataclass
class _State:
    path: Path
    handle: BinaryIO | None = None  # open binary file
    dev: int = 0
    ino: int = 0
    offset: int = 0  # offset after the last whole line read
    skipping: bool = False  # inside the rest of a line that was cut (see MAX_LINE)


class LogFollower:
    def __init__(
        self, paths: list[str | os.PathLike], position_file: str | os.PathLike | None = None, from_end: bool = False
    ) -> None:
        """`from_end`: a file seen for the first time (no saved position) starts at its end."""
        self.position_file = Path(position_file) if position_file else None
        self.from_end = from_end
        self.truncated_lines_ = 0
        self.skipped_bytes_ = 0
        saved = {}
        if self.position_file and self.position_file.exists():
            try:
                saved = json.loads(self.position_file.read_text())
            except ValueError:
                saved = {}  # a corrupt position file: start as if new, and say nothing is lost by re-reading
        self.files = [_State(Path(p)) for p in paths]
        self._pending_old: list[tuple[_State, BinaryIO]] = []  # rotated-away handles still to finish
        for st in self.files:
            pos = saved.get(str(st.path))
            self._open(st, resume=pos, at_start=True)

    def _open(self, st: _State, resume: dict | None = None, at_start: bool = False) -> None:
        try:
            handle = open(st.path, "rb")
        except FileNotFoundError:
            st.handle = None
            return
        info = os.fstat(handle.fileno())
        st.handle, st.dev, st.ino = handle, info.st_dev, info.st_ino
        st.skipping = False
        if resume is not None:
            if (resume["dev"], resume["ino"]) == (info.st_dev, info.st_ino):
                st.offset = resume["offset"] if resume["offset"] <= info.st_size else 0
                st.skipping = bool(resume.get("skipping")) and st.offset > 0
            else:
                st.offset = 0
                self._finish_rotated_sibling(st, resume)
        elif self.from_end and at_start:
            st.offset = info.st_size  # only files already there at start: a file that appears later is new
        else:
            st.offset = 0
        handle.seek(st.offset)

    def _finish_rotated_sibling(self, st: _State, resume: dict) -> None:
        for sibling in sorted(st.path.parent.glob(st.path.name + "?*")):
            try:
                info = sibling.stat()
            except OSError:
                continue
            if (info.st_dev, info.st_ino) == (resume["dev"], resume["ino"]) and info.st_size >= resume["offset"]:
                old = open(sibling, "rb")
                old.seek(resume["offset"])
                self._pending_old.append((st, old))
                return

    def _lines(self, handle: BinaryIO, st: _State | None, limit: int) -> list[str]:
        """Whole lines from `handle`'s position (at most `limit`); a line longer than MAX_LINE bytes
        is cut to fit with TRUNCATED at its end and the rest of it skipped (counted in
        `truncated_lines_` and `skipped_bytes_`), so it never costs its neighbours."""
        out = []
        start = handle.tell()
        skipping = st.skipping if st is not None else False
        keep = MAX_LINE - len(TRUNCATED.encode())
        while True:
            raw = handle.readline(MAX_LINE)  # never more than MAX_LINE bytes in memory for one line
            if not raw:
                break
            whole = raw.endswith(b"\n")
            if skipping:  # the rest of a line already cut
                start += len(raw)
                self.skipped_bytes_ += len(raw)
                skipping = not whole
                continue
            if not whole and len(raw) < MAX_LINE:
                handle.seek(start)  # a half-written line: wait for the rest
                break
            start += len(raw)
            if whole:
                out.append(raw[:-1].decode("utf-8", "replace"))
            else:
                # a replacement character per bad byte at most: characters <= bytes <= MAX_LINE
                out.append(raw[:keep].decode("utf-8", "replace") + TRUNCATED)
                self.truncated_lines_ += 1
                self.skipped_bytes_ += len(raw) - keep
                skipping = True
            if len(out) >= limit:
                break
        if st is not None:
            st.offset = start
            st.skipping = skipping
        return out

    def poll(self, limit: int = 5000) -> list[tuple[str, str]]:
        """New whole lines as (path, line), in file order; reacts to rotation and truncation."""
        out: list[tuple[str, str]] = []
        while self._pending_old:
            st, old = self._pending_old.pop(0)
            out += [(str(st.path), line) for line in self._lines(old, None, 10**9)]
            old.close()
        for st in self.files:
            if st.handle is None:
                self._open(st)
                if st.handle is None:
                    continue
            try:
                info = os.stat(st.path)
                replaced = (info.st_dev, info.st_ino) != (st.dev, st.ino)
            except FileNotFoundError:
                info, replaced = None, False  # moved away, new one not created yet: keep reading the old
            if not replaced and info is not None and info.st_size < st.offset:
                st.offset = 0  # truncated in place (copytruncate, `> file`)
                st.skipping = False
                st.handle.seek(0)
            out += [(str(st.path), line) for line in self._lines(st.handle, st, limit)]
            if replaced:
                out += [(str(st.path), line) for line in self._lines(st.handle, st, 10**9)]  # finish the old
                st.handle.close()
                self._open(st)
                if st.handle is not None:
                    out += [(str(st.path), line) for line in self._lines(st.handle, st, limit)]
        return out

    def commit(self) -> None:
        """Record the current positions (call after the lines from `poll` were published)."""
        if not self.position_file:
            return
        data = {
            str(st.path): {"dev": st.dev, "ino": st.ino, "offset": st.offset, "skipping": st.skipping}
            for st in self.files
            if st.handle is not None
        }
        tmp = self.position_file.with_suffix(".tmp")
        self.position_file.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, self.position_file)

    def close(self) -> None:
        for st in self.files:
            if st.handle is not None:
                st.handle.close()
                st.handle = None
        for _, old in self._pending_old:
            old.close()
        self._pending_old = []
