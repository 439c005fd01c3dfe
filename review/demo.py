"""`fleetmedic demo` (what `make demo` runs): a simulated fleet → real detectors → incidents.

Each run gets its own topic prefix, so it starts clean and never mixes with earlier runs. The
simulator (`fleetmedic simulate`) and the detectors (`fleetmedic detect`) run as the separate
processes they are in production; the demo then prints the incident timeline next to the
simulator's ground truth and renders the report page of the first incident.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

from fleetmedic.config import Settings
from fleetmedic.ranges import RangeSpec, read_range
from fleetmedic.schemas import Incident
from fleetmedic.topics import create_topics, topic_name

OUT = Path(".fleetmedic")


def _incidents(settings: Settings) -> list[Incident]:
    spec = RangeSpec(topic=topic_name(settings, Incident.topic))
    return sorted((i.record for b in read_range(settings, spec, Incident) for i in b), key=lambda r: (r.time, r.id))


def run_demo(settings: Settings, *, nodes: int = 8, sim_seconds: float = 4 * 3600, speed: float = 480.0) -> int:
    prefix = f"demo{time.strftime('%Y%m%d%H%M%S')}."
    settings = settings.model_copy(update={"topic_prefix": prefix})
    create_topics(settings)
    env = {**os.environ, "FLEETMEDIC_TOPIC_PREFIX": prefix,
           "FLEETMEDIC_BOOTSTRAP_SERVERS": ",".join(settings.bootstrap_servers)}
    cli = [sys.executable, "-m", "fleetmedic.cli"]
    OUT.mkdir(exist_ok=True)
    truth = OUT / "demo-ground-truth.jsonl"
    print(f"demo: topics under prefix {prefix!r} on {settings.bootstrap_servers[0]}", flush=True)
    detect = subprocess.Popen(cli + ["detect", "--group", "demo-detectors"], env=env)
    try:
        print(f"demo: simulating {nodes} nodes x 4 GPUs for {sim_seconds / 3600:.0f} simulated hours "
              f"at {speed:.0f}x (about {sim_seconds / speed:.0f} s)", flush=True)
        subprocess.run(cli + ["simulate", "--nodes", str(nodes), "--gpus", "4", "--seconds", str(sim_seconds),
                              "--interval", "10", "--seed", "7", "--realtime", "--speed", str(speed),
                              "--truth", str(truth)], env=env, check=True)
        # The detectors are done when the incident count stops moving for a while.
        last, quiet_since = -1, time.monotonic()
        while time.monotonic() - quiet_since < 8:
            n = len(_incidents(settings))
            if n != last:
                last, quiet_since = n, time.monotonic()
            time.sleep(1)
    finally:
        detect.terminate()
        detect.wait(30)
    incidents = _incidents(settings)
    print(f"\nground truth ({truth}):")
    for line in truth.read_text().splitlines():
        f = json.loads(line)
        print(f"  {f['start'][11:19]} → {f['end'][11:19]}  {f['host']:8s} {f['fault']}")
    print(f"\nincidents raised ({len(incidents)} records):")
    for r in incidents:
        print(f"  {r.time:%H:%M:%S} {r.status:7s} {r.severity:8s} {r.host:8s} {r.kind}/{r.subject}  {r.summary[:70]}")
    if not incidents:
        print("  (none)")
        return 1
    from .collect import collect, incident_window
    from .report import write_report

    first = [r for r in incidents if r.id == incidents[0].id]
    start, end = incident_window(first, timedelta(minutes=30))
    page = write_report(collect(settings, first[0].host, start, end), OUT / "demo-report.html",
                        f"fleetmedic incident {first[0].id} on {first[0].host}")
    print(f"\nreport of the first incident: {page.resolve()}")
    return 0
