"""Signed approvals on the secured broker: the remediator (remediator principal) refuses forged,
unsigned, unknown-key, altered, expired and replayed approvals, records why (dead letters of kind
approval_refused) and runs the action once two distinct approvers signed it."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

from kafka_helpers import read_topic
from remediator_kit import (
    EngineThread,
    approver_key,
    incident,
    make_policy,
    marker_lines,
    remediations,
    send,
    wait_for_status,
)

from fleetmedic.schemas import Approval, DeadLetter
from fleetmedic.topics import topic_name
from fleetmedic.transport import wait_until
from remediator.approvals import generate_key, load_private_key, sign, write_approval


def _refusals(settings) -> list[str]:
    return [
        r[3].error
        for r in read_topic(settings, topic_name(settings, DeadLetter.topic), DeadLetter)
        if r[3].kind == "approval_refused"
    ]


def test_forged_unsigned_replayed_approvals_are_refused_and_recorded_two_signatures_run_it(secure_cluster, tmp_path):
    prefix = secure_cluster.new_prefix()
    detector, remediator, approver, reviewer = (
        secure_cluster.settings(r, prefix) for r in ("detector", "remediator", "approver", "reviewer")
    )
    marker = tmp_path / "marker.txt"
    policy = make_policy(marker, needs_approval=True, approvers_required=2)
    mallory_key = tmp_path / "mallory.key"
    generate_key(mallory_key)
    send(detector, incident("node1", "inc-sig"))
    with EngineThread(remediator, policy, tmp_path, group_id=prefix + "rem"):
        waiting = wait_for_status(reviewer, "awaiting_approval", incident_id="inc-sig")[0]
        now = datetime.now(UTC)
        base = Approval(
            remediation_id=waiting.id,
            host="node1",
            incident_id="inc-sig",
            action=waiting.action,
            step=0,
            decision="approve",
            by="alice",
            time=now,
            expires_at=now + timedelta(hours=1),
            nonce=secrets.token_hex(16),
        )
        fresh = lambda **kw: base.model_copy(update={"nonce": secrets.token_hex(16), **kw})  # noqa: E731
        alice = load_private_key(approver_key("alice"))
        send(
            approver,
            fresh(),  # unsigned
            sign(fresh(), load_private_key(mallory_key)),  # forged: alice's name, another key
            sign(fresh(by="mallory"), load_private_key(mallory_key)),  # a key the policy does not list
            sign(fresh(), alice).model_copy(update={"step": 1}),  # altered after signing
            sign(fresh(expires_at=now - timedelta(seconds=1)), alice),
        )  # expired (broker time)
        valid, _ = write_approval(approver, waiting.id, key_file=approver_key("alice"), by="alice")
        send(approver, valid)  # replayed
        wait_until(lambda: len(_refusals(reviewer)) >= 6, 30, what="six refusals recorded")
        assert marker_lines(marker) == []  # one distinct approver so far: it waits
        write_approval(approver, waiting.id, key_file=approver_key("bob"), by="bob", comment="second")
        done = wait_for_status(reviewer, "succeeded", incident_id="inc-sig")[0]
    reasons = _refusals(reviewer)
    assert len(reasons) == 6, reasons
    assert "unsigned approval" in reasons[0]
    assert "signature does not verify with alice's key" in reasons[1]
    assert "approver 'mallory' has no key in the policy" in reasons[2]
    assert "signature does not verify with alice's key" in reasons[3]
    assert "expired at" in reasons[4] and "broker time" in reasons[4]
    assert f"replayed approval: nonce {valid.nonce} of alice was already used" in reasons[5]
    claim = next(r for r in remediations(reviewer) if r.status == "claimed")
    assert claim.id == done.id == waiting.id and "approved by alice, bob" in claim.reason
    assert len(marker_lines(marker)) == 1
