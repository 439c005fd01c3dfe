"""`fleetmedic playbook list` and `fleetmedic playbook try PLAYBOOK --incident FILE.json`.

`try` is for playbook authors: it finds the rule the remediator would pick for the incident
(first match in file order), the step of that rule that runs PLAYBOOK, renders that step's
variables exactly as the remediator does (`Step.render_vars`), and runs the playbook in Ansible
check mode through the same runner. Nothing changes on any host; nothing is written to Kafka.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fleetmedic.schemas import Incident

    from .policy import Policy, Rule, Step
    from .runner import ExtraVar

_DESCRIPTION = re.compile(r"^#\s?(.*)$")


def _first_comment(path: Path) -> str:
    for line in path.read_text(encoding="utf-8").splitlines():
        match = _DESCRIPTION.match(line)
        if match:
            return match.group(1).strip()
        if line.strip():
            break
    return ""


def _state_dir(args) -> Path:
    from fleetmedic.cli import settings_from

    return settings_from(args).state_dir


def cmd_list(args: argparse.Namespace) -> int:
    books = Path(args.playbooks)
    if not books.is_dir():
        print(f"fleetmedic: --playbooks {books}: not a directory", file=sys.stderr)
        return 2
    for path in sorted([*books.glob("*.yml"), *books.glob("*.yaml")]):
        print(f"{path.name:26s} {_first_comment(path)}")
    return 0


def _load_incident(path: str):
    from pydantic import ValidationError

    from fleetmedic.schemas import Incident

    try:
        return Incident.model_validate_json(Path(path).read_bytes())
    except OSError as exc:
        raise SystemExit(f"fleetmedic: --incident {path}: {exc.strerror}") from None
    except ValidationError as exc:
        raise SystemExit(f"fleetmedic: --incident {path}: not an incident record:\n{exc}") from None


def plan_try(
    policy: Policy, incident: Incident, playbook: str, step_index: int | None = None
) -> tuple[Rule, int, Step, dict[str, ExtraVar]]:
    """(rule, step index, step, variables) the remediator would use to run `playbook` for `incident`.

    ValueError says why there is none: no rule matches, or the matching rule runs another playbook.
    """
    rule = policy.rule_for(incident)
    if rule is None:
        raise ValueError(
            f"no policy rule matches incident {incident.id} (kind {incident.kind}, "
            f"severity {incident.severity}, host {incident.host}): the remediator would do nothing"
        )
    steps = list(enumerate(rule.steps))
    if step_index is not None:
        if not 0 <= step_index < len(steps):
            raise ValueError(f"rule {rule.name} has steps 0..{len(steps) - 1}, not {step_index}")
        steps = [steps[step_index]]
    for index, step in steps:
        if step.playbook == playbook:
            return rule, index, step, policy.render_vars(step, incident)
    runs = ", ".join(f"step {i}: {s.playbook or s.action}" for i, s in enumerate(rule.steps))
    raise ValueError(
        f"rule {rule.name} (the first that matches) does not run {playbook}"
        f"{f' at step {step_index}' if step_index is not None else ''} ({runs})"
    )


def cmd_try(args: argparse.Namespace) -> int:
    from fleetmedic.extras import require

    require("remediate", "fleetmedic playbook try")
    from .policy import load_policy
    from .policy_vars import PolicyError
    from .runner import PlaybookRefused, PlaybookRun, run_playbook

    policy = load_policy(args.policy)
    incident = _load_incident(args.incident)
    artifacts = args.artifacts or _state_dir(args) / "artifacts"
    try:
        rule, index, step, extra_vars = plan_try(policy, incident, args.playbook, args.step)
    except (ValueError, PolicyError) as exc:
        print(f"fleetmedic: playbook try: {exc}", file=sys.stderr)
        return 1
    print(f"rule {rule.name}, step {index} ({step.action}): {args.playbook} in check mode with")
    print(json.dumps(extra_vars, indent=2, sort_keys=True))
    try:
        result = run_playbook(
            PlaybookRun(args.playbook, extra_vars, check=True, timeout_s=step.timeout_s),
            playbooks_dir=Path(args.playbooks),
            artifacts_dir=Path(artifacts),
        )
    except PlaybookRefused as exc:
        print(f"fleetmedic: playbook try: refused: {exc}", file=sys.stderr)
        return 1
    if args.show_output and result.artifacts is not None:
        print((result.artifacts / "stdout").read_text(encoding="utf-8", errors="replace"))
    s = result.summary
    print(
        f"{result.status} rc={result.rc} in {result.duration_s:.2f}s: ok={s.ok} changed={s.changed} "
        f"failed={s.failed} skipped={s.skipped} unreachable={s.unreachable}"
        + (f" failed tasks: {', '.join(s.failed_tasks)}" if s.failed_tasks else "")
    )
    if result.artifacts is not None:
        print(f"artifacts: {result.artifacts}")
    return 0 if result.status == "succeeded" else 1


def register(sub: argparse._SubParsersAction) -> None:
    from fleetmedic.resources import bundled

    p = sub.add_parser("playbook", help="list the allowed playbooks, or try one in check mode")
    actions = p.add_subparsers(dest="playbook_action", required=True)

    ls = actions.add_parser("list", help="the playbooks the remediator may run")
    ls.add_argument(
        "--playbooks",
        default=str(bundled("playbooks")),
        metavar="DIR",
        help="the allowed playbooks directory (default: the packaged playbooks)",
    )
    ls.set_defaults(func=cmd_list)

    tr = actions.add_parser("try", help="check-mode run with exactly the variables the remediator would pass")
    tr.add_argument("playbook", metavar="PLAYBOOK", help="file name inside --playbooks")
    tr.add_argument("--incident", required=True, metavar="FILE.json", help="an incident record (incidents.v1 JSON)")
    tr.add_argument(
        "--policy",
        default=str(bundled("deploy") / "policy.example.yaml"),
        metavar="FILE",
        help="policy YAML (default: the packaged deploy/policy.example.yaml)",
    )
    tr.add_argument(
        "--step", type=int, default=None, metavar="N", help="the ladder step (default: first running PLAYBOOK)"
    )
    tr.add_argument(
        "--playbooks",
        default=str(bundled("playbooks")),
        metavar="DIR",
        help="the allowed playbooks directory (default: the packaged playbooks)",
    )
    tr.add_argument("--artifacts", default=None, metavar="DIR", help="default: STATE_DIR/artifacts")
    tr.add_argument("--show-output", action="store_true", help="print ansible-playbook's output")
    tr.set_defaults(func=cmd_try)
