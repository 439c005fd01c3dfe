"""The remediation policy: a declarative YAML file that maps incidents to actions.

The file is validated by pydantic through `fleetmedic.yamlfile`, so every error names the file,
the line and the reason. Matching order is explicit: **rules are tried in file order and the
first rule whose `match` holds wins**; later rules are not consulted. A rule holds an escalation
ladder (`steps`): step 0 is the first action; the remediator takes step N+1 when the incident has
not resolved `resolve_within_s` after step N finished (or at once when step N failed).

A step's extra variables are typed and come only from an allow-list of incident fields
(`policy_vars.ALLOWED_SOURCES`, plus `labels.<name>` and `details.<name>` for evidence details) or
from constants written in the policy. Nothing else of an incident can reach a playbook.

This module holds the rules (`Step`, `Rule`) and the whole file (`Policy`); the variables are in
`remediator.policy_vars`, `match` and the `gates` and `approvals` sections in `remediator.policy_gates`.

Example::

    >>> from remediator.policy import Policy
    >>> policy = Policy.model_validate({"rules": [{"name": "crashed", "match": {"kinds": ["service_down"]},
    ...     "steps": [{"action": "restart_service", "playbook": "restart_service.yml",
    ...                "vars": {"service": {"from": "subject"}}}]}]})
    >>> [r.name for r in policy.rules]
    ['crashed']
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field, PrivateAttr, StringConstraints, field_validator, model_validator

from fleetmedic.schemas import Incident
from fleetmedic.yamlfile import load_model

from .policy_gates import Approvals, Gates, Match
from .policy_vars import Ident, PolicyError, VarName, VarSpec, _Strict

if TYPE_CHECKING:
    from .inventory import Inventory

HUMAN = "human"  # the action name of a ladder's last rung: hand the incident to a person


class Step(_Strict):
    """One rung of the escalation ladder: a playbook with its variables, or `action: human`."""

    action: Ident
    playbook: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_./-]{0,200}\.ya?ml$")] | None = None
    vars: dict[VarName, VarSpec] = Field(default_factory=dict)
    dry_run: bool | None = Field(None, description="run in Ansible check mode; default: the rule's")
    needs_approval: bool | None = Field(None, description="wait for `fleetmedic approve`; default: the rule's")
    timeout_s: float = Field(300.0, gt=0, le=86400)
    resolve_within_s: float = Field(
        300.0, gt=0, le=7 * 86400, description="escalate when the incident is still open this long after the run"
    )
    out_of_service: bool = Field(
        False,
        description="this step takes the host out of service (drain, cordon): it "
        "counts against the blast radius until the rule's "
        "return_to_service step has succeeded",
    )

    @model_validator(mode="after")
    def _playbook_unless_human(self) -> Step:
        if self.action == HUMAN and self.playbook is not None:
            raise ValueError("action `human` hands the incident to a person: it takes no playbook")
        if self.action != HUMAN and self.playbook is None:
            raise ValueError(f"action `{self.action}` needs a playbook")
        if self.playbook is not None and ".." in Path(self.playbook).parts:
            raise ValueError("playbook: '..' is not allowed")
        for name, spec in self.vars.items():
            if name.startswith("ansible_"):
                raise ValueError(f"vars.{name}: ansible_* variables are set by the runner only")
            if "url" in name.lower() and spec.source is not None:
                raise ValueError(
                    f"vars.{name}: a URL the controller fetches cannot come from an incident field "
                    f"(`from: {spec.source}`): use `host_url: {{port: ..., path: ...}}` (the host's "
                    "own address) or a constant `value`"
                )
        return self

    def render_vars(
        self, incident: Incident, address_of: Callable[[str], str | None] | None = None, url_allow: tuple[str, ...] = ()
    ) -> dict[str, str | int | float | bool]:
        """The extra variables this step passes for `incident` (PolicyError names the variable);
        `address_of(host)` gives a host's own address for `host_url` variables."""
        out = {}
        for name, spec in self.vars.items():
            try:
                out[name] = spec.render(incident, address_of, url_allow)
            except PolicyError as exc:
                raise PolicyError(f"variable {name}: {exc}") from None
        return out


class Rule(_Strict):
    name: Ident
    match: Match = Match()
    steps: list[Step] = Field(min_length=1, description="the escalation ladder, step 0 first")
    dry_run: bool = False
    needs_approval: bool = False
    approvers_required: int = Field(1, ge=1, le=32, description="distinct approvers a needs_approval step waits for")
    return_to_service: Step | None = Field(
        None,
        description="run once the incident has resolved when an out_of_service step ran (Slurm resume, "
        "Kubernetes uncordon); its remediation step number is len(steps)",
    )

    @model_validator(mode="after")
    def _return_step(self) -> Rule:
        if self.return_to_service is not None and self.return_to_service.action == HUMAN:
            raise ValueError("return_to_service: a playbook step, not `human`")
        return self

    def step_at(self, index: int) -> Step | None:
        """Step `index` of the ladder; len(steps) is the return-to-service step (None when absent)."""
        if 0 <= index < len(self.steps):
            return self.steps[index]
        if index == len(self.steps):
            return self.return_to_service
        return None


class Policy(_Strict):
    """The whole policy file."""

    host_groups: dict[Ident, list[str]] = Field(
        default_factory=dict, description="group → host globs and `@group` (an inventory group)"
    )
    _inventory: Any = PrivateAttr(None)
    gates: Gates = Gates()
    approvals: Approvals = Approvals()
    rules: list[Rule] = Field(default_factory=list)
    inventory: dict[str, str] = Field(default_factory=dict, description="host → its own address, for host_url")
    url_allow: list[str] = Field(default_factory=list, description="globs every host_url must match (when given)")

    @model_validator(mode="after")
    def _references(self) -> Policy:
        names = set()
        for i, rule in enumerate(self.rules):
            if rule.name in names:
                raise ValueError(f"rules.{i}: duplicate rule name {rule.name!r}")
            names.add(rule.name)
            for group in rule.match.host_groups or ():
                if group not in self.host_groups:
                    raise ValueError(f"rules.{i} ({rule.name}): unknown host group {group!r}")
            asks = rule.needs_approval or any(s.needs_approval for s in rule.steps)
            if asks and rule.approvers_required > len(self.approvals.approvers):
                raise ValueError(
                    f"rules.{i} ({rule.name}): needs {rule.approvers_required} approver(s) but "
                    f"approvals.approvers lists {len(self.approvals.approvers)} key(s)"
                )
        for i, window in enumerate(self.gates.maintenance):
            for group in window.host_groups:
                if group not in self.host_groups:
                    raise ValueError(f"gates.maintenance.{i}: unknown host group {group!r}")
        return self

    def attach_inventory(self, inventory: Inventory) -> Policy:
        """Make the host groups inventory-backed (a `remediator.inventory.Inventory`): globs match
        inventory host names (and the incident's own name), `@name` entries are the members of the
        inventory group `name`, and a group's size is the number of inventory hosts it covers."""
        self._inventory = inventory
        return self

    @property
    def fleet_inventory(self) -> Inventory | None:
        """The attached `remediator.inventory.Inventory` (None: host groups are globs alone). Not
        `inventory`: that name is the policy's own host → address map for `host_url`."""
        return self._inventory

    def in_group(self, host: str, group: str) -> bool:
        entries = self.host_groups.get(group, ())
        inv = self._inventory
        name = inv.resolve(host) if inv is not None else None
        names = inv.names(host) if inv is not None else {host}
        for entry in entries:
            if entry.startswith("@"):
                if name is not None and name in inv.members(entry[1:]):
                    return True
            elif any(fnmatch.fnmatchcase(n, entry) for n in names):
                return True
        return False

    def groups_of(self, host: str) -> list[str]:
        return [g for g in self.host_groups if self.in_group(host, g)]

    def group_size(self, group: str) -> int:
        """How many hosts `group` has: inventory hosts it covers; without an inventory its number
        of entries (list hosts one per entry)."""
        inv = self._inventory
        if inv is None:
            return len(self.host_groups.get(group, ()))
        return sum(1 for h in inv.hosts if self.in_group(h, group))

    def inventory_groups(self) -> set[str]:
        """The inventory groups (`@name` entries) the host groups refer to."""
        return {e[1:] for entries in self.host_groups.values() for e in entries if e.startswith("@")}

    def out_of_service_actions(self) -> frozenset[str]:
        """Actions of steps declared `out_of_service` (drain, cordon) in any rule."""
        return frozenset(s.action for r in self.rules for s in r.steps if s.out_of_service)

    def return_actions(self) -> frozenset[str]:
        """Actions of the rules' return_to_service steps (resume, uncordon)."""
        return frozenset(r.return_to_service.action for r in self.rules if r.return_to_service is not None)

    def rule_for(self, incident: Incident) -> Rule | None:
        """The first rule, in file order, whose match holds; None when none does."""
        for rule in self.rules:
            if rule.match.holds(incident, self):
                return rule
        return None

    @field_validator("inventory")
    @classmethod
    def _addresses(cls, value: dict[str, str]) -> dict[str, str]:
        from .hostaddr import checked

        for host, address in value.items():
            try:
                checked(address)
            except ValueError as exc:
                raise ValueError(f"inventory.{host}: {exc}") from None
        return value

    def render_vars(self, step: Step, incident: Incident) -> dict:
        """`step`'s variables for `incident`, host addresses from the inventory or the plugged source."""
        from .hostaddr import address_source

        return step.render_vars(incident, address_source(self.inventory), tuple(self.url_allow))

    def rule_named(self, name: str) -> Rule | None:
        return next((r for r in self.rules if r.name == name), None)


def load_policy(path: str | Path) -> Policy:
    """Load and validate a policy file; ConfigFileError names file:line: field: reason."""
    return load_model(path, Policy)
