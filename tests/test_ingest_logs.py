"""Log parsers, and the log follower on real files being rotated and truncated, into the real broker."""

import os

import pytest
from kafka_helpers import read_topic

from fleetmedic.cli import main
from fleetmedic.schemas import LogEvent
from fleetmedic.topics import topic_name
from ingest.follow import LogFollower
from ingest.logparse import parse_line
from ingest.node_cli import log_events

KNOWN = [
    (
        "Nov 25 04:00:01 gpu7 kernel: [1234.5678] NVRM: Xid (PCI:0000:3b:00): 79, pid=1911, "
        "GPU has fallen off the bus.",
        "xid",
        "critical",
        {"xid": 79, "pci": "0000:3b:00", "pid": 1911},
    ),
    (
        "kernel: NVRM: Xid (PCI:0000:18:00): 13, pid='<unknown>', name=<unknown>, Graphics Exception: ESR 0x1",
        "xid",
        "warning",
        {"xid": 13, "process": "<unknown>", "text": "Graphics Exception: ESR 0x1"},
    ),
    ("NVRM: GPU 0000:3b:00.0: GPU has fallen off the bus.", "gpu_fell_off_bus", "critical", {"pci": "0000:3b:00.0"}),
    (
        "nvidia-nvswitch3: SXid (PCI:0000:c5:00.0): 20034, Fatal, Link 46 LTSSM Fault Up",
        "sxid",
        "error",
        {"switch": 3, "sxid": 20034, "fatality": "Fatal"},
    ),
    ("NVRM: Row Remapper: New row marked for remapping, reset gpu to activate.", "row_remap", "warning", {}),
    ("NVRM: Dynamic Page Retirement: New retired page, reboot to activate.", "page_retirement", "warning", {}),
    (
        "Out of memory: Killed process 4242 (python3) total-vm:81234567kB, anon-rss:60000000kB, file-rss:1024kB, "
        "shmem-rss:0kB",
        "oom_kill",
        "error",
        {"pid": 4242, "process": "python3", "anon_rss_kb": 60000000},
    ),
    (
        "INFO: task jbd2/nvme0n1p1-8:512 blocked for more than 120 seconds.",
        "hung_task",
        "error",
        {"process": "jbd2/nvme0n1p1-8", "pid": 512, "seconds": 120},
    ),
    ("BUG: unable to handle kernel NULL pointer dereference at 0000000000000008", "kernel_oops", "critical", {}),
    ("divide error: 0000 [#1] SMP PTI", "kernel_oops", "critical", {}),
    (
        "EXT4-fs error (device nvme0n1p2): ext4_find_entry:1455: inode #2: comm ls: reading directory lblock 0",
        "fs_error",
        "error",
        {"device": "nvme0n1p2"},
    ),
    ("EXT4-fs (nvme0n1p2): Remounting filesystem read-only", "fs_readonly", "critical", {"device": "nvme0n1p2"}),
    (
        "XFS (sdb1): Corruption of in-memory data detected. Shutting down filesystem",
        "fs_error",
        "critical",
        {"device": "sdb1"},
    ),
    ("Buffer I/O error on dev sda1, logical block 0, async page read", "io_error", "error", {"device": "sda1"}),
    (
        "pcieport 0000:00:01.0: AER: Corrected error received: 0000:00:01.0",
        "pcie_aer",
        "warning",
        {"aer": "Corrected", "pci": "0000:00:01.0"},
    ),
    (
        "pcieport 0000:00:01.0: AER: Uncorrected (Non-Fatal) error received: 0000:3b:00.0",
        "pcie_aer",
        "error",
        {"aer": "Uncorrected (Non-Fatal)"},
    ),
    (
        "pcieport 0000:00:01.0: AER: Uncorrected (Fatal) error received: 0000:3b:00.0",
        "pcie_aer",
        "critical",
        {"aer": "Uncorrected (Fatal)"},
    ),
    ("mce: [Hardware Error]: Machine check events logged", "mce", "error", {}),
    (
        "2026-11-25T04:00:00+00:00 gpu7 systemd[1]: slurmd.service: Main process exited, code=killed, status=9/KILL",
        "service_crash",
        "error",
        {"service": "slurmd", "code": "killed", "status": "9/KILL", "program": "systemd"},
    ),
    (
        "systemd[1]: slurmd.service: Scheduled restart job, restart counter is at 3.",
        "service_restart",
        "warning",
        {"service": "slurmd", "restart_count": 3},
    ),
    (
        "2026-11-25 04:00:00,123 INFO exited: trainer (exit status 1; not expected)",
        "service_crash",
        "error",
        {"service": "trainer", "status": 1},
    ),
    (
        "2026-11-25 04:00:01,000 INFO gave up: trainer entered FATAL state, too many start retries too quickly",
        "service_crash",
        "critical",
        {"service": "trainer"},
    ),
    ("Nov 25 04:00:01 gpu7 sshd[811]: Accepted publickey for ubuntu from 10.0.0.1", "raw", "info", {"program": "sshd"}),
]


@pytest.mark.parametrize("line,kind,severity,fields", KNOWN, ids=[k[1] + str(i) for i, k in enumerate(KNOWN)])
def test_known_lines_parse_into_typed_fields(line, kind, severity, fields):
    p = parse_line(line)
    assert (p.kind, p.severity) == (kind, severity)
    for key, value in fields.items():
        assert p.fields[key] == value, key


def test_line_times_come_from_the_line_when_it_has_one():
    assert parse_line("2026-11-25T04:00:00.5Z host kernel: x").time.isoformat() == "2026-11-25T04:00:00.500000+00:00"
    assert parse_line("Nov 25 04:00:01 host kernel: x").time.strftime("%m-%d %H:%M:%S") == "11-25 04:00:01"
    assert parse_line("no time here").time is None


def _append(path, *lines, partial=""):
    with open(path, "a") as f:
        f.write("".join(line + "\n" for line in lines) + partial)


def test_follower_handles_late_files_rotation_truncation_partial_lines_and_restarts(tmp_path):
    log, later, pos = tmp_path / "kern.log", tmp_path / "later.log", tmp_path / "pos.json"
    _append(log, "a1", "a2", partial="a3-half")
    f = LogFollower([log, later], position_file=pos)
    assert [ln for _, ln in f.poll()] == ["a1", "a2"]  # the half line waits for its newline
    _append(log, "-rest")
    assert [ln for _, ln in f.poll()] == ["a3-half-rest"]
    _append(later, "b1")  # a file that appears after the start
    assert f.poll() == [(str(later), "b1")]
    # rotation: the old file is renamed, a line lands in it late, then a new file starts
    os.rename(log, tmp_path / "kern.log.1")
    _append(tmp_path / "kern.log.1", "a4-late")
    _append(log, "c1")
    assert [ln for _, ln in f.poll()] == ["a4-late", "c1"]
    # truncation in place (copytruncate)
    _append(log, "c2")
    f.poll()
    with open(log, "w") as fh:
        fh.write("")
    _append(log, "d1")
    assert [ln for _, ln in f.poll()] == ["d1"]
    f.commit()
    f.close()
    # restart: nothing re-sent, nothing skipped
    _append(log, "d2")
    g = LogFollower([log, later], position_file=pos)
    assert [ln for _, ln in g.poll()] == ["d2"]
    g.close()  # d2 not committed: a restart sends it again rather than lose it
    h = LogFollower([log, later], position_file=pos)
    assert [ln for _, ln in h.poll()] == ["d2"]
    h.commit()
    # rotated while we were down: finish the old file from its sibling, then the new one
    _append(log, "d3")
    h.close()
    os.rename(log, tmp_path / "kern.log.2")
    _append(log, "e1")
    k = LogFollower([log, later], position_file=pos)
    assert [ln for _, ln in k.poll()] == ["d3", "e1"]
    k.close()


def test_log_lines_reach_kafka_with_parsed_fields(settings, tmp_path):
    log = tmp_path / "kern.log"
    _append(log, KNOWN[0][0], "some unknown chatter")
    f = LogFollower([log])
    events = log_events(f.poll(), "gpu7")
    from ingest.publisher import ExporterHealth, Publisher

    pub = Publisher(settings, ExporterHealth("logs"))
    pub.publish(events)
    pub.close()
    got = [r for *_, r in read_topic(settings, topic_name(settings, "logs.v1"), LogEvent)]
    assert [(r.kind, r.host, r.source) for r in got] == [("xid", "gpu7", str(log)), ("raw", "gpu7", str(log))]
    assert got[0].fields["xid"] == 79 and got[0].severity == "critical"
    assert got[0].time.strftime("%H:%M:%S") == "04:00:01"


def test_export_logs_command_follows_rotation_and_resumes_after_restart(settings, tmp_path, monkeypatch):
    monkeypatch.setenv("FLEETMEDIC_BOOTSTRAP_SERVERS", settings.bootstrap_servers[0])
    monkeypatch.setenv("FLEETMEDIC_TOPIC_PREFIX", settings.topic_prefix)
    log, pos = tmp_path / "syslog", tmp_path / "pos.json"
    common = [
        "export",
        "logs",
        str(log),
        "--position-file",
        str(pos),
        "--spool-dir",
        str(tmp_path / "spool"),
        "--health-port",
        "0",
        "--interval",
        "0.05",
        "--host",
        "node9",
    ]
    _append(log, "line 1", "systemd[1]: slurmd.service: Main process exited, code=killed, status=9/KILL")
    assert main(common + ["--count", "2"]) == 0
    _append(log, "line 3")
    os.rename(log, tmp_path / "syslog.1")  # rotated while the exporter is down
    _append(log, "line 4")
    assert main(common + ["--count", "2"]) == 0
    topic = topic_name(settings, "logs.v1")
    got = [r for *_, r in read_topic(settings, topic, LogEvent)]
    # one host, one partition: exactly once each, in file order, across the restart and the rotation
    assert [r.line for r in got] == [
        "line 1",
        "systemd[1]: slurmd.service: Main process exited, code=killed, status=9/KILL",
        "line 3",
        "line 4",
    ]
    assert [r.kind for r in got if r.kind != "raw"] == ["service_crash"]


def test_from_end_skips_old_lines_but_not_a_file_created_later(tmp_path):
    old, new = tmp_path / "old.log", tmp_path / "new.log"
    _append(old, "history")
    f = LogFollower([old, new], from_end=True)
    assert f.poll() == []
    _append(old, "fresh")
    _append(new, "first line of a new file")
    assert [ln for _, ln in f.poll()] == ["fresh", "first line of a new file"]
    f.close()
