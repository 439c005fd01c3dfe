"""Approvals: needs-approval actions wait for `fleetmedic approve`; deny and silence both mean no."""

from __future__ import annotations

import pytest
from remediator_kit import (
    EngineThread,
    approver_key,
    incident,
    make_policy,
    marker_lines,
    remediations,
    send,
    statuses,
    wait_for_status,
)

from fleetmedic import cli
from remediator.approvals import ApprovalError, write_approval


def approve_cli(settings, monkeypatch, *argv) -> int:
    monkeypatch.setenv("FLEETMEDIC_BOOTSTRAP_SERVERS", ",".join(settings.bootstrap_servers))
    monkeypatch.setenv("FLEETMEDIC_TOPIC_PREFIX", settings.topic_prefix)
    return cli.main(["approve", *argv])


def test_an_approved_action_runs_once_approved(settings, tmp_path, monkeypatch, capsys):
    marker = tmp_path / "marker.txt"
    send(settings, incident("node1", "inc-ap"))
    with EngineThread(
        settings, make_policy(marker, needs_approval=True), tmp_path, group_id=settings.topic_prefix + "ap"
    ):
        waiting = wait_for_status(settings, "awaiting_approval", incident_id="inc-ap")[0]
        assert f"fleetmedic approve {waiting.id}" in waiting.reason
        assert marker_lines(marker) == []
        assert (
            approve_cli(
                settings,
                monkeypatch,
                waiting.id,
                "--by",
                "alice",
                "--key",
                str(approver_key("alice")),
                "--comment",
                "go",
            )
            == 0
        )
        assert f"approve {waiting.id}: restart_service (marker.yml) on node1" in capsys.readouterr().out
        wait_for_status(settings, "succeeded", incident_id="inc-ap")
    assert [s for s, *_ in statuses(settings, "inc-ap")] == ["awaiting_approval", "claimed", "running", "succeeded"]
    claim = next(r for r in remediations(settings) if r.status == "claimed")
    assert claim.id == waiting.id and "approved by alice: go" in claim.reason
    assert len(marker_lines(marker)) == 1
    # approving again does nothing: the request is no longer waiting
    with pytest.raises(ApprovalError, match="is succeeded, not awaiting approval"):
        write_approval(settings, waiting.id)


def test_deny_cancels(settings, tmp_path, monkeypatch):
    marker = tmp_path / "marker.txt"
    send(settings, incident("node1", "inc-deny"))
    with EngineThread(
        settings, make_policy(marker, needs_approval=True), tmp_path, group_id=settings.topic_prefix + "deny"
    ):
        waiting = wait_for_status(settings, "awaiting_approval", incident_id="inc-deny")[0]
        assert (
            approve_cli(settings, monkeypatch, waiting.id, "--deny", "--by", "bob", "--key", str(approver_key("bob")))
            == 0
        )
        denied = wait_for_status(settings, "cancelled", incident_id="inc-deny")[0]
    assert denied.id == waiting.id and denied.gate == "approval" and denied.reason == "denied by bob"
    assert marker_lines(marker) == []


def test_no_answer_before_expiry_means_deny(settings, tmp_path):
    marker = tmp_path / "marker.txt"
    policy = make_policy(marker, needs_approval=True)
    policy = policy.model_copy(update={"approvals": policy.approvals.model_copy(update={"expire_s": 1.0})})
    send(settings, incident("node2", "inc-quiet"))
    with EngineThread(settings, policy, tmp_path, group_id=settings.topic_prefix + "quiet"):
        waiting = wait_for_status(settings, "awaiting_approval", incident_id="inc-quiet")[0]
        expired = wait_for_status(settings, "cancelled", incident_id="inc-quiet", timeout_s=20)[0]
    assert expired.id == waiting.id and expired.gate == "approval" and "denied by default" in expired.reason
    assert (expired.time - waiting.time).total_seconds() >= 1.0
    assert marker_lines(marker) == []


def test_approve_refuses_unknown_ids(settings, monkeypatch, capsys):
    assert approve_cli(settings, monkeypatch, "rem-0123456789abcdef0123") == 1
    assert "no remediation rem-0123456789abcdef0123" in capsys.readouterr().err
    assert approve_cli(settings, monkeypatch, "; rm -rf /") == 1
    assert "is not a remediation id" in capsys.readouterr().err


def test_an_approval_comment_at_the_limit_runs_with_its_reason_cut(settings, tmp_path, monkeypatch):
    """A 4,096-character comment made the claim's reason too long: the remediator raised on every
    restart (a crash loop). Now the reason is cut, saying so, and the approved action runs."""
    marker = tmp_path / "marker.txt"
    send(settings, incident("node1", "inc-long"))
    with EngineThread(
        settings, make_policy(marker, needs_approval=True), tmp_path, group_id=settings.topic_prefix + "long"
    ) as engine:
        waiting = wait_for_status(settings, "awaiting_approval", incident_id="inc-long")[0]
        assert (
            approve_cli(
                settings,
                monkeypatch,
                waiting.id,
                "--by",
                "alice",
                "--key",
                str(approver_key("alice")),
                "--comment",
                "y" * 4096,
            )
            == 0
        )
        wait_for_status(settings, "succeeded", incident_id="inc-long")
        assert engine.error is None
    claim = next(r for r in remediations(settings) if r.status == "claimed")
    assert len(claim.reason) == 4096 and claim.reason.endswith(" characters in all)")
    assert "approved by alice: yyy" in claim.reason
    assert len(marker_lines(marker)) == 1
