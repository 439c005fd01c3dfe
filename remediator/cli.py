"""The remediator's commands: `fleetmedic remediate` and `fleetmedic approve ID` here, and the stage's
others from their modules (`COMMANDS`: playbook, pause/silence/maintenance; `ALERT_ACTIONS`: alerts notify)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fleetmedic.cli import settings_from

from . import alerts_cli, control_cli, playbook_cli


def cmd_remediate(args: argparse.Namespace) -> int:
    from fleetmedic.extras import require

    require("remediate", "fleetmedic remediate")
    from .engine import Remediator, RunnerConfig
    from .inventory import Inventory, InventoryError
    from .policy import load_policy

    policy = load_policy(args.policy)
    playbooks = Path(args.playbooks)
    if not playbooks.is_dir():
        print(f"fleetmedic: --playbooks {playbooks}: not a directory", file=sys.stderr)
        return 2
    settings = settings_from(args)
    artifacts = Path(args.artifacts) if args.artifacts else settings.state_dir / "artifacts"
    inventory = None
    if args.inventory:
        try:
            inventory = Inventory(args.inventory, refresh_s=args.inventory_refresh_s, name_var=args.host_var)
        except InventoryError as exc:
            print(f"fleetmedic: --inventory: {exc}", file=sys.stderr)
            return 2
        # health checks (`host_url` variables) go to the inventory's address of the incident host
        from .hostaddr import use_address_source

        use_address_source(inventory.address)
        missing = sorted(g for g in policy.inventory_groups() if not inventory.has_group(g))
        if missing:
            print(
                f"remediator: warning: policy host groups name inventory groups that {args.inventory} does not "
                f"have (yet): {', '.join('@' + g for g in missing)}",
                file=sys.stderr,
                flush=True,
            )
    engine = Remediator(
        settings,
        policy,
        RunnerConfig(playbooks_dir=playbooks, artifacts_dir=artifacts, keep_artifacts=args.keep_artifacts),
        group_id=args.group,
        session_timeout_ms=int(args.session_timeout_s * 1000),
        policy_path=args.policy,
        inventory=inventory,
    )
    from fleetmedic import metrics

    server = metrics.serve_for(args, "remediator")
    if server is not None:
        server.ready_when(metrics.loop_ready(engine.loop))
    where = (
        f"inventory {args.inventory} ({len(inventory.hosts)} hosts, refreshed every {args.inventory_refresh_s:g}s)"
        if inventory is not None
        else "no inventory: single-machine mode, host-side playbooks act on localhost"
    )
    print(
        f"remediator: group {args.group}, policy {args.policy} ({len(policy.rules)} rules), "
        f"playbooks {playbooks.resolve()}, {where}",
        flush=True,
    )
    try:
        engine.run()
    finally:
        if server is not None:
            server.close()
    return 0


def cmd_approve(args: argparse.Namespace) -> int:
    from .approvals import ApprovalError, write_approval

    try:
        approval, request = write_approval(
            settings_from(args),
            args.id,
            key_file=args.key,
            deny=args.deny,
            by=args.by,
            comment=args.comment,
            valid_s=args.valid_s,
        )
    except ApprovalError as exc:
        print(f"fleetmedic: approve: {exc}", file=sys.stderr)
        return 1
    print(
        f"{approval.decision} {approval.remediation_id}: {request.action} ({request.playbook}) on "
        f"{request.host} for incident {request.incident_id}, by {approval.by} (signed, nonce {approval.nonce})"
    )
    return 0


def cmd_approver_key(args: argparse.Namespace) -> int:
    from .approvals import ApprovalError, generate_key

    try:
        public = generate_key(Path(args.out))
    except ApprovalError as exc:
        print(f"fleetmedic: approver-key: {exc}", file=sys.stderr)
        return 1
    print(f"private key written to {Path(args.out).expanduser()} (mode 0600: keep it to yourself)")
    print("add this line under `approvals: approvers:` in the remediator's policy:")
    print(f"    {args.name}: {public}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from fleetmedic.resources import bundled

    p = sub.add_parser(
        "remediate",
        help="run the remediator: incidents → policy → safety gates → playbooks",
        description="Consume incidents (and approvals), choose an action by the policy (first "
        "matching rule in file order), pass it through the safety gates, claim it on "
        "the remediations topic, run the playbook with ansible-runner and record the "
        "outcome. SIGTERM finishes the batch in hand and exits.",
    )
    p.add_argument(
        "--policy",
        required=True,
        metavar="FILE",
        help="policy YAML (see deploy/policy.example.yaml; /etc/fleetmedic/policy.yaml in deploy/systemd)",
    )
    p.add_argument(
        "--playbooks",
        default=str(bundled("playbooks")),
        metavar="DIR",
        help="the allowed playbooks directory (default: the packaged playbooks)",
    )
    p.add_argument(
        "--artifacts",
        default=None,
        metavar="DIR",
        help="ansible-runner artifacts (newest --keep-artifacts runs are kept; default: STATE_DIR/artifacts)",
    )
    p.add_argument("--keep-artifacts", type=int, default=50, metavar="N")
    p.add_argument(
        "--inventory",
        metavar="SOURCE",
        default=None,
        help="the fleet: an Ansible inventory (file, directory, script or plugin config; whatever "
        "`ansible-inventory -i SOURCE --list` reads). Without it: single-machine mode",
    )
    p.add_argument(
        "--inventory-refresh-s",
        type=float,
        default=300.0,
        metavar="S",
        help="re-read the inventory when S seconds have passed",
    )
    p.add_argument(
        "--host-var",
        default="fleetmedic_host",
        metavar="VAR",
        help="host variable holding the exporter's name of a host, where it differs from the inventory name",
    )
    p.add_argument("--group", default="fleetmedic-remediator", help="consumer group id")
    p.add_argument(
        "--session-timeout-s",
        type=float,
        default=10.0,
        metavar="S",
        help="a crashed remediator's incidents move to another member after S seconds (>= 6)",
    )
    from fleetmedic.metrics import add_arguments as add_metrics_arguments

    add_metrics_arguments(p)
    p.set_defaults(func=cmd_remediate)

    p = sub.add_parser(
        "approve",
        help="approve (or --deny) a remediation that is awaiting approval",
        description="Write an Approval record for remediation ID (shown in its awaiting_approval "
        "record). Unanswered requests are denied when they expire.",
    )
    p.add_argument("id", metavar="ID")
    p.add_argument("--deny", action="store_true")
    p.add_argument(
        "--by",
        default=None,
        help="who decides: your name in the policy's approvals.approvers (default: the login name)",
    )
    p.add_argument(
        "--key",
        default=None,
        metavar="FILE",
        help="your Ed25519 private key (default ~/.config/fleetmedic/approver.key); the approval is "
        "signed with it and the remediator checks it against the policy's public key",
    )
    p.add_argument("--comment", default="")
    p.add_argument(
        "--valid-s",
        type=float,
        default=3600.0,
        metavar="S",
        help="the approval is void when not acted on within S seconds (broker time)",
    )
    p.set_defaults(func=cmd_approve)

    p = sub.add_parser(
        "approver-key",
        help="make an approver's Ed25519 key pair for signed approvals",
        description="Write a new private key to --out (mode 0600, never overwritten) and print the "
        "public key line to add under approvals.approvers in the policy.",
    )
    p.add_argument("name", metavar="NAME", help="the approver's name (what `fleetmedic approve --by` gives)")
    p.add_argument("--out", default="~/.config/fleetmedic/approver.key", metavar="FILE")
    p.set_defaults(func=cmd_approver_key)


# The stage's top-level commands, in the order `fleetmedic --help` lists them.
COMMANDS = (register, playbook_cli.register, control_cli.register)
# This stage's actions of the shared `fleetmedic alerts` group (composed in fleetmedic/cli.py).
ALERT_ACTIONS = (alerts_cli.add_notify,)
