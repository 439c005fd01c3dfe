"""The steps every `fleetmedic export` command shares: its common arguments, its options and
labels from them, the topics (`ensure_topics` serves `fleetmedic simulate` too), and starting and
finishing the exporter."""

from __future__ import annotations

import argparse
import socket
from pathlib import Path
from typing import TYPE_CHECKING

from fleetmedic.cli import settings_from

if TYPE_CHECKING:
    from fleetmedic.config import Settings

    from .runner import Exporter, ExporterOptions

HEALTH_PORTS = {"host": 9731, "gpu": 9732, "logs": 9733, "prom": 9734}


def exporter_options(args: argparse.Namespace, settings: Settings) -> ExporterOptions:
    """The exporter's options; paths not given on the command line live under the state dir."""
    from .runner import ExporterOptions

    return ExporterOptions(
        spool_dir=None if args.no_spool else Path(args.spool_dir or settings.state_dir / "spool"),
        spool_max_bytes=int(args.spool_max_mb * 1024 * 1024),
        spool_fsync=args.spool_fsync,
        # --metrics-port (0: any free port) wins over the older --health-port (0: none, -1: any free port)
        health_port=args.health_port if args.metrics_port is None else (args.metrics_port or -1),
        health_bind=args.health_bind or settings.health_bind,
        ack_timeout_s=args.ack_timeout,
    )


def parse_labels(pairs: list[str]) -> dict[str, str]:
    """`--label KEY=VALUE` pairs as a dict; exits with a message on a pair without `=` or key."""
    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--label wants KEY=VALUE, got {pair!r}")
        out[key] = value
    return out


def this_host(args: argparse.Namespace) -> str:
    """The host name to publish as: `--host`, else this machine's name (as `series.host_name` spells it)."""
    from .series import host_name

    return host_name(args.host or socket.gethostname())


def ensure_topics(settings: Settings, what: str) -> None:
    """Create the topics (idempotent), or exit with a clear message when the broker is not there."""
    from kafka.errors import ClusterAuthorizationFailedError, KafkaError, TopicAuthorizationFailedError

    from fleetmedic.topics import admin_client, create_topics

    try:
        admin = admin_client(settings, api_version_auto_timeout_ms=10_000)
        try:
            create_topics(settings, admin)
        finally:
            admin.close()
    except (TopicAuthorizationFailedError, ClusterAuthorizationFailedError) as exc:
        raise SystemExit(
            f"fleetmedic {what}: this principal may not create topics ({type(exc).__name__}): run "
            "`fleetmedic topics create` as the admin (docs/security.md) and drop --create-topics"
        ) from exc
    except KafkaError as exc:
        raise SystemExit(
            f"fleetmedic {what}: broker {','.join(settings.bootstrap_servers)} not reachable ({exc}); "
            f"start one with `fleetmedic broker start` or set FLEETMEDIC_BOOTSTRAP_SERVERS"
        ) from exc


def start_exporter(name: str, args: argparse.Namespace) -> Exporter:
    """The running exporter `name` (publisher, spool, health endpoint), stopped by SIGTERM/SIGINT;
    exits with a message when its port or spool folder cannot be had."""
    from fleetmedic.lifecycle import stop_on_signals

    from .runner import Exporter

    settings = settings_from(args)
    if args.create_topics:
        ensure_topics(settings, f"export {name}")
    options = exporter_options(args, settings)
    try:
        exporter = Exporter(name, settings, options)
    except OSError as exc:  # the health port is taken, or the spool folder cannot be written
        raise SystemExit(
            f"fleetmedic export {name}: {exc} (health {options.health_bind}:{args.health_port}, "
            f"spool {options.spool_dir})"
        ) from exc
    stop_on_signals(exporter.stop)
    where = f", metrics on {exporter.server.url}/metrics" if exporter.server else ""
    spool = (
        f", spool {exporter.publisher.spool.directory}"
        if exporter.publisher.spool is not None  # an empty spool is falsy
        else ", no spool"
    )
    print(f"export {name}: host {this_host(args)} → {settings.bootstrap_servers[0]}{spool}{where}", flush=True)
    return exporter


def finish_exporter(exporter: Exporter) -> int:
    """Close the exporter and print its counts; the exit code: 0, or 4 when records were dropped."""
    exporter.close()
    h = exporter.health
    print(
        f"export {exporter.name}: sent {h.sent}, spooled {h.spooled}, resent {h.resent}, dropped {h.dropped}, "
        f"left in spool {h.spool_records}",
        flush=True,
    )
    return 0 if h.dropped == 0 else 4


def add_common_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments every exporter but `ecs` takes: host, pacing, spool, health endpoint, topics, log format."""
    p.add_argument("--host", help="host name to publish as (default: this machine's name / the target's host)")
    p.add_argument("--interval", type=float, default=10.0, metavar="S", help="seconds between collections")
    p.add_argument("--count", type=int, default=None, metavar="N", help="stop after N collections")
    p.add_argument(
        "--spool-dir",
        default=None,
        metavar="DIR",
        help="where records wait while the broker is unreachable (one folder per exporter; "
        "default: STATE_DIR/spool, see `state_dir` in docs/deploy.md)",
    )
    p.add_argument(
        "--spool-max-mb",
        type=float,
        default=256.0,
        metavar="MB",
        help="spool bound; records beyond it are dropped and counted",
    )
    p.add_argument(
        "--spool-fsync",
        choices=("always", "batch", "never"),
        default="batch",
        help="when spooled records are forced to disk: each record, each batch (default), or never",
    )
    p.add_argument("--no-spool", action="store_true", help="drop (and count) what the broker does not take")
    p.add_argument(
        "--health-bind",
        default=None,
        metavar="ADDR",
        help="address of the health endpoint (default: the health_bind setting, 127.0.0.1)",
    )
    p.add_argument(
        "--ack-timeout", type=float, default=10.0, metavar="S", help="how long to wait for the broker before spooling"
    )
    p.add_argument("--create-topics", action="store_true", help="create the fleetmedic topics first (idempotent)")
    p.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        metavar="PORT",
        help="serve /metrics and /ready on PORT (0: any free port); replaces --health-port",
    )
    from fleetmedic.logfmt import add_argument as add_log_format

    add_log_format(p)
