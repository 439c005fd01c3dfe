"""`fleetmedic export host|gpu|logs`: the exporters of this node's own signals, and their arguments."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from fleetmedic.cli import settings_from

from .export_cli import HEALTH_PORTS, add_common_arguments, finish_exporter, parse_labels, start_exporter, this_host

if TYPE_CHECKING:
    from fleetmedic.schemas import Contract, LogEvent


def cmd_export_host(args: argparse.Namespace) -> int:
    from fleetmedic.schemas import MetricBatch

    from .host import HostCollector

    host, labels = this_host(args), parse_labels(args.label)
    collector = HostCollector(watch=args.watch, mounts=args.mount)
    exporter = start_exporter("host", args)

    def collect() -> list[Contract]:
        values, counters = collector.collect()
        return [
            MetricBatch(
                host=host, time=datetime.now(UTC), source="host", labels=labels, values=values, counters=counters
            )
        ]

    try:
        exporter.run(collect, args.interval, count=args.count)
    finally:
        code = finish_exporter(exporter)
    return code


def cmd_export_gpu(args: argparse.Namespace) -> int:
    from fleetmedic.schemas import MetricBatch

    from .gpu import GpuCollector, GpuUnavailable

    try:
        collector = GpuCollector()
    except GpuUnavailable as exc:
        print(f"fleetmedic export gpu: {exc}", file=sys.stderr)
        return 3
    host, labels = this_host(args), parse_labels(args.label)
    exporter = start_exporter("gpu", args)

    def collect() -> list[Contract]:
        values, counters, events = collector.collect(host)
        batch = MetricBatch(
            host=host,
            time=datetime.now(UTC),
            source="gpu",
            labels={**collector.labels_, **labels},
            values=values,
            counters=counters,
        )
        return [batch, *events]

    try:
        exporter.run(collect, args.interval, count=args.count, wait=lambda s: collector.wait_events(host, s))
    finally:
        collector.close()
        code = finish_exporter(exporter)
    return code


def log_events(lines: Iterable[tuple[str, str]], host: str) -> list[LogEvent]:
    """(path, line) pairs → LogEvents, parsed, stamped with the line's own time when it has one.

    Never raises: a line that cannot make a valid LogEvent as parsed is sent as kind "raw" with
    the reason in its fields (cut to the schema's limits), so its neighbours are never lost.
    """
    from pydantic import ValidationError

    from fleetmedic.schemas import LogEvent

    from .follow import MAX_LINE, TRUNCATED
    from .logparse import parse_line

    now = datetime.now(UTC)
    out = []
    for path, line in lines:
        p = parse_line(line, now=now)
        try:
            out.append(
                LogEvent(
                    host=host,
                    time=p.time or now,
                    source=path[:512] or "?",
                    line=line,
                    kind=p.kind,
                    severity=p.severity,
                    fields=p.fields,
                )
            )
        except ValidationError as exc:
            line = line.encode("utf-8", "replace").decode("utf-8")  # lone surrogates are not UTF-8: "?"
            if len(line) > MAX_LINE:
                line = line[: MAX_LINE - len(TRUNCATED)] + TRUNCATED
            out.append(
                LogEvent(
                    host=host,
                    time=now,
                    source=path[:512] or "?",
                    line=line,
                    kind="raw",
                    severity="info",
                    fields={"invalid": str(exc.errors(include_url=False)[0]["msg"])[:1024]},
                )
            )
    return out


def cmd_export_logs(args: argparse.Namespace) -> int:
    from fleetmedic import metrics

    from .follow import LogFollower
    from .shipped import JournalFollower

    if not args.paths and not args.journal:
        print("fleetmedic export logs: give log file paths, --journal, or both", file=sys.stderr)
        return 2
    host = this_host(args)
    state_dir = settings_from(args).state_dir
    position_file = args.position_file or state_dir / "log-positions.json"
    follower = LogFollower(args.paths, position_file=position_file, from_end=args.from_end) if args.paths else None
    journal = None
    if args.journal:
        try:
            journal = JournalFollower(
                args.cursor_file or state_dir / "journal-cursor",
                directory=args.journal_directory,
                matches=args.journal_match,
                from_end=args.from_end,
                journalctl=args.journalctl,
            )
        except OSError as exc:
            print(f"fleetmedic export logs: cannot run {args.journalctl}: {exc}", file=sys.stderr)
            return 2
    exporter = start_exporter("logs", args)

    def collect() -> list[Contract]:
        if follower is not None:
            events = log_events(follower.poll(), host)
            exporter.publish(events)  # delivered or spooled: now the position may move past them
            follower.commit()
        if journal is not None:
            exporter.publish(journal.poll(host))
            journal.commit()  # likewise: the cursor moves past delivered (or spooled) entries only
        metrics.checkpoint("export-logs")
        return []

    try:
        exporter.run(collect, args.interval, count=args.count)
    finally:
        if follower is not None:
            follower.close()
        if journal is not None:
            journal.close()
        code = finish_exporter(exporter)
    return code


def add_exporters(kinds: argparse._SubParsersAction) -> None:
    """`export host`, `export gpu` and `export logs`, in the order `fleetmedic export --help` lists them."""
    e = kinds.add_parser("host", help="this machine's CPU, memory, filesystems, disks, network, temperatures, services")
    add_common_arguments(e)
    e.add_argument(
        "--watch",
        action="append",
        default=[],
        metavar="NAME[=PROCESS]",
        help="a systemd unit or process name whose up/down state to report as service.NAME.up; "
        "NAME=PROCESS reports process PROCESS (its name or script) as NAME (repeatable)",
    )
    e.add_argument("--mount", action="append", default=None, metavar="PATH", help="only these mount points")
    e.add_argument("--label", action="append", default=[], metavar="K=V", help="host label, e.g. class=h100x8")
    e.add_argument("--health-port", type=int, default=HEALTH_PORTS["host"], metavar="PORT", help="0: none")
    e.set_defaults(func=cmd_export_host)

    e = kinds.add_parser(
        "gpu",
        help="NVIDIA GPU metrics and XID events through NVML",
        description="Exits 3 when there is no NVIDIA driver or GPU.",
    )
    add_common_arguments(e)
    e.add_argument("--label", action="append", default=[], metavar="K=V")
    e.add_argument("--health-port", type=int, default=HEALTH_PORTS["gpu"], metavar="PORT", help="0: none")
    e.set_defaults(func=cmd_export_gpu)

    e = kinds.add_parser("logs", help="follow log files (rotation, truncation) and parse known kernel/service lines")
    add_common_arguments(e)
    e.add_argument("paths", nargs="*", metavar="PATH")
    e.add_argument(
        "--journal",
        action="store_true",
        help="also (or only) follow the systemd journal through `journalctl -o json --follow`",
    )
    e.add_argument(
        "--cursor-file",
        default=None,
        metavar="FILE",
        help="the cursor of the last delivered journal entry (nothing read twice or lost on restart; "
        "default: STATE_DIR/journal-cursor)",
    )
    e.add_argument("--journal-directory", metavar="DIR", help="read journal files from DIR (journalctl --directory)")
    e.add_argument(
        "--journal-match",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="a journalctl match, e.g. _TRANSPORT=kernel or _SYSTEMD_UNIT=slurmd.service (repeatable)",
    )
    e.add_argument("--journalctl", default="journalctl", metavar="PATH", help=argparse.SUPPRESS)
    e.add_argument(
        "--position-file",
        default=None,
        metavar="FILE",
        help="where the offsets of delivered lines are kept across restarts (default: STATE_DIR/log-positions.json)",
    )
    e.add_argument("--from-end", action="store_true", help="a file never seen before starts at its end")
    e.add_argument("--health-port", type=int, default=HEALTH_PORTS["logs"], metavar="PORT", help="0: none")
    e.set_defaults(func=cmd_export_logs, interval=1.0)
