"""`fleetmedic detect` (the detection consumer) and `fleetmedic model train|explain` (the fault model).

`detect` hosts sub-commands of other detector modules too: `detectors.eval_cli` (the NAB
evaluation), when present, adds `detect csv` through `register_detect`.
"""

from __future__ import annotations

import importlib
import logging
import sys

log = logging.getLogger(__name__)


def cmd_detect(args) -> int:
    from fleetmedic.cli import settings_from
    from fleetmedic.transport import freeze_heap
    from .config import load_config
    from .engine import DetectService, Engine

    config = load_config(args.detectors)
    try:
        engine = Engine(config)
    except ValueError as exc:  # e.g. a fault model file that cannot be loaded
        print(f"fleetmedic detect: {exc}", file=sys.stderr)
        return 2
    settings = settings_from(args)
    service = DetectService(settings, engine, group_id=args.group,
                            session_timeout_ms=int(args.session_timeout_s * 1000),
                            heartbeat_interval_ms=max(500, int(args.session_timeout_s * 1000) // 4))
    from fleetmedic import metrics

    server = metrics.serve_for(args, "detect")
    if server is not None:
        server.ready_when(metrics.loop_ready(service.loop))
    print(f"detect: group {args.group}, {len(service.engine.rules)} series rules, consuming "
          f"{settings.topic_prefix}metrics.v1 and {settings.topic_prefix}logs.v1", flush=True)
    freeze_heap()
    try:
        stats = service.run()
    finally:
        if server is not None:
            server.close()
    forests = f"; isolation forests: {service.engine.forests.stats}" if service.engine.forests else ""
    print(f"detect: stopped; {stats}{forests}", flush=True)
    return 0


def _optional(module: str):
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != module:
            raise
        return None


def register(sub) -> None:
    p = sub.add_parser("detect", help="run the streaming detectors (metrics and logs in, incidents out)",
                       description="A consumer-group member: reads metric batches and log events, runs the "
                                   "configured EWMA, static-threshold and univariate rules and the XID log "
                                   "rules by event time, writes incident records (open, update, resolve), and "
                                   "checkpoints its state to the compacted state topic. Run several to scale "
                                   "out. SIGTERM finishes the batch, checkpoints, commits and exits.")
    p.add_argument("--detectors", metavar="FILE", default=None,
                   help="detector configuration YAML (default: the packaged detectors/default.yaml)")
    p.add_argument("--group", default="detectors", help="consumer group id (default: detectors)")
    p.add_argument("--session-timeout-s", type=float, default=10.0, metavar="S",
                   help="consumer-group session timeout: how soon a crashed member's partitions move "
                        "(default 10; the broker allows 6 to 1800)")
    from fleetmedic.metrics import add_arguments as add_metrics_arguments

    add_metrics_arguments(p)
    p.set_defaults(func=cmd_detect)
    evaluation = _optional("detectors.eval_cli")  # its top-level `eval` is in STAGE_CLIS itself
    if evaluation is not None and hasattr(evaluation, "register_detect"):
        evaluation.register_detect(p.add_subparsers(dest="detect_command", metavar="SUBCOMMAND"))
    model = _optional("detectors.fault_model")
    if model is not None and hasattr(model, "register"):
        model.register(sub)
