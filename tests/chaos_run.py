"""`make chaos`: the whole pipeline on a three-broker cluster under faults, counted from the topics.

    .venv/bin/python tests/chaos_run.py [--kills 20] [--broker-restarts 2] [--nodes 24]
        [--sim-seconds 7200] [--speed 45] [--seed 12] [--port 19300] [--keep]

Set-up (everything on loopback, under one temporary directory removed at the end, even on a
failure): a three-broker KRaft cluster of its own (`fleetmedic.cluster`, ports PORT..PORT+5),
a topic set under a fresh prefix (replication factor 3, min.insync.replicas 2), a local
supervisord with one HTTP service (`fleetmedic_demo.testbed.DemoService`), three `fleetmedic detect`
members in one group and two `fleetmedic remediate` members in another (policy: critical
incidents of the simulated nodes run restart_service.yml against that supervisord through an
inventory that maps every simulated node to it with a local connection, then a person; the other
incidents go to a person), and `fleetmedic simulate` publishing the seeded fleet at `--speed`
simulated seconds per wall second, with ground truth.

Faults, while the simulator runs (a line per fault): `--kills` times SIGKILL a random live member
(detector or remediator) that has been up for 15 s, and start it again; `--broker-restarts` times SIGKILL one broker (a
different one each time) and start it again after a few seconds; a fourth detector and a third
remediator join and later leave (SIGTERM), forcing more rebalances. Rebalances are counted from
the broker: a thread describes both groups every second and counts each change of a group's
member set (a lower bound: two changes within one second count once).

Settling: all members alive, until the detector group's committed offsets reach the end of every
metrics and logs partition, every host's newest snapshot covers its last record, and the
remediations topic has been quiet for a while; then every member is stopped (SIGTERM).

Counting (tests/chaos_kit.py, tested by tests/test_chaos_count.py):
- records lost: every record the seeded simulator produced (regenerated in this process from
  the same seed and start, so the expected list does not depend on the run) must be on its input
  topic, below the detector group's committed offset, and covered by its host's newest state
  snapshot (source_offsets, read_committed from the compacted state topic);
- incidents: the fault-free run is `fleetmedic replay`'s engine (`review.replay.replay`) over the
  same input topics after the run, with the same detector configuration; duplicate incidents
  are ids opened or resolved twice plus ids only the chaos run opened; missed faults are ids
  only the fault-free run opened (missed resolves are counted too and also fail the run);
- remediations: playbook runs per (incident, action, step) from the remediations topic
  (`running` records and run outcomes); more than one is a duplicate.

Prints one table, then `chaos: kills N, broker restarts M, rebalances R, records lost 0, duplicate
incidents 0, missed faults 0, duplicate remediations 0`. Exit status 1 when a lost, duplicate or
missed count is not 0 (or the run could not settle), 2 when the set-up failed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import chaos_kit as kit  # noqa: E402

from fleetmedic.cluster import EmbeddedCluster  # noqa: E402
from fleetmedic.config import load_settings  # noqa: E402
from fleetmedic.topics import create_topics  # noqa: E402
from fleetmedic_demo.testbed import DemoService  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "fleetmedic.cli"]
DETECT_GROUP = "chaos-detectors"
REMEDIATE_GROUP = "chaos-remediators"


def _lenient_group_descriptions() -> None:
    """kafka-python 2.3's describe_consumer_groups decodes DescribeGroups v3+ `authorized_operations`
    into an enum even when not asked for them, and the broker's "not requested" value (INT32_MIN,
    bit 31) is no ACLOperation: it raises ValueError once a group has members. Ignore what it
    cannot name (the harness only reads the member list)."""
    import kafka.admin.client as client

    strict = client.valid_acl_operations

    def lenient(values):
        try:
            return strict(values)
        except ValueError:
            return set()

    client.valid_acl_operations = lenient


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Members:
    """The detector and remediator processes, by name (d1.., r1..), each logging to its own file."""

    def __init__(self, work: Path, env: dict, argv: dict[str, list[str]]):
        self.work, self.env, self.argv = work, env, argv
        (work / "logs").mkdir(parents=True, exist_ok=True)
        self.procs: dict[str, subprocess.Popen] = {}
        self.started: dict[str, float] = {}
        self.lock = threading.Lock()

    def start(self, name: str) -> None:
        log = open(self.work / "logs" / f"{name}.log", "ab")
        kind = "detect" if name.startswith("d") else "remediate"
        with self.lock:
            self.procs[name] = subprocess.Popen(
                self.argv[kind],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.work,
                start_new_session=True,
            )
            self.started[name] = time.monotonic()
        log.close()

    def alive(self) -> list[str]:
        with self.lock:
            return sorted(n for n, p in self.procs.items() if p.poll() is None)

    def victims(self, up_s: float = 15.0) -> list[str]:
        """Live members up for `up_s` (at work, not still starting), else every live one."""
        alive = self.alive()
        settled = [n for n in alive if time.monotonic() - self.started[n] >= up_s]
        return settled or alive

    def kill(self, name: str) -> None:
        with self.lock:
            proc = self.procs[name]
        os.killpg(proc.pid, signal.SIGKILL)  # the member and anything it started (ansible-runner)
        proc.wait()

    def terminate(self, name: str, timeout_s: float = 60.0) -> None:
        with self.lock:
            proc = self.procs.pop(name)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def revive_dead(self) -> list[str]:
        """Start again every member that exited on its own (none should): returns their names."""
        dead = [n for n, p in list(self.procs.items()) if p.poll() is not None]
        for n in dead:
            self.start(n)
        return dead

    def stop_all(self) -> None:
        for name in list(self.procs):
            proc = self.procs[name]
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in list(self.procs.values()):
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            try:  # what a member started (an ansible-playbook child of a killed one) goes too
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.procs.clear()


class RebalanceCounter(threading.Thread):
    """Counts changes of each group's member set, from the broker, once a second."""

    def __init__(self, settings, groups: list[str]):
        super().__init__(daemon=True)
        self.settings, self.groups = settings, groups
        self.changes = Counter()
        self.last: dict[str, frozenset] = {}
        self.halt = threading.Event()

    def run(self) -> None:
        from kafka import KafkaAdminClient

        admin = None
        while not self.halt.wait(1.0):
            try:
                if admin is None:
                    admin = KafkaAdminClient(**self.settings.kafka_kwargs(), request_timeout_ms=5000)
                for info in admin.describe_consumer_groups(self.groups):
                    members = frozenset(m.member_id for m in info.members)
                    if info.group in self.last and members != self.last[info.group]:
                        self.changes[info.group] += 1
                    self.last[info.group] = members
            except Exception:  # noqa: BLE001 - a broker down: try again next second
                if admin is not None:
                    try:
                        admin.close()
                    except Exception:  # noqa: BLE001
                        pass
                admin = None
        if admin is not None:
            admin.close()

    @property
    def total(self) -> int:
        return sum(self.changes.values())


def write_policy(work: Path, port: int) -> Path:
    path = work / "policy.yaml"
    path.write_text(f"""# make chaos: critical incidents of the simulated nodes restart the local testbed's service
host_groups:
  simulated: ["sim-node-*"]
gates:
  cooldown_s: 0
  rate_limit: {{max_runs: 10000, per_s: 60}}
  max_concurrent: 2
  blast_radius: {{max_percent: 100}}
  flapping: {{max_runs: 1000, within_s: 60}}
rules:
  - name: chaos_restart
    match: {{host_groups: [simulated], severities: [critical]}}
    steps:
      - action: restart_service
        playbook: restart_service.yml
        timeout_s: 120
        resolve_within_s: 3600
        vars:
          service: {{value: demo}}
          health_url: {{value: "http://127.0.0.1:{port}/"}}
      - action: human
  - name: chaos_person
    match: {{host_groups: [simulated]}}
    steps:
      - action: human
""")
    return path


def write_inventory(work: Path, hosts: list[str], supervisor_conf: Path) -> Path:
    inv = work / "inventory.ini"
    inv.write_text(
        "# every simulated node is the local testbed (local connection)\n[simulated]\n"
        + "".join(
            f"{h} ansible_connection=local ansible_python_interpreter={sys.executable} "
            f"fleetmedic_supervisor_conf={supervisor_conf}\n"
            for h in hosts
        )
    )
    return inv


def expected_input(cfg) -> tuple[Counter, int]:
    """(kind, host) → records the seeded simulator produces, and its values (regenerated here)."""
    from ingest.simulator import FleetSimulator

    sim = FleetSimulator(cfg)
    out: Counter = Counter()
    values = 0
    for k in range(cfg.ticks):
        batches, events = sim.tick(k)
        for b in batches:
            out[("metrics", b.host)] += 1
            values += len(b.values)
        for e in events:
            out[("logs", e.host)] += 1
    return out, values


def read_all(settings, name: str, model):
    from fleetmedic.ranges import RangeSpec, read_range
    from fleetmedic.topics import topic_name

    out = []
    for batch in read_range(settings, RangeSpec(topic=topic_name(settings, name)), model):
        out.extend(batch)
    return out


def read_states(settings, group: str) -> dict[str, dict[str, int]]:
    """host → source_offsets of the group's newest snapshot (tombstones delete), read_committed."""
    from kafka import KafkaConsumer, TopicPartition

    from fleetmedic.schemas import DetectorState
    from fleetmedic.topics import topic_name
    from fleetmedic.transport import consumer_config

    topic = topic_name(settings, DetectorState.topic)
    consumer = KafkaConsumer(enable_auto_commit=False, group_id=None, **consumer_config(settings))
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        states: dict[str, dict[str, int]] = {}
        prefix = f"{group}/".encode()
        deadline = time.monotonic() + 120
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise TimeoutError("reading the state topic took over 120 s")
            for msgs in consumer.poll(timeout_ms=500).values():
                for m in msgs:
                    if m.key is None or not m.key.startswith(prefix):
                        continue
                    host = m.key[len(prefix) :].decode()
                    if m.value is None:
                        states.pop(host, None)
                    else:
                        states[host] = DetectorState.model_validate_json(m.value).source_offsets
        return states
    finally:
        consumer.close()


def committed_and_ends(settings, group: str, names: list[str]):
    from kafka import KafkaConsumer, TopicPartition

    from fleetmedic.topics import topic_name
    from fleetmedic.transport import consumer_config

    consumer = KafkaConsumer(enable_auto_commit=False, group_id=group, **consumer_config(settings))
    try:
        tps = [
            TopicPartition(topic_name(settings, n), p)
            for n in names
            for p in sorted(consumer.partitions_for_topic(topic_name(settings, n)) or ())
        ]
        ends = consumer.end_offsets(tps)
        committed = {}
        for tp in tps:
            c = consumer.committed(tp)
            committed[(tp.topic, tp.partition)] = c if c is not None else 0
        return committed, {(tp.topic, tp.partition): ends[tp] for tp in tps}
    finally:
        consumer.close()


def detectors_caught_up(settings) -> tuple[bool, int]:
    committed, ends = committed_and_ends(settings, DETECT_GROUP, ["metrics.v1", "logs.v1"])
    behind = sum(max(0, ends[k] - committed.get(k, 0)) for k in ends)
    return behind == 0, behind


class FaultPlan:
    """When each fault happens (seconds from the simulator's start), from the seed."""

    def __init__(self, rng: random.Random, span_s: float, kills: int, broker_restarts: int):
        events = []
        lo, hi = 0.08 * span_s, 0.85 * span_s
        for k in range(kills):  # evenly spread, with jitter: a kill every span/kills seconds
            events.append((lo + (hi - lo) * (k + rng.random() * 0.8) / kills, "kill"))
        for k in range(broker_restarts):
            events.append((lo + (hi - lo) * (k + 0.5) / broker_restarts, "broker"))
        events += [
            (0.2 * span_s, "add:d4"),
            (0.3 * span_s, "add:r3"),
            (0.6 * span_s, "remove:d4"),
            (0.7 * span_s, "remove:r3"),
        ]
        self.events = sorted(events)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--broker-restarts", type=int, default=2)
    ap.add_argument("--nodes", type=int, default=24, help="simulated nodes (4 GPUs each)")
    ap.add_argument("--faults", type=int, default=8, help="simulated faults")
    ap.add_argument("--sim-seconds", type=float, default=7200.0, help="simulated span")
    ap.add_argument("--speed", type=float, default=40.0, help="simulated seconds per wall second")
    ap.add_argument("--seed", type=int, default=12)
    ap.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("CHAOS_PORT", "19300")),
        help="first broker port: the cluster takes PORT..PORT+5, the testbed's service PORT+20",
    )
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs, data) at the end")
    args = ap.parse_args()
    # SIGTERM (a timeout, a CI cancel) unwinds like an exception, so the cleanup below runs
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    _lenient_group_descriptions()
    t_start = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="fleetmedic-chaos-"))
    say(f"chaos: work directory {work}; load average {open('/proc/loadavg').read().split()[:3]}")
    cluster = service = members = counter = None
    try:
        base = load_settings(None)
        broker = base.broker.model_copy(
            update={"port": args.port, "controller_port": args.port + 1, "data_dir": work / "kafka", "nodes": 3}
        )
        cluster = EmbeddedCluster(broker, 3)
        wait_for_free_ports(range(args.port, args.port + 6), 120)
        say(f"starting a 3-broker cluster on 127.0.0.1:{args.port},{args.port + 2},{args.port + 4}")
        took = cluster.start(progress=lambda m: None)
        say(f"cluster ready in {took:.1f}s: {cluster.bootstrap}")
        prefix = f"chaos{time.strftime('%H%M%S')}."
        settings = base.model_copy(
            update={
                "bootstrap_servers": cluster.bootstrap.split(","),
                "topic_prefix": prefix,
                "state_dir": work / "state",
                "broker": broker,
            }
        )
        create_topics(settings)
        service = DemoService(work / "service", port=args.port + 20)
        service.start()
        from ingest.simulator import SimConfig

        start = (datetime.now(UTC) - timedelta(seconds=args.sim_seconds + 300)).replace(microsecond=0)
        cfg = SimConfig(
            nodes=args.nodes,
            gpus=4,
            seconds=args.sim_seconds,
            interval_s=10.0,
            seed=args.seed,
            faults=args.faults,
            start=start,
        )
        hosts = [f"{cfg.host_prefix}{i:04d}" for i in range(cfg.nodes)]
        policy = write_policy(work, args.port + 20)
        inventory = write_inventory(work, hosts, service.config)
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETMEDIC_")}
        env.update(
            FLEETMEDIC_BOOTSTRAP_SERVERS=cluster.bootstrap,
            FLEETMEDIC_TOPIC_PREFIX=prefix,
            FLEETMEDIC_STATE_DIR=str(work / "state"),
            PYTHONPATH=str(ROOT),
        )
        argv = {
            "detect": CLI + ["detect", "--group", DETECT_GROUP, "--session-timeout-s", "6"],
            "remediate": CLI
            + [
                "remediate",
                "--policy",
                str(policy),
                "--inventory",
                str(inventory),
                "--artifacts",
                str(work / "artifacts"),
                "--group",
                REMEDIATE_GROUP,
                "--session-timeout-s",
                "6",
            ],
        }
        members = Members(work, env, argv)
        for name in ("d1", "d2", "d3", "r1", "r2"):
            members.start(name)
        counter = RebalanceCounter(settings, [DETECT_GROUP, REMEDIATE_GROUP])
        counter.start()
        say("members: detectors d1 d2 d3, remediators r1 r2; waiting for the detector group to form")
        wait_for_group(settings, DETECT_GROUP, 3, 180)
        truth = work / "truth.jsonl"
        span = args.sim_seconds / args.speed
        say(
            f"simulating {cfg.nodes} nodes x 4 GPUs, {args.sim_seconds:.0f} simulated s at {args.speed:g}x "
            f"(about {span:.0f} s), seed {args.seed}, {args.faults} faults"
        )
        sim_log = open(work / "logs" / "simulate.log", "ab")
        sim = subprocess.Popen(
            CLI
            + [
                "simulate",
                "--nodes",
                str(cfg.nodes),
                "--gpus",
                "4",
                "--seconds",
                str(args.sim_seconds),
                "--interval",
                "10",
                "--seed",
                str(args.seed),
                "--faults",
                str(args.faults),
                "--start",
                start.isoformat(),
                "--realtime",
                "--speed",
                str(args.speed),
                "--truth",
                str(truth),
                "--ack-timeout",
                "90",
            ],
            env=env,
            stdout=sim_log,
            stderr=subprocess.STDOUT,
            cwd=work,
        )
        faults = run_faults(
            FaultPlan(random.Random(args.seed), span, args.kills, args.broker_restarts),
            members,
            cluster,
            random.Random(args.seed + 1),
            sim,
        )
        rc = sim.wait()
        if rc != 0:
            say(f"simulate exited with {rc} (see {work}/logs/simulate.log)")
        say(
            f"faults done: {faults['kills']} kills, {faults['brokers']} broker restarts, "
            f"{faults['added']} added, {faults['removed']} removed; settling"
        )
        settled = settle(settings, members, cfg, hosts)
        members.stop_all()
        counter.halt.set()
        counter.join(5)
        say("counting from the topics")
        return count(settings, cfg, truth, faults, counter.total, settled, t_start, rc)
    except Exception as exc:
        say(f"chaos: set-up or run failed: {type(exc).__name__}: {exc}")
        import traceback

        traceback.print_exc()
        return 2
    finally:
        if counter is not None:
            counter.halt.set()
        if members is not None:
            members.stop_all()
        if service is not None:
            try:
                service.stop()
            except Exception as exc:  # noqa: BLE001
                say(f"stopping the testbed service: {exc}")
        if cluster is not None:
            cluster.stop(timeout_s=15)
        if args.keep:
            say(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def wait_for_free_ports(ports, timeout_s: float) -> None:
    """A previous run's sockets (TIME_WAIT, a broker still exiting) can hold the ports a little while."""
    import socket

    deadline = time.monotonic() + timeout_s
    while True:
        busy = []
        for port in ports:
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    busy.append(port)
        if not busy:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"ports {busy} on 127.0.0.1 stay taken (another run? set --port / CHAOS_PORT)")
        say(f"waiting for ports {busy} to be free")
        time.sleep(5)


def wait_for_group(settings, group: str, n: int, timeout_s: float) -> None:
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    admin = KafkaAdminClient(**settings.kafka_kwargs())
    try:
        deadline = time.monotonic() + timeout_s
        seen = "no answer"
        while True:
            try:  # the group coordinator may not be elected yet
                info = admin.describe_consumer_groups([group])[0]
                if info.state == "Stable" and len(info.members) >= n:
                    return
                seen = f"{len(info.members)} of {n} members ({info.state})"
            except KafkaError as exc:
                seen = f"{type(exc).__name__}"
            if time.monotonic() > deadline:
                raise TimeoutError(f"group {group}: {seen} after {timeout_s:.0f}s")
            time.sleep(1)
    finally:
        admin.close()


def run_faults(plan: FaultPlan, members: Members, cluster, rng: random.Random, sim: subprocess.Popen) -> dict:
    t0 = time.monotonic()
    done = Counter()
    broker_threads = []
    victims = iter(rng.sample(range(len(cluster.nodes)), len(cluster.nodes)) * 4)
    for when, what in plan.events:
        while time.monotonic() - t0 < when:
            time.sleep(0.2)
        now = time.monotonic() - t0
        if what == "kill":
            name = rng.choice(members.victims())
            members.kill(name)
            done["kills"] += 1
            say(f"  t+{now:5.1f}s kill {done['kills']:2d}: SIGKILL {name}; starting it again")
            members.start(name)
        elif what == "broker":
            k = next(victims)
            done["brokers"] += 1
            say(f"  t+{now:5.1f}s broker restart {done['brokers']}: SIGKILL node {k + 1}")
            t = threading.Thread(target=restart_broker, args=(cluster.node(k), k), daemon=True)
            t.start()
            broker_threads.append(t)
        elif what.startswith("add:"):
            name = what[4:]
            members.start(name)
            done["added"] += 1
            say(f"  t+{now:5.1f}s add member {name}")
        elif what.startswith("remove:"):
            name = what[7:]
            done["removed"] += 1
            say(f"  t+{now:5.1f}s remove member {name} (SIGTERM)")
            members.terminate(name)
        dead = members.revive_dead()
        if dead:
            say(f"  members that had exited on their own, started again: {', '.join(dead)}")
    for t in broker_threads:
        t.join(300)
    return done


def restart_broker(node, k: int) -> None:
    pid = node.pid()
    if pid is not None:
        os.kill(pid, signal.SIGKILL)
    time.sleep(8)
    took = node.start(progress=lambda m: None)
    say(f"  broker node {k + 1} back in {took:.1f}s")


def settle(settings, members: Members, cfg, hosts: list[str], timeout_s: float = 300.0) -> bool:
    """Wait until the detectors have committed everything and checkpointed it, and the remediators are quiet."""
    from fleetmedic.schemas import Incident, Remediation

    deadline = time.monotonic() + timeout_s
    last_report = 0.0
    remediations_seen, quiet_since = -1, time.monotonic()
    while time.monotonic() < deadline:
        members.revive_dead()
        try:
            caught_up, behind = detectors_caught_up(settings)
            states = read_states(settings, DETECT_GROUP) if caught_up else {}
            covered = caught_up and all(h in states for h in hosts)
            opened = {r.record.id for r in read_all(settings, "incidents.v1", Incident) if r.record.status == "open"}
            rems = [r.record for r in read_all(settings, "remediations.v1", Remediation)]
        except Exception as exc:  # noqa: BLE001 - a broker still electing leaders: look again
            say(f"  settling: {type(exc).__name__}: {exc}")
            time.sleep(2)
            continue
        decided = {r.incident_id for r in rems}
        if len(rems) != remediations_seen:
            remediations_seen, quiet_since = len(rems), time.monotonic()
        quiet = time.monotonic() - quiet_since
        if caught_up and covered and opened <= decided and quiet >= 15:
            say(
                f"  settled: detectors committed to the end, {len(states)} host snapshots, "
                f"{len(opened)} incidents all decided, remediations quiet for {quiet:.0f}s"
            )
            return True
        if time.monotonic() - last_report > 10:
            last_report = time.monotonic()
            say(
                f"  settling: detectors {behind} records behind, snapshots {len(states)}/{len(hosts)}, "
                f"incidents decided {len(opened & decided)}/{len(opened)}, remediations quiet {quiet:.0f}s"
            )
        time.sleep(2)
    say(f"  not settled after {timeout_s:.0f}s: counting what there is")
    return False


def count(settings, cfg, truth: Path, faults: dict, rebalances: int, settled: bool, t_start: float, sim_rc: int) -> int:
    from detectors.config import load_config
    from fleetmedic.schemas import Incident, LogEvent, MetricBatch, Remediation
    from fleetmedic.topics import topic_name
    from review.replay import replay

    expected, values = expected_input(cfg)
    metrics_t, logs_t = topic_name(settings, "metrics.v1"), topic_name(settings, "logs.v1")
    kind_of = {metrics_t: "metrics", logs_t: "logs"}.get
    on_topic = [
        kit.InputRecord(r.topic, r.partition, r.offset, r.record.host)
        for name, model in (("metrics.v1", MetricBatch), ("logs.v1", LogEvent))
        for r in read_all(settings, name, model)
    ]
    committed, _ = committed_and_ends(settings, DETECT_GROUP, ["metrics.v1", "logs.v1"])
    states = read_states(settings, DETECT_GROUP)
    lost = kit.lost_records(expected, on_topic, committed, states, kind_of=kind_of)

    chaos_incidents = [r.record for r in read_all(settings, "incidents.v1", Incident)]
    t = time.perf_counter()
    reference = replay(settings, load_config(None)).incidents
    replay_s = time.perf_counter() - t
    diff = kit.incident_diff(reference, chaos_incidents)
    rems = kit.remediation_runs(r.record for r in read_all(settings, "remediations.v1", Remediation))
    ground = [json.loads(line) for line in truth.read_text().splitlines() if line.strip()]
    ref_found = kit.faults_detected(ground, reference)
    chaos_found = kit.faults_detected(ground, chaos_incidents)

    n_metrics = sum(n for (k, _), n in expected.items() if k == "metrics")
    n_logs = sum(n for (k, _), n in expected.items() if k == "logs")
    rows = [
        (
            "input produced (seeded simulator)",
            f"{n_metrics + n_logs:,}",
            f"{n_metrics:,} metric batches ({values:,} values) + {n_logs:,} log lines, {cfg.nodes} nodes",
        ),
        ("  on the input topics", f"{len(on_topic):,}", "read back, read_committed"),
        (
            "records lost",
            f"{lost.total}",
            f"missing from topic {lost.missing_from_topic}, not committed "
            f"{lost.not_committed}, not in state {lost.not_in_state}",
        ),
        (
            "incidents opened, fault-free run",
            f"{diff.reference_opened}",
            f"replay over the same input ({replay_s:.1f} s)",
        ),
        ("incidents opened, chaos run", f"{diff.chaos_opened}", ""),
        (
            "duplicate incidents",
            f"{diff.duplicates}",
            f"opened again {diff.duplicate_opens}, resolved again "
            f"{diff.duplicate_resolves}, only in chaos run {diff.extra}",
        ),
        (
            "missed faults",
            f"{diff.missed}",
            f"incidents only in the fault-free run; missed resolves {diff.missed_resolves}",
        ),
        (
            "ground-truth faults detected",
            f"{len(chaos_found)} of {len(ground)}",
            f"fault-free run {len(ref_found)} of {len(ground)}",
        ),
        ("incidents with a remediator decision", f"{rems.decided}", ""),
        ("playbook runs", f"{rems.runs}", f"{rems.keys} (incident, action, step) with a run"),
        ("duplicate remediations", f"{rems.duplicates}", "runs beyond the first per (incident, action, step)"),
        ("member kills (SIGKILL)", f"{faults['kills']}", "each started again at once"),
        ("broker restarts (SIGKILL)", f"{faults['brokers']}", "of a 3-broker cluster, RF 3, min ISR 2"),
        ("members added / removed", f"{faults['added']} / {faults['removed']}", ""),
        ("rebalances", f"{rebalances}", "member-set changes seen by the broker, both groups"),
        (
            "settled",
            "yes" if settled else "NO",
            f"whole run {time.monotonic() - t_start:.0f} s wall, load average "
            f"{' '.join(open('/proc/loadavg').read().split()[:3])}",
        ),
    ]
    print()
    print(kit.table(rows))
    for ex in lost.examples + diff.examples + rems.examples:
        print(f"  {ex}")
    print()
    print(
        kit.summary_line(
            faults["kills"], faults["brokers"], rebalances, lost.total, diff.duplicates, diff.missed, rems.duplicates
        ),
        flush=True,
    )
    bad = lost.total or diff.duplicates or diff.missed or diff.missed_resolves or rems.duplicates
    return 1 if bad or not settled or sim_rc != 0 else 0


if __name__ == "__main__":
    sys.exit(main())
