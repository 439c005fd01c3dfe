"""`fleetmedic alerts receive` (Alertmanager webhooks → incidents) and `fleetmedic alerts notify`
(needs → Alertmanager)."""

from __future__ import annotations

import argparse
import sys
import threading

from fleetmedic.cli import settings_from


def _hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"--listen {text!r}: expected HOST:PORT")
    return host.strip("[]"), int(port)


def _until_signal(stop) -> None:
    from fleetmedic.lifecycle import wait_for_signal

    wait_for_signal()
    stop()


def cmd_receive(args: argparse.Namespace) -> int:
    from fleetmedic import metrics
    from ingest.alertmanager import AlertReceiver, ReceiverServer

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
        _until_signal(server.shutdown)
    finally:
        server.server_close()
        receiver.close()
        if endpoint is not None:
            endpoint.close()
    return 0


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
    _until_signal(notifier.stop)
    thread.join(timeout=30)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "alerts",
        help="Alertmanager in (webhook receiver) and out (alerts for people)",
        description="receive: turn Alertmanager webhook notifications into incidents (firing opens, "
        "resolved resolves), so existing Prometheus alert rules drive the policy. "
        "notify: push incidents that need a person (awaiting approval, escalated, failed, "
        "unreachable, kill switch) to Alertmanager's v2 API, resolved when the need ends.",
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = actions.add_parser("receive", help="the webhook receiver (long-running)")
    a.add_argument("--listen", default="127.0.0.1:9097", metavar="HOST:PORT")
    from fleetmedic import metrics

    metrics.add_arguments(a)
    a.set_defaults(func=cmd_receive)
    a = actions.add_parser("notify", help="push needs for a person to Alertmanager (long-running)")
    a.add_argument("--alertmanager", default=None, metavar="URL", help="default: alerts.alertmanager_url")
    a.add_argument("--resend-s", type=float, default=None, metavar="S", help="default: alerts.resend_s")
    a.set_defaults(func=cmd_notify)
