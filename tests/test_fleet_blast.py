"""Blast radius on a real 3-host inventory group: a drained host counts until it is returned to service."""

from __future__ import annotations

import pytest
from fleet_kit import fleet_inventory, fleet_playbooks, start_fleet
from remediator_kit import APPROVERS, EngineThread, approver_key, incident, marker_lines, remediations, send, statuses

from fleetmedic.transport import wait_until
from remediator.policy import Policy


@pytest.fixture
def fleet(tmp_path):
    bed = start_fleet(tmp_path / "fleet")
    try:
        yield bed
    finally:
        bed.stop()


def test_a_drained_host_counts_against_the_group_until_it_is_resumed(settings, tmp_path, fleet):
    h1, h2, _ = fleet.hosts
    marker = tmp_path / "marker.txt"
    step_vars = {"marker_id": {"from": "id"}, "marker_file": {"value": str(marker)}}
    policy = Policy.model_validate(
        {
            "host_groups": {"gpu": ["@fleet"]},  # the inventory group: 3 hosts
            "gates": {
                "cooldown_s": 0,
                "flapping": {"max_runs": 100, "within_s": 60},
                "blast_radius": {"max_percent": 34},
                "rate_limit": {"max_runs": 100, "per_s": 60},
            },
            "rules": [
                {
                    "name": "gpu_lost",
                    "match": {"kinds": ["xid"], "host_groups": ["gpu"]},
                    "steps": [
                        {
                            "action": "drain_node",
                            "playbook": "host_marker.yml",
                            "out_of_service": True,
                            "resolve_within_s": 3600,
                            "vars": {**step_vars, "marker_tag": {"value": "drain"}},
                        },
                        {"action": "human"},
                    ],
                    "return_to_service": {
                        "action": "resume_node",
                        "playbook": "host_marker.yml",
                        "vars": {**step_vars, "marker_tag": {"value": "resume"}},
                    },
                }
            ],
        }
    )
    books = fleet_playbooks(tmp_path / "books")
    with EngineThread(
        settings,
        policy,
        tmp_path,
        playbooks_dir=books,
        inventory=fleet_inventory(fleet),
        group_id=settings.topic_prefix + "blast",
    ):
        # 34 % of 3 hosts is one host: the first is drained
        send(settings, incident(h1, "inc-b1", kind="xid"))
        wait_until(
            lambda: ("succeeded", "drain_node", 0) in statuses(settings, "inc-b1"),
            120,
            interval_s=0.3,
            what=f"{h1} drained",
        )
        # the second host waits while the first is out of service (long after its run finished)
        send(settings, incident(h2, "inc-b2", kind="xid"))
        wait_until(
            lambda: ("skipped", "drain_node", 0) in statuses(settings, "inc-b2"),
            60,
            interval_s=0.3,
            what=f"{h2} skipped",
        )
        skip = next(r for r in remediations(settings) if r.incident_id == "inc-b2")
        assert skip.gate == "blast_radius"
        assert "group gpu: 1 of 3 hosts already under remediation" in skip.reason and "(at most 1)" in skip.reason
        # the first incident resolves: the return-to-service step runs on the first host
        send(settings, incident(h1, "inc-b1", kind="xid", status="resolve"))
        wait_until(
            lambda: ("succeeded", "resume_node", 2) in statuses(settings, "inc-b1"),
            120,
            interval_s=0.3,
            what=f"{h1} resumed",
        )
        # now the second host's next record is let through
        send(settings, incident(h2, "inc-b2", kind="xid", status="update"))
        wait_until(
            lambda: ("succeeded", "drain_node", 0) in statuses(settings, "inc-b2"),
            120,
            interval_s=0.3,
            what=f"{h2} drained",
        )
    # each run acted on its own host, over SSH
    assert [line.split() for line in marker_lines(marker)] == [
        ["inc-b1", "drain", f"target={h1}", f"uname={h1}"],
        ["inc-b1", "resume", f"target={h1}", f"uname={h1}"],
        ["inc-b2", "drain", f"target={h2}", f"uname={h2}"],
    ]
    assert [s for s, a, _ in statuses(settings, "inc-b1")] == [
        "claimed",
        "running",
        "succeeded",
        "cancelled",
        "claimed",
        "running",
        "succeeded",
    ]


def test_return_to_service_waits_for_its_approval_after_the_resolve(settings, tmp_path):
    # single-machine mode (no SSH needed): the marker playbook stands for drain and resume
    from remediator_kit import marker_step

    from remediator.approvals import write_approval

    marker = tmp_path / "marker.txt"
    policy = Policy.model_validate(
        {
            "host_groups": {"slurm": ["node1", "node2"]},
            "gates": {"cooldown_s": 0, "blast_radius": {"max_percent": 50}},
            "approvals": {"expire_s": 600, "approvers": dict(APPROVERS)},
            "rules": [
                {
                    "name": "gpu_lost",
                    "match": {"kinds": ["xid"]},
                    "steps": [
                        marker_step(marker, action="drain_node", out_of_service=True, resolve_within_s=3600),
                        {"action": "human"},
                    ],
                    "return_to_service": marker_step(marker, action="resume_node", needs_approval=True),
                }
            ],
        }
    )
    with EngineThread(settings, policy, tmp_path, group_id=settings.topic_prefix + "rts"):
        send(settings, incident("node1", "inc-r1", kind="xid"))
        wait_until(
            lambda: ("succeeded", "drain_node", 0) in statuses(settings, "inc-r1"), 60, interval_s=0.3, what="drained"
        )
        send(settings, incident("node2", "inc-r2", kind="xid"))
        wait_until(
            lambda: ("skipped", "drain_node", 0) in statuses(settings, "inc-r2"),
            60,
            interval_s=0.3,
            what="node2 held back while node1 is drained",
        )
        send(settings, incident("node1", "inc-r1", kind="xid", status="resolve"))
        wait_until(
            lambda: ("awaiting_approval", "resume_node", 2) in statuses(settings, "inc-r1"),
            60,
            interval_s=0.3,
            what="the resume to wait for a person",
        )
        # still impaired while the resume waits: node2 is still held back
        send(settings, incident("node2", "inc-r2", kind="xid", status="update"))
        wait_until(
            lambda: [s for s, *_ in statuses(settings, "inc-r2")].count("skipped") == 2,
            60,
            interval_s=0.3,
            what="node2 held back again",
        )
        request = next(r for r in remediations(settings) if r.status == "awaiting_approval")
        write_approval(
            settings, request.id, key_file=approver_key("alice"), deny=False, by="alice", comment="", valid_s=600
        )
        wait_until(
            lambda: ("succeeded", "resume_node", 2) in statuses(settings, "inc-r1"), 60, interval_s=0.3, what="resumed"
        )
        send(settings, incident("node2", "inc-r2", kind="xid", status="update"))
        wait_until(
            lambda: ("succeeded", "drain_node", 0) in statuses(settings, "inc-r2"),
            60,
            interval_s=0.3,
            what="node2 drained once node1 is back",
        )
    assert [line.split()[0] for line in marker_lines(marker)] == ["inc-r1", "inc-r1", "inc-r2"]
