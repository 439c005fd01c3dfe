"""Ranges and the incident report, from records in the real broker."""

from __future__ import annotations

import base64
import os
import re
from datetime import timedelta

from examples import T0

from fleetmedic.cli import main
from fleetmedic.producer import Producer
from fleetmedic.ranges import RangeSpec, RangeStats, read_range
from fleetmedic.schemas import Evidence, Incident, LogEvent, MetricBatch, Remediation, RunSummary
from fleetmedic.topics import topic_name


def _record_an_incident(settings):
    """A GPU heating up on node-a, the incident it raised, and what the remediator decided."""
    with Producer(settings) as p:
        for i in range(120):
            for host in ("node-a", "node-b"):
                temp = 60.0 + (0.5 * (i - 60) if host == "node-a" and i > 60 else 0) + (i % 3) * 0.2
                p.send(
                    MetricBatch(
                        host=host,
                        time=T0 + timedelta(seconds=10 * i),
                        source="sim",
                        values={"gpu0.temperature_c": temp, "gpu0.util_pct": 90.0 + i % 5},
                    )
                )
        p.send(
            LogEvent(
                host="node-a",
                time=T0 + timedelta(seconds=700),
                source="kern",
                kind="thermal",
                severity="warning",
                line="GPU 0: clocks throttled (HW slowdown)",
            )
        )
        common = dict(
            id="inc-node-a-temp",
            fingerprint="node-a/ewma/gpu0.temperature_c",
            host="node-a",
            kind="ewma",
            subject="gpu0.temperature_c",
            severity="critical",
            detector="ewma",
            opened_at=T0 + timedelta(seconds=650),
            threshold=4.0,
            evidence=Evidence(series=["gpu0.temperature_c"], values=[80.0]),
        )
        p.send(Incident(status="open", time=T0 + timedelta(seconds=650), score=5.1, summary="hot", **common))
        p.send(Incident(status="resolve", time=T0 + timedelta(seconds=1100), score=0.3, summary="cool", **common))
        rem = dict(incident_id="inc-node-a-temp", fingerprint=common["fingerprint"], host="node-a")
        p.send(
            Remediation(
                id="r1",
                action="drain",
                status="skipped",
                gate="cooldown",
                reason="drain ran on node-a 4 min ago (cooldown 30 min)",
                time=T0 + timedelta(seconds=651),
                **rem,
            )
        )
        p.send(
            Remediation(
                id="r2",
                action="restart_service",
                playbook="restart_service.yml",
                status="succeeded",
                time=T0 + timedelta(seconds=660),
                rc=0,
                run=RunSummary(ok=2, changed=1),
                **rem,
            )
        )


def test_read_range_by_offsets_and_host(settings):
    _record_an_incident(settings)
    stats = RangeStats()
    spec = RangeSpec(topic=topic_name(settings, "metrics.v1"))
    got = [
        i for b in read_range(settings, spec, MetricBatch, keep=lambda r: r.host == "node-a", stats=stats) for i in b
    ]
    assert len(got) == 120 and stats.filtered == 120 and stats.read == 240
    assert [i.record.time for i in got] == sorted(i.record.time for i in got)  # one host: one partition, in order
    part = got[0].partition
    mid = got[50].offset
    spec = RangeSpec(topic=spec.topic, partitions=(part,), start_offsets={part: mid}, end_offsets={part: mid + 10})
    sub = [i for b in read_range(settings, spec, MetricBatch) for i in b]
    assert [i.offset for i in sub] == list(range(mid, mid + 10))


def test_incident_report_shows_series_logs_lifecycle_and_decisions(settings, tmp_path, monkeypatch):
    _record_an_incident(settings)
    out = tmp_path / "inc.html"
    monkeypatch.setenv("FLEETMEDIC_BOOTSTRAP_SERVERS", settings.bootstrap_servers[0])
    monkeypatch.setenv("FLEETMEDIC_TOPIC_PREFIX", settings.topic_prefix)
    assert main(["report", "--incident", "inc-node-a-temp", "-o", str(out)]) == 0
    page = out.read_text()
    assert "fleetmedic incident inc-node-a-temp on node-a" in page
    assert "drain ran on node-a 4 min ago (cooldown 30 min)" in page  # the skip and its reason
    assert "restart_service.yml" in page and "ok=2 changed=1 failed=0" in page
    assert "GPU 0: clocks throttled (HW slowdown)" in page
    assert page.count("<td>open</td>") == 1 and page.count("<td>resolve</td>") == 1
    images = re.findall(r"src='data:image/png;base64,([^']+)'", page)
    assert len(images) >= 3  # the timeline and both series of node-a
    for img in images:
        assert base64.b64decode(img)[:8] == b"\x89PNG\r\n\x1a\n"
    assert "http://" not in page and "https://" not in page  # opens offline
    assert "node-b" not in page


def test_report_renders_in_headless_chromium(settings, tmp_path, monkeypatch):
    import shutil
    import subprocess

    import matplotlib.image as mpimg
    import pytest

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium); .ci/run installs it")
    _record_an_incident(settings)
    page = tmp_path / "inc.html"
    monkeypatch.setenv("FLEETMEDIC_BOOTSTRAP_SERVERS", settings.bootstrap_servers[0])
    monkeypatch.setenv("FLEETMEDIC_TOPIC_PREFIX", settings.topic_prefix)
    assert main(["report", "--incident", "inc-node-a-temp", "-o", str(page)]) == 0
    shot = tmp_path / "inc.png"
    subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--hide-scrollbars",
            "--window-size=1280,1600",
            f"--screenshot={shot}",
            page.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    pixels = mpimg.imread(shot)
    assert pixels.shape[0] == 1600 and pixels.shape[1] == 1280
    # Something was drawn: the page is not one flat colour, and the plots' blue line is there.
    assert pixels[..., :3].std() > 0.05
    blue = (pixels[..., 2] > 0.6) & (pixels[..., 0] < 0.2) & (pixels[..., 1] < 0.5)
    assert blue.sum() > 200
    if os.environ.get("KEEP_REPORT_SCREENSHOT"):  # to look at the page by hand
        shutil.copy(shot, os.environ["KEEP_REPORT_SCREENSHOT"])
