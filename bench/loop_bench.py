"""The whole loop, fault to healed, through the production processes (the demo's service scene, N times).

    PYTHONPATH=. python bench/loop_bench.py [--runs N] [--target local|ssh|both] [--bootstrap HOST:PORT]

`fleetmedic detect` and `fleetmedic remediate` (deploy/demo-policy.yaml) run as their own processes.

- local: an inventory whose hosts are this machine (local connection; restart_service.yml acts
  here). Each run starts `fleetmedic export host --watch demo=demo_http.py --interval 2`
  under its own host name (so the cooldown gate does not hold back the next run) and kills the
  supervised service with SIGKILL.
- ssh: the 3-host testbed (deploy/testbed/fleet.sh; needs root, sshd, nc): every run kills the
  service on host 2, whose own exporter (interval 2 s) reports it; the remediator, with the
  testbed's inventory, runs restart_service.yml on host 2 over SSH (ProxyCommand into its network
  namespace). The policy's cooldown and flapping limits are lifted (the same host is healed N times)
  and each run waits for the incident to resolve, so the next fault opens a new incident.

Times: fault → incident record on Kafka, incident → ansible-runner starting restart_service.yml (the
remediator's `running` record), and fault → the service answering HTTP again (for ssh: asked inside
host 2's namespace). The detectors' `service_down` rule waits `for_s: 10` (detectors/default.yaml)
before it fires, and the exporter samples every 2 s: together they dominate fault → incident by
design. The table prints the 1-minute load average before and after: the machine may be shared.
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
from fleetmedic_demo.demo import PLAYBOOKS, ChildProcesses  # noqa: E402
from fleetmedic_demo.demo_loop import (  # noqa: E402
    Follower,
    durations,
    fleet_service_scene,
    service_scene,
    write_inventory,
    write_policy,
)
from fleetmedic_demo.testbed import DemoService, FleetTestbed, fleet_missing_reason, free_port_block  # noqa: E402

NAMES = ["fault→incident", "incident→playbook start", "fault→healed"]


def _runs(label: str, n: int, scene) -> list[dict]:
    rows = []
    for run in range(n):
        rows.append(durations(scene(run)))
        print(f"{label} run {run + 1}/{n}: " + ", ".join(f"{k} {v:.2f} s" for k, v in rows[-1].items()), flush=True)
    return rows


def local_loop(settings: Settings, env: dict, cli: list[str], runs: int, prefix: str) -> list[dict]:
    work = Path(tempfile.mkdtemp(prefix="fm-loop-bench-"))
    policy = write_policy(work, work / "service" / "supervisord.conf", work / "slurm.conf")
    hosts = tuple(f"loop-host-{run}" for run in range(runs))
    with DemoService(work / "service", port=free_port_block(1)) as service, ChildProcesses() as procs:
        # every run's host is this machine (local connection), its supervisord.conf a host variable
        inventory = write_inventory(work, None, local=service, local_hosts=hosts)
        procs.start(cli + ["detect", "--group", prefix + "detect"], env)
        procs.start(
            cli
            + [
                "remediate",
                "--policy",
                str(policy),
                "--playbooks",
                str(PLAYBOOKS),
                "--inventory",
                str(inventory),
                "--artifacts",
                str(work / "artifacts"),
                "--group",
                prefix + "remediate",
            ],
            env,
        )
        follower = Follower(settings)
        try:
            return _runs(
                "local",
                runs,
                lambda run: service_scene(
                    follower, cli, env, work, service, host=f"loop-host-{run}", wait_resolved=False
                ),
            )
        finally:
            follower.close()


def ssh_loop(settings: Settings, env: dict, cli: list[str], runs: int, prefix: str) -> list[dict]:
    work = Path(tempfile.mkdtemp(prefix="fm-loop-bench-ssh-"))
    demo_port = free_port_block(1)
    fleet = FleetTestbed(
        work / "fleet",
        f"fmb{uuid.uuid4().hex[:4]}h",
        count=3,
        demo_port=demo_port,
        exporters=True,
        exporter_health_base=free_port_block(3),
        env={k: v for k, v in env.items() if k.startswith("FLEETMEDIC_")},
    )
    policy = write_policy(
        work,
        work / "unused",
        work / "slurm.conf",
        demo_port=demo_port,
        gates={"cooldown_s": 0, "flapping": {"max_runs": 1000, "within_s": 60}},
    )
    with fleet, ChildProcesses() as procs:
        inventory = write_inventory(work, fleet)
        procs.start(cli + ["detect", "--group", prefix + "detect-ssh"], env)
        procs.start(
            cli
            + [
                "remediate",
                "--policy",
                str(policy),
                "--playbooks",
                str(PLAYBOOKS),
                "--inventory",
                str(inventory),
                "--artifacts",
                str(work / "artifacts"),
                "--group",
                prefix + "remediate-ssh",
            ],
            env,
        )
        follower = Follower(settings)
        try:
            return _runs("ssh", runs, lambda run: fleet_service_scene(follower, fleet, fleet.hosts[1]))
        finally:
            follower.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--target", choices=("local", "ssh", "both"), default="both")
    parser.add_argument("--bootstrap", default=os.environ.get("FLEETMEDIC_KAFKA_BOOTSTRAP", "127.0.0.1:19092"))
    args = parser.parse_args()

    prefix = f"loopbench{uuid.uuid4().hex[:8]}."
    settings = Settings(
        bootstrap_servers=[args.bootstrap],
        topic_prefix=prefix,
        client_id="fm-bench",
        topics=TopicSettings(partitions=3),
    )
    create_topics(settings)
    env = {**os.environ, "FLEETMEDIC_TOPIC_PREFIX": prefix, "FLEETMEDIC_BOOTSTRAP_SERVERS": args.bootstrap}
    cli = [sys.executable, "-m", "fleetmedic.cli"]
    results: dict[str, list[dict]] = {}
    load: dict[str, tuple[float, float]] = {}
    targets = ("local", "ssh") if args.target == "both" else (args.target,)
    for target in targets:
        if target == "ssh" and fleet_missing_reason():
            print(f"ssh: skipped ({fleet_missing_reason()})")
            continue
        before = os.getloadavg()[0]
        loop = local_loop if target == "local" else ssh_loop
        results[target] = loop(settings, env, cli, args.runs, prefix)
        load[target] = (before, os.getloadavg()[0])
        table(target, results[target], load[target])  # at once: a later failure keeps this one
    return 0


def table(target: str, rows: list[dict], load: tuple[float, float]) -> None:
    """The median/min/max table of one target's runs."""
    if rows:
        where = (
            "localhost (inventory host with a local connection)"
            if target == "local"
            else "SSH host 2 of the 3-host testbed (inventory, ProxyCommand into its namespace)"
        )
        print(f"\n{where}: {len(rows)} runs (seconds; 1-min load average {load[0]:.2f} before, {load[1]:.2f} after)")
        print(f"{'':26s}{'median':>9s}{'min':>9s}{'max':>9s}", flush=True)
        for name in NAMES:
            values = [r[name] for r in rows if name in r]
            if values:
                print(f"{name:26s}{statistics.median(values):9.2f}{min(values):9.2f}{max(values):9.2f}", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
