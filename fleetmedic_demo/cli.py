"""`fleetmedic demo`: the whole loop on fresh topics (fleetmedic_demo/demo.py says what it shows)."""

from __future__ import annotations

import argparse
import sys


def cmd_demo(args: argparse.Namespace) -> int:
    from fleetmedic.extras import require

    require("all", "fleetmedic demo")
    from fleetmedic.cli import settings_from

    from .demo import run_demo

    scenes = tuple(s for s in ("fleet", "service", "slurm") if s not in (args.skip or []))
    settings, roles = settings_from(args), None
    if args.secure:  # every stage as its own principal of the secured embedded broker
        from fleetmedic.config import load_settings
        from fleetmedic.pki import SecureLayout

        layout = SecureLayout.of(settings.broker.data_dir)
        if not layout.marker.exists():
            print(
                f"fleetmedic: demo --secure: {settings.broker.data_dir} holds no secured broker "
                "(fleetmedic broker start --secure)",
                file=sys.stderr,
            )
            return 2
        roles = {r: load_settings(layout.client_config(r)) for r in ("exporter", "detector", "remediator", "reviewer")}
        settings = load_settings(layout.client_config("admin"))
    return run_demo(
        settings, nodes=args.nodes, sim_seconds=args.hours * 3600, speed=args.speed, scenes=scenes, roles=roles
    )


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="the main job: fleet → detectors → remediator → real playbooks, with timelines",
        description="On fresh topics, runs `fleetmedic detect` and `fleetmedic remediate` as separate "
        "processes; simulates a fleet with injected faults and prints the incidents "
        "beside the ground truth (and the first incident's report page under "
        ".fleetmedic/); then kills a supervised service and, with Slurm installed, "
        "puts an XID on a node running a job, and prints each fault's timeline "
        "through detection, safety gates and the playbook run to the healed state.",
    )
    p.add_argument("--nodes", type=int, default=8)
    p.add_argument("--hours", type=float, default=4.0, help="simulated hours (default 4)")
    p.add_argument("--speed", type=float, default=480.0, help="simulated seconds per wall second (default 480)")
    p.add_argument("--skip", action="append", choices=("fleet", "service", "slurm"), help="leave a scene out")
    p.add_argument(
        "--secure",
        action="store_true",
        help="on the secured embedded broker (broker start --secure): each stage as its own principal",
    )
    p.set_defaults(func=cmd_demo)


COMMANDS = (register,)
