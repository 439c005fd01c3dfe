"""`fleetmedic report` (and, with the detectors, `fleetmedic replay`)."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path


def _when(text: str) -> datetime:
    t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def cmd_report(args: argparse.Namespace) -> int:
    from fleetmedic.extras import require

    require("review", "fleetmedic report")
    from fleetmedic.cli import settings_from

    from .collect import collect, find_incident, incident_window
    from .report import write_report

    settings = settings_from(args)
    if args.incident:
        records = find_incident(settings, args.incident)
        host = records[0].host
        start, end = incident_window(records, timedelta(minutes=args.margin_min))
        title = f"fleetmedic incident {args.incident} on {host}"
    else:
        if not (args.host and args.start and args.end):
            raise SystemExit("report: give --incident ID, or --host with --from and --to")
        host, start, end, title = args.host, _when(args.start), _when(args.end), None
    review = collect(settings, host, start, end)
    out = write_report(review, Path(args.output), title)
    print(
        f"wrote {out} ({out.stat().st_size // 1024} KiB): {len(review.series)} series, {len(review.logs)} log lines, "
        f"{len({i.id for i in review.incidents})} incidents, {len(review.remediations)} remediation records"
    )
    return 0


def _offsets(items: list[str]) -> tuple[dict[int, int], dict[int, int]]:
    """['0:100-200', '2:5-'] → ({0: 100, 2: 5}, {0: 200})."""
    starts, ends = {}, {}
    for item in items:
        part, _, span = item.partition(":")
        lo, _, hi = span.partition("-")
        if not part.isdigit() or not (lo.isdigit() or lo == "") or not (hi.isdigit() or hi == ""):
            raise SystemExit(f"replay: bad offset range {item!r}; use PARTITION:START-END (END exclusive, optional)")
        if lo:
            starts[int(part)] = int(lo)
        if hi:
            ends[int(part)] = int(hi)
    return starts, ends


def cmd_replay(args: argparse.Namespace) -> int:

    from fleetmedic.extras import require

    require("review", "fleetmedic replay")

    from detectors.config import load_config
    from fleetmedic.cli import settings_from
    from fleetmedic.producer import Producer

    from .replay import diff, print_diff, recorded_incidents, replay

    settings = settings_from(args)
    config = load_config(args.detectors)
    hosts = set(args.host) if args.host else None
    start = _when(args.start) if args.start else None
    end = _when(args.end) if args.end else None
    offsets = {}
    if args.metrics_offsets:
        offsets["metrics.v1"] = _offsets(args.metrics_offsets)
    if args.logs_offsets:
        offsets["logs.v1"] = _offsets(args.logs_offsets)
    result = replay(
        settings,
        config,
        start=start,
        end=end,
        offsets=offsets,
        hosts=hosts,
        progress=lambda line: print(line, file=sys.stderr, flush=True),
    )
    print(
        f"replayed {result.records} records ({result.values} values) in {result.seconds:.2f}s: "
        f"{result.values_per_s:,.0f} values/s; {len(result.incidents)} incident records"
    )
    if args.output:
        Path(args.output).write_text("".join(r.model_dump_json() + "\n" for r in result.incidents))
        print(f"wrote {args.output}")
    if args.to_topic:
        if args.to_topic == "incidents.v1" and not args.into_live_incidents:
            raise SystemExit("replay: refusing to write into the live incidents topic without --into-live-incidents")
        with Producer(settings) as producer:
            for r in result.incidents:
                producer.send(r, topic=args.to_topic)
        print(f"produced to {settings.topic_prefix}{args.to_topic}")
    if not args.no_diff:
        recorded = recorded_incidents(settings, hosts, start, end)
        policy = None
        if args.policy:
            from remediator.policy import load_policy

            policy = load_policy(args.policy)
        print_diff(diff(recorded, result.incidents), policy)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "replay",
        help="re-run the detectors over a recorded range and diff against what happened",
        description="Reads metrics.v1 and logs.v1 by Kafka timestamps (--from/--to, offsets-for-times) "
        "or offsets, optionally for some hosts, runs a fresh detector engine with the "
        "given configuration, and prints the incidents added, removed and changed "
        "against the recorded incidents.v1, with the policy's plan for them (--policy; "
        "nothing runs). Output goes to a file or a scratch topic, never to the live "
        "incidents topic unless --into-live-incidents.",
    )
    p.add_argument("--detectors", metavar="FILE", help="detector configuration (default: the packaged one)")
    p.add_argument("--from", dest="start", metavar="TIME", help="Kafka record time, ISO 8601")
    p.add_argument("--to", dest="end", metavar="TIME")
    p.add_argument("--metrics-offsets", nargs="*", metavar="P:START-END")
    p.add_argument("--logs-offsets", nargs="*", metavar="P:START-END")
    p.add_argument("--host", action="append", help="only this host (repeatable)")
    p.add_argument("-o", "--output", metavar="FILE", help="write the replayed incidents as JSON lines")
    p.add_argument("--to-topic", metavar="NAME", help="also produce them to this topic (name without the prefix)")
    p.add_argument("--into-live-incidents", action="store_true", help="allow --to-topic incidents.v1")
    p.add_argument("--policy", metavar="FILE", help="show what this remediation policy would plan for the diff")
    p.add_argument("--no-diff", action="store_true")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser(
        "report",
        help="a self-contained HTML page of one incident or one host's time range",
        description="Series with their EWMA band, log lines, incident lifecycle, every remediation "
        "decision (skips and reasons included) and playbook outcomes on one timeline; "
        "plots embedded, so the page opens offline. Times are event times (ISO 8601, UTC "
        "when no zone is given).",
    )
    p.add_argument("--incident", metavar="ID", help="the incident to review (its host and window are looked up)")
    p.add_argument("--host")
    p.add_argument("--from", dest="start", metavar="TIME")
    p.add_argument("--to", dest="end", metavar="TIME")
    p.add_argument("--margin-min", type=float, default=10.0, help="minutes shown around an incident (default 10)")
    p.add_argument("-o", "--output", default="report.html")
    p.set_defaults(func=cmd_report)


# The stage's top-level commands, in the order `fleetmedic --help` lists them.
COMMANDS = (register,)
