"""Detector benchmark: one command, one table (targets in docs/architecture.md).

    PYTHONPATH=. python bench/detect_bench.py [--records 60000] [--values 100] [--series 1000000]
                                              [--fleet-records 16000] [--no-iforest]
                                              [--only throughput|packaged|latency|memory|checkpoint]
                                              [--checkpoint-hosts 2000] [--profile FILE.prof]

The figures of docs/detectors.md come from that command with its defaults, run twice, with
`uptime` before each run; the table's notes give the load average and the CPU time the
process used, because on a shared 2-core machine the wall-clock figures move with other load.

1. throughput: metric batches pre-produced to a fresh topic set on the broker (settings from
   FLEETMEDIC_* / --config, default 127.0.0.1:19092); one `DetectService` in this process reads
   them from the beginning to the end, decoding, detecting and producing incidents and state
   checkpoints; values/s = values consumed / wall time from the end of the first poll to the
   last commit (group join excluded), and values per CPU second of this process over the same
   span. The process is prepared as `fleetmedic detect` prepares itself (`freeze_heap`).
   `--profile FILE` writes a cProfile of that span (`python -m pstats FILE`). The engine alone
   (records already decoded) is timed too.
   The same run with the packaged configuration itself (detectors/default.yaml as `fleetmedic
   detect` loads it: every static, EWMA and surprise rule, the forest) on `--fleet-records`
   batches from the fleet simulator (100 nodes × 8 GPUs, about 340 values a batch, one a minute
   of event time): the "default configuration" of the targets, read literally.
2. latency: `fleetmedic detect` as its own process; a producer sends batches at a fixed rate (below
   saturation) stamped with the wall clock as event time, every 5th host in every other round carrying a breaching value
   (a static rule, for_s 0, resolve_after_s 0: each one opens an incident); latency = arrival of
   the incident on the incidents topic − its event time.
   The isolation forest is on, as in detectors/default.yaml (IFOREST_CONFIG: the packaged forest's
   window, refit interval, trees and thresholds, on four features aggregated over 10 series each);
   `--no-iforest` leaves it out. Note the event-time compression: the throughput run covers 10 s
   of event time per host and batch, so its 60,000 records span 6,000 s of event time processed
   in seconds, with every forest refitted at each `refit_interval_s` boundary (3600 s packaged);
   live, the same refits are spread over wall-clock hours.
3. memory: an engine fed `--series` distinct series (hosts × 100 values, every series matched by
   one EWMA rule); RSS growth per million series and the detector-state array bytes per series.
4. checkpoint: an engine (the throughput configuration) fed `--checkpoint-hosts` hosts × `--values`
   series for 40 rounds (past the EWMA warm-up, so the state is not all zeros) and checkpointed
   once, then one more round (every host changes); then µs per host of what that second
   checkpoint does per changed host (`Engine.snapshot` + the record's bytes; the steady state, as
   every `checkpoint_interval_s`), of a host's first snapshot (in the notes), and of what a
   restore does per host (parsing the record + `Engine.restore` into a fresh engine); the record
   bytes per host, and those of one host with 1,000 series.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import psutil
from kafka import KafkaConsumer

from detectors.config import DetectorConfig
from detectors.engine import Engine
from detectors.service import DetectService
from fleetmedic.config import TopicSettings, load_settings
from fleetmedic.producer import Producer
from fleetmedic.schemas import DetectorState, Incident, MetricBatch
from fleetmedic.topics import create_topics, topic_name
from fleetmedic.transport import Received, freeze_heap

T0 = datetime(2026, 11, 25, tzinfo=UTC)

BENCH_CONFIG = """
checkpoint_interval_s: 5
static:
  - {name: bench_static, match: ["s0*"], op: ">=", threshold: 1000, for_s: 0, resolve_after_s: 0}
ewma:
  - {name: bench_ewma, match: ["s*"], sigmas: 8, warmup: 30, for_s: 30, resolve_after_s: 60}
"""

LATENCY_CONFIG = """
checkpoint_interval_s: 5
static:
  - {name: trigger, match: ["trigger"], op: ">=", threshold: 1, for_s: 0, resolve_after_s: 0}
ewma:
  - {name: bench_ewma, match: ["s*"], sigmas: 8, warmup: 30, for_s: 30, resolve_after_s: 60}
"""


def _iforest_config() -> str:
    """The packaged configuration's forest (detectors/default.yaml: window, refit interval, trees...),
    with four features aggregated over the bench's series: the forest as it ships, on this load."""
    from detectors.config import load_config

    packaged = load_config().iforest
    params = packaged.model_dump(exclude={"features", "class_label", "kind", "severity", "action_class"})
    lines = ["iforest:"] + [f"  {k}: {json.dumps(v)}" for k, v in params.items() if v is not None]
    return "\n".join(
        lines
        + [
            "  features:",
            '    - {name: f0, match: ["s00*"], agg: max}',
            '    - {name: f1, match: ["s01*"], agg: mean}',
            '    - {name: f2, match: ["s02*"], agg: min}',
            '    - {name: f3, match: ["s03*"], agg: sum}',
            "",
        ]
    )


IFOREST_CONFIG = _iforest_config()


def batch(host: str, step: int, n_values: int, rng, when: datetime | None = None, trigger: float | None = None):
    values = {f"s{i:03d}": float(v) for i, v in enumerate(np.round(50 + rng.normal(0, 1, n_values), 3))}
    if trigger is not None:
        values["trigger"] = trigger
    return MetricBatch(host=host, time=when or T0 + timedelta(seconds=10 * step), source="bench", values=values)


def fresh_settings(base):
    s = base.model_copy(update={"topic_prefix": f"bench{uuid.uuid4().hex[:8]}.", "topics": TopicSettings(partitions=6)})
    create_topics(s)
    return s


def config_from(text: str) -> DetectorConfig:
    import yaml

    return DetectorConfig.model_validate(yaml.safe_load(text))


def bench_records(n_records: int, n_values: int, n_hosts: int = 100) -> list[MetricBatch]:
    """The bench's own batches: `n_values` noisy series per host, every 10 s of event time."""
    rng = np.random.default_rng(0)
    return [batch(f"h{i % n_hosts:05d}", i // n_hosts, n_values, rng) for i in range(n_records)]


def fleet_records(n_records: int, nodes: int = 100, gpus: int = 8) -> list[MetricBatch]:
    """Batches as `fleetmedic simulate` makes them (seed 0, its default faults): 8-GPU nodes with
    every series the packaged configuration's rules, forests and fault features look at (about
    340 values a batch, 190 of them counters), one batch a node a minute."""
    from ingest.simulator import FleetSimulator, SimConfig

    ticks = -(-n_records // nodes)
    sim = FleetSimulator(SimConfig(nodes=nodes, gpus=gpus, seconds=ticks * 60.0, interval_s=60.0, seed=0))
    return [b for k in range(sim.cfg.ticks) for b in sim.tick(k)[0]][:n_records]


def throughput(base, records: list[MetricBatch], config: DetectorConfig, profile: str | None = None) -> dict:
    settings = fresh_settings(base)
    n_records, n_values = len(records), sum(len(r.values) for r in records)
    topic = topic_name(settings, "metrics.v1")
    t = time.perf_counter()
    with Producer(settings) as producer:
        for r in records:
            producer.send_raw(topic, r.to_bytes(), r.key())
    produce_s = time.perf_counter() - t

    service = DetectService(
        settings,
        Engine(config),
        group_id="bench",
        **({"transactional_id": None} if NO_TRANSACTIONS else {}),
    )
    freeze_heap()  # as `fleetmedic detect` does before its loop
    # timed from the end of the first batch (group join excluded) to the last commit
    while service.loop.run_once() == 0:
        pass
    profiler = cProfile.Profile() if profile else None
    load_before = os.getloadavg()[0]
    t, cpu = time.perf_counter(), time.process_time()
    first_n = service.loop.stats.consumed
    if profiler:
        profiler.enable()
    service.run(until=lambda svc: svc.loop.stats.consumed >= n_records, install_signals=False)
    if profiler:
        profiler.disable()
        profiler.dump_stats(profile)
    kafka_s, cpu_s = time.perf_counter() - t, time.process_time() - cpu
    values_after_first = sum(len(r.values) for r in records[first_n:])

    engine = Engine(config)
    received = [Received(r, topic, 0, i, 0, None) for i, r in enumerate(records)]
    t = time.perf_counter()
    for lo in range(0, len(received), 2000):
        engine.process(received[lo : lo + 2000])
    engine_s = time.perf_counter() - t
    return {
        "values": values_after_first,
        "kafka_s": kafka_s,
        "kafka_vps": values_after_first / kafka_s,
        "cpu_vps": values_after_first / cpu_s,
        "load": (load_before, os.getloadavg()[0]),
        "engine_vps": n_values / engine_s,
        "produce_vps": n_values / produce_s,
        "per_batch": n_values / n_records,
        "incidents": service.engine.stats.incidents,
        "forest_fits": _fits(service.engine),
        "forest_fit_s": _fits(service.engine, "fit_seconds_"),
    }


def _packaged(iforest: bool) -> DetectorConfig:
    """detectors/default.yaml as `fleetmedic detect` loads it (`--no-iforest`: its forest off)."""
    from detectors.config import load_config

    cfg = load_config()
    if iforest or cfg.iforest is None:
        return cfg
    return cfg.model_copy(update={"iforest": cfg.iforest.model_copy(update={"enabled": False})})


def _fits(engine: Engine, what: str = "n_fits_"):
    """Isolation-forest refits (or seconds spent in them) of an engine's forests, 0 without."""
    return sum(getattr(s.forest, what) for s in engine.forests.streams.values()) if engine.forests else 0


def latency(base, rate_per_s: float, n_values: int, seconds: float, extra: str = "") -> dict:
    settings = fresh_settings(base)
    cfg = Path(tempfile.mkdtemp()) / "latency.yaml"
    cfg.write_text(LATENCY_CONFIG + extra)
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
        "FLEETMEDIC_BOOTSTRAP_SERVERS": ",".join(settings.bootstrap_servers),
        "FLEETMEDIC_TOPIC_PREFIX": settings.topic_prefix,
        "FLEETMEDIC_TOPICS__PARTITIONS": "6",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "fleetmedic.cli", "detect", "--detectors", str(cfg), "--group", "bench-latency"]
        + (["--no-transactions"] if NO_TRANSACTIONS else []),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    lat: list[float] = []
    stop = threading.Event()

    def read_incidents():
        consumer = KafkaConsumer(
            topic_name(settings, "incidents.v1"),
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            group_id=None,
            **settings.kafka_kwargs(),
        )
        while not stop.is_set():
            for msgs in consumer.poll(timeout_ms=100).values():
                now = datetime.now(UTC)
                for m in msgs:
                    inc = Incident.model_validate_json(m.value)
                    if inc.status == "open" and inc.kind == "trigger":
                        lat.append((now - inc.time).total_seconds() * 1000)
        consumer.close()

    reader = threading.Thread(target=read_incidents, daemon=True)
    reader.start()
    rng = np.random.default_rng(1)
    try:
        time.sleep(8)  # the detect process joins its group (not part of the measurement)
        with Producer(settings, linger_ms=0) as producer:
            period = 1.0 / rate_per_s
            start = time.perf_counter()
            i = 0
            while time.perf_counter() - start < seconds:
                when = datetime.now(UTC)
                r = batch(
                    f"h{i % 50:03d}", i, n_values, rng, when=when, trigger=1.0 if (i // 50) % 2 and i % 5 == 0 else 0.0
                )
                producer.send(r)
                i += 1
                time.sleep(max(0.0, start + i * period - time.perf_counter()))
        time.sleep(3)
    finally:
        stop.set()
        proc.terminate()
        proc.wait(30)
        reader.join(5)
    a = np.array(lat)
    return {
        "rate_vps": rate_per_s * (n_values + 1),
        "n": len(a),
        "p50": float(np.percentile(a, 50)) if len(a) else float("nan"),
        "p99": float(np.percentile(a, 99)) if len(a) else float("nan"),
    }


def memory(n_series: int, n_values: int = 100) -> dict:
    gc.collect()
    rss0 = psutil.Process().memory_info().rss
    engine = Engine(config_from(BENCH_CONFIG.replace('["s0*"]', '["none"]')))
    names = [f"s{i:03d}" for i in range(n_values)]
    values = dict.fromkeys(names, 50.0)
    n_hosts = n_series // n_values
    chunk = []
    for h in range(n_hosts):
        r = MetricBatch.model_construct(
            host=f"h{h:07d}", time=T0, source="bench", labels={}, values=values, counters=[]
        )
        chunk.append(Received(r, "m", 0, h, 0, None))
        if len(chunk) == 1000:
            engine.process(chunk)
            chunk = []
    if chunk:
        engine.process(chunk)
    gc.collect()
    rss = psutil.Process().memory_info().rss - rss0
    return {
        "series": len(engine.slot_name),
        "rss_per_million_mib": rss / 2**20 * 1e6 / len(engine.slot_name),
        "rss_bytes_per_series": rss / len(engine.slot_name),
        "array_bytes_per_series": engine.bytes_per_series(),
    }


def _feed(engine: Engine, n_hosts: int, n_values: int, steps: range, rng) -> None:
    """Every host through one record of noisy values per step (offsets: one partition per host % 6)."""
    names = [f"s{i:03d}" for i in range(n_values)]
    for step in steps:
        chunk = []
        levels = np.round(50 + rng.normal(0, 1, (n_hosts, n_values)), 3).tolist()
        for h in range(n_hosts):
            r = MetricBatch.model_construct(
                host=f"h{h:05d}",
                time=T0 + timedelta(seconds=10 * step),
                source="bench",
                labels={},
                values=dict(zip(names, levels[h], strict=True)),
                counters=[],
            )
            chunk.append(Received(r, "bench.metrics.v1", h % 6, step, 0, None))
        engine.process(chunk)


def _timed_checkpoint(engine: Engine) -> tuple[list[bytes], float, float]:
    """The state records of every host, as DetectService makes them: (records, snapshot s, to-bytes s)."""
    t = time.perf_counter()
    snapshots = [engine.snapshot(h) for h in sorted(engine.hosts)]
    snapshot_s = time.perf_counter() - t
    t = time.perf_counter()
    blobs = [s.to_bytes() for s in snapshots]
    return blobs, snapshot_s, time.perf_counter() - t


def checkpoint(n_hosts: int, n_values: int, rounds: int = 40) -> dict:
    rng = np.random.default_rng(2)
    engine = Engine(config_from(BENCH_CONFIG))
    _feed(engine, n_hosts, n_values, range(rounds), rng)
    _, first_s, _ = _timed_checkpoint(engine)  # a host's first checkpoint since start
    _feed(engine, n_hosts, n_values, range(rounds, rounds + 1), rng)  # every host changes again
    blobs, snapshot_s, encode_s = _timed_checkpoint(engine)  # the steady state: checkpoint after checkpoint
    fresh = Engine(config_from(BENCH_CONFIG))
    t = time.perf_counter()
    for b in blobs:
        fresh.restore(DetectorState.model_validate_json(b))
    restore_s = time.perf_counter() - t
    big = Engine(config_from(BENCH_CONFIG))
    _feed(big, 1, 1000, range(rounds), rng)
    us = lambda s: s / n_hosts * 1e6  # noqa: E731
    return {
        "snapshot_us": us(snapshot_s),
        "first_snapshot_us": us(first_s),
        "encode_us": us(encode_s),
        "restore_us": us(restore_s),
        "bytes": sum(map(len, blobs)) / n_hosts,
        "big_bytes": len(big.snapshot("h00000").to_bytes()),
        "hosts": n_hosts,
    }


NO_TRANSACTIONS = False  # --no-transactions


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", help="fleetmedic settings YAML (broker address)")
    ap.add_argument("--records", type=int, default=60000)
    ap.add_argument("--values", type=int, default=100, help="values per metric batch")
    ap.add_argument("--series", type=int, default=1_000_000)
    ap.add_argument("--fleet-records", type=int, default=16000, help="packaged run: simulated batches")
    ap.add_argument("--rate", type=float, default=100.0, help="latency run: batches per second")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument(
        "--no-iforest",
        dest="iforest",
        action="store_false",
        help="leave out the isolation forest (on by default, as in detectors/default.yaml)",
    )
    ap.add_argument("--checkpoint-hosts", type=int, default=2000, help="checkpoint run: hosts of --values series")
    ap.add_argument(
        "--only",
        action="append",
        choices=("throughput", "packaged", "latency", "memory", "checkpoint"),
        help="run only these parts (repeatable; default: all)",
    )
    ap.add_argument(
        "--no-transactions",
        action="store_true",
        help="run the detector at-least-once (the figures before exactly-once, for comparison)",
    )
    ap.add_argument("--profile", metavar="FILE", help="write a cProfile of the throughput run's detect loop")
    args = ap.parse_args()
    global NO_TRANSACTIONS
    NO_TRANSACTIONS = args.no_transactions
    base = load_settings(args.config)
    parts = set(args.only or ("throughput", "packaged", "latency", "memory", "checkpoint"))
    extra = IFOREST_CONFIG if args.iforest else ""
    nan = float("nan")

    mem = (
        memory(args.series, args.values)
        if "memory" in parts
        else dict.fromkeys(("rss_per_million_mib", "rss_bytes_per_series", "array_bytes_per_series", "series"), nan)
    )
    skipped = dict.fromkeys(
        ("kafka_vps", "engine_vps", "produce_vps", "values", "kafka_s", "forest_fits", "forest_fit_s", "cpu_vps"), nan
    ) | {"load": (nan, nan), "per_batch": nan}
    tp = (
        throughput(
            base, bench_records(args.records, args.values), config_from(BENCH_CONFIG + extra), profile=args.profile
        )
        if "throughput" in parts
        else skipped
    )
    # The packaged configuration itself (detectors/default.yaml: every rule, the surprise scorer
    # on GPU power, the forest) on the simulator's batches: "the default configuration" read literally.
    packaged = (
        throughput(base, fleet_records(args.fleet_records), _packaged(args.iforest)) if "packaged" in parts else skipped
    )
    cp = (
        checkpoint(args.checkpoint_hosts, args.values)
        if "checkpoint" in parts
        else dict.fromkeys(
            ("snapshot_us", "first_snapshot_us", "encode_us", "restore_us", "bytes", "big_bytes", "hosts"), nan
        )
    )
    lt = (
        latency(base, args.rate, args.values, args.seconds, extra=extra)
        if "latency" in parts
        else dict.fromkeys(("p50", "p99", "n", "rate_vps"), nan)
    )

    cpu = os.cpu_count()
    forest = (
        f", isolation forest on: {tp['forest_fits']} refits taking {tp['forest_fit_s']:.2f} s of the Kafka run"
        if args.iforest
        else ""
    )
    print(
        f"\nfleetmedic detector benchmark ({cpu} CPUs, broker {','.join(base.bootstrap_servers)}{forest}, "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())})\n"
    )
    rows = [
        (
            "throughput, Kafka in → incidents out, 1 process",
            f"{tp['kafka_vps']:,.0f} values/s",
            "≥ 1,000,000 values/s",
            f"{tp['values']:,} values in {tp['kafka_s']:.2f} s, {args.values}/batch, "
            f"load average {tp['load'][0]:.2f} → {tp['load'][1]:.2f}",
        ),
        ("  per CPU second of the process", f"{tp['cpu_vps']:,.0f} values/s", "", "all its threads"),
        ("  engine alone (decoded records)", f"{tp['engine_vps']:,.0f} values/s", "", ""),
        ("  producing the input (for scale)", f"{tp['produce_vps']:,.0f} values/s", "", ""),
        (
            "throughput, packaged configuration, simulated 8-GPU nodes",
            f"{packaged['kafka_vps']:,.0f} values/s",
            "≥ 1,000,000 values/s",
            f"{packaged['values']:,} values in {packaged['kafka_s']:.2f} s, {packaged['per_batch']:.0f}/batch, "
            f"{packaged['forest_fits']} forest refits, "
            f"load average {packaged['load'][0]:.2f} → {packaged['load'][1]:.2f}",
        ),
        ("  per CPU second of the process", f"{packaged['cpu_vps']:,.0f} values/s", "", "all its threads"),
        ("  engine alone (decoded records)", f"{packaged['engine_vps']:,.0f} values/s", "", ""),
        (
            "event-to-incident latency p50",
            f"{lt['p50']:.1f} ms",
            "",
            f"{lt['n']} incidents at {lt['rate_vps']:,.0f} values/s",
        ),
        ("event-to-incident latency p99", f"{lt['p99']:.1f} ms", "≤ 250 ms", ""),
        (
            "RSS per million EWMA series",
            f"{mem['rss_per_million_mib']:,.0f} MiB",
            "≤ 1024 MiB",
            f"{mem['series']:,} series",
        ),
        (
            "detector state arrays per series",
            f"{mem['array_bytes_per_series']:.0f} bytes",
            "≤ 256 bytes",
            f"RSS {mem['rss_bytes_per_series']:.0f} bytes/series incl. the series table",
        ),
        (
            "checkpoint per changed host",
            f"{cp['snapshot_us'] + cp['encode_us']:,.0f} µs",
            "",
            f"snapshot {cp['snapshot_us']:,.0f} µs + record bytes {cp['encode_us']:,.0f} µs; "
            f"{cp['hosts']:,} hosts × {args.values} series; a host's first snapshot {cp['first_snapshot_us']:,.0f} µs",
        ),
        ("  restore per host", f"{cp['restore_us']:,.0f} µs", "", "parse the record + Engine.restore"),
        (
            "  state record per host",
            f"{cp['bytes']:,.0f} bytes",
            "",
            f"a 1,000-series host: {cp['big_bytes']:,.0f} bytes",
        ),
    ]
    w = [max(len(r[i]) for r in rows) for i in range(4)]
    head = ("what", "measured", "target", "notes")
    w = [max(a, len(b)) for a, b in zip(w, head, strict=True)]
    line = lambda r: "| " + " | ".join(c.ljust(n) for c, n in zip(r, w, strict=True)) + " |"  # noqa: E731
    print(line(head))
    print("|" + "|".join("-" * (n + 2) for n in w) + "|")
    for r in rows:
        print(line(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
