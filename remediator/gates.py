"""Safety gates: one small stage per concern, composed into one pipeline.

Like Alertmanager's notification pipeline, every stage receives the proposed action and either
passes it on (possibly changed: the dry-run stage switches it to check mode) or stops it with a
`Skip` naming the gate and the reason; the engine turns a skip into a `skipped` remediation
record, so every stop is in the audit trail. The order (`default_pipeline`) is:

    inventory → kill_switch → silence → maintenance → dry_run → flapping → cooldown → blast_radius
    → max_concurrent → rate_limit

(`inventory` only when the remediator has an inventory: a host outside it is not ours.)

Stops that a person asked for come first (kill switch, silences, maintenance); dry_run then
marks the action for Ansible check mode; then the flapping guard (a host that keeps needing
repair goes to a human rather than waiting out a cooldown), then the per-host and fleet-wide
limits, which count claims in the `Ledger` (the remediations topic, so other remediator
processes count too). Check-mode runs change nothing: they are not counted by cooldown, flapping
and blast radius, and blast radius lets them through; they do count for concurrency and rate.

Example::

    >>> from datetime import datetime, timezone
    >>> from remediator.claims import Ledger
    >>> from remediator.policy import Policy
    >>> policy = Policy.model_validate({"gates": {"kill_switch": True}})
    >>> gate = KillSwitch(policy.gates)
    >>> gate(None, Ledger(), datetime.now(timezone.utc))
    Skip(gate='kill_switch', reason='the kill switch is on (policy gates.kill_switch): nothing runs')
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Protocol

from fleetmedic.schemas import Incident, Remediation

from .claims import CLOSED_LOOP_GATE, Entry, Ledger, clip_reason, remediation_id
from .control import ControlState, describe_matchers
from .policy import Policy, Rule, Step
from .policy_gates import Gates
from .policy_vars import PolicyError

if TYPE_CHECKING:
    from .inventory import Inventory


@dataclass(frozen=True)
class Proposal:
    """An action the policy chose for an incident, on its way through the gates."""

    incident: Incident
    rule: Rule
    step_index: int
    step: Step
    remediation_id: str
    extra_vars: dict
    dry_run: bool
    needs_approval: bool
    # the approvers' verdict (`approved by alice: ...`) when this proposal answers its wait for approval
    approved: str | None = None

    @property
    def host(self) -> str:
        return self.incident.host

    @property
    def action(self) -> str:
        return self.step.action

    def record(self, status: str, when: datetime, **fields: object) -> Remediation:
        """The remediations.v1 record of this proposal in `status` at `when` (a reason is clipped
        to what a record holds); `fields` are the record's other fields (gate, reason, run, ...)."""
        if fields.get("reason") is not None:
            fields["reason"] = clip_reason(str(fields["reason"]))
        return Remediation(
            id=self.remediation_id,
            incident_id=self.incident.id,
            fingerprint=self.incident.fingerprint,
            host=self.host,
            action=self.action,
            playbook=self.step.playbook,
            status=status,
            step=self.step_index,
            time=when,
            extra_vars=self.extra_vars,
            **fields,
        )


@dataclass(frozen=True)
class Skip:
    gate: str
    reason: str


class Gate(Protocol):
    name: str

    def __call__(self, proposal: Proposal, ledger: Ledger, now: datetime) -> Proposal | Skip: ...


class KillSwitch:
    """Nothing runs while `gates.kill_switch` is true or `gates.kill_switch_file` exists."""

    name = "kill_switch"

    def __init__(self, gates: Gates, control: ControlState | None = None) -> None:
        self.gates = gates
        self.control = control  # remediator.control.ControlState: `fleetmedic pause` records

    def __call__(self, proposal: Proposal, ledger: Ledger, now: datetime) -> Proposal | Skip:
        engaged = self.control.kill_switch if self.control is not None else None
        if engaged is not None:
            note = f": {engaged.reason}" if engaged.reason else ""
            return Skip(
                self.name,
                f"the kill switch is engaged (fleetmedic pause by {engaged.by} at "
                f"{engaged.time.isoformat()}{note}): nothing runs",
            )
        if self.gates.kill_switch:
            return Skip(self.name, "the kill switch is on (policy gates.kill_switch): nothing runs")
        if self.gates.kill_switch_file is not None and self.gates.kill_switch_file.exists():
            return Skip(self.name, f"the kill switch file {self.gates.kill_switch_file} exists: nothing runs")
        return proposal


class Silences:
    """Matching incidents are left alone between a silence's start and end.

    Three sources: the policy file's `gates.silences`, `fleetmedic silence add` records and the
    Alertmanager's active silences (both through `control`, a remediator.control.ControlState)."""

    name = "silence"

    def __init__(self, policy: Policy, control: ControlState | None = None) -> None:
        self.policy = policy
        self.control = control

    def __call__(self, proposal: Proposal, ledger: Ledger, now: datetime) -> Proposal | Skip:
        if self.control is not None:
            found = self.control.stop_for("silence", proposal.incident, now)
            if found is not None:
                return Skip(self.name, f"silenced by {found.describe()}")
        for silence in self.policy.gates.silences:
            if not silence.starts_at <= now < silence.ends_at:
                continue
            if silence.hosts and not any(fnmatch.fnmatchcase(proposal.host, h) for h in silence.hosts):
                continue
            if not silence.match.holds(proposal.incident, self.policy):
                continue
            note = f" ({silence.comment})" if silence.comment else ""
            return Skip(self.name, f"silenced until {silence.ends_at.isoformat()}{note}")
        return proposal


class Maintenance:
    """Hosts of a group in a maintenance window are left alone (people are working on them).

    Windows come from the policy file and from `fleetmedic maintenance add` records (`control`)."""

    name = "maintenance"

    def __init__(self, policy: Policy, control: ControlState | None = None) -> None:
        self.policy = policy
        self.control = control

    def __call__(self, proposal: Proposal, ledger: Ledger, now: datetime) -> Proposal | Skip:
        if self.control is not None:
            found = self.control.stop_for("maintenance", proposal.incident, now)
            if found is not None:
                return Skip(
                    self.name,
                    f"maintenance {found.id} ({describe_matchers(list(found.matchers))}) by "
                    f"{found.by} until {found.ends_at.isoformat()}" + (f": {found.reason}" if found.reason else ""),
                )
        for window in self.policy.gates.maintenance:
            groups = [g for g in window.host_groups if self.policy.in_group(proposal.host, g)]
            if groups and window.active(now):
                return Skip(self.name, f"maintenance window {window.name} is active for group {groups[0]}")
        return proposal


class Flapping:
    """A host remediated `max_runs` times within `within_s` goes to a human instead."""

    name = "flapping"

    def __init__(self, gates: Gates) -> None:
        self.limit = gates.flapping

    def __call__(self, proposal: Proposal, ledger: Ledger, now: datetime) -> Proposal | Skip:
        since = now - timedelta(seconds=self.limit.within_s)
        runs = [e for e in ledger.claims_since(since, real_only=True) if e.first.host == proposal.host]
        if len(runs) >= self.limit.max_runs:
            return Skip(
                self.name,
                f"{proposal.host} was remediated {len(runs)} times in the last "
                f"{self.limit.within_s:g}s (limit {self.limit.max_runs}): handed to a human",
            )
        return proposal


class Cooldown:
    """The same action on the same host waits `cooldown_s` after its last run."""

    name = "cooldown"

    def __init__(self, gates: Gates) -> None:
        self.cooldown_s = gates.cooldown_s

    def __call__(self, proposal: Proposal, ledger: Ledger, now: datetime) -> Proposal | Skip:
        if self.cooldown_s <= 0:
            return proposal
        since = now - timedelta(seconds=self.cooldown_s)
        last = [
            e.claimed_at
            for e in ledger.claims_since(since, real_only=True)
            if e.claimed_at is not None and e.first.host == proposal.host and e.first.action == proposal.action
        ]
        if last:
            ready = max(last) + timedelta(seconds=self.cooldown_s)
            return Skip(
                self.name,
                f"{proposal.action} ran on {proposal.host} at {max(last).isoformat()}; "
                f"cooldown {self.cooldown_s:g}s lasts until {ready.isoformat()}",
            )
        return proposal


def impaired(ledger: Ledger, policy: Policy) -> list[Entry]:
    """The claimed (real, not check-mode) entries of incidents whose host is not back in service.

    Derived from the remediations topic alone (plus the policy's declarations), so every remediator
    member counts the same: a host counts from its first claim for an incident until either

    - the incident resolved (its `closed_loop` record) and no `out_of_service` step (drain, cordon)
      was claimed for it, or
    - the rule's return-to-service step (resume, uncordon) succeeded for it.

    Not for a fixed time: a drained node whose incident went to a human keeps counting."""
    out_of_service = policy.out_of_service_actions()
    returns = policy.return_actions()
    counted: list[Entry] = []
    for ids in ledger.by_incident.values():
        entries = [ledger.entries[i] for i in ids]
        real = [e for e in entries if e.claimed_at is not None and "dry_run" not in e.statuses]
        if not real:
            continue
        if any(e.first.action in returns and e.latest.status == "succeeded" for e in real):
            continue  # returned to service
        took_out = any(e.first.action in out_of_service for e in real)
        closed = any(e.first.gate == CLOSED_LOOP_GATE for e in entries)
        if closed and not took_out:
            continue  # healed in place
        counted.extend(real)
    return counted


def return_step_due(policy: Policy, ledger: Ledger, incident: Incident) -> bool:
    """Does the resolved `incident` need its rule's return-to-service step (an out_of_service step
    was claimed for it, and the return step was not proposed yet)?"""
    rule = policy.rule_for(incident.model_copy(update={"status": "open"}))
    if rule is None or rule.return_to_service is None:
        return False
    out_of_service = {s.action for s in rule.steps if s.out_of_service}
    entries = ledger.incident_entries(incident.id)
    if ledger.get(remediation_id(incident.id, rule.return_to_service.action, len(rule.steps))) is not None:
        return False
    return any(e.claimed_at is not None and e.first.action in out_of_service for e in entries)


class BlastRadius:
    """At most `max_percent` of any host group, and `max_nodes_per_job` nodes of one job, at once.

    A host counts as impaired from its claim until it is back in service (`impaired`: the incident
    resolved, and after a drain or cordon the return-to-service step done), whatever the time. A
    group's size is the number of inventory hosts it covers (`Policy.group_size`; without an
    inventory, its number of entries).
    """

    name = "blast_radius"

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.limit = policy.gates.blast_radius

    def __call__(self, proposal: Proposal, ledger: Ledger, now: datetime) -> Proposal | Skip:
        if proposal.dry_run:
            return proposal
        active = impaired(ledger, self.policy) + ledger.running(now)
        inv = self.policy.fleet_inventory
        name = (lambda h: inv.resolve(h) or h) if inv is not None else (lambda h: h)
        hosts = {name(e.first.host) for e in active}
        if name(proposal.host) not in hosts:
            for group in self.policy.groups_of(proposal.host):
                size = self.policy.group_size(group)
                in_group = {h for h in hosts if self.policy.in_group(h, group)}
                allowed = math.floor(size * self.limit.max_percent / 100)
                if len(in_group) + 1 > allowed:
                    return Skip(
                        self.name,
                        f"group {group}: {len(in_group)} of {size} hosts already under "
                        f"remediation; one more exceeds {self.limit.max_percent:g}% "
                        f"(at most {allowed})",
                    )
        job = proposal.incident.labels.get(self.limit.job_label)
        if job:
            job_hosts = {name(e.first.host) for e in active if e.job == job} - {name(proposal.host)}
            if len(job_hosts) + 1 > self.limit.max_nodes_per_job:
                return Skip(
                    self.name,
                    f"job {job}: {len(job_hosts)} of its nodes already under remediation "
                    f"({', '.join(sorted(job_hosts))}); limit {self.limit.max_nodes_per_job}",
                )
        return proposal


class InInventory:
    """With an inventory, only its hosts are acted on: an incident of any other host is skipped."""

    name = "inventory"

    def __init__(self, inventory: Inventory | None) -> None:
        self.inventory = inventory

    def __call__(self, proposal: Proposal, ledger: Ledger, now: datetime) -> Proposal | Skip:
        if self.inventory is None:
            return proposal
        self.inventory.maybe_refresh()
        if self.inventory.resolve(proposal.host) is None:
            return Skip(
                self.name,
                f"host {proposal.host} is not in the inventory {self.inventory.source} (no host "
                f"of that name nor with {self.inventory.name_var}={proposal.host}): not ours to touch",
            )
        return proposal


class MaxConcurrent:
    """At most `max_concurrent` runs in flight across the fleet."""

    name = "max_concurrent"

    def __init__(self, gates: Gates) -> None:
        self.max = gates.max_concurrent

    def __call__(self, proposal: Proposal, ledger: Ledger, now: datetime) -> Proposal | Skip:
        running = ledger.running(now)
        if len(running) >= self.max:
            return Skip(self.name, f"{len(running)} runs in flight (limit {self.max})")
        return proposal


class RateLimit:
    """At most `max_runs` runs started per `per_s` seconds across the fleet."""

    name = "rate_limit"

    def __init__(self, gates: Gates) -> None:
        self.limit = gates.rate_limit

    def __call__(self, proposal: Proposal, ledger: Ledger, now: datetime) -> Proposal | Skip:
        recent = ledger.claims_since(now - timedelta(seconds=self.limit.per_s))
        if len(recent) >= self.limit.max_runs:
            return Skip(
                self.name, f"{len(recent)} runs started in the last {self.limit.per_s:g}s (limit {self.limit.max_runs})"
            )
        return proposal


class DryRun:
    """A rule or step marked `dry_run` runs in Ansible check mode (recorded as `dry_run`)."""

    name = "dry_run"

    def __call__(self, proposal: Proposal, ledger: Ledger, now: datetime) -> Proposal | Skip:
        wanted = proposal.step.dry_run if proposal.step.dry_run is not None else proposal.rule.dry_run
        return replace(proposal, dry_run=True) if wanted and not proposal.dry_run else proposal


# Gates whose stop may lift without anyone acting (capacity frees up, the switch is turned off):
# a later record of the same incident is evaluated again. Other skips are final for that step.
RETRYABLE = frozenset(
    {"kill_switch", "cooldown", "blast_radius", "max_concurrent", "rate_limit", "silence", "maintenance"}
)


class Pipeline:
    """The gates in order; `run` returns the proposal that passed all of them, or the first Skip."""

    def __init__(self, gates: list[Gate]) -> None:
        self.gates = gates

    def run(self, proposal: Proposal, ledger: Ledger, now: datetime) -> Proposal | Skip:
        for gate in self.gates:
            out = gate(proposal, ledger, now)
            if isinstance(out, Skip):
                return out
            proposal = out
        return proposal

    @property
    def names(self) -> list[str]:
        return [g.name for g in self.gates]


def propose(policy: Policy, incident: Incident, step_index: int, now: datetime) -> Proposal | Remediation | None:
    """The proposal for step `step_index` of the incident's rule; a skip record when its variables
    cannot be rendered; None when no rule (or no such step) applies."""
    # a resolved incident's rule is the one that matched it while open (its return-to-service step)
    rule = policy.rule_for(incident if incident.status != "resolve" else incident.model_copy(update={"status": "open"}))
    step = rule.step_at(step_index) if rule is not None else None
    if rule is None or step is None:
        return None
    rem_id = remediation_id(incident.id, step.action, step_index)
    try:
        extra_vars = policy.render_vars(step, incident)
    except PolicyError as exc:
        return Remediation(
            id=rem_id,
            incident_id=incident.id,
            fingerprint=incident.fingerprint,
            host=incident.host,
            action=step.action,
            playbook=step.playbook,
            status="skipped",
            gate="policy",
            reason=f"rule {rule.name}: {exc}",
            step=step_index,
            time=now,
        )
    needs = step.needs_approval if step.needs_approval is not None else rule.needs_approval
    return Proposal(
        incident=incident,
        rule=rule,
        step_index=step_index,
        step=step,
        remediation_id=rem_id,
        extra_vars=extra_vars,
        dry_run=False,
        needs_approval=needs,
    )


def default_pipeline(
    policy: Policy, control: ControlState | None = None, inventory: Inventory | None = None
) -> Pipeline:
    """The gates in their order; `control` (a remediator.control.ControlState) adds the control topic's
    kill switch, silences and maintenance records and Alertmanager's silences; with an `inventory`
    (also attached to the policy's host groups) an incident of a host outside it is skipped first
    (gate `inventory`)."""
    g = policy.gates
    if inventory is not None:
        policy.attach_inventory(inventory)
    # dry_run is decided first so that the capacity gates know a check-mode run changes nothing
    first = [InInventory(inventory)] if inventory is not None else []
    return Pipeline(
        first
        + [
            KillSwitch(g, control),
            Silences(policy, control),
            Maintenance(policy, control),
            DryRun(),
            Flapping(g),
            Cooldown(g),
            BlastRadius(policy),
            MaxConcurrent(g),
            RateLimit(g),
        ]
    )
