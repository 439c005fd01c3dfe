"""Long and adversarial log lines: truncated with a marker, parsed in linear time, neighbours kept (issue 13)."""

from __future__ import annotations

import time

import pytest

from ingest.follow import MAX_LINE, TRUNCATED, LogFollower
from ingest.logparse import parse_line
from ingest.node_cli import log_events

XID = "NVRM: Xid (PCI:0000:3b:00): 79, pid=1911, GPU has fallen off the bus."


def test_a_runaway_line_is_truncated_with_a_marker_and_its_neighbours_reach_kafka(tmp_path):
    log = tmp_path / "kern.log"
    log.write_bytes(f"{XID}\n".encode() + b"A" * 200_000)  # a line still being written, 200 KB so far
    follower = LogFollower([log])
    first = log_events(follower.poll(), "n1")  # before the fix: ValidationError, the XID beside it lost
    with log.open("ab") as fh:
        fh.write(b"B" * 50_000 + f"\n{XID}\nlast\n".encode())
    second = log_events(follower.poll(), "n1")
    lines = [e.line for e in first + second]
    assert [e.kind for e in first + second] == ["xid", "raw", "xid", "raw"]
    assert lines[0] == XID and lines[2] == XID and lines[3] == "last"
    assert lines[1].endswith(TRUNCATED) and len(lines[1].encode()) <= MAX_LINE and lines[1].startswith("A" * 1000)
    assert follower.truncated_lines_ == 1 and follower.skipped_bytes_ == 250_001 - (MAX_LINE - len(TRUNCATED))


def test_a_long_complete_line_with_multibyte_characters_fits_the_schema(tmp_path):
    log = tmp_path / "kern.log"
    log.write_bytes(f"{XID}\n".encode() + "é".encode() * 40_000 + b"\xff\xfe" + f"\n{XID}\n".encode())
    events = log_events(LogFollower([log]).poll(), "n1")
    assert [e.kind for e in events] == ["xid", "raw", "xid"]
    assert events[1].line.endswith(TRUNCATED) and len(events[1].line) <= 65536


def test_skipping_the_rest_of_a_cut_line_survives_a_restart(tmp_path):
    log, pos = tmp_path / "kern.log", tmp_path / "pos.json"
    log.write_bytes(b"C" * 100_000)
    follower = LogFollower([log], position_file=pos)
    assert len(follower.poll()) == 1
    follower.commit()
    follower.close()
    with log.open("ab") as fh:
        fh.write(f"more of the same line\n{XID}\n".encode())
    assert LogFollower([log], position_file=pos).poll() == [(str(log), XID)]


ADVERSARIAL = {
    "fs_readonly": "EXT4-fs (" + "(a)" * 2700 + " read-only",
    "fs_readonly_parens": "(" * 8000 + " read-only",
    "hung_task": "INFO: task " * 700 + " blocked for more than ",
    "row_remap": "NVRM: " * 1300 + "Row Remapper: x",
    "gpu_fell_off_bus": "NVRM: GPU " * 800 + "fallen off the bus",
    "service": "a" * 8000 + ".service: Main process exited, code=",
    "sxid": "nvidia-nvswitch0: SXid (PCI:" * 280 + "x",
    "oom": "Killed process 1 (" * 440 + "x",
    "xfs": "XFS (" * 1600 + "Shutting down filesystem",
}


@pytest.mark.parametrize("name", sorted(ADVERSARIAL))
def test_adversarial_lines_parse_in_linear_time(name):
    """8 KB built to make a backtracking pattern explode (fs_readonly was cubic: seconds at 8 KB)."""
    line = ADVERSARIAL[name]
    # CPU time of this process, not the wall clock: other load on the machine does not count
    start = time.process_time()
    parse_line(line)
    parse_line(line * 8)  # 64 KB: the longest line the follower hands over
    assert time.process_time() - start < 1.0  # linear: milliseconds of CPU; the old patterns took seconds to hours


def test_the_rewritten_patterns_still_read_real_lines():
    cases = {
        "EXT4-fs (nvme0n1p2): Remounting filesystem read-only": (
            "fs_readonly",
            {"fs": "EXT4-fs", "device": "nvme0n1p2"},
        ),
        "EXT4-fs error () x (sda1): Remounting filesystem read-only": ("fs_readonly", {"device": "sda1"}),
        "INFO: task kworker/u8:2:1234 blocked for more than 120 seconds.": (
            "hung_task",
            {"process": "kworker/u8:2", "pid": 1234},
        ),
        "NVRM: GPU at PCI:0000:3b:00.0: GPU has fallen off the bus.": ("gpu_fell_off_bus", {"pci": "0000:3b:00.0"}),
        "NVRM: Row Remapper: failed to remap a row": ("row_remap_failure", {}),
        "XFS (dm-0): metadata I/O error: Shutting down filesystem": ("fs_error", {"device": "dm-0"}),
        "foo.service: Main process exited, code=exited, status=1/FAILURE": ("service_crash", {"service": "foo"}),
        "2026-11-30T00:00:00+14:00 h kernel: x": ("raw", {}),
        "9999-12-31T23:59:59-05:00 h kernel: x": ("raw", {}),  # overflowed in astimezone before
    }
    for line, (kind, fields) in cases.items():
        p = parse_line(line)
        assert p.kind == kind, line
        assert {k: p.fields.get(k) for k in fields} == fields, line


def test_a_line_with_lone_surrogates_is_sent_raw_with_its_neighbours():
    """Found by the fuzz suite: a str line that is not valid Unicode failed the LogEvent and its batch."""
    events = log_events([("p", XID), ("p", "bad \udfff line"), ("p", XID)], "n1")
    assert [e.kind for e in events] == ["xid", "raw", "xid"] and events[1].line == "bad ? line"
    assert "invalid" in events[1].fields
