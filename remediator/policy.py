"""The remediation policy: a declarative YAML file that maps incidents to actions.

The file is validated by pydantic through `fleetmedic.yamlfile`, so every error names the file,
the line and the reason. Matching order is explicit: **rules are tried in file order and the
first rule whose `match` holds wins**; later rules are not consulted. A rule holds an escalation
ladder (`steps`): step 0 is the first action; the remediator takes step N+1 when the incident has
not resolved `resolve_within_s` after step N finished (or at once when step N failed).

A step's extra variables are typed and come only from an allow-list of incident fields
(`ALLOWED_SOURCES`, plus `labels.<name>` and `details.<name>` for evidence details) or from
constants written in the policy. Nothing else of an incident can reach a playbook.

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
import math
import re
from collections.abc import Callable
from datetime import datetime, time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StringConstraints,
    field_validator,
    model_validator,
)

from fleetmedic.schemas import ActionClass, Incident
from fleetmedic.yamlfile import load_model

if TYPE_CHECKING:
    from .inventory import Inventory
    from .runner import ExtraVar

# Incident fields a policy may copy into a playbook variable.
ALLOWED_SOURCES = (
    "id",
    "fingerprint",
    "host",
    "kind",
    "subject",
    "severity",
    "detector",
    "action_class",
    "score",
    "summary",
)
_SOURCE = re.compile(
    r"^(id|fingerprint|host|kind|subject|severity|detector|action_class|score|summary"
    r"|labels\.[A-Za-z0-9_.-]{1,128}|details\.[A-Za-z0-9_.-]{1,128})$"
)
_IDENT = r"^[a-z][a-z0-9_]{0,63}$"
HUMAN = "human"  # the action name of a ladder's last rung: hand the incident to a person

Ident = Annotated[str, StringConstraints(pattern=_IDENT)]
VarName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]


class PolicyError(ValueError):
    """A variable could not be rendered from an incident (missing field, wrong type)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HostUrl(_Strict):
    """A URL on the incident host's own address (remediator/hostaddr.py), never one from the incident."""

    scheme: Literal["http", "https"] = "http"
    port: int = Field(ge=1, le=65535)
    path: str = Field("/", pattern=r"^/[A-Za-z0-9._~/%-]{0,200}$")


# `extract` runs on an incident field (labels and details are unbounded strings): longer ones are refused.
EXTRACT_MAX_CHARS = 4096


def _regex(field: str, pattern: str) -> re.Pattern:
    """`pattern` compiled, or a ValueError naming the field (re.error is no ValueError: pydantic would
    let it escape the policy loader as a crash; found by make fuzz)."""
    try:
        return re.compile(pattern)
    except (re.error, RecursionError, OverflowError) as exc:
        raise ValueError(f"`{field}: {pattern[:200]}` is not a valid regular expression: {exc}") from None


class VarSpec(_Strict):
    """One playbook variable: `from` an allowed incident field, a constant `value`, or a `host_url`; typed."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    source: str | None = Field(None, alias="from", description="allowed incident field, labels.X or details.X")
    value: str | int | float | bool | None = None
    type: Literal["str", "int", "float", "bool"] = "str"
    default: str | int | float | bool | None = None
    extract: str | None = Field(
        None,
        description="regex with one group: the value is what the group captured "
        "(e.g. `^service\\.(.+)\\.up$` on a subject)",
    )
    pattern: str | None = Field(None, description="a str value must fully match this regex")
    max_length: int = Field(256, ge=1, le=4096)
    host_url: HostUrl | None = Field(None, description="a URL on the incident host's own address")

    @model_validator(mode="after")
    def _one_source(self) -> VarSpec:
        if sum(x is not None for x in (self.source, self.value, self.host_url)) != 1:
            raise ValueError("give exactly one of `from` (an incident field), `value` (a constant) or `host_url`")
        if self.host_url is not None:
            return self
        if self.source is not None and not _SOURCE.match(self.source):
            raise ValueError(
                f"`from: {self.source}` is not an allowed incident field; allowed: "
                f"{', '.join(ALLOWED_SOURCES)}, labels.<name>, details.<name>"
            )
        if self.pattern is not None:
            _regex("pattern", self.pattern)
        if self.extract is not None:
            if self.source is None:
                raise ValueError("`extract` applies to a value taken `from` an incident field")
            if _regex("extract", self.extract).groups != 1:
                raise ValueError(f"`extract: {self.extract}` must have exactly one group")
        if self.value is not None:
            self.convert(self.value)
        return self

    def convert(self, raw: Any) -> ExtraVar:
        if self.type == "str":
            if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
                raise PolicyError(f"{raw!r} is not a string")
            out = str(raw)
            if len(out) > self.max_length:
                raise PolicyError(f"{len(out)} characters exceeds max_length {self.max_length}")
            if self.pattern is not None and not re.fullmatch(self.pattern, out):
                raise PolicyError(f"{out!r} does not match {self.pattern!r}")
            return out
        if self.type == "bool":
            if isinstance(raw, bool):
                return raw
            if isinstance(raw, str) and raw.lower() in ("true", "false"):
                return raw.lower() == "true"
            raise PolicyError(f"{raw!r} is not a bool")
        try:
            if isinstance(raw, bool):
                raise ValueError
            number = int(raw) if self.type == "int" else float(raw)
        except (TypeError, ValueError):
            raise PolicyError(f"{raw!r} is not {'an int' if self.type == 'int' else 'a float'}") from None
        if self.type == "int" and isinstance(raw, float) and raw != number:
            raise PolicyError(f"{raw!r} is not an int")
        if isinstance(number, float) and not math.isfinite(number):
            raise PolicyError(f"{raw!r} is not finite")
        return number

    def render(
        self, incident: Incident, address_of: Callable[[str], str | None] | None = None, url_allow: tuple[str, ...] = ()
    ) -> ExtraVar:
        if self.value is not None:
            return self.convert(self.value)
        if self.host_url is not None:
            from .hostaddr import checked

            address = address_of(incident.host) if address_of else None
            if not address:
                raise PolicyError(f"no address for host {incident.host} (policy inventory or address source)")
            try:
                url = f"{self.host_url.scheme}://{checked(address)}:{self.host_url.port}{self.host_url.path}"
            except ValueError as exc:
                raise PolicyError(f"host {incident.host}: {exc}") from None
            if url_allow and not any(fnmatch.fnmatchcase(url, glob) for glob in url_allow):
                raise PolicyError(f"{url} is not in the policy's url_allow")
            return url
        assert self.source is not None  # _one_source: exactly one of `from`, `value`, `host_url`
        raw = _lookup(incident, self.source)
        if raw is None:
            if self.default is None:
                raise PolicyError(f"incident has no {self.source}")
            raw = self.default
        elif self.extract is not None:
            if len(str(raw)) > EXTRACT_MAX_CHARS:  # the pattern is the author's, the field is not: bound its input
                raise PolicyError(
                    f"{self.source}: {len(str(raw))} characters is more than extract reads ({EXTRACT_MAX_CHARS})"
                )
            found = re.search(self.extract, str(raw))
            if found is None or found.group(1) is None:
                raise PolicyError(f"{self.source} {raw!r} does not match extract {self.extract!r}")
            raw = found.group(1)
        return self.convert(raw)


def _lookup(incident: Incident, source: str):
    if source.startswith("labels."):
        return incident.labels.get(source[len("labels.") :])
    if source.startswith("details."):
        return incident.evidence.details.get(source[len("details.") :])
    return getattr(incident, source)


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


class Match(_Strict):
    """All given conditions must hold (an empty match holds for every incident)."""

    kinds: list[str] | None = None
    severities: list[Literal["info", "warning", "critical"]] | None = None
    action_classes: list[ActionClass] | None = None
    labels: dict[str, str] = Field(default_factory=dict, description="label → glob")
    host_groups: list[str] | None = Field(None, description="the host is in at least one of these groups")
    statuses: list[Literal["open", "update"]] = ["open", "update"]

    def holds(self, incident: Incident, policy: Policy) -> bool:
        if incident.status not in self.statuses:
            return False
        if self.kinds is not None and incident.kind not in self.kinds:
            return False
        if self.severities is not None and incident.severity not in self.severities:
            return False
        if self.action_classes is not None and incident.action_class not in self.action_classes:
            return False
        for name, glob in self.labels.items():
            if name not in incident.labels or not fnmatch.fnmatchcase(incident.labels[name], glob):
                return False
        if self.host_groups is not None and not any(policy.in_group(incident.host, g) for g in self.host_groups):
            return False
        return True


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


class Silence(_Strict):
    """No remediation for matching incidents between `starts_at` and `ends_at`."""

    match: Match = Match()
    hosts: list[str] = Field(default_factory=list, description="host globs (empty: any host)")
    starts_at: AwareDatetime
    ends_at: AwareDatetime
    comment: str = ""

    @model_validator(mode="after")
    def _ordered(self) -> Silence:
        if self.ends_at <= self.starts_at:
            raise ValueError("ends_at must be after starts_at")
        return self


class MaintenanceWindow(_Strict):
    """A recurring UTC window (e.g. Sundays 02:00 for 120 minutes) during which a group is left alone."""

    name: Ident
    host_groups: list[str] = Field(min_length=1)
    weekdays: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] = [
        "mon",
        "tue",
        "wed",
        "thu",
        "fri",
        "sat",
        "sun",
    ]
    start: time = Field(description="UTC time of day, HH:MM")
    duration_min: int = Field(gt=0, le=7 * 24 * 60)

    def active(self, now: datetime) -> bool:
        days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
        for back in range(0, 8):  # a window may have started on an earlier day
            day = now.date().toordinal() - back
            start_day = datetime.fromordinal(day).replace(tzinfo=now.tzinfo)
            if days[start_day.weekday()] not in self.weekdays:
                continue
            begin = start_day.replace(hour=self.start.hour, minute=self.start.minute)
            if 0 <= (now - begin).total_seconds() < self.duration_min * 60:
                return True
        return False


class RateLimit(_Strict):
    max_runs: int = Field(10, ge=1)
    per_s: float = Field(600.0, gt=0)


class BlastRadius(_Strict):
    max_percent: float = Field(25.0, gt=0, le=100, description="of a host group under remediation at once")
    job_label: str = Field("slurm_job", description="incident label naming the job a host runs")
    max_nodes_per_job: int = Field(1, ge=1)
    active_s: float = Field(
        1800.0,
        gt=0,
        description="ignored (kept so older policy files load): "
        "a host counts from its claim until it is back in service",
    )


class Flapping(_Strict):
    max_runs: int = Field(3, ge=1, description="runs of one host allowed within `within_s`")
    within_s: float = Field(3600.0, gt=0)


class Gates(_Strict):
    kill_switch: bool = False
    kill_switch_file: Path | None = Field(None, description="when this file exists, nothing runs")
    silences: list[Silence] = Field(default_factory=list)
    maintenance: list[MaintenanceWindow] = Field(default_factory=list)
    cooldown_s: float = Field(600.0, ge=0, description="per (host, action)")
    rate_limit: RateLimit = RateLimit()
    max_concurrent: int = Field(4, ge=1)
    blast_radius: BlastRadius = BlastRadius()
    flapping: Flapping = Flapping()


class Approvals(_Strict):
    expire_s: float = Field(3600.0, gt=0, description="an unanswered request is denied after this long")
    approvers: dict[Annotated[str, StringConstraints(min_length=1, max_length=512)], str] = Field(
        default_factory=dict, description="approver name → Ed25519 public key (base64, `fleetmedic approver-key`)"
    )

    @model_validator(mode="after")
    def _keys(self) -> Approvals:
        from .approvals import parse_public_key

        for name, text in self.approvers.items():
            try:
                parse_public_key(text)
            except ValueError as exc:
                raise ValueError(f"approvers.{name}: not an Ed25519 public key: {exc}") from None
        return self


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
