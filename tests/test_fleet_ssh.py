"""Playbooks act on the incident's host over real SSH (3-host testbed, real broker, real Ansible)."""

from __future__ import annotations

import json

import pytest
from fleet_kit import fleet_inventory, fleet_playbooks, start_fleet
from remediator_kit import EngineThread, incident, remediations, send, statuses, wait_for_status

from fleetmedic.transport import wait_until
from remediator.policy import Policy


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    bed = start_fleet(tmp_path_factory.mktemp("fleet"))
    try:
        yield bed
    finally:
        bed.stop()


@pytest.fixture(scope="module")
def books(tmp_path_factory):
    return fleet_playbooks(tmp_path_factory.mktemp("books"))


def policy(fleet, **gates) -> Policy:
    return Policy.model_validate(
        {
            "host_groups": {"fleet": ["@fleet"]},
            "gates": {
                "cooldown_s": 0,
                "flapping": {"max_runs": 100, "within_s": 60},
                "blast_radius": {"max_percent": 100},
                "rate_limit": {"max_runs": 100, "per_s": 60},
                **gates,
            },
            "rules": [
                {
                    "name": "service_down",
                    "match": {"kinds": ["service_down"]},
                    "steps": [
                        {
                            "action": "restart_service",
                            "playbook": "restart_service.yml",
                            "timeout_s": 120,
                            "resolve_within_s": 600,
                            "vars": {
                                "service": {"value": "demo"},
                                "health_url": {"value": fleet.restart_vars()["health_url"]},
                            },
                        },
                        {"action": "human"},
                    ],
                },
                {
                    "name": "diagnose",
                    "match": {"kinds": ["diagnose"]},
                    "steps": [
                        {
                            "action": "collect_diagnostics",
                            "playbook": "collect_diagnostics.yml",
                            "timeout_s": 120,
                            "vars": {
                                "target_host": {"from": "host"},
                                "incident_id": {"from": "id"},
                                "diagnostics_dir": {"value": "/tmp/fleetmedic-test-diagnostics"},
                            },
                        }
                    ],
                },
            ],
        }
    )


def test_service_killed_on_host_2_is_restarted_there_and_nowhere_else(settings, tmp_path, fleet, books):
    h1, h2, h3 = fleet.hosts
    before = {h: fleet.status(h) for h in fleet.hosts}
    assert all(state == "RUNNING" for state, _ in before.values()), before
    killed = fleet.kill9(h2)
    wait_until(lambda: fleet.status(h2)[0] != "RUNNING", 10, what=f"demo on {h2} to be down")
    send(settings, incident(h2, "inc-ssh-1"))
    with EngineThread(
        settings,
        policy(fleet),
        tmp_path,
        playbooks_dir=books,
        inventory=fleet_inventory(fleet),
        group_id=settings.topic_prefix + "fleet",
    ):
        done = wait_for_status(settings, "succeeded", incident_id="inc-ssh-1", timeout_s=120)[0]
    state, pid = fleet.status(h2)
    assert state == "RUNNING" and pid not in (None, killed)
    answer = fleet.answer(h2)
    assert answer is not None and answer["pid"] == pid  # it answers inside host 2's own namespace
    # the other hosts' services were not touched: same pids
    assert fleet.status(h1) == before[h1] and fleet.status(h3) == before[h3]
    assert done.host == h2 and done.run.changed >= 1 and done.run.unreachable == 0
    assert done.extra_vars["service"] == "demo"
    assert [s for s, *_ in statuses(settings, "inc-ssh-1")] == ["claimed", "running", "succeeded"]


def test_an_incident_outside_the_inventory_is_skipped_with_its_reason(settings, tmp_path, fleet, books):
    send(settings, incident("gpu-node-0412", "inc-ssh-2"))
    with EngineThread(
        settings,
        policy(fleet),
        tmp_path,
        playbooks_dir=books,
        inventory=fleet_inventory(fleet),
        group_id=settings.topic_prefix + "fleet",
    ):
        skipped = wait_for_status(settings, "skipped", incident_id="inc-ssh-2", timeout_s=60)[0]
    assert skipped.gate == "inventory"
    assert "gpu-node-0412 is not in the inventory" in skipped.reason and str(fleet.inventory) in skipped.reason
    assert [s for s, *_ in statuses(settings, "inc-ssh-2")] == ["skipped"]


def test_an_unreachable_host_is_its_own_outcome_and_escalates(settings, tmp_path, fleet, books):
    h3 = fleet.hosts[2]
    fleet.stop_sshd(h3)
    try:
        send(settings, incident(h3, "inc-ssh-3"))
        with EngineThread(
            settings,
            policy(fleet),
            tmp_path,
            playbooks_dir=books,
            inventory=fleet_inventory(fleet),
            group_id=settings.topic_prefix + "fleet",
        ):
            wait_until(
                lambda: ("escalated", "human", 1) in statuses(settings, "inc-ssh-3"),
                120,
                interval_s=0.3,
                what="the ladder to move on to the human step",
            )
    finally:
        fleet.start_sshd(h3)
    records = [r for r in remediations(settings) if r.incident_id == "inc-ssh-3"]
    outcome = next(r for r in records if r.status == "unreachable")
    assert outcome.action == "restart_service" and outcome.run.unreachable == 1 and outcome.run.failed == 0
    assert outcome.reason.startswith(f"unreachable: {h3}:")
    assert [(r.status, r.step) for r in records] == [
        ("claimed", 0),
        ("running", 0),
        ("unreachable", 0),
        ("escalated", 0),
        ("escalated", 1),
    ]
    assert "restart_service ended unreachable" in records[3].reason


def test_diagnostics_come_from_the_incidents_host(settings, tmp_path, fleet, books):
    h1, h2, _ = fleet.hosts
    send(settings, incident(h2, "inc-ssh-4", kind="diagnose"))
    with EngineThread(
        settings,
        policy(fleet),
        tmp_path,
        playbooks_dir=books,
        inventory=fleet_inventory(fleet),
        group_id=settings.topic_prefix + "fleet",
    ):
        done = wait_for_status(settings, "succeeded", incident_id="inc-ssh-4", timeout_s=120)[0]
    probes = json.loads(done.run.outputs["probes"])
    # `uname -a` ran inside host 2's UTS namespace: its own hostname, not the controller's nor host 1's
    uname = probes["uname"]["tail"]
    assert probes["uname"]["rc"] == 0 and f" {h2} " in uname and f" {h1} " not in uname
    import os

    assert f" {os.uname().nodename} " not in uname
    assert json.loads(done.run.outputs["diagnostics_file"]) == f"/tmp/fleetmedic-test-diagnostics/{h2}-inc-ssh-4.json"
