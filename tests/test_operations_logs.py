"""Issue 14 item 7: logs people already ship. The journald source of `fleetmedic export logs`
(real `journalctl -o json --follow`, cursor file across a restart) and the ECS bridge from a
Kafka topic (`fleetmedic export ecs`, the shared ConsumerLoop) both open the XID incident.

The journal: where this test runs as root with `unshare`, it starts a real systemd-journald in a
private mount namespace (its sockets and journal files in the test's folder, nothing of the
host's journal touched) and writes with the real `systemd-cat`; the exporter reads it with the
real `journalctl --directory`. Without root it says so and replays recorded `journalctl -o json`
lines (tests/data/journal.jsonl, captured from that set-up) through a stand-in that honours
--after-cursor, so the cursor logic is still what is tested.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from kafka_helpers import read_topic
from prom_helpers import Service

from fleetmedic.cli import main
from fleetmedic.producer import Producer
from fleetmedic.schemas import Incident, LogEvent
from fleetmedic.topics import topic_name
from fleetmedic.transport import wait_until
from ingest.shipped import journal_event

DATA = Path(__file__).parent / "data"
XID = "NVRM: Xid (PCI:0000:3b:00): 79, pid=1911, GPU has fallen off the bus."
NS_SCRIPT = """set -e
mount -t tmpfs tmpfs /run/systemd
mount -t tmpfs tmpfs /run/log
mkdir /run/log/journal
mount --bind "$1" /run/log/journal
mount -t tmpfs tmpfs /var/log/journal 2>/dev/null || true
exec /lib/systemd/systemd-journald
"""


def _can_run_journald() -> bool:
    if os.environ.get(
        "FM_TEST_RECORDED_JOURNAL"
    ):  # exercise the replay path where journald could run (not FLEETMEDIC_*: settings)
        return False
    return (
        os.geteuid() == 0
        and shutil.which("unshare")
        and shutil.which("nsenter")
        and shutil.which("systemd-cat")
        and Path("/lib/systemd/systemd-journald").exists()
        and Path("/run/systemd").is_dir()
        and Path("/run/log").is_dir()
    )


class Journal:
    """A real journald in a private mount namespace, or (without root) recorded entries replayed."""

    def __init__(self, tmp: Path):
        self.dir = tmp / "journal"
        self.dir.mkdir()
        self.real = _can_run_journald()
        self.proc = None
        if self.real:
            (tmp / "ns.sh").write_text(NS_SCRIPT)
            self.proc = subprocess.Popen(
                ["unshare", "-m", "--propagation", "private", "sh", str(tmp / "ns.sh"), str(self.dir)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            wait_until(
                lambda: any(self.dir.glob("*/system.journal")) or self.proc.poll() is not None,
                30,
                what="journald's journal file",
            )
            assert self.proc.poll() is None, "systemd-journald exited"
            self.directory = str(next(self.dir.glob("*/system.journal")).parent)
            self.journalctl = "journalctl"
        else:
            print("no root/unshare here: replaying recorded `journalctl -o json` lines (tests/data/journal.jsonl)")
            self.recorded = [json.loads(x) for x in (DATA / "journal.jsonl").read_text().splitlines()]
            self.shown = 0
            self.directory = str(self.dir)
            self.journalctl = str(tmp / "journalctl")
            (tmp / "journalctl").write_text(f"#!{sys.executable}\n" + REPLAY)
            (tmp / "journalctl").chmod(0o755)

    def write(self, message: str) -> None:
        if self.real:
            subprocess.run(
                ["nsenter", "-t", str(self.proc.pid), "-m", "systemd-cat", "-t", "kernel", "-p", "err"],
                input=message.encode(),
                check=True,
            )
        else:  # the next recorded entry becomes visible to the stand-in
            entry = dict(self.recorded[self.shown], MESSAGE=message)
            self.shown += 1
            with open(self.dir / "entries.jsonl", "a") as f:
                f.write(json.dumps(entry) + "\n")

    def close(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)


# The stand-in for journalctl when journald cannot run: prints the entries of DIR/entries.jsonl
# after --after-cursor (all with --lines=all), then follows the file.
REPLAY = r"""
import json, sys, time
args = sys.argv[1:]
d = next(a.split("=", 1)[1] for a in args if a.startswith("--directory="))
after = next((a.split("=", 1)[1] for a in args if a.startswith("--after-cursor=")), None)
printed, seen_cursor = 0, after is None
while True:
    try:
        lines = open(d + "/entries.jsonl").read().splitlines()
    except FileNotFoundError:
        lines = []
    for line in lines[printed:]:
        printed += 1
        if not seen_cursor:
            seen_cursor = json.loads(line)["__CURSOR"] == after
            continue
        print(line, flush=True)
    time.sleep(0.1)
"""


def _ours(settings) -> list[LogEvent]:
    got = [r for *_, r in read_topic(settings, topic_name(settings, "logs.v1"), LogEvent)]
    return [e for e in got if "fm-test-" in e.line]


def _xid_incident(settings, host: str) -> Incident | None:
    for *_, inc in read_topic(settings, topic_name(settings, "incidents.v1"), Incident):
        if inc.kind == "xid" and inc.host == host and inc.status == "open":
            return inc
    return None


def test_journal_entries_cross_a_restart_once_and_open_the_xid_incident(settings, tmp_path):
    journal = Journal(tmp_path)
    args = [
        "export",
        "logs",
        "--journal",
        "--journal-directory",
        journal.directory,
        "--journalctl",
        journal.journalctl,
        "--journal-match",
        "SYSLOG_IDENTIFIER=kernel",
        "--cursor-file",
        str(tmp_path / "cursor"),
        "--host",
        "gpu-node-3",
        "--interval",
        "0.2",
        "--spool-dir",
        str(tmp_path / "spool"),
        "--health-port",
        "0",
        "--log-format",
        "json",
    ]
    detect = exporter = None
    try:
        exporter = Service(settings, args, tmp_path / "export1.out")
        journal.write("fm-test-1 kernel booted fine")
        wait_until(lambda: len(_ours(settings)) == 1, 90, what="the first journal entry on logs.v1")
        cursor = (tmp_path / "cursor").read_text().strip()
        assert cursor.startswith("s=") if journal.real else cursor
        assert exporter.stop() == 0
        # written while the exporter is down: read after the restart, and the first not again
        journal.write(f"fm-test-2 {XID}")
        journal.write("fm-test-3 after the XID")
        exporter = Service(settings, args, tmp_path / "export2.out")
        wait_until(lambda: len(_ours(settings)) >= 3, 90, what="the entries written during the restart")
        got = _ours(settings)
        assert [e.line for e in got] == [
            "kernel: fm-test-1 kernel booted fine",
            f"kernel: fm-test-2 {XID}",
            "kernel: fm-test-3 after the XID",
        ]
        assert [e.source for e in got] == ["journal:kernel"] * 3 and {e.host for e in got} == {"gpu-node-3"}
        assert got[1].kind == "xid" and got[1].fields["xid"] == 79
        assert (tmp_path / "cursor").read_text().strip() != cursor

        detect = Service(settings, ["detect"], tmp_path / "detect.out")
        wait_until(lambda: _xid_incident(settings, "gpu-node-3") is not None, 120, what="the XID incident")
        inc = _xid_incident(settings, "gpu-node-3")
        assert "XID 79" in inc.summary and inc.action_class == "reboot"
    finally:
        for s in (exporter, detect):
            if s is not None:
                s.stop()
        journal.close()
    print("journal source:", "real journald + systemd-cat + journalctl" if journal.real else "recorded lines")


def test_ecs_records_from_shippers_open_the_xid_incident(settings, tmp_path, monkeypatch):
    monkeypatch.setenv("FLEETMEDIC_BOOTSTRAP_SERVERS", settings.bootstrap_servers[0])
    monkeypatch.setenv("FLEETMEDIC_TOPIC_PREFIX", settings.topic_prefix)
    source = f"shipped-{settings.topic_prefix}filebeat"  # an existing topic: its own name, no prefix
    records = [
        # Filebeat: nested ECS objects
        {
            "@timestamp": "2026-11-25T04:00:01.000Z",
            "host": {"name": "gpu-node-5", "hostname": "gpu-node-5"},
            "message": f"Nov 25 04:00:01 gpu-node-5 kernel: [1234.5] {XID}",
            "log": {"file": {"path": "/var/log/kern.log"}, "offset": 77},
            "agent": {"type": "filebeat", "version": "8.15.0"},
            "ecs": {"version": "8.0.0"},
        },
        # Vector / Fluent Bit with dotted keys
        {
            "@timestamp": "2026-11-25T04:00:02Z",
            "host.name": "gpu-node-6",
            "message": "slurmd: all good",
            "log.file.path": "/var/log/slurm/slurmd.log",
        },
        {"@timestamp": "2026-11-25T04:00:03Z", "host": {"name": "gpu-node-7"}},  # no message: validation
    ]
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(**settings.kafka_kwargs())
    try:  # the shippers' topic exists before fleetmedic (Filebeat's output.kafka writes to it)
        admin.create_topics([NewTopic(source, num_partitions=2, replication_factor=1)])
    finally:
        admin.close()
    with Producer(settings) as producer:
        for r in records:
            producer.send_raw(source, json.dumps(r).encode() if isinstance(r, dict) else r.encode(), b"k")
        producer.send_raw(source, b"\xff\xfe not json", b"k")
        producer.flush()
    assert main(["export", "ecs", source, "--max", "4", "--group", "ecs-test"]) == 0
    got = [r for *_, r in read_topic(settings, topic_name(settings, "logs.v1"), LogEvent)]
    assert sorted((e.host, e.source, e.kind) for e in got) == [
        ("gpu-node-5", "/var/log/kern.log", "xid"),
        ("gpu-node-6", "/var/log/slurm/slurmd.log", "raw"),
    ]
    xid = next(e for e in got if e.kind == "xid")
    assert xid.fields["xid"] == 79 and xid.time.isoformat() == "2026-11-25T04:00:01+00:00"
    dead = read_topic(settings, topic_name(settings, "deadletter.v1"))
    reasons = sorted(json.loads(v)["kind"] for *_, v in dead)
    assert reasons == ["not_json", "validation"]

    detect = Service(settings, ["detect"], tmp_path / "detect.out")
    try:
        wait_until(lambda: _xid_incident(settings, "gpu-node-5") is not None, 120, what="the XID incident")
    finally:
        detect.stop()


def test_journal_entry_fields():
    e = journal_event(
        {
            "MESSAGE": [78, 86, 82, 77, 0xFF],
            "__REALTIME_TIMESTAMP": "1796151474577704",
            "SYSLOG_IDENTIFIER": "nvidia-persistenced",
            "__CURSOR": "s=1",
        },
        "n1",
    )
    assert e.line == "NVRM\ufffd" and e.source == "journal:nvidia-persistenced"
    assert e.time.isoformat() == "2026-12-01T18:57:54.577704+00:00"
    assert journal_event({"__CURSOR": "s=2"}, "n1") is None
