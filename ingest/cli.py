"""The ingest stage's commands, as `fleetmedic/cli.py` composes them (`COMMANDS`): `fleetmedic
export` here, its exporters' arguments and handlers in their modules (`node_cli`: host, gpu, logs;
`bridge_cli`: ecs, prom; shared steps in `export_cli`), and `fleetmedic simulate` from `simulate_cli`."""

from __future__ import annotations

import argparse

from . import alerts_cli, bridge_cli, node_cli, simulate_cli


def register(sub: argparse._SubParsersAction) -> None:
    """`fleetmedic export EXPORTER`, with every exporter's subcommand."""
    p = sub.add_parser(
        "export",
        help="run a node exporter: host, gpu, logs or prom",
        description="Publish this node's signals to Kafka (metrics.v1 / logs.v1), spooling to disk "
        "while the broker is unreachable. Health: GET :PORT/metrics.",
    )
    kinds = p.add_subparsers(dest="exporter", required=True, metavar="EXPORTER")

    node_cli.add_exporters(kinds)
    bridge_cli.add_exporters(kinds)


# The stage's top-level commands, in the order `fleetmedic --help` lists them.
COMMANDS = (register, simulate_cli.register)
# This stage's actions of the shared `fleetmedic alerts` group (composed in fleetmedic/cli.py).
ALERT_ACTIONS = (alerts_cli.add_receive,)
