"""`fleetmedic simulate`: the synthetic fleet published to Kafka, and its arguments."""

from __future__ import annotations

import argparse
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

from fleetmedic.cli import settings_from

from .export_cli import ensure_topics


def cmd_simulate(args: argparse.Namespace) -> int:
    from .publisher import ExporterHealth, Publisher
    from .sim_faults import FAULT_KINDS
    from .sim_run import run_simulation
    from .simulator import SimConfig

    try:
        start = datetime.fromisoformat(args.start.replace("Z", "+00:00")) if args.start else None
        if start is not None and start.tzinfo is None:
            start = start.replace(tzinfo=UTC)
        kinds = tuple(k.strip() for k in args.fault_kinds.split(",") if k.strip()) if args.fault_kinds else FAULT_KINDS
        cfg = SimConfig(
            nodes=args.nodes,
            gpus=args.gpus,
            seconds=args.seconds,
            interval_s=args.interval,
            seed=args.seed,
            faults=args.faults,
            fault_kinds=kinds,
            start=start or (datetime.now(UTC).replace(microsecond=0) if args.realtime else SimConfig.start),
        )
    except ValueError as exc:
        print(f"fleetmedic simulate: {exc}", file=sys.stderr)
        return 2
    settings = settings_from(args)
    truth = Path(args.truth) if args.truth else settings.state_dir / "sim-ground-truth.jsonl"
    health = ExporterHealth("sim")
    publisher = None
    if not args.dry_run:
        ensure_topics(settings, "simulate")
        publisher = Publisher(settings, health, spool=None, ack_timeout_s=args.ack_timeout)
    stop = threading.Event()
    from fleetmedic.lifecycle import stop_on_signals

    stop_on_signals(stop)
    try:
        run_simulation(
            cfg,
            publisher.publish if publisher else (lambda records: None),
            realtime=args.realtime,
            speed=args.speed,
            truth_path=truth,
            progress=lambda m: print(m, flush=True),
            stop=stop.is_set,
        )
    finally:
        if publisher:
            publisher.close()
    if health.dropped:
        print(
            f"simulate: {health.dropped} records could not be delivered (last error: {health.last_error})",
            file=sys.stderr,
        )
        return 1
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """`fleetmedic simulate` and its arguments."""
    p = sub.add_parser(
        "simulate",
        help="a synthetic GPU fleet with injected faults, published to Kafka",
        description="N nodes × G GPUs with daily load cycles, noise and log chatter, and a seeded "
        "schedule of faults (XID bursts, thermal runaway, ECC growth, memory leak, disk "
        "filling, service crash, NVLink errors) whose ground truth goes to --truth.",
    )
    p.add_argument("--nodes", type=int, default=8)
    p.add_argument("--gpus", type=int, default=4, help="GPUs per node")
    p.add_argument("--seconds", type=float, default=600.0, help="simulated span")
    p.add_argument("--interval", type=float, default=10.0, help="simulated seconds between metric batches")
    p.add_argument(
        "--start", default=None, help="simulated start, ISO UTC (default 2026-01-01T00:00:00Z; now with --realtime)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--faults", type=int, default=None, help="how many faults (default: nodes/4, at least 1)")
    p.add_argument("--fault-kinds", default=None, metavar="K1,K2", help="limit to these fault kinds")
    p.add_argument(
        "--truth",
        default=None,
        metavar="FILE",
        help="ground truth, one JSON line per fault (default: STATE_DIR/sim-ground-truth.jsonl)",
    )
    p.add_argument("--realtime", action="store_true", help="pace the simulated clock to the wall clock (demos)")
    p.add_argument("--speed", type=float, default=1.0, help="with --realtime: simulated seconds per wall second")
    p.add_argument("--dry-run", action="store_true", help="generate without publishing (no broker needed)")
    p.add_argument(
        "--ack-timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="how long a batch may wait for the broker's acknowledgement before it is dropped (and "
        "counted): longer rides out a leader election after a broker dies (make chaos)",
    )
    p.set_defaults(func=cmd_simulate)
