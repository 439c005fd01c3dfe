"""`fleetmedic detect` (the detection consumer), and the detector stage's commands (`COMMANDS`).

The stage's other commands live beside what they drive: `fleetmedic model train|explain` in
`detectors.model_cli`, `fleetmedic eval nab` and `fleetmedic detect csv` (added under `detect`
through `register_detect`) in `detectors.eval_cli`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from . import eval_cli, model_cli

log = logging.getLogger(__name__)


def cmd_detect(args: argparse.Namespace) -> int:
    from fleetmedic.extras import require

    require("detect", "fleetmedic detect")
    from fleetmedic.cli import settings_from
    from fleetmedic.transport import freeze_heap

    from .config import load_config
    from .engine import Engine
    from .service import DetectService

    config = load_config(args.detectors)
    try:
        engine = Engine(config)
    except ValueError as exc:  # e.g. a fault model file that cannot be loaded
        print(f"fleetmedic detect: {exc}", file=sys.stderr)
        return 2
    settings = settings_from(args)
    no_transactions: dict[str, Any] = {"transactional_id": None} if args.no_transactions else {}
    service = DetectService(
        settings,
        engine,
        group_id=args.group,
        session_timeout_ms=int(args.session_timeout_s * 1000),
        heartbeat_interval_ms=max(500, int(args.session_timeout_s * 1000) // 4),
        **no_transactions,
    )
    from fleetmedic import metrics

    server = metrics.serve_for(args, "detect")
    if server is not None:
        server.ready_when(metrics.loop_ready(service.loop))
    print(
        f"detect: group {args.group}, {len(service.engine.rules)} series rules, consuming "
        f"{settings.topic_prefix}metrics.v1 and {settings.topic_prefix}logs.v1",
        flush=True,
    )
    freeze_heap()
    try:
        stats = service.run()
    finally:
        if server is not None:
            server.close()
    forests = f"; isolation forests: {service.engine.forests.stats}" if service.engine.forests else ""
    print(f"detect: stopped; {stats}{forests}", flush=True)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "detect",
        help="run the streaming detectors (metrics and logs in, incidents out)",
        description="A consumer-group member: reads metric batches and log events, runs the "
        "configured EWMA, static-threshold and univariate rules and the XID log "
        "rules by event time, writes incident records (open, update, resolve), and "
        "checkpoints its state to the compacted state topic. Run several to scale "
        "out. SIGTERM finishes the batch, checkpoints, commits and exits.",
    )
    p.add_argument(
        "--detectors",
        metavar="FILE",
        default=None,
        help="detector configuration YAML (default: the packaged detectors/default.yaml)",
    )
    p.add_argument("--group", default="detectors", help="consumer group id (default: detectors)")
    p.add_argument(
        "--session-timeout-s",
        type=float,
        default=10.0,
        metavar="S",
        help="consumer-group session timeout: how soon a crashed member's partitions move "
        "(default 10; the broker allows 6 to 1800)",
    )
    p.add_argument(
        "--no-transactions",
        action="store_true",
        help="at-least-once instead of exactly-once (no Kafka transactions): a crash between "
        "the results and the commit may repeat incidents; for comparison and old brokers",
    )
    from fleetmedic.metrics import add_arguments as add_metrics_arguments

    add_metrics_arguments(p)
    p.set_defaults(func=cmd_detect)
    eval_cli.register_detect(p.add_subparsers(dest="detect_command", metavar="SUBCOMMAND"))


# The stage's top-level commands, in the order `fleetmedic --help` lists them.
COMMANDS = (register, model_cli.register, eval_cli.register)
