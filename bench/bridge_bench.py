"""The Prometheus bridge at fleet scale: N simulated targets at one interval, scraped by one process.

    PYTHONPATH=. python bench/bridge_bench.py [--targets 2000] [--interval 15] [--intervals 3]
                                              [--samples 300] [--workers 32] [--no-kafka]

A child process serves every target (one HTTP server, path /t/N/metrics, a synthetic exposition
of --samples gauge and counter samples in families of 8, served by asyncio); this process runs the bridge's own parts
(`ingest.promsd.FileSD` over a generated target file, `ScrapePool`, and the exporter's
`Publisher` into the broker of the settings, FLEETMEDIC_BOOTSTRAP_SERVERS, with a fresh topic
prefix; --no-kafka counts batches without publishing). It measures --intervals intervals after
one interval of warm-up and prints: scrapes done against due, failures, skips (a target still in
flight when due again), how late each scrape started after its due time, the bridge's CPU
(user+system of this process only: the target server is another process), its peak RSS, and the
load average before and after (the machine may be shared: read the CPU figure with it).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SERVER = r"""
import asyncio, random, sys
samples = int(sys.argv[1])
lines = []
for f in range(0, samples, 8):  # families of 8 samples (one per device), like node_exporter/dcgm
    kind = "counter" if (f // 8) % 2 else "gauge"
    name = f"sim_family_{f // 8}" + ("_total" if kind == "counter" else "")
    lines += [f"# HELP {name} simulated family {f // 8}", f"# TYPE {name} {kind}"]
    lines += [f'{name}{{device="dev{d}",kind="sim"}} {random.random() * 100:.3f}' for d in range(min(8, samples - f))]
body = ("\n".join(lines) + "\n").encode()
head = (f"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n").encode()
async def answer(reader, writer):
    try:
        while (await reader.readline()) not in (b"\r\n", b"\n", b""):
            pass
        writer.write(head + body)
        await writer.drain()
    finally:
        writer.close()
async def main():
    server = await asyncio.start_server(answer, "127.0.0.1", 0, backlog=4096)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()
asyncio.run(main())
"""


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().split(" ", 3)[:3].__str__()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--targets", type=int, default=2000)
    ap.add_argument("--interval", type=float, default=15.0)
    ap.add_argument("--intervals", type=int, default=3, help="measured intervals (after one of warm-up)")
    ap.add_argument("--samples", type=int, default=300, help="samples per target exposition")
    ap.add_argument("--workers", type=int, default=32)
    ap.add_argument("--no-kafka", action="store_true")
    args = ap.parse_args()

    from fleetmedic.config import load_settings
    from fleetmedic.topics import create_topics
    from ingest.promsd import FileSD, ScrapePool
    from ingest.publisher import ExporterHealth, Publisher

    load_before = Path("/proc/loadavg").read_text().split()[:3]
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(args.samples)], stdout=subprocess.PIPE, text=True)
    try:
        port = int(server.stdout.readline())
        work = Path(tempfile.mkdtemp(prefix="bridge-bench-"))
        sd_file = work / "targets.json"
        sd_file.write_text(
            json.dumps(
                [
                    {
                        "targets": [f"127.0.0.1:{port}"],
                        "labels": {
                            "__metrics_path__": f"/t/{i}/metrics",
                            "host": f"sim-node-{i:04d}",
                            "class": "h100x8",
                        },
                    }
                    for i in range(args.targets)
                ]
            )
        )
        publisher = None
        if not args.no_kafka:
            settings = load_settings(None).model_copy(update={"topic_prefix": f"bench{uuid.uuid4().hex[:8]}."})
            create_topics(settings)
            publisher = Publisher(settings, ExporterHealth("prom"), spool=None)
        sd = FileSD([str(sd_file)], default_interval_s=args.interval, default_timeout_s=min(10.0, args.interval))
        pool = ScrapePool(workers=args.workers)
        sd.refresh(force=True)
        pool.set_targets(sd.targets())

        def run_for(seconds: float) -> tuple[int, int]:
            batches = values = 0
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                if sd.refresh():
                    pool.set_targets(sd.targets())
                done = pool.poll()
                if done:
                    records = [b for _, b, _ in done]
                    batches += len(records)
                    values += sum(len(b.values) for b in records)
                    if publisher is not None:
                        publisher.publish(records)
                else:
                    time.sleep(0.05)
            return batches, values

        run_for(args.interval)  # warm-up: every target's first scrape is spread over one interval
        pool.keep_late = 10**7
        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.monotonic()
        batches, values = run_for(args.interval * args.intervals)
        wall = time.monotonic() - t0
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
        pool.close()
        if publisher is not None:
            publisher.close()
        t1 = t0 + wall
        # scrapes due inside the measured window, whenever they finished (late ones drained at the end)
        drain_end = time.monotonic() + args.interval
        while pool.poll() or time.monotonic() < drain_end and len(pool._running):
            time.sleep(0.05)
        window = [(d, x) for d, x in pool.stats.late_s if t0 <= d < t1]
        late = sorted(x for _, x in window)

        pool.close()
        if publisher is not None:
            publisher.close()

        def pct(p: float) -> float:
            return late[min(len(late) - 1, int(p * len(late)))] if late else float("nan")

        due = args.targets * args.intervals
        rows = [
            (
                "targets × interval",
                f"{args.targets} × {args.interval:g} s, {args.samples} samples each, {args.workers} workers",
            ),
            ("measured wall time", f"{wall:.1f} s ({args.intervals} intervals after 1 of warm-up)"),
            ("scrapes started / due in the window", f"{len(window)} / {due} ({len(window) / due * 100:.1f} %)"),
            ("failed, skipped (whole run)", f"{pool.stats.failed}, {pool.stats.skipped}"),
            (
                "start lateness p50 / p99 / max",
                f"{pct(0.5) * 1000:.0f} / {pct(0.99) * 1000:.0f} / "
                f"{(late[-1] if late else float('nan')) * 1000:.0f} ms",
            ),
            (
                "batches, values per second",
                f"{batches / wall:.1f}, {values / wall:,.0f}"
                + (" (counted, not published: --no-kafka)" if args.no_kafka else " (acknowledged by Kafka)"),
            ),
            ("bridge CPU", f"{cpu:.1f} s in {wall:.1f} s = {cpu / wall * 100:.0f} % of one core"),
            ("bridge peak RSS", f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB"),
            (
                "load average before / after",
                f"{' '.join(load_before)} / {' '.join(Path('/proc/loadavg').read_text().split()[:3])}"
                f" on {os.cpu_count()} CPUs",
            ),
        ]
        width = max(len(k) for k, _ in rows)
        print(f"\nPrometheus bridge, one process ({'into Kafka' if not args.no_kafka else 'no Kafka'})")
        for k, v in rows:
            print(f"  {k:<{width}}  {v}")
        return 0
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    sys.exit(main())
