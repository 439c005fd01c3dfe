"""The host exporter on this machine, for real, into the real broker; its health endpoint."""

import os
import time
import urllib.request
from datetime import UTC

import psutil
import pytest
from kafka_helpers import read_topic

from fleetmedic.cli import main
from fleetmedic.schemas import MetricBatch
from fleetmedic.topics import topic_name
from ingest.host import HostCollector
from ingest.promtext import parse
from ingest.runner import Exporter, ExporterOptions


def until_cpu_ticks_move(collector: HostCollector) -> None:
    """Work until the kernel's CPU-time counters (clock ticks) have moved since the collector's last
    reading. Its CPU percentages need that; an interval shorter than one tick has no CPU figures, by
    design. A fixed amount of work took less than one tick on a fast machine."""
    deadline = time.monotonic() + 10
    while sum(psutil.cpu_times()) <= sum(collector.cpu_times_) and time.monotonic() < deadline:
        sum(i * i for i in range(20_000))


def test_host_metrics_of_this_machine_are_plausible():
    me = psutil.Process().name()
    collector = HostCollector(watch=[me, "no-such-daemon-fm"])
    until_cpu_ticks_move(collector)
    values, counters = collector.collect()
    modes = [v for k, v in values.items() if k.startswith("cpu.") and k.endswith("_pct") and k != "cpu.util_pct"]
    assert abs(sum(modes) - 100) < 1.0
    assert 0 < values["mem.available_bytes"] <= values["mem.total_bytes"] == psutil.virtual_memory().total
    assert 0 <= values["fs./.free_pct"] <= 100 and values["fs./.readonly"] in (0.0, 1.0)
    assert values["load.1"] >= 0 and values["cpu.count"] == psutil.cpu_count()
    assert values[f"service.{me}.up"] == 1.0 and values["service.no-such-daemon-fm.up"] == 0.0
    assert set(counters) <= set(values)
    assert any(c.startswith("net.") for c in counters)
    assert all(v is None or isinstance(v, float) for v in values.values())


def test_host_exporter_publishes_one_batch_per_interval_and_reports_health(settings, tmp_path):
    opts = ExporterOptions(spool_dir=tmp_path / "spool", health_port=-1)
    collector = HostCollector()
    from datetime import datetime

    with Exporter("host", settings, opts) as exporter:

        def collect():
            values, counters = collector.collect()
            return [
                MetricBatch(host="this-host", time=datetime.now(UTC), source="host", values=values, counters=counters)
            ]

        # The pacing clock is the test's: each wait moves it on, so the schedule is exact, whatever the load.
        now = [100.0]
        collected_at, waits = [], []
        exporter.clock = lambda: now[0]

        def wait(seconds):
            waits.append(seconds)
            now[0] += seconds
            until_cpu_ticks_move(collector)  # the interval's CPU figures need a tick of real time
            return []

        def paced():
            collected_at.append(now[0])
            return collect()

        exporter.run(paced, interval_s=0.2, wait=wait, count=3)
        body = urllib.request.urlopen(f"http://127.0.0.1:{exporter.server.port}/metrics", timeout=5).read().decode()
    health = {s.name: s.value for s in parse(body)}
    assert health["fleetmedic_exporter_records_sent_total"] == 3
    assert health["fleetmedic_exporter_records_dropped_total"] == 0
    assert health["fleetmedic_exporter_spool_records"] == 0
    got = [r for *_, r in read_topic(settings, topic_name(settings, "metrics.v1"), MetricBatch)]
    assert len(got) == 3 and {r.host for r in got} == {"this-host"}
    assert collected_at == pytest.approx([100.0, 100.2, 100.4]) and waits == pytest.approx([0.2, 0.2])  # paced, steady
    assert "cpu.user_pct" in got[1].values and "mem.available_bytes" in got[0].values


def test_export_host_command_runs_against_the_broker(settings, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FLEETMEDIC_BOOTSTRAP_SERVERS", settings.bootstrap_servers[0])
    monkeypatch.setenv("FLEETMEDIC_TOPIC_PREFIX", settings.topic_prefix)
    code = main(
        [
            "export",
            "host",
            "--interval",
            "0.1",
            "--count",
            "2",
            "--host",
            "cli-host",
            "--label",
            "class=test",
            "--spool-dir",
            str(tmp_path),
            "--health-port",
            "0",
            "--watch",
            psutil.Process().name(),
        ]
    )
    assert code == 0
    assert "export host: sent 2, spooled 0" in capsys.readouterr().out
    got = [r for *_, r in read_topic(settings, topic_name(settings, "metrics.v1"), MetricBatch)]
    assert [r.host for r in got] == ["cli-host", "cli-host"] and got[0].labels == {"class": "test"}
    assert got[0].source == "host"


def test_services_are_asked_of_systemd_when_it_runs(tmp_path, monkeypatch):
    """No systemd in the test container: a FAKE `systemctl` script stands in for it."""
    import ingest.host as host

    fake = tmp_path / "systemctl"
    fake.write_text(
        '#!/bin/sh\ncase "$3" in\n'
        '  slurmd.service) printf "LoadState=loaded\\nActiveState=active\\n" ;;\n'
        '  munge.service) printf "LoadState=loaded\\nActiveState=failed\\n" ;;\n'
        '  *) printf "LoadState=not-found\\nActiveState=inactive\\n" ;;\nesac\n'
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.setattr(host, "SYSTEMD_RUNTIME", tmp_path)
    me = psutil.Process().name()
    values, _ = HostCollector(watch=["slurmd", "munge", me]).collect()
    assert values["service.slurmd.up"] == 1.0 and values["service.munge.up"] == 0.0
    assert values[f"service.{me}.up"] == 1.0  # unknown to systemd: found as a process


def test_watch_name_reports_another_process_under_its_service_name():
    me = psutil.Process().name()
    values, _ = HostCollector(watch=[f"web={me}", "db=no-such-process-fm"]).collect()
    assert values["service.web.up"] == 1.0 and values["service.db.up"] == 0.0
    assert f"service.{me}.up" not in values
