"""The spool after a power loss: torn and zeroed lines are skipped and counted, never sent, never fatal (issue 13)."""

from __future__ import annotations

import os

import pytest

from ingest.spool import Spool


def _fill(directory, n=10, segment_bytes=10_000, fsync="batch"):
    spool = Spool(directory, max_bytes=100_000, segment_bytes=segment_bytes, fsync=fsync)
    for i in range(n):
        assert spool.append("fm.metrics.v1", b"h", b'{"i":%d}' % i)
    spool.sync()
    spool.close()
    return sorted(directory.glob("*.spool"))


def _drain(spool):
    seen = []
    while len(spool):
        seen += [v for _, _, v in spool.head()]
        spool.consume_head(keep=[])
    return seen


def test_a_file_truncated_mid_line_then_continued_skips_only_the_torn_line(tmp_path):
    seg = _fill(tmp_path, n=6)[0]
    data = seg.read_bytes()
    cut = data.index(b'{"i":3}') + 3  # mid-line: as a power loss leaves it
    seg.write_bytes(data[:cut])
    # the exporter restarts and spools more; a later power loss zeroes a block over a whole line's tabs
    again = Spool(tmp_path, max_bytes=100_000)
    assert again.torn_ == 1
    for i in range(6, 9):
        again.append("fm.metrics.v1", b"h", b'{"i":%d}' % i)
    again.close()
    second = sorted(tmp_path.glob("*.spool"))[-1]
    raw = bytearray(second.read_bytes())
    start = raw.index(b'fm.metrics.v1\th\t{"i":7}')
    raw[start : start + len(b'fm.metrics.v1\th\t{"i":7}')] = b"\0" * len(b'fm.metrics.v1\th\t{"i":7}')
    second.write_bytes(bytes(raw))
    reopened = Spool(tmp_path, max_bytes=100_000)  # before the fix: ValueError in head(), on every restart
    assert reopened.torn_ == 2
    assert _drain(reopened) == [b'{"i":%d}' % i for i in (0, 1, 2, 6, 8)]


def test_lines_that_are_not_records_are_skipped(tmp_path):
    seg = _fill(tmp_path, n=2)[0]
    with open(seg, "ab") as f:
        f.write(b'no tabs here\n\xff\xfe\tk\t{}\nbad topic!\tk\t{}\nt\tk\t{"torn\tt\tk\t{}\nt\tk\t{"i":"ok"}\n')
    spool = Spool(tmp_path, max_bytes=100_000)
    assert spool.torn_ == 4
    assert _drain(spool) == [b'{"i":0}', b'{"i":1}', b'{"i":"ok"}']


@pytest.mark.parametrize("policy", ["always", "batch", "never"])
def test_every_fsync_policy_keeps_the_records(tmp_path, policy, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd)))
    _fill(tmp_path, n=5, fsync=policy)
    files = len(synced)
    assert {"always": files >= 5, "batch": 1 <= files < 5, "never": files == 0}[policy], (policy, files)
    assert _drain(Spool(tmp_path)) == [b'{"i":%d}' % i for i in range(5)]


def test_an_unknown_fsync_policy_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="always, batch, never"):
        Spool(tmp_path, fsync="sometimes")
