"""`fleetmedic demo` (what `make demo` runs): the whole loop, fleet → detectors → remediator → playbooks.

Each run gets its own topic prefix, so it starts clean and never mixes with earlier runs. Every
stage runs as the separate process it is in production: `fleetmedic detect`, `fleetmedic
remediate` (policy: deploy/demo-policy.yaml), the exporters and `fleetmedic simulate`.

1. A simulated fleet with seeded faults: the demo prints the incidents next to the simulator's
   ground truth and renders the report page of the first incident. The demo policy hands the
   simulated nodes' incidents to a person (they are not real machines).
2. The closed loop on real targets (fleetmedic_demo/demo_loop.py): on a three-host SSH testbed
   (deploy/testbed/fleet.sh: network + UTS namespaces, sshd, supervisord, a host exporter each),
   the supervised service is killed on host 2 and restart_service.yml brings it back there, over
   SSH, through the demo's Ansible inventory; where the testbed cannot run (not root, no sshd) the
   scene runs on a local supervisord instead and says why. With Slurm installed, an XID on node1
   drains it (a controller-side playbook) and its job moves to node2. Each scene prints its
   timeline: fault, incident, gate decisions, playbook run, healed, resolve.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path

from fleetmedic.config import Settings
from fleetmedic.resources import bundled
from fleetmedic.topics import create_topics

from .demo_loop import (
    Follower,
    fleet_service_scene,
    service_scene,
    slurm_missing_reason,
    slurm_scene,
    summary,
    write_inventory,
    write_policy,
)
from .testbed import DemoService, FleetTestbed, SlurmCluster, fleet_missing_reason, free_port_block

FLEET_PREFIX = "fmhost"  # the testbed's hosts: fmhost1, fmhost2, fmhost3 (namespace names and hostnames)
FLEET_HOST = "fmhost2"

OUT = Path(".fleetmedic")
PLAYBOOKS = bundled("playbooks")


def run_demo(
    settings: Settings,
    *,
    nodes: int = 8,
    sim_seconds: float = 4 * 3600,
    speed: float = 480.0,
    scenes: tuple[str, ...] = ("fleet", "service", "slurm"),
    prefix: str | None = None,
    roles: dict[str, Settings] | None = None,
) -> int:
    """`roles` (role → settings, on a secured broker): each stage connects as its own principal,
    `settings` (the admin) creates the topics and ACLs, the demo itself reads as the reviewer."""
    prefix = prefix or f"demo{time.strftime('%Y%m%d%H%M%S')}."
    settings = settings.model_copy(update={"topic_prefix": prefix})
    create_topics(settings)
    env = {
        **os.environ,
        "FLEETMEDIC_TOPIC_PREFIX": prefix,
        "FLEETMEDIC_BOOTSTRAP_SERVERS": ",".join(settings.bootstrap_servers),
    }
    roles = {r: s.model_copy(update={"topic_prefix": prefix}) for r, s in (roles or {}).items()}
    if roles:
        roles.setdefault("admin", settings)  # `fleetmedic pause/resume` write the control topic
    as_role = _role_envs(env, roles)
    if "reviewer" in roles:
        settings = roles["reviewer"]
    cli = [sys.executable, "-m", "fleetmedic.cli"]
    OUT.mkdir(exist_ok=True)
    work = OUT / "demo"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir()
    print(f"demo: topics under prefix {prefix!r} on {settings.bootstrap_servers[0]}", flush=True)
    with ExitStack() as stack:
        service = fleet = None
        demo_port = free_port_block(1)
        if "service" in scenes:
            why = fleet_missing_reason()
            if why is None:
                print(
                    f"demo: starting a 3-host SSH testbed ({FLEET_PREFIX}1..3: netns + UTS namespace, sshd, "
                    f"supervisord, host exporter each)",
                    flush=True,
                )
                fleet = stack.enter_context(
                    FleetTestbed(
                        work / "fleet",
                        FLEET_PREFIX,
                        count=3,
                        demo_port=demo_port,
                        exporters=True,
                        exporter_health_base=free_port_block(3),
                        # the hosts' exporters connect as the exporter principal (on a secured broker)
                        env={k: v for k, v in as_role("exporter").items() if k.startswith("FLEETMEDIC_")},
                    )
                )
            else:
                print(f"demo: fleet testbed skipped ({why}): the service scene runs on a local supervisord", flush=True)
                service = stack.enter_context(DemoService(work / "service", port=demo_port))
        cluster = None
        if "slurm" in scenes:
            why = slurm_missing_reason()
            if why:
                print(f"demo: slurm scene skipped: {why}", flush=True)
            else:
                print("demo: starting a two-node Slurm cluster (node1, node2)", flush=True)
                cluster = stack.enter_context(SlurmCluster(work / "slurm"))
        policy = write_policy(
            work, work / "service" / "supervisord.conf", work / "slurm" / "slurm.conf", demo_port=demo_port
        )
        print(f"demo: remediator policy {policy} (from deploy/demo-policy.yaml)", flush=True)
        inventory = write_inventory(work, fleet, ("node1", "node2") if cluster is not None else (), local=service)
        print(
            f"demo: Ansible inventory {inventory} "
            f"({', '.join(sorted(p.name for p in inventory.iterdir())) or 'empty'})",
            flush=True,
        )
        procs = stack.enter_context(ChildProcesses())
        metrics_port = free_port_block(2)
        procs.start(
            cli + ["detect", "--group", "demo-detectors", "--metrics-port", str(metrics_port)], as_role("detector")
        )
        procs.start(
            cli
            + [
                "remediate",
                "--policy",
                str(policy),
                "--playbooks",
                str(PLAYBOOKS),
                "--artifacts",
                str(work / "artifacts"),
                "--group",
                "demo-remediator",
                "--metrics-port",
                str(metrics_port + 1),
            ]
            + (["--inventory", str(inventory)] if any(inventory.iterdir()) else []),
            as_role("remediator"),
        )
        print(
            f"demo: metrics at http://127.0.0.1:{metrics_port}/metrics (detect) and "
            f"http://127.0.0.1:{metrics_port + 1}/metrics (remediate); scrape them with Prometheus and import "
            f"deploy/grafana/fleetmedic.json (docs/operations.md)",
            flush=True,
        )
        am = _alertmanager(stack, procs, cli, as_role("reviewer"), work)  # `alerts notify` only reads
        env = as_role("exporter")  # what the scenes start are exporters
        follower = Follower(settings)
        stack.callback(follower.close)
        status = 0
        if "fleet" in scenes:
            status = _fleet_scene(settings, cli, env, follower, nodes, sim_seconds, speed)
        if fleet is not None:
            print(
                f"\ndemo: service scene on the fleet (kill the service on {FLEET_HOST}; the remediator restarts "
                f"it there over SSH)",
                flush=True,
            )
            tl = fleet_service_scene(follower, fleet, FLEET_HOST)
            print(tl.render() + "\n" + summary(tl), flush=True)
        if service is not None:
            print("\ndemo: service scene (kill a supervised service; the remediator restarts it)", flush=True)
            tl = service_scene(follower, cli, env, work, service)
            print(tl.render() + "\n" + summary(tl), flush=True)
        if cluster is not None:
            print("\ndemo: slurm scene (XID on node1 while a job runs; the remediator drains it)", flush=True)
            tl = slurm_scene(follower, cli, env, work, cluster)
            print(tl.render() + "\n" + summary(tl), flush=True)
        if am is not None:
            from .demo_alertmanager import kill_switch_scene, print_alerts

            if "fleet" in scenes:  # the escalations of the simulated nodes, pushed by `alerts notify`
                am.wait(lambda: am.alerts("FleetmedicEscalated"), 20)
            print_alerts(am)
            kill_switch_scene(am, cli, as_role("admin"))
        return status


def _alertmanager(stack: ExitStack, procs: ChildProcesses, cli: list[str], env: dict, work: Path):
    """A real Alertmanager with `fleetmedic alerts notify` pushing to it; None (said why) when not installed."""
    from .demo_alertmanager import DemoAlertmanager, alertmanager_missing_reason

    why = alertmanager_missing_reason()
    if why:
        print(f"demo: Alertmanager part skipped: {why}", flush=True)
        return None
    am = stack.enter_context(DemoAlertmanager(work / "alertmanager", free_port_block(1)))
    procs.start(cli + ["alerts", "notify", "--alertmanager", am.url, "--resend-s", "5"], env)
    print(
        f"demo: Alertmanager {am.url}/#/alerts: `fleetmedic alerts notify` pushes the incidents that need "
        f"a person there",
        flush=True,
    )
    return am


def _fleet_scene(
    settings: Settings, cli: list[str], env: dict, follower: Follower, nodes: int, sim_seconds: float, speed: float
) -> int:
    truth = OUT / "demo-ground-truth.jsonl"
    print(
        f"demo: simulating {nodes} nodes x 4 GPUs for {sim_seconds / 3600:.0f} simulated hours "
        f"at {speed:.0f}x (about {sim_seconds / speed:.0f} s)",
        flush=True,
    )
    subprocess.run(
        cli
        + [
            "simulate",
            "--nodes",
            str(nodes),
            "--gpus",
            "4",
            "--seconds",
            str(sim_seconds),
            "--interval",
            "10",
            "--seed",
            "7",
            "--realtime",
            "--speed",
            str(speed),
            "--truth",
            str(truth),
        ],
        env=env,
        check=True,
    )
    # The detectors are done when the incident count stops moving for a while.
    last, quiet_since = -1, time.monotonic()
    while time.monotonic() - quiet_since < 8:
        follower.poll()
        if len(follower.incidents) != last:
            last, quiet_since = len(follower.incidents), time.monotonic()
        time.sleep(1)
    incidents = sorted(follower.incidents, key=lambda r: (r.time, r.id))
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
    from review.collect import collect, incident_window
    from review.report import write_report

    first = [r for r in incidents if r.id == incidents[0].id]
    start, end = incident_window(first, timedelta(minutes=30))
    page = write_report(
        collect(settings, first[0].host, start, end),
        OUT / "demo-report.html",
        f"fleetmedic incident {first[0].id} on {first[0].host}",
    )
    print(f"\nreport of the first incident: {page.resolve()}")
    opened = {r.id for r in incidents if r.status == "open"}
    follower.wait(
        lambda: opened <= {r.incident_id for r in follower.remediations},
        60,
        "the remediator's decision on every simulated incident",
    )
    decided = [r for r in follower.remediations if r.incident_id in opened]
    print(
        f"remediator: {len(decided)} decisions on {len(opened)} simulated incidents: "
        + ", ".join(f"{n} {s}" for s, n in sorted(Counter(r.status for r in decided).items()))
        + " (the demo policy hands simulated nodes to a person)"
    )
    return 0


def _role_envs(env: dict, roles: dict[str, Settings]):
    """role → the environment of a child that connects as that role (unchanged without roles)."""
    from fleetmedic.secrets import connection_env

    def as_role(role: str) -> dict:
        if role not in roles:
            return env
        child = {k: v for k, v in env.items() if not k.startswith("FLEETMEDIC_SECURITY__") and k != "FLEETMEDIC_CONFIG"}
        return {**child, **connection_env(roles[role])}

    return as_role


class ChildProcesses:
    """Child processes that are terminated (SIGTERM: finish the batch, commit) when the demo ends."""

    def __init__(self):
        self.procs: list[subprocess.Popen] = []

    def start(self, argv: list[str], env: dict) -> subprocess.Popen:
        proc = subprocess.Popen(argv, env=env)
        self.procs.append(proc)
        return proc

    def __enter__(self) -> ChildProcesses:
        return self

    def __exit__(self, *exc) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
