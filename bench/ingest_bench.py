"""Sustained rates the simulator and the exporters push into Kafka, printed as a table.

    PYTHONPATH=. python bench/ingest_bench.py [--nodes 1000] [--gpus 8] [--ticks 6] [--quick]

Uses the broker of the settings (FLEETMEDIC_BOOTSTRAP_SERVERS, default 127.0.0.1:19092) with a
fresh topic prefix. "into Kafka" rows count a record only once the broker acknowledged it
(the publisher flushes with acks=all); "generate only" rows show the cost without Kafka.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fleetmedic.config import load_settings  # noqa: E402
from fleetmedic.schemas import MetricBatch  # noqa: E402
from fleetmedic.topics import create_topics  # noqa: E402
from ingest.follow import LogFollower  # noqa: E402
from ingest.host import HostCollector  # noqa: E402
from ingest.logparse import parse_line  # noqa: E402
from ingest.node_cli import log_events  # noqa: E402
from ingest.prom import Target, scrape  # noqa: E402
from ingest.publisher import ExporterHealth, Publisher  # noqa: E402
from ingest.sim_run import run_simulation  # noqa: E402
from ingest.simulator import SimConfig  # noqa: E402

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"
ROWS: list[tuple[str, str, float, float, float]] = []


def row(what: str, setup: str, records: int, values: int, seconds: float) -> None:
    ROWS.append((what, setup, records / seconds, values / seconds, seconds))
    print(f"  measured {what} ({setup}): {records} records in {seconds:.2f}s", file=sys.stderr, flush=True)


def bench_simulator(settings, nodes: int, gpus: int, ticks: int) -> None:
    cfg = SimConfig(nodes=nodes, gpus=gpus, seconds=ticks * 10, interval_s=10, seed=1, faults=max(1, nodes // 4))
    t = time.perf_counter()
    stats = run_simulation(cfg, lambda records: None)
    row(
        "simulate, generate only",
        f"{nodes} nodes x {gpus} GPUs, {ticks} ticks",
        stats.batches + stats.logs,
        stats.values,
        time.perf_counter() - t,
    )
    health = ExporterHealth("bench-sim")
    pub = Publisher(settings, health)
    t = time.perf_counter()
    stats = run_simulation(cfg, pub.publish, flush_every=2000)
    pub.close()
    took = time.perf_counter() - t
    assert health.sent == stats.batches + stats.logs and health.dropped == 0, health
    row("simulate -> Kafka", f"{nodes} nodes x {gpus} GPUs, {ticks} ticks", health.sent, stats.values, took)


def bench_host(settings, n: int) -> None:
    collector = HostCollector()
    t = time.perf_counter()
    values = 0
    for _ in range(n):
        v, _ = collector.collect()
        values += len(v)
    row("host collect only", f"this machine, {n} collections", n, values, time.perf_counter() - t)
    pub = Publisher(settings, ExporterHealth("bench-host"))
    t = time.perf_counter()
    values = 0
    for _ in range(n):
        v, c = collector.collect()
        values += len(v)
        pub.publish([MetricBatch(host="bench-host", time=datetime.now(UTC), source="host", values=v, counters=c)])
    pub.close()
    row("host -> Kafka", f"one batch per publish (acks=all), {n}", n, values, time.perf_counter() - t)


def bench_logs(settings, n: int) -> None:
    lines = [
        "Nov 25 04:00:01 gpu7 kernel: [1234.5678] NVRM: Xid (PCI:0000:3b:00): 79, pid=1911, "
        "GPU has fallen off the bus.",
        "Nov 25 04:00:01 gpu7 sshd[811]: Accepted publickey for ubuntu from 10.0.0.1 port 5555 ssh2",
        "Nov 25 04:00:02 gpu7 systemd[1]: slurmd.service: Main process exited, code=killed, status=9/KILL",
        "Nov 25 04:00:03 gpu7 kernel: Out of memory: Killed process 4242 (python3) total-vm:812345kB, "
        "anon-rss:600000kB, file-rss:1024kB, shmem-rss:0kB",
    ]
    t = time.perf_counter()
    for i in range(n):
        parse_line(lines[i % len(lines)])
    row("log parse only", f"{n} syslog lines, mixed kinds", n, 0, time.perf_counter() - t)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kern.log"
        path.write_text("".join(lines[i % len(lines)] + "\n" for i in range(n)))
        follower = LogFollower([path])
        pub = Publisher(settings, ExporterHealth("bench-logs"))
        t = time.perf_counter()
        sent = 0
        while sent < n:
            batch = follower.poll(limit=5000)
            pub.publish(log_events(batch, "bench-logs"))
            sent += len(batch)
        pub.close()
        follower.close()
        row("logs follow+parse -> Kafka", f"{n} lines from a file", n, 0, time.perf_counter() - t)


def bench_prom(settings, n: int) -> None:
    body = (DATA / "node_exporter.txt").read_bytes() + (DATA / "dcgm_exporter.txt").read_bytes()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    target = Target.of(f"http://127.0.0.1:{httpd.server_address[1]}/metrics", host="bench-prom")
    pub = Publisher(settings, ExporterHealth("bench-prom"))
    t = time.perf_counter()
    values = 0
    for _ in range(n):
        batch, error = scrape(target)
        assert error is None, error
        values += len(batch.values)
        pub.publish([batch])
    pub.close()
    httpd.shutdown()
    row("prom scrape -> Kafka", f"node_exporter+dcgm text, {n} scrapes", n, values, time.perf_counter() - t)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--ticks", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    args = parser.parse_args()
    if args.quick:
        args.nodes, args.ticks = 50, 3
    base = load_settings()
    settings = base.model_copy(update={"topic_prefix": f"bench{uuid.uuid4().hex[:8]}."})
    create_topics(settings)
    print(
        f"ingest bench: broker {settings.bootstrap_servers[0]}, topics {settings.topic_prefix}*, {os.cpu_count()} CPUs",
        flush=True,
    )
    bench_simulator(settings, args.nodes, args.gpus, args.ticks)
    bench_host(settings, 20 if args.quick else 100)
    bench_logs(settings, 5_000 if args.quick else 50_000)
    bench_prom(settings, 20 if args.quick else 100)
    print(f"\n{'what':30s} {'setup':40s} {'records/s':>12s} {'values/s':>12s} {'seconds':>8s}")
    for what, setup, rps, vps, secs in ROWS:
        print(f"{what:30s} {setup:40s} {rps:12,.0f} {vps:12,.0f} {secs:8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
