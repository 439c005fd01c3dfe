"""The doctor's checks of the remediator's side: ansible is installed, the playbooks directory
holds every playbook the policy names, and the inventory's hosts answer Ansible's ping."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from .findings import Finding

PLAYBOOK_ROLES = ("all", "remediate")


def needs_playbooks(role: str) -> bool:
    """Does `role` run playbooks (so ansible, the playbooks and the inventory matter)?"""
    return role in PLAYBOOK_ROLES


def check_ansible(role: str, findings: list[Finding]) -> Path | None:
    """The directory holding ansible and ansible-playbook, or None."""
    if not needs_playbooks(role):
        findings.append(Finding("ansible", "skip", f"role {role} runs no playbooks"))
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


def check_playbooks(role: str, playbooks: Path | None, policy: Path | None) -> list[Finding]:
    """The playbooks directory exists and holds every playbook `policy` names."""
    if not needs_playbooks(role):
        return [Finding("playbooks", "skip", f"role {role} runs no playbooks")]
    if playbooks is None:
        from fleetmedic.resources import bundled

        playbooks = bundled("playbooks")
    books = playbooks
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
    if policy is None:
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
        loaded = load_policy(policy)
    except (ConfigFileError, OSError) as exc:
        return [
            Finding(
                "playbooks",
                "fail",
                f"policy {policy} does not load: {exc}",
                "fix the file (the message names file:line)",
            )
        ]
    wanted = sorted({s.playbook for r in loaded.rules for s in r.steps if s.playbook})
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
                f"policy {policy} names {name}, not in {books}",
                f"copy {name} into {books}, or change the rule that names it",
            )
            for name in missing
        ]
    return [Finding("playbooks", "ok", f"{books}: all {len(wanted)} playbook(s) the policy names are there")]


def check_inventory(role: str, inventory: Path | None, timeout_s: float, ansible: Path | None) -> list[Finding]:
    """Every host of `inventory` answers Ansible's ping, with a timeout per host."""
    if not needs_playbooks(role):
        return [Finding("inventory", "skip", f"role {role} runs no playbooks")]
    if inventory is None:
        return [Finding("inventory", "skip", "no --inventory given")]
    if not inventory.exists():
        return [
            Finding(
                "inventory",
                "fail",
                f"{inventory}: no such file or directory",
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
    per_host = max(1, int(timeout_s))
    try:
        listed = subprocess.run(
            [str(ansible / "ansible-inventory"), "-i", str(inventory), "--list"],
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
                f"ansible-inventory cannot read {inventory}: {exc}",
                "run ansible-inventory -i INVENTORY --list and fix what it says",
            )
        ]
    if not hosts:
        return [
            Finding(
                "inventory",
                "fail",
                f"{inventory} holds no hosts ({listed.stderr.strip()[:200]})",
                "run ansible-inventory -i INVENTORY --list and fix what it says",
            )
        ]
    try:
        pinged = subprocess.run(
            [
                str(ansible / "ansible"),
                "all",
                "-i",
                str(inventory),
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
        return [Finding("inventory", "ok", f"{inventory}: all {len(hosts)} host(s) answer Ansible's ping")]
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
