"""The closed-loop part of `fleetmedic demo`: real faults on real local targets, healed by the remediator.

Two scenes, each driven through the production processes (exporters, `fleetmedic detect`,
`fleetmedic remediate`) and nothing else:

- **service**: a real HTTP service under supervisord is killed with SIGKILL; `fleetmedic export
  host --watch demo=demo_http.py` reports `service.demo.up = 0`; the detectors' `service_down` rule
  opens an incident; the policy's `restart_service.yml` brings it back; the incident resolves.
- **slurm** (when Slurm is installed and we are root): a job runs on node1 of a real two-node
  cluster; an XID 79 kernel line is appended to a log file that `fleetmedic export logs --host
  node1` follows; the XID table opens an incident; `slurm_drain.yml` drains node1 and requeues the
  job, which Slurm then runs on node2.

`Follower` reads the incidents and remediations topics as they fill; `Timeline` merges their
records with what the demo itself did and saw (fault injected, service answers again, job moved).
"""

from __future__ import annotations

import subprocess
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from fleetmedic.config import Settings
from fleetmedic.lifecycle import TopicReader
from fleetmedic.resources import bundled
from fleetmedic.schemas import Contract, Incident, Remediation
from fleetmedic.topics import topic_name
from fleetmedic.transport import wait_until

from .testbed import DemoService, FleetTestbed, SlurmCluster, free_port_block, slurm_missing_reason

POLICY_TEMPLATE = bundled("deploy") / "demo-policy.yaml"
SERVICE_HOST = "demo-host"
SLURM_NODE = "node1"


def now() -> datetime:
    return datetime.now(UTC)


def write_policy(
    directory: Path, supervisor_conf: Path, slurm_conf: Path, *, demo_port: int = 18080, gates: dict | None = None
) -> Path:
    """deploy/demo-policy.yaml with this run's testbed paths filled in (and `gates` overridden)."""
    text = (
        POLICY_TEMPLATE.read_text()
        .replace("${SUPERVISOR_CONF}", str(supervisor_conf.resolve()))
        .replace("${SLURM_CONF}", str(slurm_conf.resolve()))
        .replace("${DEMO_PORT}", str(demo_port))
    )
    if gates:
        import yaml

        data = yaml.safe_load(text)
        data["gates"].update(gates)
        text = yaml.safe_dump(data, sort_keys=False)
    path = directory / "policy.yaml"
    path.write_text(text)
    return path


def write_inventory(
    directory: Path,
    fleet: FleetTestbed | None,
    slurm_nodes: tuple[str, ...] = (),
    local: DemoService | None = None,
    local_hosts: tuple[str, ...] = (SERVICE_HOST,),
) -> Path:
    """The demo's inventory, a directory as an operator might keep one: the testbed hosts (reached
    over SSH), the Slurm nodes (for the controller-side Slurm playbooks) and, where the SSH
    testbed cannot run, the local supervisord's host (`demo-host`, local connection)."""
    import sys

    inv = directory / "inventory"
    inv.mkdir(parents=True, exist_ok=True)
    if fleet is not None:
        (inv / "fleet.yml").write_text(fleet.inventory.read_text())
    if local is not None:
        (inv / "local.ini").write_text(
            "# the local supervisord (no SSH testbed here): this machine, local connection\n[local]\n"
            + "".join(
                f"{h} ansible_connection=local ansible_python_interpreter={sys.executable} "
                f"fleetmedic_supervisor_conf={local.config}\n"
                for h in local_hosts
            )
        )
    if slurm_nodes:
        lines = ["# the local Slurm cluster's nodes: acted on by controller-side playbooks (scontrol)", "[slurm]"]
        (inv / "slurm.ini").write_text("\n".join(lines + list(slurm_nodes)) + "\n")
    return inv


class Follower:
    """Every incident and remediation record of the demo's topics, read as they arrive."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.models: dict[str, type[Contract]] = {
            topic_name(settings, Incident.topic): Incident,
            topic_name(settings, Remediation.topic): Remediation,
        }
        self.reader = TopicReader(settings, list(self.models), require=False, name="demo")
        self.incidents: list[Incident] = []
        self.remediations: list[Remediation] = []
        # when each incident reached Kafka: its own `time` is event time (a log line's stamp)
        self.written: dict[tuple[str, str, datetime], datetime] = {}

    def poll(self) -> None:
        # undecodable records are skipped: dead letters of the detectors' and remediator's own
        # output are not ours to judge
        for item in self.reader.records(self.reader.poll(200), self.models):
            record = item.record
            if isinstance(record, Incident):
                self.incidents.append(record)
                self.written[(record.id, record.status, record.time)] = datetime.fromtimestamp(
                    item.timestamp_ms / 1000, UTC
                )
            else:
                self.remediations.append(record)

    def wait(self, condition: Callable[[], bool], timeout_s: float, what: str) -> None:
        def polled() -> bool:
            self.poll()
            return condition()

        wait_until(polled, timeout_s, interval_s=0.2, what=what)

    def of_host(self, host: str) -> tuple[list[Incident], list[Remediation]]:
        return ([i for i in self.incidents if i.host == host], [r for r in self.remediations if r.host == host])

    def close(self) -> None:
        self.reader.close()


@dataclass
class Timeline:
    """What happened in one scene, in wall-clock order, relative to the fault.

    Incidents are placed when they reached Kafka (the record timestamp); remediation records carry
    the remediator's own clock."""

    title: str
    fault_at: datetime | None = None
    events: list[tuple[datetime, str]] = field(default_factory=list)

    def note(self, text: str, at: datetime | None = None) -> datetime:
        at = at or now()
        self.events.append((at, text))
        return at

    def add_records(self, follower: Follower, host: str, since: datetime | None = None) -> None:
        incidents, remediations = follower.of_host(host)
        if since is not None:  # an earlier scene on the same host is not this one's
            early = {i.id for i in incidents if follower.written.get((i.id, i.status, i.time), i.time) < since}
            incidents = [i for i in incidents if i.id not in early]
            remediations = [r for r in remediations if r.incident_id not in early]
        for i in incidents:
            written = follower.written.get((i.id, i.status, i.time), i.time)
            self.note(
                f"incident {i.status:7s} {i.kind}/{i.subject} ({i.detector}) {i.id}, event time {i.time:%H:%M:%S.%f}"[
                    :-3
                ],
                written,
            )
        for r in remediations:
            what = f"{r.action}" + (f" via {r.playbook}" if r.playbook else "")
            if r.status == "running" and r.started_at:
                where = f"; {r.reason}" if r.reason else ""
                self.note(f"remediation running   {what} (playbook started{where})", r.started_at)
                continue
            detail = r.reason or ""
            if r.run is not None and r.status in ("succeeded", "failed", "dry_run", "timed_out"):
                detail = f"rc {r.rc}, {r.run.ok} ok / {r.run.changed} changed / {r.run.failed} failed tasks" + (
                    f"; {r.reason}" if r.reason else ""
                )
            gate = f" [{r.gate}]" if r.gate else ""
            self.note(f"remediation {r.status:9s} {what}{gate}" + (f": {detail[:110]}" if detail else ""), r.time)

    def render(self) -> str:
        lines = [f"\n{self.title}"]
        origin = self.fault_at or min(t for t, _ in self.events)
        for at, text in sorted(self.events, key=lambda e: e[0]):
            lines.append(f"  {at:%H:%M:%S.%f}"[:-3] + f"  {(at - origin).total_seconds():+7.2f}s  {text}")
        return "\n".join(lines)

    def first(self, needle: str) -> datetime | None:
        times = [at for at, text in self.events if needle in text]
        return min(times) if times else None


def _records_sent(port: int) -> int | None:
    """records_sent_total from an exporter's health endpoint; None while it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as resp:
            for line in resp.read().decode().splitlines():
                if line.startswith("fleetmedic_exporter_records_sent_total"):
                    return int(float(line.rsplit(" ", 1)[1]))
    except OSError:
        pass
    return None


def service_scene(
    follower: Follower,
    cli: list[str],
    env: dict,
    work: Path,
    service: DemoService,
    timeout_s: float = 180.0,
    host: str = SERVICE_HOST,
    wait_resolved: bool = True,
) -> Timeline:
    """Kill the supervised service; watch exporter → detectors → remediator bring it back.

    With `wait_resolved` the scene also waits for the incident to resolve and the ladder to close."""
    tl = Timeline(f"service scene: demo (supervisord) on {host}, killed with SIGKILL")
    health_port = free_port_block(1)
    exporter = subprocess.Popen(
        cli
        + [
            "export",
            "host",
            "--host",
            host,
            "--watch",
            "demo=demo_http.py",
            "--interval",
            "2",
            "--health-port",
            str(health_port),
            "--spool-dir",
            str(work / f"spool-{host}"),
            "--mount",
            "/",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: (_records_sent(health_port) or 0) >= 2, 60, what="the host exporter's first batches")
        pid = service.kill9()
        tl.fault_at = tl.note(f"fault: demo (pid {pid}) killed with SIGKILL")
        answer = {}

        def back() -> bool:
            nonlocal answer
            answer = service.answer(timeout_s=0.5) or {}
            return answer.get("pid") not in (None, pid)

        wait_until(back, timeout_s, interval_s=0.2, what="the demo service to answer again")
        tl.note(f"healed: demo answers again (pid {answer['pid']})")

        def closed() -> bool:
            incidents, remediations = follower.of_host(host)
            return any(i.status == "resolve" for i in incidents) and any(r.gate == "closed_loop" for r in remediations)

        def started() -> bool:
            return any(r.status == "running" for r in follower.of_host(host)[1])

        follower.wait(
            closed if wait_resolved else started,
            timeout_s,
            "the service_down incident to resolve and close its ladder"
            if wait_resolved
            else "the restart's running record",
        )
    finally:
        exporter.terminate()
        exporter.wait(30)
    tl.add_records(follower, host)
    return tl


def fleet_service_scene(
    follower: Follower, fleet: FleetTestbed, host: str, timeout_s: float = 300.0, wait_resolved: bool = True
) -> Timeline:
    """Kill the supervised service on one testbed host; the remediator restarts it there over SSH.

    The host's own exporter (started with the testbed) reports `service.demo.up = 0`; the
    detectors open `service_down`; the remediator runs restart_service.yml on that host only
    (inventory target, `--limit`); the service answers again inside the host's namespace. The
    other hosts' services are checked to keep their pids."""
    tl = Timeline(
        f"service scene on the fleet: demo (supervisord) on {host} of {', '.join(fleet.hosts)}, "
        f"killed with SIGKILL; restarted over SSH"
    )
    port = fleet.health_port(host)
    assert port is not None, "the fleet testbed starts an exporter per host"
    wait_until(lambda: (_records_sent(port) or 0) >= 2, 60, what=f"{host}'s exporter's first batches")
    others = {h: fleet.status(h) for h in fleet.hosts if h != host}
    pid = fleet.kill9(host)
    fault_at = tl.fault_at = tl.note(f"fault: demo on {host} (pid {pid}) killed with SIGKILL")
    answer: dict = {}

    def back() -> bool:
        nonlocal answer
        answer = fleet.answer(host, timeout_s=1.0) or {}
        return answer.get("pid") not in (None, pid)

    wait_until(back, timeout_s, interval_s=0.2, what=f"the demo service on {host} to answer again")
    tl.note(f"healed: demo on {host} answers again inside {host}'s namespace (pid {answer['pid']})")
    after = {h: fleet.status(h) for h in others}
    tl.note(
        "other hosts untouched: "
        + ", ".join(
            f"{h} demo pid {others[h][1]}" + ("" if after[h] == others[h] else f" → {after[h][1]} (CHANGED)")
            for h in others
        )
    )

    def closed() -> bool:
        incidents, remediations = follower.of_host(host)
        return any(i.status == "resolve" for i in incidents if i.time >= fault_at) and any(
            r.gate == "closed_loop" and r.time >= fault_at for r in remediations
        )

    def started() -> bool:
        return any(r.status == "running" and r.time >= fault_at for r in follower.of_host(host)[1])

    follower.wait(
        closed if wait_resolved else started,
        timeout_s,
        "the service_down incident to resolve and close its ladder"
        if wait_resolved
        else "the restart's running record",
    )
    tl.add_records(follower, host, since=tl.fault_at)
    return tl


def slurm_scene(
    follower: Follower, cli: list[str], env: dict, work: Path, cluster: SlurmCluster, timeout_s: float = 180.0
) -> Timeline:
    """An XID 79 on node1 while a job runs there; watch the job move to node2."""
    tl = Timeline("slurm scene: a job on node1, then XID 79 (GPU fallen off the bus) in node1's kernel log")
    job = cluster.submit(SLURM_NODE, seconds=600)
    wait_until(lambda: cluster.job(job).get("JobState") == "RUNNING", 60, what=f"job {job} to run on node1")
    tl.note(f"job {job} running on {cluster.job(job).get('NodeList')}")
    kern = work / "kern.log"
    kern.write_text("")
    health_port = free_port_block(1)
    exporter = subprocess.Popen(
        cli
        + [
            "export",
            "logs",
            str(kern),
            "--host",
            SLURM_NODE,
            "--position-file",
            str(work / "log-positions.json"),
            "--health-port",
            str(health_port),
            "--spool-dir",
            str(work / "spool-logs"),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: _records_sent(health_port) is not None, 60, what="the log exporter to start")
        stamp = now()
        with kern.open("a") as f:
            f.write(
                f"{stamp.isoformat()} {SLURM_NODE} kernel: NVRM: Xid (PCI:0000:3b:00): 79, pid=4242, "
                f"GPU has fallen off the bus.\n"
            )
        tl.fault_at = tl.note("fault: XID 79 written to node1's kernel log", stamp)

        def moved() -> bool:
            info = cluster.job(job)
            return info.get("JobState") == "RUNNING" and info.get("NodeList") == "node2"

        wait_until(moved, timeout_s, interval_s=0.5, what=f"job {job} to run on node2")
        node = cluster.node(SLURM_NODE)
        tl.note(f"healed: job {job} running on node2; node1 {node.get('State')}, reason {node.get('Reason')!r}")
        follower.wait(
            lambda: any(r.status == "succeeded" for r in follower.of_host(SLURM_NODE)[1]),
            60,
            "the drain's outcome record",
        )
    finally:
        exporter.terminate()
        exporter.wait(30)
    tl.add_records(follower, SLURM_NODE)
    return tl


def durations(tl: Timeline) -> dict[str, float]:
    """Seconds from fault to incident, incident to playbook start, and fault to healed (those seen)."""
    fault, opened = tl.fault_at, tl.first("incident open")
    started, healed = tl.first("playbook started"), tl.first("healed:")
    out = {}
    if fault and opened:
        out["fault→incident"] = (opened - fault).total_seconds()
    if opened and started:
        out["incident→playbook start"] = (started - opened).total_seconds()
    if fault and healed:
        out["fault→healed"] = (healed - fault).total_seconds()
    return out


def summary(tl: Timeline) -> str:
    return "  " + ", ".join(f"{name} {s:.2f} s" for name, s in durations(tl).items())


__all__ = [
    "Follower",
    "Timeline",
    "durations",
    "fleet_service_scene",
    "service_scene",
    "slurm_scene",
    "slurm_missing_reason",
    "summary",
    "write_inventory",
    "write_policy",
]
