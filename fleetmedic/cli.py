"""The `fleetmedic` command: one entry for every stage."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from . import __version__

if TYPE_CHECKING:
    from .config import BrokerSettings, Settings


def stage_commands() -> tuple[Callable[[argparse._SubParsersAction], None], ...]:
    """Every stage's `register(subparsers)` functions, in the order `fleetmedic --help` lists them.

    Each stage exports its commands as `COMMANDS` (handlers take the parsed args, call
    `settings_from(args)` for the settings, and return an exit code). The imports are plain ones
    inside this function, not at the top, because the stage modules import `settings_from` from
    this one. A stage command that needs an extra calls `fleetmedic.extras.require` in its
    handler, so `--help` works on the base install."""
    from detectors.cli import COMMANDS as detect
    from fleetmedic_demo.cli import COMMANDS as demo
    from ingest.cli import ALERT_ACTIONS as alerts_in
    from ingest.cli import COMMANDS as ingest
    from remediator.cli import ALERT_ACTIONS as alerts_out
    from remediator.cli import COMMANDS as remediate
    from review.cli import COMMANDS as review
    from review.doctor import runner as doctor

    def alerts(sub: argparse._SubParsersAction) -> None:
        # one group, two stages: receive is ingest's, notify the remediator's (stages never import
        # each other, so the group is put together here)
        p = sub.add_parser(
            "alerts",
            help="Alertmanager in (webhook receiver) and out (alerts for people)",
            description="receive: turn Alertmanager webhook notifications into incidents (firing opens, "
            "resolved resolves), so existing Prometheus alert rules drive the policy. "
            "notify: push incidents that need a person (awaiting approval, escalated, failed, "
            "unreachable, kill switch) to Alertmanager's v2 API, resolved when the need ends.",
        )
        actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
        for add in (*alerts_in, *alerts_out):
            add(actions)

    return (doctor.register, *ingest, *detect, *review, *remediate, alerts, *demo)


def settings_from(args: argparse.Namespace) -> Settings:
    """The settings for a command's parsed args (--config, then FLEETMEDIC_* variables); on a
    secured connection the credentials are checked once, so a wrong password fails the start."""
    from .config import load_settings
    from .connect import verify_credentials

    settings = load_settings(args.config)
    verify_credentials(settings)
    return settings


def _settings(args):
    from .config import load_settings

    return load_settings(args.config)


def cmd_broker(args: argparse.Namespace) -> int:
    from .broker import EmbeddedBroker

    settings = _settings(args).broker
    if getattr(args, "nodes", None):
        settings = settings.model_copy(update={"nodes": args.nodes})
    if _cluster_broker(args, settings):
        if getattr(args, "secure", False):
            from .broker import BrokerError

            raise BrokerError("--secure with --nodes is not supported yet: the secured broker is single-node")
        return cmd_cluster(args, settings)
    broker = EmbeddedBroker(settings, secure=getattr(args, "secure", False))
    if args.action == "start":
        took = broker.start(progress=lambda m: print(m, flush=True))
        print(f"broker ready on {broker.bootstrap} in {took:.1f}s (data in {broker.data_dir}, log {broker.log_file})")
        if broker.secure:
            from .pki import SecureLayout

            print(
                f"secured: TLS + SASL/SCRAM-SHA-512, ACLs enforced; CA {SecureLayout.of(broker.data_dir).ca_cert}; "
                f"each role's settings: {SecureLayout.of(broker.data_dir).client_config('ROLE')} "
                f"(FLEETMEDIC_CONFIG=...; `topics create` with the admin one applies the ACLs)"
            )
    elif args.action == "stop":
        print("broker stopped" if broker.stop() else "broker was not running")
    else:
        status = broker.status()
        print(status.describe())
        return 0 if status.answering else 3
    return 0


def _cluster_broker(args, settings) -> bool:
    from .cluster import is_cluster

    return settings.nodes > 1 or (args.action != "start" and is_cluster(settings))


def cmd_cluster(args: argparse.Namespace, settings: BrokerSettings) -> int:
    """`broker start|stop|status --nodes N`: the N-node KRaft cluster (fleetmedic/cluster.py)."""
    from .cluster import EmbeddedCluster

    cluster = EmbeddedCluster(settings, settings.nodes if args.action == "start" else None)
    if args.action == "start":
        took = cluster.start(progress=lambda m: print(m, flush=True))
        print(
            f"cluster of {len(cluster.nodes)} brokers ready in {took:.1f}s: bootstrap {cluster.bootstrap} "
            f"(data in {cluster.root}); use FLEETMEDIC_BOOTSTRAP_SERVERS={cluster.bootstrap}"
        )
    elif args.action == "stop":
        print("cluster stopped" if cluster.stop() else "cluster was not running")
    else:
        statuses = cluster.status()
        for k, status in enumerate(statuses):
            print(f"node {k + 1}: {status.describe()}")
        return 0 if all(s.answering for s in statuses) else 3
    return 0


def cmd_topics(args: argparse.Namespace) -> int:
    from .topics import create_topics, topic_name, topic_specs

    settings = _settings(args) if args.action == "list" else settings_from(args)
    if args.action == "list":
        for spec in topic_specs(settings):
            print(f"{topic_name(settings, spec.name):40s} partitions={spec.partitions} {spec.configs}")
        return 0
    if getattr(args, "check", False):
        return _topics_check(settings)
    for name, outcome in create_topics(settings).items():
        print(f"{outcome:8s} {name}")
    return 0


def _topics_check(settings) -> int:
    """`topics create --check`: report drift from the configuration, change nothing."""
    from kafka.errors import KafkaError

    from .topiccheck import print_drift, topic_drift
    from .topics import admin_client

    try:
        admin = admin_client(settings, api_version_auto_timeout_ms=10_000)
    except KafkaError as exc:
        print(
            f"fleetmedic topics: broker {','.join(settings.bootstrap_servers)} not reachable ({exc})", file=sys.stderr
        )
        return 2
    try:
        return print_drift(settings, topic_drift(settings, admin))
    finally:
        admin.close()


def cmd_schemas(args: argparse.Namespace) -> int:
    from .schemas import CONTRACTS

    out = Path(args.dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, model in CONTRACTS.items():
        path = out / f"{name}.v{model.model_fields['schema_version'].default}.json"
        path.write_text(json.dumps(model.model_json_schema(), indent=2, sort_keys=True) + "\n")
        print(path)
    return 0


def cmd_tail(args: argparse.Namespace) -> int:
    from .tail import tail

    return tail(settings_from(args), args.topic, from_beginning=args.from_beginning, limit=args.max, idle_s=args.idle)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fleetmedic",
        description="Keep a GPU/AI fleet healthy without waking a human: exporters → Kafka → detectors → "
        "incidents → remediator → Ansible playbooks, every step a Kafka record.",
        epilog="Settings come from --config FILE (YAML) or FLEETMEDIC_CONFIG, overridden by FLEETMEDIC_* "
        "environment variables (nested with __, e.g. FLEETMEDIC_BROKER__PORT=19092).",
    )
    parser.add_argument("--version", action="version", version=f"fleetmedic {__version__}")
    parser.add_argument("--config", metavar="FILE", help="YAML settings file")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    from .logfmt import add_argument as add_log_format

    add_log_format(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "broker",
        help="start, stop or check the embedded single-node Kafka broker",
        description="The embedded default broker: Apache Kafka's own jars fetched with Maven "
        "(cached), single-node KRaft on 127.0.0.1. `status` exits 3 when not answering.",
    )
    p.add_argument("action", choices=["start", "stop", "status"])
    p.add_argument(
        "--secure",
        action="store_true",
        help="TLS + SASL/SCRAM-SHA-512 listeners, Kafka's authorizer, a local CA and one principal "
        "per role (docs/security.md); a data directory formatted secure stays secure",
    )
    p.add_argument(
        "--nodes",
        type=int,
        choices=range(1, 10),
        metavar="N",
        default=None,
        help="start an N-node KRaft cluster on port+2k / controller_port+2k (stop and status "
        "find the nodes a start made); topics there get replication 3, min.insync 2",
    )
    p.set_defaults(func=cmd_broker)

    p = sub.add_parser(
        "topics",
        help="create every fleetmedic topic (idempotent) or list their settings",
        description="Create the topics of the design (metrics, logs, incidents, remediations, "
        "approvals, dead letters, compacted detector state) from the settings. "
        "Running it twice is harmless.",
    )
    p.add_argument("action", choices=["create", "list"])
    p.add_argument(
        "--check",
        action="store_true",
        help="with create: report how the cluster's topics differ from the configuration (missing, "
        "partitions, replication, retention and other settings), change nothing; exit 1 on drift",
    )
    p.set_defaults(func=cmd_topics)

    p = sub.add_parser(
        "schemas",
        help="export the wire contracts as JSON Schema files",
        description="Write one JSON Schema per record kind into DIR (the repo keeps them in schemas/).",
    )
    p.add_argument("action", choices=["export"])
    p.add_argument("dir", metavar="DIR")
    p.set_defaults(func=cmd_schemas)

    p = sub.add_parser(
        "tail",
        help="print the records of a topic as they arrive",
        description="Print records of TOPIC (a name without the prefix, e.g. metrics.v1, or a "
        "short name: metrics, logs, incidents, remediations, deadletter), one line each.",
    )
    p.add_argument("topic")
    p.add_argument("--from-beginning", action="store_true", help="start at the oldest retained record")
    p.add_argument("--max", type=int, default=None, help="stop after this many records")
    p.add_argument("--idle", type=float, default=None, metavar="S", help="stop after S seconds without records")
    p.set_defaults(func=cmd_tail)

    for register in stage_commands():
        register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .broker import BrokerError
    from .config import SettingsError
    from .logfmt import configure as configure_logging
    from .yamlfile import ConfigFileError

    args = build_parser().parse_args(argv)
    configure_logging(getattr(args, "log_format", "text"), args.verbose)
    try:
        return args.func(args)
    except SettingsError as exc:
        print(f"fleetmedic: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    except ConfigFileError as exc:  # a detector config or remediation policy: file:line: reason
        print(f"fleetmedic: invalid configuration file:\n{exc}", file=sys.stderr)
        return 2
    except BrokerError as exc:
        print(f"fleetmedic: broker: {exc}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as exc:  # a stage that did not call extras.require first
        from .extras import extra_for_module

        known = extra_for_module(exc.name)
        if known:
            print(
                f"fleetmedic {args.command} needs the [{known[0]}] extra ({known[1]} is not installed): "
                f"pip install 'fleetmedic[{known[0]}]'",
                file=sys.stderr,
            )
        else:
            print(
                f"fleetmedic: missing dependency {exc.name!r}: pip install 'fleetmedic[all]' "
                f"(or `make venv` in a checkout)",
                file=sys.stderr,
            )
        return 1
    except Exception as exc:  # an authentication or authorization refusal from the broker
        from .connect import CredentialsRefused, explain

        message = str(exc) if isinstance(exc, CredentialsRefused) else explain(exc)
        if message is None:
            raise
        print(f"fleetmedic: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
