"""`fleetmedic doctor`: check a deployment, say what is wrong and how to fix it.

Read-only, like `topics create --check`: it connects, lists, describes and pings, and changes
nothing. One `Finding` per check and problem, each `ok`, `warn` (works, but deserves a look),
`fail` (this deployment will not work as configured) or `skip` (not checked: a check it depends
on failed, or the role does not need it). The checks, in order:

- **broker**: the bootstrap list answers; the broker's version (as kafka-python's API-version
  probe reads it), the number of brokers and the controller.
- **topics**: every configured topic exists with the configured partitions, replication factor
  and settings (the same comparison as `fleetmedic topics create --check`).
- **acls**: the configured principal's ACLs (DescribeAcls) against what `--role` needs; a cluster
  without an authorizer answers "security disabled", reported as "no ACLs are enforced".
- **lag**: each consumer group's committed offsets against the end of its partitions.
- **ansible**: ansible-playbook and ansible-runner are installed (roles that run playbooks).
- **playbooks**: the playbooks directory exists and holds every playbook the policy names.
- **inventory**: every host of the Ansible inventory answers Ansible's own ping (SSH and Python,
  with the inventory's connection settings), with a timeout per host.

This module sits on top of the stages (it reads the remediator's policy); `fleetmedic doctor`
runs from the base install: the ansible checks report what is missing instead of failing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from fleetmedic.config import Settings
from fleetmedic.topics import topic_name, topic_specs

Level = Literal["ok", "warn", "fail", "skip"]
ROLES = ("all", "exporter", "detect", "remediate", "approve", "review")
DEFAULT_GROUPS = ("detectors", "fleetmedic-remediator")
_PLAYBOOK_ROLES = ("all", "remediate")

# What each role does on the bus: (operation, topic without prefix). Groups need READ too.
ROLE_NEEDS: dict[str, tuple[tuple[str, str], ...]] = {
    "exporter": (("WRITE", "metrics.v1"), ("WRITE", "logs.v1")),
    "detect": (
        ("READ", "metrics.v1"),
        ("READ", "logs.v1"),
        ("READ", "state.v1"),
        ("WRITE", "incidents.v1"),
        ("WRITE", "state.v1"),
        ("WRITE", "deadletter.v1"),
    ),
    "remediate": (
        ("READ", "incidents.v1"),
        ("READ", "approvals.v1"),
        ("READ", "remediations.v1"),
        ("WRITE", "remediations.v1"),
        ("WRITE", "deadletter.v1"),
    ),
    "approve": (("READ", "remediations.v1"), ("WRITE", "approvals.v1")),
    "review": tuple(
        ("READ", t)
        for t in (
            "metrics.v1",
            "logs.v1",
            "incidents.v1",
            "remediations.v1",
            "approvals.v1",
            "deadletter.v1",
            "state.v1",
        )
    ),
}
ROLE_NEEDS["all"] = tuple(dict.fromkeys(n for needs in ROLE_NEEDS.values() for n in needs))


@dataclass(frozen=True)
class Finding:
    check: str
    level: Level
    message: str
    fix: str = ""

    def lines(self) -> list[str]:
        label = {"ok": "ok", "warn": "WARN", "fail": "FAIL", "skip": "skip"}[self.level]
        out = [f"{label:5s} {self.check:10s} {self.message}"]
        if self.fix:
            out.append(f"{'':5s} {'':10s} fix: {self.fix}")
        return out


def principal_of(settings: Settings) -> str:
    """The principal the brokers see for these settings (Kafka's default principal builder)."""
    sec = settings.security
    if sec.security_protocol.startswith("SASL") and sec.sasl_plain_username:
        return f"User:{sec.sasl_plain_username}"
    if sec.security_protocol == "SSL" and sec.ssl_certfile:
        from cryptography import x509

        cert = x509.load_pem_x509_certificate(Path(sec.ssl_certfile).read_bytes())
        return f"User:{cert.subject.rfc4514_string()}"
    return "User:ANONYMOUS"


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

    # --- the bus -------------------------------------------------------------------------
    def run(self) -> list[Finding]:
        findings: list[Finding] = []
        admin = self._broker(findings)
        if admin is None:
            for check in ("topics", "acls", "lag"):
                findings.append(Finding(check, "skip", "not checked: the broker does not answer"))
        else:
            try:
                findings += _guarded("topics", self._topics, admin)
                findings += _guarded("acls", self._acls, admin)
                findings += _guarded("lag", self._lag, admin)
            finally:
                admin.close()
        ansible_findings: list[Finding] = []
        ansible = self._ansible(ansible_findings)
        findings += ansible_findings
        findings += _guarded("playbooks", self._playbooks)
        findings += _guarded("inventory", self._inventory, ansible)
        return findings

    def _broker(self, findings: list[Finding]):
        from kafka.errors import KafkaError

        from fleetmedic.topics import admin_client

        where = ",".join(self.settings.bootstrap_servers)
        try:
            admin = admin_client(
                self.settings,
                api_version_auto_timeout_ms=int(self.timeout_s * 1000),
                request_timeout_ms=int(self.timeout_s * 1000),
            )
            cluster = admin.describe_cluster()
        except (KafkaError, OSError) as exc:
            findings.append(
                Finding(
                    "broker",
                    "fail",
                    f"{where} does not answer ({type(exc).__name__}: {exc})",
                    "check bootstrap_servers (FLEETMEDIC_BOOTSTRAP_SERVERS), that this host reaches the listener, "
                    "and the security settings (a TLS listener answers nothing to PLAINTEXT)",
                )
            )
            return None
        version = ".".join(map(str, admin.config.get("api_version") or ())) or "unknown"
        brokers = cluster.get("brokers") or []
        findings.append(
            Finding(
                "broker",
                "ok",
                f"{where} answers: {len(brokers)} broker(s), controller "
                f"{cluster.get('controller_id')}, protocol of Kafka {version} or newer "
                f"(kafka-python's probe tells no newer version apart)",
            )
        )
        rf = self.settings.topics.replication_factor  # None: follows the cluster, min(3, brokers)
        if rf is None:
            pass
        elif brokers and rf > len(brokers):
            findings.append(
                Finding(
                    "broker",
                    "fail",
                    f"topics.replication_factor {rf} > {len(brokers)} broker(s)",
                    f"set topics.replication_factor: {len(brokers)} or add brokers",
                )
            )
        elif brokers and len(brokers) >= 3 and rf < 3:
            findings.append(
                Finding(
                    "broker",
                    "warn",
                    f"topics.replication_factor {rf} on {len(brokers)} brokers: losing one broker loses data",
                    "set topics.replication_factor: 3 before creating the topics",
                )
            )
        return admin

    def _topics(self, admin) -> list[Finding]:
        from fleetmedic.topiccheck import topic_drift

        drift = topic_drift(self.settings, admin)
        if not drift:
            return [
                Finding(
                    "topics",
                    "ok",
                    f"{len(topic_specs(self.settings))} topics under "
                    f"{self.settings.topic_prefix!r} match the configuration",
                )
            ]
        bootstrap = self.settings.bootstrap_servers[0]
        return [Finding("topics", "fail", d.describe(), d.fix(bootstrap)) for d in drift]

    def _acls(self, admin) -> list[Finding]:
        from kafka.admin import (
            ACLFilter,
            ACLOperation,
            ACLPermissionType,
            ACLResourcePatternType,
            ResourcePatternFilter,
        )
        from kafka.admin.acl_resource import ResourceType
        from kafka.errors import KafkaError, SecurityDisabledError

        principal = principal_of(self.settings)
        acls = []
        try:
            for who in (principal, "User:*"):
                found, _ = admin.describe_acls(
                    ACLFilter(
                        principal=who,
                        host=None,
                        operation=ACLOperation.ANY,
                        permission_type=ACLPermissionType.ANY,
                        resource_pattern=ResourcePatternFilter(ResourceType.ANY, None, ACLResourcePatternType.ANY),
                    )
                )
                acls += found
        except SecurityDisabledError:
            return [
                Finding(
                    "acls",
                    "warn",
                    f"no authorizer answers: the cluster enforces no ACLs, so any client "
                    f"that reaches it may write incidents and approvals (principal "
                    f"{principal})",
                    "enable an authorizer and per-role principals (docs/deploy.md, 'Security')",
                )
            ]
        except KafkaError as exc:
            return [
                Finding(
                    "acls",
                    "fail",
                    f"cannot describe the ACLs of {principal} ({type(exc).__name__}: {exc})",
                    f"grant {principal} DESCRIBE on the cluster, or run doctor as an admin principal",
                )
            ]
        missing = [
            (op, topic)
            for op, topic in ROLE_NEEDS[self.role]
            if not _allowed(acls, op, topic_name(self.settings, topic))
        ]
        if not missing:
            return [
                Finding(
                    "acls",
                    "ok",
                    f"{principal} holds what role {self.role} needs "
                    f"({len(ROLE_NEEDS[self.role])} topic operations, {len(acls)} ACL(s))",
                )
            ]
        bootstrap = self.settings.bootstrap_servers[0]
        return [
            Finding(
                "acls",
                "fail",
                f"{principal} may not {op} {topic_name(self.settings, topic)} (role {self.role})",
                f"kafka-acls.sh --bootstrap-server {bootstrap} --add --allow-principal {principal} "
                f"--operation {op.capitalize()} --topic {topic_name(self.settings, topic)}",
            )
            for op, topic in missing
        ]

    def _committed(self, admin, group: str) -> dict:
        """The group's committed offsets; the coordinator may need a moment on a fresh cluster."""
        import time

        from kafka.errors import CoordinatorNotAvailableError

        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                return admin.list_consumer_group_offsets(group)
            except CoordinatorNotAvailableError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)  # Kafka creates __consumer_offsets on the first request

    def _lag(self, admin) -> list[Finding]:
        from kafka import KafkaConsumer
        from kafka.errors import KafkaError

        out = []
        consumer = None
        try:
            for group in self.groups:
                try:
                    committed = self._committed(admin, group)
                except KafkaError as exc:
                    out.append(
                        Finding(
                            "lag",
                            "warn",
                            f"group {group}: no coordinator answers ({type(exc).__name__}); "
                            "no group has committed on this cluster yet?",
                            "start the consumers; kafka-consumer-groups.sh --list shows the groups",
                        )
                    )
                    continue
                committed = {tp: meta.offset for tp, meta in committed.items() if meta.offset >= 0}
                if not committed:
                    out.append(
                        Finding(
                            "lag",
                            "warn",
                            f"group {group} has committed nothing (not started yet, "
                            f"or its members run with another --group)",
                            "start its members, or pass --group with the id they use",
                        )
                    )
                    continue
                if consumer is None:
                    consumer = KafkaConsumer(
                        client_id=f"{self.settings.client_id}-doctor", **self.settings.kafka_kwargs()
                    )
                ends = consumer.end_offsets(list(committed))
                lag = {tp: max(0, ends[tp] - off) for tp, off in committed.items()}
                total = sum(lag.values())
                worst = max(lag, key=lambda tp: lag[tp])
                text = (
                    f"group {group}: {total} record(s) behind over {len(lag)} partition(s) "
                    f"(most: {worst.topic}[{worst.partition}] {lag[worst]})"
                )
                if total > self.max_lag:
                    out.append(
                        Finding(
                            "lag",
                            "fail",
                            text + f", more than --max-lag {self.max_lag}",
                            f"check its members run (kafka-consumer-groups.sh --describe --group {group}); "
                            f"detectors scale out up to topics.partitions "
                            f"({self.settings.topics.partitions}) members",
                        )
                    )
                else:
                    out.append(Finding("lag", "ok", text))
        finally:
            if consumer is not None:
                consumer.close()
        return out

    # --- the remediator's side -----------------------------------------------------------
    def _needs_playbooks(self) -> bool:
        return self.role in _PLAYBOOK_ROLES

    def _ansible(self, findings: list[Finding]) -> Path | None:
        """The directory holding ansible and ansible-playbook, or None."""
        if not self._needs_playbooks():
            findings.append(Finding("ansible", "skip", f"role {self.role} runs no playbooks"))
            return None
        here = Path(sys.executable).parent
        bin_dir = here if (here / "ansible-playbook").exists() else None
        on_path = shutil.which("ansible-playbook")
        if bin_dir is None and on_path:
            bin_dir = Path(on_path).parent
        from fleetmedic.extras import _find

        runner = _find("ansible_runner") is not None
        if bin_dir is None or not runner:
            missing = ", ".join(
                n for n, present in (("ansible-playbook", bin_dir), ("ansible-runner", runner)) if not present
            )
            findings.append(
                Finding(
                    "ansible",
                    "fail",
                    f"{missing} not installed",
                    "pip install 'fleetmedic[remediate]' into the remediator's environment",
                )
            )
            return None
        try:
            done = subprocess.run(
                [str(bin_dir / "ansible-playbook"), "--version"], capture_output=True, text=True, timeout=60
            )
            version = done.stdout.splitlines()[0].strip() if done.stdout else "unknown version"
        except (OSError, subprocess.TimeoutExpired) as exc:
            findings.append(
                Finding(
                    "ansible",
                    "fail",
                    f"ansible-playbook does not start: {exc}",
                    "reinstall: pip install --force-reinstall 'fleetmedic[remediate]'",
                )
            )
            return None
        findings.append(Finding("ansible", "ok", f"{version} in {bin_dir}, ansible-runner importable"))
        return bin_dir

    def _playbooks(self) -> list[Finding]:
        if not self._needs_playbooks():
            return [Finding("playbooks", "skip", f"role {self.role} runs no playbooks")]
        if self.playbooks is None:
            from fleetmedic.resources import bundled

            self.playbooks = bundled("playbooks")
        books = self.playbooks
        if not books.is_dir():
            return [
                Finding(
                    "playbooks",
                    "fail",
                    f"{books} is not a directory",
                    "pass the remediator's --playbooks directory (the packaged one is fleetmedic/_bundled/playbooks)",
                )
            ]
        present = {p.name for p in books.iterdir() if p.suffix in (".yml", ".yaml")}
        if self.policy is None:
            return [
                Finding(
                    "playbooks",
                    "ok" if present else "fail",
                    f"{books}: {len(present)} playbook(s); no --policy given, so none checked by name",
                    "" if present else "put the playbooks there, or point --playbooks at them",
                )
            ]
        from fleetmedic.yamlfile import ConfigFileError
        from remediator.policy import load_policy

        try:
            policy = load_policy(self.policy)
        except (ConfigFileError, OSError) as exc:
            return [
                Finding(
                    "playbooks",
                    "fail",
                    f"policy {self.policy} does not load: {exc}",
                    "fix the file (the message names file:line)",
                )
            ]
        wanted = sorted({s.playbook for r in policy.rules for s in r.steps if s.playbook})
        missing = [
            w
            for w in wanted
            if not (books / w).resolve().is_file() or not (books / w).resolve().is_relative_to(books.resolve())
        ]
        if missing:
            return [
                Finding(
                    "playbooks",
                    "fail",
                    f"policy {self.policy} names {name}, not in {books}",
                    f"copy {name} into {books}, or change the rule that names it",
                )
                for name in missing
            ]
        return [Finding("playbooks", "ok", f"{books}: all {len(wanted)} playbook(s) the policy names are there")]

    def _inventory(self, ansible: Path | None) -> list[Finding]:
        if not self._needs_playbooks():
            return [Finding("inventory", "skip", f"role {self.role} runs no playbooks")]
        if self.inventory is None:
            return [Finding("inventory", "skip", "no --inventory given")]
        if not self.inventory.exists():
            return [
                Finding(
                    "inventory",
                    "fail",
                    f"{self.inventory}: no such file or directory",
                    "pass the inventory the remediator uses",
                )
            ]
        if ansible is None:
            return [Finding("inventory", "skip", "not checked: ansible is not installed")]
        env = dict(
            os.environ,
            ANSIBLE_NOCOLOR="1",
            ANSIBLE_LOCALHOST_WARNING="0",
            ANSIBLE_INVENTORY_UNPARSED_WARNING="0",
            ANSIBLE_DEPRECATION_WARNINGS="0",
        )
        per_host = max(1, int(self.timeout_s))
        try:
            listed = subprocess.run(
                [str(ansible / "ansible-inventory"), "-i", str(self.inventory), "--list"],
                capture_output=True,
                text=True,
                timeout=120,
                env=env,
            )
            hosts = sorted(json.loads(listed.stdout or "{}").get("_meta", {}).get("hostvars", {}))
        except (OSError, subprocess.TimeoutExpired, ValueError) as exc:
            return [
                Finding(
                    "inventory",
                    "fail",
                    f"ansible-inventory cannot read {self.inventory}: {exc}",
                    "run ansible-inventory -i INVENTORY --list and fix what it says",
                )
            ]
        if not hosts:
            return [
                Finding(
                    "inventory",
                    "fail",
                    f"{self.inventory} holds no hosts ({listed.stderr.strip()[:200]})",
                    "run ansible-inventory -i INVENTORY --list and fix what it says",
                )
            ]
        try:
            pinged = subprocess.run(
                [
                    str(ansible / "ansible"),
                    "all",
                    "-i",
                    str(self.inventory),
                    "-m",
                    "ansible.builtin.ping",
                    "-o",
                    "-T",
                    str(per_host),
                    "--forks",
                    "20",
                ],
                capture_output=True,
                text=True,
                env=env,
                timeout=120 + per_host * (len(hosts) // 20 + 1) * 2,
            )
        except subprocess.TimeoutExpired:
            return [
                Finding(
                    "inventory",
                    "fail",
                    f"ansible ping of {len(hosts)} host(s) did not finish",
                    "run ansible all -i INVENTORY -m ping and look at the slow hosts",
                )
            ]
        outcome = {}
        for line in pinged.stdout.splitlines():
            m = re.match(r"^(\S+) \| (SUCCESS|CHANGED|UNREACHABLE!|FAILED!)", line)
            if m:
                outcome[m.group(1)] = m.group(2).rstrip("!")
        bad = [h for h in hosts if outcome.get(h) not in ("SUCCESS", "CHANGED")]
        if not bad:
            return [Finding("inventory", "ok", f"{self.inventory}: all {len(hosts)} host(s) answer Ansible's ping")]
        shown = ", ".join(f"{h} ({outcome.get(h, 'no answer').lower()})" for h in bad[:10])
        more = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
        return [
            Finding(
                "inventory",
                "fail",
                f"{len(bad)} of {len(hosts)} host(s) do not answer: {shown}{more}",
                "ansible HOST -i INVENTORY -m ping -vvv shows why (SSH key, user, ansible_host/port, "
                "host key, Python on the host)",
            )
        ]


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


def _allowed(acls, operation: str, topic: str) -> bool:
    """Do these ACLs allow `operation` on `topic` (no DENY matching, some ALLOW matching)?"""
    from kafka.admin import ACLOperation, ACLPermissionType, ACLResourcePatternType
    from kafka.admin.acl_resource import ResourceType

    def matches(acl) -> bool:
        pattern = acl.resource_pattern
        if pattern.resource_type != ResourceType.TOPIC:
            return False
        if acl.operation not in (ACLOperation[operation], ACLOperation.ALL):
            return False
        if pattern.pattern_type == ACLResourcePatternType.PREFIXED:
            return topic.startswith(pattern.resource_name)
        return pattern.resource_name in (topic, "*")

    relevant = [a for a in acls if matches(a)]
    if any(a.permission_type == ACLPermissionType.DENY for a in relevant):
        return False
    return any(a.permission_type == ACLPermissionType.ALLOW for a in relevant)


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
