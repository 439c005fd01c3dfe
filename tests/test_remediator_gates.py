"""A gate's stop becomes a `skipped` record naming the gate and the reason, and nothing runs.

The fleet's history is what other remediator processes wrote to the remediations topic: each case
seeds those records first, then a real remediator (real broker) gets one incident. One case per
gate family (a stop a person asked for, the per-host history, the fleet's capacity): every gate's
own cases, with their reason texts, run in-process in tests/test_gates_unit.py.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from remediator_kit import EngineThread, incident, make_policy, marker_lines, send, statuses, wait_for_status

from fleetmedic.schemas import Remediation
from remediator.claims import claim_reason, remediation_id


def seeded(
    host: str,
    n: int,
    *,
    ago_s: float = 60,
    outcome: str | None = "succeeded",
    job: str | None = None,
    action: str = "restart_service",
) -> list[Remediation]:
    """What another remediator recorded: a claim (and its outcome) `ago_s` seconds ago."""
    when = datetime.now(UTC) - timedelta(seconds=ago_s)
    out = []
    for i in range(n):
        inc = f"old-{host}-{i}"
        base = dict(
            id=remediation_id(inc, action, 0),
            incident_id=inc,
            fingerprint=f"{host}/old",
            host=host,
            action=action,
            playbook="marker.yml",
            step=0,
        )
        out.append(Remediation(status="claimed", time=when, reason=claim_reason(job), **base))
        if outcome:
            out.append(
                Remediation(
                    status=outcome,
                    time=when + timedelta(seconds=3),
                    rc=0,
                    started_at=when,
                    finished_at=when + timedelta(seconds=3),
                    **base,
                )
            )
    return out


# Every case builds its gates and its history when it runs, not when the module is imported: the suite
# may reach a case many minutes after collection, and a history seeded "60 s ago" at import time would
# by then lie outside a 600 s cooldown or rate window (CI stop 18 failed exactly so).
CASES = {
    "kill_switch": (lambda tmp: {"kill_switch_file": str(tmp / "STOP")}, lambda: [], {}, "kill switch file"),
    "cooldown": (lambda tmp: {"cooldown_s": 600}, lambda: seeded("node1", 1), {}, "cooldown 600s lasts until"),
    "blast_radius": (
        lambda tmp: {"blast_radius": {"max_percent": 50}},
        lambda: seeded("node2", 1) + seeded("node3", 1),
        {},
        "group all: 2 of 4 hosts already under remediation; one more exceeds 50% (at most 2)",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_gate_skips_with_its_name_and_reason(settings, tmp_path, case):
    gates, history, labels, reason = CASES[case]
    (tmp_path / "STOP").touch()
    marker = tmp_path / "marker.txt"
    policy = make_policy(marker, gates=gates(tmp_path))
    send(settings, *history(), incident("node1", "inc-g", labels=labels))
    with EngineThread(settings, policy, tmp_path, group_id=settings.topic_prefix + "gates"):
        skip = wait_for_status(settings, "skipped", incident_id="inc-g")[0]
    assert skip.gate == case
    assert reason in skip.reason, skip.reason
    assert skip.action == "restart_service" and skip.host == "node1" and skip.step == 0
    assert statuses(settings, "inc-g") == [("skipped", "restart_service", 0)]
    assert marker_lines(marker) == []


def test_a_skip_for_capacity_is_tried_again_on_the_next_record_of_the_incident(settings, tmp_path):
    marker = tmp_path / "marker.txt"
    stop = tmp_path / "STOP"
    stop.touch()
    policy = make_policy(marker, gates={"kill_switch_file": str(stop)})
    send(settings, incident("node1", "inc-r"))
    with EngineThread(settings, policy, tmp_path, group_id=settings.topic_prefix + "retry"):
        wait_for_status(settings, "skipped", incident_id="inc-r")
        stop.unlink()
        send(settings, incident("node1", "inc-r", status="update"))
        wait_for_status(settings, "succeeded", incident_id="inc-r")
    assert [s for s, *_ in statuses(settings, "inc-r")] == ["skipped", "claimed", "running", "succeeded"]
    assert len(marker_lines(marker)) == 1
