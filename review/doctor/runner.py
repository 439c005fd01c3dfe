"""`Doctor` runs the checks in order for one deployment's settings (a check that depends on a
failed one is skipped), and `fleetmedic doctor` prints what it found and how to fix it."""

from __future__ import annotations

import argparse
from pathlib import Path

from fleetmedic.config import Settings

from .bus import check_acls, check_broker, check_lag, check_topics
from .findings import Finding
from .remediation import check_ansible, check_inventory, check_playbooks

ROLES = ("all", "exporter", "detect", "remediate", "approve", "review")
DEFAULT_GROUPS = ("detectors", "fleetmedic-remediator")


class Doctor:
    """Runs the checks for one deployment's settings; `run()` returns the findings in order."""

    def __init__(
        self,
        settings: Settings,
        *,
        role: str = "all",
        groups: tuple[str, ...] = DEFAULT_GROUPS,
        policy: str | Path | None = None,
        playbooks: str | Path | None = None,
        inventory: str | Path | None = None,
        max_lag: int = 10_000,
        timeout_s: float = 10.0,
    ) -> None:
        if role not in ROLES:
            raise ValueError(f"role {role!r}: one of {', '.join(ROLES)}")
        self.settings, self.role, self.groups = settings, role, tuple(groups)
        self.policy = Path(policy) if policy else None
        self.playbooks = Path(playbooks) if playbooks else None
        self.inventory = Path(inventory) if inventory else None
        self.max_lag, self.timeout_s = max_lag, timeout_s

    def run(self) -> list[Finding]:
        findings: list[Finding] = []
        admin = check_broker(self.settings, self.timeout_s, findings)
        if admin is None:
            for check in ("topics", "acls", "lag"):
                findings.append(Finding(check, "skip", "not checked: the broker does not answer"))
        else:
            try:
                findings += _guarded("topics", check_topics, self.settings, admin)
                findings += _guarded("acls", check_acls, self.settings, self.role, admin)
                findings += _guarded("lag", check_lag, self.settings, self.groups, self.max_lag, self.timeout_s, admin)
            finally:
                admin.close()
        ansible_findings: list[Finding] = []
        ansible = check_ansible(self.role, ansible_findings)
        findings += ansible_findings
        findings += _guarded("playbooks", check_playbooks, self.role, self.playbooks, self.policy)
        findings += _guarded("inventory", check_inventory, self.role, self.inventory, self.timeout_s, ansible)
        return findings


def _guarded(check: str, fn, *args) -> list[Finding]:
    """A check that raises becomes a failed finding: the doctor itself never crashes."""
    try:
        return fn(*args)
    except Exception as exc:
        return [
            Finding(
                check, "fail", f"the check itself failed: {type(exc).__name__}: {exc}", "run with -v for the details"
            )
        ]


def cmd_doctor(args: argparse.Namespace) -> int:
    from fleetmedic.cli import settings_from

    settings = settings_from(args)
    doctor = Doctor(
        settings,
        role=args.role,
        groups=tuple(args.group or DEFAULT_GROUPS),
        policy=args.policy,
        playbooks=args.playbooks,
        inventory=args.inventory,
        max_lag=args.max_lag,
        timeout_s=args.timeout,
    )
    findings = doctor.run()
    for finding in findings:
        print("\n".join(finding.lines()), flush=True)
    fails = sum(f.level == "fail" for f in findings)
    warns = sum(f.level == "warn" for f in findings)
    print(f"doctor: {fails} problem(s), {warns} warning(s)" + (": nothing wrong found" if not fails else ""))
    return 1 if fails else 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "doctor",
        help="check a deployment: broker, topics, ACLs, lag, ansible, playbooks, inventory",
        description="Check this deployment and print what is wrong and how to fix it: the broker "
        "(reachable, version), the topics and their settings, the ACLs of the "
        "configured principal, consumer-group lag, ansible, the playbooks directory "
        "against the policy, and whether the inventory's hosts answer. Changes "
        "nothing. Exits 1 when a check fails.",
    )
    p.add_argument(
        "--role",
        choices=ROLES,
        default="all",
        help="what this host runs: decides the ACLs checked and whether ansible matters (default all)",
    )
    p.add_argument(
        "--group",
        action="append",
        default=None,
        metavar="ID",
        help=f"consumer group whose lag to check (repeatable; default: {', '.join(DEFAULT_GROUPS)})",
    )
    p.add_argument("--policy", metavar="FILE", help="the remediator's policy: every playbook it names must exist")
    p.add_argument(
        "--playbooks", metavar="DIR", help="the remediator's playbooks directory (default: the packaged one)"
    )
    p.add_argument("--inventory", metavar="PATH", help="the Ansible inventory whose hosts must answer")
    p.add_argument("--max-lag", type=int, default=10_000, metavar="N", help="records behind that count as a problem")
    p.add_argument("--timeout", type=float, default=10.0, metavar="S", help="per broker request and per host")
    p.set_defaults(func=cmd_doctor)
