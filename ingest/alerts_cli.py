"""`fleetmedic alerts receive`: Alertmanager webhook notifications in, incidents out.

The `alerts` command group is composed by fleetmedic/cli.py from each stage's `ALERT_ACTIONS`:
this stage gives `receive` (the receiver is ingest/alertmanager.py), the remediator `notify`.
"""

from __future__ import annotations

import argparse
import sys
import threading

from fleetmedic.cli import settings_from
from fleetmedic.lifecycle import wait_for_signal


def _hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"--listen {text!r}: expected HOST:PORT")
    return host.strip("[]"), int(port)


def cmd_receive(args: argparse.Namespace) -> int:
    from fleetmedic import metrics

    from .alertmanager import AlertReceiver, ReceiverServer

    try:
        address = _hostport(args.listen)
    except ValueError as exc:
        print(f"fleetmedic: alerts receive: {exc}", file=sys.stderr)
        return 2
    settings = settings_from(args)
    endpoint = metrics.serve_for(args, "alerts receive")
    receiver = AlertReceiver(settings)
    known = receiver.recover()
    try:
        server = ReceiverServer(address, receiver)
    except OSError as exc:
        receiver.close()
        if endpoint is not None:
            endpoint.close()
        print(f"fleetmedic: alerts receive: cannot listen on {args.listen}: {exc}", file=sys.stderr)
        return 1
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    thread.start()
    if endpoint is not None:
        endpoint.set_ready(True)  # recovered what it already opened and resolved, and listening
    print(
        f"alerts receive: Alertmanager webhook url {server.url} (readiness /-/ready); "
        f"{known} alert episodes known from {settings.topic_prefix}incidents.v1",
        flush=True,
    )
    try:
        wait_for_signal()
        server.shutdown()
    finally:
        server.server_close()
        receiver.close()
        if endpoint is not None:
            endpoint.close()
    return 0


def add_receive(actions: argparse._SubParsersAction) -> None:
    """`alerts receive`, the long-running webhook receiver."""
    from fleetmedic import metrics

    a = actions.add_parser("receive", help="the webhook receiver (long-running)")
    a.add_argument("--listen", default="127.0.0.1:9097", metavar="HOST:PORT")
    metrics.add_arguments(a)
    a.set_defaults(func=cmd_receive)
