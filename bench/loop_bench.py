"""The whole loop, fault to healed, through the production processes (the demo's service scene, N times).

    PYTHONPATH=. python bench/loop_bench.py [--runs N] [--bootstrap HOST:PORT]

`fleetmedic detect` and `fleetmedic remediate` (deploy/demo-policy.yaml) run as their own processes;
each run starts `fleetmedic export host --watch demo=demo_http.py --interval 2` under its own host
name (so the cooldown gate does not hold back the next run), kills the supervised service with
SIGKILL, and times: fault → incident record on Kafka, incident → ansible-runner starting
restart_service.yml (the remediator's `running` record), and fault → the service answering HTTP
again. The detectors' `service_down` rule waits `for_s: 10` (detectors/default.yaml) before it
fires, and the exporter samples every 2 s: together they dominate fault → incident by design.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fleetmedic.config import Settings, TopicSettings  # noqa: E402
from fleetmedic.topics import create_topics  # noqa: E402
from remediator.testbed import DemoService, free_port_block  # noqa: E402
from review.demo import PLAYBOOKS, ChildProcesses  # noqa: E402
from review.demo_loop import Follower, durations, service_scene, write_policy  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--bootstrap", default=os.environ.get("FLEETMEDIC_KAFKA_BOOTSTRAP", "127.0.0.1:19092"))
    args = parser.parse_args()

    prefix = f"loopbench{uuid.uuid4().hex[:8]}."
    settings = Settings(bootstrap_servers=[args.bootstrap], topic_prefix=prefix, client_id="fm-bench",
                        topics=TopicSettings(partitions=3))
    create_topics(settings)
    work = Path(tempfile.mkdtemp(prefix="fm-loop-bench-"))
    env = {**os.environ, "FLEETMEDIC_TOPIC_PREFIX": prefix, "FLEETMEDIC_BOOTSTRAP_SERVERS": args.bootstrap}
    cli = [sys.executable, "-m", "fleetmedic.cli"]
    policy = write_policy(work, work / "service" / "supervisord.conf", work / "slurm.conf")
    rows = []
    with DemoService(work / "service", port=free_port_block(1)) as service, ChildProcesses() as procs:
        procs.start(cli + ["detect", "--group", prefix + "detect"], env)
        procs.start(cli + ["remediate", "--policy", str(policy), "--playbooks", str(PLAYBOOKS),
                           "--artifacts", str(work / "artifacts"), "--group", prefix + "remediate"], env)
        follower = Follower(settings)
        try:
            for run in range(args.runs):
                tl = service_scene(follower, cli, env, work, service, host=f"loop-host-{run}", wait_resolved=False)
                rows.append(durations(tl))
                print(f"run {run + 1}/{args.runs}: " + ", ".join(f"{k} {v:.2f} s" for k, v in rows[-1].items()),
                      flush=True)
        finally:
            follower.close()

    names = ["fault→incident", "incident→playbook start", "fault→healed"]
    print(f"\nwhole loop over {args.runs} runs (seconds; load average {os.getloadavg()[0]:.2f})")
    print(f"{'':26s}{'median':>9s}{'min':>9s}{'max':>9s}")
    for name in names:
        values = [r[name] for r in rows if name in r]
        if values:
            print(f"{name:26s}{statistics.median(values):9.2f}{min(values):9.2f}{max(values):9.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
