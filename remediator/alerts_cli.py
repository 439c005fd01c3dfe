"""`fleetmedic alerts notify`: the incidents that need a person, pushed to Alertmanager.

The `alerts` command group is composed by fleetmedic/cli.py from each stage's `ALERT_ACTIONS`:
this stage gives `notify` (remediator/notify.py), the ingest stage `receive`.
"""

from __future__ import annotations

import argparse
import sys
import threading

from fleetmedic.cli import settings_from
from fleetmedic.lifecycle import wait_for_signal


def cmd_notify(args: argparse.Namespace) -> int:
    from .notify import Notifier

    settings = settings_from(args)
    try:
        notifier = Notifier(settings, args.alertmanager, resend_s=args.resend_s)
    except ValueError as exc:
        print(f"fleetmedic: alerts notify: {exc}", file=sys.stderr)
        return 2
    print(
        f"alerts notify: needs for a person → {notifier.client.url}/api/v2/alerts "
        f"(re-sent every {notifier.resend_s:g}s)",
        flush=True,
    )
    thread = threading.Thread(target=notifier.run, daemon=True)
    thread.start()
    wait_for_signal()
    notifier.stop()
    thread.join(timeout=30)
    return 0


def add_notify(actions: argparse._SubParsersAction) -> None:
    """`alerts notify`, the long-running notifier."""
    a = actions.add_parser("notify", help="push needs for a person to Alertmanager (long-running)")
    a.add_argument("--alertmanager", default=None, metavar="URL", help="default: alerts.alertmanager_url")
    a.add_argument("--resend-s", type=float, default=None, metavar="S", help="default: alerts.resend_s")
    a.set_defaults(func=cmd_notify)
