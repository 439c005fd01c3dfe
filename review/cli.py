"""`fleetmedic report` (and, with the detectors, `fleetmedic replay`)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path


def _when(text: str) -> datetime:
    t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def cmd_report(args) -> int:
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
    print(f"wrote {out} ({out.stat().st_size // 1024} KiB): {len(review.series)} series, {len(review.logs)} log lines, "
          f"{len({i.id for i in review.incidents})} incidents, {len(review.remediations)} remediation records")
    return 0


def cmd_demo(args) -> int:
    from fleetmedic.cli import settings_from

    from .demo import run_demo

    return run_demo(settings_from(args), nodes=args.nodes, sim_seconds=args.hours * 3600, speed=args.speed)


def register(sub) -> None:
    p = sub.add_parser("demo", help="the main job: a simulated fleet through the real detectors, incidents and a report",
                       description="Runs `fleetmedic simulate` (with injected faults) and `fleetmedic detect` as "
                                   "separate processes on fresh topics, prints the incident timeline beside the "
                                   "ground truth, and writes the first incident's report to .fleetmedic/.")
    p.add_argument("--nodes", type=int, default=8)
    p.add_argument("--hours", type=float, default=4.0, help="simulated hours (default 4)")
    p.add_argument("--speed", type=float, default=480.0, help="simulated seconds per wall second (default 480)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("report", help="a self-contained HTML page of one incident or one host's time range",
                       description="Series with their EWMA band, log lines, incident lifecycle, every remediation "
                                   "decision (skips and reasons included) and playbook outcomes on one timeline; "
                                   "plots embedded, so the page opens offline. Times are event times (ISO 8601, UTC "
                                   "when no zone is given).")
    p.add_argument("--incident", metavar="ID", help="the incident to review (its host and window are looked up)")
    p.add_argument("--host")
    p.add_argument("--from", dest="start", metavar="TIME")
    p.add_argument("--to", dest="end", metavar="TIME")
    p.add_argument("--margin-min", type=float, default=10.0, help="minutes shown around an incident (default 10)")
    p.add_argument("-o", "--output", default="report.html")
    p.set_defaults(func=cmd_report)
