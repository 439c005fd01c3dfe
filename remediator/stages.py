"""The decision stages beside the gates (dedup, claim, human, approval) and the pipeline that composes them.

Like the gates (remediator/gates.py), every stage is a function of (proposal, ledger, now) that
passes the proposal on or stops it, so the whole decision is one composition, as in
Alertmanager's notification pipeline. The gates stop with a `Skip` (recorded as `skipped`);
these stages stop with one of two siblings:

- `Hold`: the decision was made already (the same remediation waits for its approval, or was
  claimed: at most once); nothing is recorded;
- `Stop`: the decision is a record of its own status: `escalated` (an `action: human` step) or
  `awaiting_approval` (a step that needs approval and does not carry one).

The order (`decision_pipeline`)::

    dedup → claim → human → <the gates> → approval

A proposal that passes them all is claimed by the engine: the claim is written and acknowledged
before the run (remediator/claims.py) and the fleet-wide gates are checked again against the
claims log (remediator/agreement.py); those side effects stay in the engine.

Example::

    >>> from remediator.gates import default_pipeline
    >>> from remediator.policy import Policy
    >>> policy = Policy.model_validate({})
    >>> decision_pipeline(policy, default_pipeline(policy)).names
    ['dedup', 'claim', 'human', 'gates', 'approval']
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from .claims import Ledger
from .gates import Pipeline, Proposal, Skip
from .policy import HUMAN, Policy
from .policy_gates import Approvals


@dataclass(frozen=True)
class Hold:
    """Stopped because the decision was made already: nothing is recorded."""

    stage: str
    reason: str


@dataclass(frozen=True)
class Stop:
    """Stopped with a record of its own `status` (`escalated`, `awaiting_approval`) and `reason`."""

    stage: str
    status: str
    reason: str


Outcome = Proposal | Skip | Hold | Stop


class Stage(Protocol):
    """A gate's interface, with the stages' two outcomes added."""

    name: str

    def __call__(self, proposal: Proposal, ledger: Ledger, now: datetime) -> Outcome: ...


class Dedup:
    """The same remediation twice: a step awaiting approval waits on, and only its approval moves it."""

    name = "dedup"

    def __call__(self, proposal: Proposal, ledger: Ledger, now: datetime) -> Outcome:
        entry = ledger.get(proposal.remediation_id)
        if entry is not None and entry.latest.status == "awaiting_approval" and proposal.approved is None:
            return Hold(
                self.name,
                f"{proposal.remediation_id} is awaiting approval since {entry.latest.time.isoformat()}",
            )
        return proposal


class ClaimOnce:
    """At most once: a remediation id claimed before, by this process or any other, never runs again."""

    name = "claim"

    def __call__(self, proposal: Proposal, ledger: Ledger, now: datetime) -> Outcome:
        entry = ledger.get(proposal.remediation_id)
        if entry is not None and entry.claimed_at is not None:
            job = f" (job {entry.job})" if entry.job else ""
            return Hold(
                self.name,
                f"{proposal.remediation_id} was claimed at {entry.claimed_at.isoformat()}{job}: "
                "a claimed remediation never runs again",
            )
        return proposal


class HandToHuman:
    """`action: human`, a ladder's last rung: the incident goes to a person (recorded `escalated`)."""

    name = "human"

    def __call__(self, proposal: Proposal, ledger: Ledger, now: datetime) -> Outcome:
        if proposal.action == HUMAN:
            return Stop(
                self.name,
                "escalated",
                f"rule {proposal.rule.name}: handed to a human ({proposal.incident.summary or proposal.incident.kind})",
            )
        return proposal


class ApprovalWait:
    """A step that needs approval waits for it (recorded `awaiting_approval`) unless the proposal carries one."""

    name = "approval"

    def __init__(self, approvals: Approvals) -> None:
        self.expire_s = approvals.expire_s

    def __call__(self, proposal: Proposal, ledger: Ledger, now: datetime) -> Outcome:
        if proposal.needs_approval and proposal.approved is None:
            return Stop(
                self.name,
                "awaiting_approval",
                f"rule {proposal.rule.name} needs approval: fleetmedic approve "
                f"{proposal.remediation_id} (or --deny); expires in {self.expire_s:g}s",
            )
        return proposal


class GateStage:
    """The gate pipeline as one stage: its first `Skip`, or the proposal that passed every gate."""

    name = "gates"

    def __init__(self, gates: Pipeline) -> None:
        self.gates = gates

    def __call__(self, proposal: Proposal, ledger: Ledger, now: datetime) -> Outcome:
        return self.gates.run(proposal, ledger, now)


class DecisionPipeline:
    """The stages in order; `run` returns the proposal that passed all of them, or the first stop."""

    def __init__(self, stages: list[Stage]) -> None:
        self.stages = stages

    def run(self, proposal: Proposal, ledger: Ledger, now: datetime) -> Outcome:
        """The first stage's stop (Skip, Hold or Stop), or the proposal as the last stage passed it."""
        for stage in self.stages:
            out = stage(proposal, ledger, now)
            if not isinstance(out, Proposal):
                return out
            proposal = out
        return proposal

    @property
    def names(self) -> list[str]:
        """The stages' names, in order."""
        return [s.name for s in self.stages]


def decision_pipeline(policy: Policy, gates: Pipeline) -> DecisionPipeline:
    """dedup → claim → human → `gates` → approval: what the engine runs for every proposal."""
    return DecisionPipeline([Dedup(), ClaimOnce(), HandToHuman(), GateStage(gates), ApprovalWait(policy.approvals)])
