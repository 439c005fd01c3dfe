"""The remediator end to end on the real broker with real playbook runs (the marker playbook)."""

from __future__ import annotations

from kafka_helpers import caught_up
from remediator_kit import (
    EngineThread,
    incident,
    make_policy,
    marker_lines,
    marker_step,
    remediations,
    send,
    statuses,
    wait_for_status,
)

from fleetmedic.schemas import Incident
from fleetmedic.topics import topic_name
from fleetmedic.transport import wait_until


def test_incident_to_a_real_run_with_records_in_order(settings, tmp_path):
    marker = tmp_path / "marker.txt"
    send(settings, incident("node1", "inc-a"))
    with EngineThread(settings, make_policy(marker), tmp_path, group_id=settings.topic_prefix + "rem-e2e"):
        done = wait_for_status(settings, "succeeded", incident_id="inc-a")
        wait_until(
            lambda: caught_up(settings, settings.topic_prefix + "rem-e2e", topic_name(settings, Incident.topic)),
            20,
            what="incident offsets committed",
        )
    assert statuses(settings, "inc-a") == [
        ("claimed", "restart_service", 0),
        ("running", "restart_service", 0),
        ("succeeded", "restart_service", 0),
    ]
    record = done[0]
    assert record.rc == 0 and record.run.failed == 0 and record.run.changed >= 1
    assert record.extra_vars["target_host"] == "node1" and record.extra_vars["marker_id"] == "inc-a"
    assert record.started_at <= record.finished_at
    assert [line.split()[0] for line in marker_lines(marker)] == ["inc-a"]


def test_the_same_incident_again_never_runs_twice(settings, tmp_path):
    marker = tmp_path / "marker.txt"
    send(settings, incident("node1", "inc-b"))
    with EngineThread(settings, make_policy(marker), tmp_path, group_id=settings.topic_prefix + "rem-dup"):
        wait_for_status(settings, "succeeded", incident_id="inc-b")
        send(settings, incident("node1", "inc-b", status="update"), incident("node1", "inc-b"))
        wait_until(
            lambda: caught_up(settings, settings.topic_prefix + "rem-dup", topic_name(settings, Incident.topic)),
            20,
            what="the repeats consumed",
        )
    # a new process with a new group reads every incident again: the claims stop it
    with EngineThread(settings, make_policy(marker), tmp_path, group_id=settings.topic_prefix + "rem-dup-2"):
        wait_until(
            lambda: caught_up(settings, settings.topic_prefix + "rem-dup-2", topic_name(settings, Incident.topic)),
            20,
            what="second process caught up",
        )
    assert len(marker_lines(marker)) == 1
    assert [s for s, *_ in statuses(settings, "inc-b")] == ["claimed", "running", "succeeded"]


def test_dry_run_runs_in_check_mode_and_changes_nothing(settings, tmp_path):
    marker = tmp_path / "marker.txt"
    send(settings, incident("node1", "inc-c"))
    with EngineThread(
        settings, make_policy(marker, dry_run=True), tmp_path, group_id=settings.topic_prefix + "rem-dry"
    ):
        record = wait_for_status(settings, "dry_run", incident_id="inc-c")[0]
    assert record.rc == 0
    assert not marker.exists()  # check mode wrote nothing
    assert [s for s, *_ in statuses(settings, "inc-c")] == ["claimed", "running", "dry_run"]


def test_a_failed_run_is_recorded_and_escalates_to_the_next_step(settings, tmp_path):
    marker = tmp_path / "marker.txt"
    failing = marker_step(marker)
    failing["vars"]["should_fail"] = {"value": True, "type": "bool"}
    second = marker_step(marker, action="collect_diagnostics")
    policy = make_policy(marker, steps=[failing, second, {"action": "human"}])
    send(settings, incident("node2", "inc-d"))
    with EngineThread(settings, policy, tmp_path, group_id=settings.topic_prefix + "rem-fail"):
        failed = wait_for_status(settings, "failed", incident_id="inc-d")[0]
        # step 1 succeeds; the incident never resolves, so after resolve_within_s the human gets it
        wait_for_status(settings, "succeeded", incident_id="inc-d")
    assert failed.rc != 0 and failed.run.failed == 1 and "Fail when asked" in failed.reason
    assert statuses(settings, "inc-d")[:6] == [
        ("claimed", "restart_service", 0),
        ("running", "restart_service", 0),
        ("failed", "restart_service", 0),
        ("escalated", "restart_service", 0),
        ("claimed", "collect_diagnostics", 1),
        ("running", "collect_diagnostics", 1),
    ]


def test_closed_loop_escalates_when_not_resolved_and_stops_when_resolved(settings, tmp_path):
    marker = tmp_path / "marker.txt"
    steps = [
        marker_step(marker, resolve_within_s=1),
        marker_step(marker, action="drain_node", resolve_within_s=1),
        {"action": "human"},
    ]
    slow = {"name": "slow", "match": {"kinds": ["slow"]}, "steps": [marker_step(marker, resolve_within_s=60)]}
    policy = make_policy(marker, steps=steps, extra_rules=[slow])
    send(settings, incident("node1", "inc-e"), incident("node3", "inc-f", kind="slow"))
    with EngineThread(settings, policy, tmp_path, group_id=settings.topic_prefix + "rem-loop"):
        wait_for_status(settings, "succeeded", incident_id="inc-f")
        send(settings, incident("node3", "inc-f", kind="slow", status="resolve"))
        wait_for_status(settings, "cancelled", incident_id="inc-f")
        # inc-e never resolves: restart → drain → a human
        wait_for_status(settings, "escalated", incident_id="inc-e", count=3, timeout_s=45)
    assert statuses(settings, "inc-e") == [
        ("claimed", "restart_service", 0),
        ("running", "restart_service", 0),
        ("succeeded", "restart_service", 0),
        ("escalated", "restart_service", 0),
        ("claimed", "drain_node", 1),
        ("running", "drain_node", 1),
        ("succeeded", "drain_node", 1),
        ("escalated", "drain_node", 1),
        ("escalated", "human", 2),
    ]
    f = statuses(settings, "inc-f")
    assert f == [
        ("claimed", "restart_service", 0),
        ("running", "restart_service", 0),
        ("succeeded", "restart_service", 0),
        ("cancelled", "restart_service", 0),
    ]
    closing = [r for r in remediations(settings) if r.incident_id == "inc-f" and r.status == "cancelled"][0]
    assert closing.gate == "closed_loop" and "incident resolved" in closing.reason


def test_two_remediators_in_one_group_run_each_incident_once(settings, tmp_path):
    """Scale-out and rebalance: a second member joins while runs are in flight; no incident runs twice."""
    marker = tmp_path / "marker.txt"
    policy = make_policy(marker, gates={"max_concurrent": 8})
    group = settings.topic_prefix + "rem-pair"
    hosts = ["node1", "node2", "node3", "node4"]
    send(settings, *[incident(h, f"inc-{h}") for h in hosts[:2]])
    with EngineThread(settings, policy, tmp_path / "a", group_id=group):
        wait_for_status(settings, "claimed", count=1)
        with EngineThread(settings, policy, tmp_path / "b", group_id=group):
            send(settings, *[incident(h, f"inc-{h}") for h in hosts[2:]])
            send(settings, *[incident(h, f"inc-{h}", status="update") for h in hosts])
            wait_for_status(settings, "succeeded", count=4, timeout_s=60)
            wait_until(
                lambda: caught_up(settings, group, topic_name(settings, Incident.topic)),
                30,
                what="both members committed",
            )
    ran = sorted(line.split()[0] for line in marker_lines(marker))
    assert ran == [f"inc-{h}" for h in hosts]
    for h in hosts:
        assert [s for s, *_ in statuses(settings, f"inc-{h}")] == ["claimed", "running", "succeeded"]
