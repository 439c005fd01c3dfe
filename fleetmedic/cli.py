"""The `fleetmedic` command: one entry for every stage."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from pathlib import Path

from . import __version__


# Each stage adds its own commands: a module with `register(subparsers)`, whose handlers take
# the parsed args (call `settings_from(args)` for the settings) and return an exit code.
STAGE_CLIS: list[str] = [
    "ingest.cli",
    "detectors.cli",
    "detectors.eval_cli",
    "review.cli",
    "remediator.cli",
    "remediator.playbook_cli",
    "remediator.control_cli",
    "remediator.alerts_cli",
]


def settings_from(args):
    """The settings for a command's parsed args (--config, then FLEETMEDIC_* variables)."""
    from .config import load_settings

    return load_settings(args.config)


def _settings(args):
    from .config import load_settings

    return load_settings(args.config)


def cmd_broker(args) -> int:
    from .broker import EmbeddedBroker

    broker = EmbeddedBroker(_settings(args).broker)
    if args.action == "start":
        took = broker.start(progress=lambda m: print(m, flush=True))
        print(f"broker ready on {broker.bootstrap} in {took:.1f}s (data in {broker.data_dir}, log {broker.log_file})")
    elif args.action == "stop":
        print("broker stopped" if broker.stop() else "broker was not running")
    else:
        status = broker.status()
        print(status.describe())
        return 0 if status.answering else 3
    return 0


def cmd_topics(args) -> int:
    from .topics import create_topics, topic_name, topic_specs

    settings = _settings(args)
    if args.action == "list":
        for spec in topic_specs(settings):
            print(f"{topic_name(settings, spec.name):40s} partitions={spec.partitions} {spec.configs}")
        return 0
    for name, outcome in create_topics(settings).items():
        print(f"{outcome:8s} {name}")
    return 0


def cmd_schemas(args) -> int:
    from .schemas import CONTRACTS

    out = Path(args.dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, model in CONTRACTS.items():
        path = out / f"{name}.v{model.model_fields['schema_version'].default}.json"
        path.write_text(json.dumps(model.model_json_schema(), indent=2, sort_keys=True) + "\n")
        print(path)
    return 0


def cmd_tail(args) -> int:
    from .tail import tail

    return tail(_settings(args), args.topic, from_beginning=args.from_beginning, limit=args.max, idle_s=args.idle)


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

    p = sub.add_parser("broker", help="start, stop or check the embedded single-node Kafka broker",
                       description="The embedded default broker: Apache Kafka's own jars fetched with Maven "
                                   "(cached), single-node KRaft on 127.0.0.1. `status` exits 3 when not answering.")
    p.add_argument("action", choices=["start", "stop", "status"])
    p.set_defaults(func=cmd_broker)

    p = sub.add_parser("topics", help="create every fleetmedic topic (idempotent) or list their settings",
                       description="Create the topics of the design (metrics, logs, incidents, remediations, "
                                   "approvals, dead letters, compacted detector state) from the settings. "
                                   "Running it twice is harmless.")
    p.add_argument("action", choices=["create", "list"])
    p.set_defaults(func=cmd_topics)

    p = sub.add_parser("schemas", help="export the wire contracts as JSON Schema files",
                       description="Write one JSON Schema per record kind into DIR (the repo keeps them in schemas/).")
    p.add_argument("action", choices=["export"])
    p.add_argument("dir", metavar="DIR")
    p.set_defaults(func=cmd_schemas)

    p = sub.add_parser("tail", help="print the records of a topic as they arrive",
                       description="Print records of TOPIC (a name without the prefix, e.g. metrics.v1, or a "
                                   "short name: metrics, logs, incidents, remediations, deadletter), one line each.")
    p.add_argument("topic")
    p.add_argument("--from-beginning", action="store_true", help="start at the oldest retained record")
    p.add_argument("--max", type=int, default=None, help="stop after this many records")
    p.add_argument("--idle", type=float, default=None, metavar="S", help="stop after S seconds without records")
    p.set_defaults(func=cmd_tail)


    for module in STAGE_CLIS:
        importlib.import_module(module).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .broker import BrokerError
    from .config import SettingsError
    from .yamlfile import ConfigFileError

    from .logfmt import configure as configure_logging

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
    except ModuleNotFoundError as exc:
        print(f"fleetmedic: missing dependency {exc.name!r}: run `make venv` or `pip install -e .`", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
