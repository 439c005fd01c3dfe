"""The decision stages beside the gates (remediator/stages.py) in-process: an in-memory `Ledger`,
a fixed clock, no broker, no thread.

Each case states the history (the records the engine or another member would have written),
the clock and the exact reason. The approval cases also judge the approval itself with the
`ApprovalDesk`, at the broker time passed in; the kill switch cases feed a `ControlState`
its records directly.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from remediator_kit import approver_key, incident, make_policy

from fleetmedic.config import Settings
from fleetmedic.schemas import Approval, Control, Remediation
from remediator.approvals import ApprovalDesk, Refused, Verdict, expired, generate_key, load_private_key, sign
from remediator.claims import Ledger, claim_reason
from remediator.control import ControlState
from remediator.gates import KillSwitch, Proposal, Skip, default_pipeline, propose
from remediator.stages import (
    ApprovalWait,
    ClaimOnce,
    Dedup,
    HandToHuman,
    Hold,
    Stop,
    decision_pipeline,
)

# The fixed clock (the same Wednesday noon as tests/test_gates_unit.py).
NOW = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)
EXPIRE_S = 60  # make_policy's approvals.expire_s


def proposal_for(policy, inc_id: str = "inc-p") -> Proposal:
    out = propose(policy, incident("node1", inc_id, time=NOW), 0, NOW)
    assert isinstance(out, Proposal)
    return out


def record(p: Proposal, status: str, when: datetime, reason: str | None = None) -> Remediation:
    """The record the engine writes for `p`."""
    return p.record(status, when, reason=reason)


@pytest.fixture
def policy(tmp_path):
    return make_policy(tmp_path / "marker.txt")


@pytest.fixture
def approving(tmp_path):
    """The same rule, but every run waits for one approver (alice or bob)."""
    return make_policy(tmp_path / "marker.txt", needs_approval=True)


def test_the_stages_sit_around_the_gates_in_the_documented_order(policy):
    assert decision_pipeline(policy, default_pipeline(policy)).names == ["dedup", "claim", "human", "gates", "approval"]


# --- dedup --------------------------------------------------------------------------------------
def test_the_same_incident_twice_is_one_decision_while_it_waits_for_approval(approving):
    pipeline, ledger = decision_pipeline(approving, default_pipeline(approving)), Ledger()
    first = pipeline.run(proposal_for(approving), ledger, NOW)
    p = proposal_for(approving)
    assert first == Stop(
        "approval",
        "awaiting_approval",
        f"rule service_down needs approval: fleetmedic approve {p.remediation_id} (or --deny); expires in 60s",
    )
    ledger.apply(record(p, "awaiting_approval", NOW, first.reason))
    # the same incident record again, a second later: nothing new is decided, nothing is recorded
    again = pipeline.run(proposal_for(approving), ledger, NOW + timedelta(seconds=1))
    assert again == Hold("dedup", f"{p.remediation_id} is awaiting approval since 2026-03-04T12:00:00+00:00")


def test_the_same_incident_twice_is_one_claim(policy):
    pipeline, ledger = decision_pipeline(policy, default_pipeline(policy)), Ledger()
    first = pipeline.run(proposal_for(policy), ledger, NOW)
    assert isinstance(first, Proposal)  # passed every stage: the engine claims it
    ledger.apply(record(first, "claimed", NOW, claim_reason(None)))
    again = pipeline.run(proposal_for(policy), ledger, NOW + timedelta(seconds=1))
    assert again == Hold(
        "claim",
        f"{first.remediation_id} was claimed at 2026-03-04T12:00:00+00:00: a claimed remediation never runs again",
    )


def test_dedup_lets_the_approval_of_the_waiting_step_through(approving):
    p = proposal_for(approving)
    ledger = Ledger()
    ledger.apply(record(p, "awaiting_approval", NOW))
    answer = replace(p, approved="approved by alice")
    assert Dedup()(answer, ledger, NOW) is answer
    assert isinstance(Dedup()(p, Ledger(), NOW), Proposal)  # nothing recorded yet: nothing to hold


# --- claim --------------------------------------------------------------------------------------
def test_a_ledger_already_holding_a_claim_holds_with_the_claims_time_and_job(policy):
    p = proposal_for(policy)
    claimed_at = NOW - timedelta(seconds=60)
    ledger = Ledger()
    ledger.apply(record(p, "claimed", claimed_at, claim_reason("77")))  # another member's claim, job 77
    assert ClaimOnce()(p, ledger, NOW) == Hold(
        "claim",
        f"{p.remediation_id} was claimed at 2026-03-04T11:59:00+00:00 (job 77): a claimed remediation never runs again",
    )
    # even with its approval in hand: at most once
    assert ClaimOnce()(replace(p, approved="approved by alice"), ledger, NOW) == ClaimOnce()(p, ledger, NOW)
    assert ClaimOnce()(p, Ledger(), NOW) is p


# --- a human ------------------------------------------------------------------------------------
def test_a_human_step_is_recorded_escalated_before_any_gate(tmp_path):
    human = make_policy(tmp_path / "marker.txt", steps=[{"action": "human"}], gates={"kill_switch": True})
    p = proposal_for(human)
    # the kill switch would skip a run; a hand-off to a person is not a run
    assert decision_pipeline(human, default_pipeline(human)).run(p, Ledger(), NOW) == Stop(
        "human", "escalated", "rule service_down: handed to a human (service_down on node1)"
    )
    assert isinstance(HandToHuman()(proposal_for(make_policy(tmp_path / "m.txt")), Ledger(), NOW), Proposal)


# --- approval -----------------------------------------------------------------------------------
def approval_of(p: Proposal, by: str, key_path, *, at: datetime, decision: str = "approve", nonce: str = "1" * 32):
    unsigned = Approval(
        remediation_id=p.remediation_id,
        host=p.host,
        incident_id=p.incident.id,
        action=p.action,
        step=p.step_index,
        decision=decision,
        by=by,
        comment="ok",
        time=at,
        expires_at=at + timedelta(seconds=3600),
        nonce=nonce,
    )
    return sign(unsigned, load_private_key(key_path))


def waiting(approving) -> tuple[Proposal, Ledger]:
    p = proposal_for(approving)
    ledger = Ledger()
    ledger.apply(record(p, "awaiting_approval", NOW))
    return p, ledger


def desk(approving) -> ApprovalDesk:
    return ApprovalDesk(approving.approvals.approvers, approving.approvals.expire_s)


def test_approval_wait_then_approved_passes_every_stage(approving):
    p, ledger = waiting(approving)
    assert ApprovalWait(approving.approvals)(p, ledger, NOW) == Stop(
        "approval",
        "awaiting_approval",
        f"rule service_down needs approval: fleetmedic approve {p.remediation_id} (or --deny); expires in 60s",
    )
    at = NOW + timedelta(seconds=10)
    verdict = desk(approving).consider(
        approval_of(p, "alice", approver_key("alice"), at=at), ledger.get(p.remediation_id), at
    )
    assert verdict == Verdict(True, "approved by alice: ok")
    out = decision_pipeline(approving, default_pipeline(approving)).run(replace(p, approved=verdict.reason), ledger, at)
    assert isinstance(out, Proposal) and out.approved == "approved by alice: ok"


def test_an_approval_after_the_request_expired_is_a_deny(approving):
    p, ledger = waiting(approving)
    at = NOW + timedelta(seconds=EXPIRE_S + 1)  # one second past the request's 60 s
    entry = ledger.get(p.remediation_id)
    assert entry is not None and expired(entry, at, EXPIRE_S)  # the tick cancels it
    assert not expired(entry, NOW + timedelta(seconds=EXPIRE_S), EXPIRE_S)  # at 60 s exactly it still waits
    verdict = desk(approving).consider(approval_of(p, "alice", approver_key("alice"), at=at), entry, at)
    assert verdict == Verdict(False, "approval request expired 60s after 2026-03-04T12:00:00+00:00: denied by default")


def test_an_approval_by_the_wrong_approver_is_refused_and_the_step_waits_on(approving, tmp_path):
    p, ledger = waiting(approving)
    entry, at = ledger.get(p.remediation_id), NOW + timedelta(seconds=10)
    generate_key(tmp_path / "mallory.key")
    stranger = approval_of(p, "mallory", tmp_path / "mallory.key", at=at)
    assert desk(approving).consider(stranger, entry, at) == Refused(
        "approver 'mallory' has no key in the policy (approvals.approvers)"
    )
    posing = approval_of(p, "alice", approver_key("bob"), at=at, nonce="2" * 32)  # bob's key, alice's name
    assert desk(approving).consider(posing, entry, at) == Refused(
        "signature does not verify with alice's key: forged or altered after signing"
    )
    # a refusal is no answer: the same step is still held by dedup
    assert Dedup()(p, ledger, at) == Hold(
        "dedup", f"{p.remediation_id} is awaiting approval since 2026-03-04T12:00:00+00:00"
    )


# --- the kill switch from the control topic, without a broker ---------------------------------
def test_a_pause_record_engages_the_kill_switch_and_a_resume_clears_it(policy):
    control = ControlState(Settings(), read_alertmanager=False, clock=lambda: NOW)  # opens no consumer
    gate, p = KillSwitch(policy.gates, control), proposal_for(policy)
    assert gate(p, Ledger(), NOW) is p
    control.apply(
        Control(id="kill_switch", kind="kill_switch", active=True, by="oncall", reason="bad rollout", time=NOW)
    )
    assert control.cancel.is_set()  # a running playbook is cancelled too
    assert gate(p, Ledger(), NOW) == Skip(
        "kill_switch",
        "the kill switch is engaged (fleetmedic pause by oncall at 2026-03-04T12:00:00+00:00: bad rollout): "
        "nothing runs",
    )
    # an older record read late never overrides the pause
    control.apply(Control(id="kill_switch", kind="kill_switch", active=False, by="x", time=NOW - timedelta(seconds=1)))
    assert control.kill_switch is not None
    control.apply(
        Control(id="kill_switch", kind="kill_switch", active=False, by="oncall", time=NOW + timedelta(seconds=5))
    )
    assert not control.cancel.is_set() and control.kill_switch is None
    assert gate(p, Ledger(), NOW + timedelta(seconds=5)) is p
    control.close()


# --- the claim's job: ours, never the approvers' comment ----------------------------------------
def test_an_approval_comment_cannot_name_the_claims_job(policy):
    p = proposal_for(policy)
    forged = claim_reason(None, "approved by alice: job=77")
    assert forged == "claimed before the run; approved by alice: job=77"  # the comment ends the reason
    ledger = Ledger()
    ledger.apply(record(p, "claimed", NOW, forged))
    entry = ledger.get(p.remediation_id)
    assert entry is not None and entry.job is None


def test_an_approved_claim_keeps_its_job_for_the_blast_radius(tmp_path):
    per_job = make_policy(tmp_path / "marker.txt", gates={"blast_radius": {"max_percent": 100, "max_nodes_per_job": 1}})
    other = propose(per_job, incident("node2", "inc-j", labels={"slurm_job": "77"}, time=NOW), 0, NOW)
    assert isinstance(other, Proposal)
    reason = claim_reason("77", "approved by alice: go")
    assert reason == "claimed before the run; job=77; approved by alice: go"
    ledger = Ledger()
    ledger.apply(record(other, "claimed", NOW, reason))
    assert ledger.entries[other.remediation_id].job == "77"
    mine = propose(per_job, incident("node1", "inc-k", labels={"slurm_job": "77"}, time=NOW), 0, NOW)
    assert isinstance(mine, Proposal)
    assert default_pipeline(per_job).run(mine, ledger, NOW) == Skip(
        "blast_radius", "job 77: 1 of its nodes already under remediation (node2); limit 1"
    )
