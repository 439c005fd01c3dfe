"""Runtime control commands: `fleetmedic pause|resume`, `fleetmedic silence ...`, `fleetmedic maintenance ...`.

Each writes one record to the control topic (remediator.control); nothing is edited on any host.
"""

from __future__ import annotations

import argparse
import getpass
import re
import sys
import uuid
from datetime import UTC, datetime, timedelta

from fleetmedic.cli import settings_from

_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([smhd]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> timedelta:
    """`90s`, `30m`, `2h`, `1d` or plain seconds; ValueError otherwise."""
    m = _DURATION.match(text)
    if not m or float(m.group(1)) <= 0:
        raise ValueError(f"duration {text!r}: a positive number with s, m, h or d (e.g. 2h)")
    return timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])


def _parse_time(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)


def _who(args) -> str:
    return args.by or getpass.getuser()


def _write(settings, record) -> None:
    from fleetmedic.producer import Producer

    with Producer(settings) as producer:
        producer.send(record)
        producer.flush()


def _state(settings):
    from .control import ControlState

    state = ControlState(settings)
    try:
        state.catch_up()
    finally:
        state.close()
    return state


def cmd_pause(args: argparse.Namespace) -> int:
    from fleetmedic.schemas import Control

    from .control import KILL_SWITCH_ID

    now = datetime.now(UTC)
    engage = args.command == "pause"
    record = Control(id=KILL_SWITCH_ID, kind="kill_switch", active=engage, by=_who(args), reason=args.reason, time=now)
    _write(settings_from(args), record)
    if engage:
        print(
            f"kill switch engaged by {record.by} at {now.isoformat()}: every remediator stops starting runs "
            f"and cancels running playbooks; `fleetmedic resume` releases it"
        )
    else:
        print(f"kill switch released by {record.by} at {now.isoformat()}")
    return 0


def cmd_stop_record(args: argparse.Namespace) -> int:
    """silence|maintenance add|list|expire."""
    from fleetmedic.schemas import Control

    from .control import MatcherError, describe_matchers, parse_matcher

    kind = args.command
    settings = settings_from(args)
    now = datetime.now(UTC)
    if args.action == "add":
        if not args.matchers:
            print(
                f"fleetmedic: {kind} add: give at least one matcher (e.g. host=gpu-017 or host=~'gpu-0[1-4]')",
                file=sys.stderr,
            )
            return 2
        try:
            matchers = [parse_matcher(m) for m in args.matchers]
            duration = parse_duration(args.duration)
            start = _parse_time(args.start) if args.start else now
        except (MatcherError, ValueError) as exc:
            print(f"fleetmedic: {kind} add: {exc}", file=sys.stderr)
            return 2
        prefix = "sil" if kind == "silence" else "mw"
        record = Control(
            id=f"{prefix}-{uuid.uuid4().hex[:12]}",
            kind=kind,
            active=True,
            matchers=matchers,
            starts_at=start,
            ends_at=start + duration,
            by=_who(args),
            reason=args.reason,
            time=now,
        )
        _write(settings, record)
        assert record.ends_at is not None  # given just above (validated: in UTC)
        print(
            f"{record.id} {kind} {describe_matchers(matchers)} from {start.isoformat()} until "
            f"{record.ends_at.isoformat()} by {record.by}: {record.reason}"
        )
        return 0
    state = _state(settings)
    if args.action == "list":
        records = [r for r in state.records.values() if r.kind == kind]
        active = {r.id for r in state.active(kind, now)}
        shown = 0
        for r in sorted(records, key=lambda r: r.time):
            status = (
                "active"
                if r.id in active
                else "pending"
                if r.active and r.starts_at and r.starts_at > now
                else "expired"
            )
            if status == "expired" and not args.all:
                continue
            shown += 1
            print(
                f"{r.id}  {status:8s} {describe_matchers(r.matchers)}  until {r.ends_at.isoformat()}  "
                f"by {r.by}: {r.reason}"
            )
        if not shown:
            print(f"no {'' if args.all else 'active or pending '}{kind} records")
        return 0
    # expire
    record = state.records.get(args.id)
    if record is None or record.kind != kind:
        print(f"fleetmedic: {kind} expire: no {kind} {args.id!r} on the control topic", file=sys.stderr)
        return 1
    expired = record.model_copy(
        update={
            "active": False,
            "time": now,
            "by": _who(args),
            "reason": f"expired by {_who(args)}" + (f": {args.reason}" if args.reason else f" (was: {record.reason})"),
        }
    )
    _write(settings, expired)
    print(f"{record.id} expired by {expired.by} at {now.isoformat()}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    for name, text in (
        ("pause", "engage the fleet-wide kill switch: nothing runs, running playbooks are cancelled"),
        ("resume", "release the fleet-wide kill switch"),
    ):
        p = sub.add_parser(
            name,
            help=text,
            description=f"{text[0].upper()}{text[1:]}. A record on the control topic: every "
            "remediator honours it within a second, on every host, without files.",
        )
        p.add_argument("--by", default=None, help="who (default: the login name)")
        p.add_argument("--reason", default="", help="why (shown in every skip and cancel record)")
        p.set_defaults(func=cmd_pause)

    for kind, what in (
        ("silence", "no remediation for matching incidents for a while"),
        ("maintenance", "a maintenance window: matching hosts are left alone while people work"),
    ):
        p = sub.add_parser(
            kind,
            help=f"add, list or expire {kind} records ({what})",
            description=f"{what[0].upper()}{what[1:]}. Matchers are Alertmanager's: name=value, "
            "name!=value, name=~regex, name!~regex (anchored), over the incident's host, "
            "kind, subject, severity, detector and labels; all must hold.",
        )
        actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
        a = actions.add_parser("add", help=f"add a {kind}")
        a.add_argument("matchers", nargs="*", metavar="MATCHER")
        a.add_argument("--duration", required=True, help="how long: 90s, 30m, 2h, 1d")
        a.add_argument("--start", default=None, metavar="TIME", help="ISO 8601 start (default now; UTC if no zone)")
        a.add_argument("--by", default=None, help="author (default: the login name)")
        a.add_argument("--reason", required=True, help="why (shown in every skip record)")
        a.set_defaults(func=cmd_stop_record)
        a = actions.add_parser("list", help=f"active and pending {kind} records")
        a.add_argument("--all", action="store_true", help="expired ones too")
        a.set_defaults(func=cmd_stop_record)
        a = actions.add_parser("expire", help=f"end a {kind} now")
        a.add_argument("id", metavar="ID")
        a.add_argument("--by", default=None)
        a.add_argument("--reason", default="")
        a.set_defaults(func=cmd_stop_record)
