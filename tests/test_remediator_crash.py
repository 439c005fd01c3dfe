"""At most once across crashes: SIGKILL the remediator at each step of a run, restart it, count runs.

The remediator runs as a real `fleetmedic remediate` process; FM_REMEDIATOR_CRASH_AT makes it
SIGKILL itself at one point of the protocol:

- claimed:  the claim is on the broker, the playbook has not started;
- started:  the playbook process is about to start (`running` sent, maybe not delivered);
- ran:      the playbook has finished, its outcome is not recorded;
- produced: the outcome is recorded, the incident's offset is not committed.

A second remediator in the same consumer group then gets the incident again (its offset was never
committed) and must not run it again: the marker playbook's file shows at most one run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from datetime import UTC
from pathlib import Path

import pytest
from kafka_helpers import caught_up
from remediator_kit import TEST_PLAYBOOKS, EngineThread, incident, make_policy, marker_lines, send, statuses

from fleetmedic.schemas import Incident
from fleetmedic.topics import topic_name
from fleetmedic.transport import wait_until

ROOT = Path(__file__).resolve().parent.parent

POLICY = """\
gates: {{cooldown_s: 0}}
rules:
  - name: service_down
    match: {{kinds: [service_down]}}
    steps:
      - action: restart_service
        playbook: marker.yml
        vars:
          target_host: {{from: host}}
          marker_id: {{from: id}}
          marker_file: {{value: "{marker}"}}
"""

# point → (runs the marker shows, statuses on the topic after the restart; "running" may be lost
# at the `started` point because the process dies before that record is flushed)
EXPECTED = {
    "claimed": (0, [["claimed"]]),
    "started": (0, [["claimed"], ["claimed", "running"]]),
    "ran": (1, [["claimed", "running"]]),
    "produced": (1, [["claimed", "running", "succeeded"]]),
}


@pytest.mark.parametrize("point", list(EXPECTED))
def test_sigkill_at_each_step_never_runs_twice(settings, tmp_path, point):
    marker = tmp_path / "marker.txt"
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(textwrap.dedent(POLICY.format(marker=marker)))
    group = f"{settings.topic_prefix}rem-crash-{point}"
    send(settings, incident("node1", "inc-crash"))
    env = dict(
        os.environ,
        PYTHONPATH=str(ROOT),
        FM_REMEDIATOR_CRASH_AT=point,
        FLEETMEDIC_BOOTSTRAP_SERVERS=",".join(settings.bootstrap_servers),
        FLEETMEDIC_TOPIC_PREFIX=settings.topic_prefix,
        FLEETMEDIC_CLIENT_ID="fm-crash",
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "fleetmedic.cli",
            "remediate",
            "--policy",
            str(policy_file),
            "--playbooks",
            str(TEST_PLAYBOOKS),
            "--artifacts",
            str(tmp_path / "artifacts"),
            "--group",
            group,
            "--session-timeout-s",
            "6",
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -9, f"expected SIGKILL at {point}: rc {proc.returncode}\n{proc.stderr[-3000:]}"
    incidents = topic_name(settings, Incident.topic)
    assert not caught_up(settings, group, incidents)  # the crash left the incident uncommitted

    runs, allowed = EXPECTED[point]
    wait_until(lambda: len(marker_lines(marker)) >= runs, 30, what="the killed process's playbook to finish")
    with EngineThread(settings, make_policy(marker), tmp_path, group_id=group):
        wait_until(lambda: caught_up(settings, group, incidents), 60, what="the restarted remediator to commit")
    assert len(marker_lines(marker)) == runs
    assert [s for s, *_ in statuses(settings, "inc-crash")] in allowed


def test_a_claim_without_outcome_is_not_run_again_and_the_ladder_moves_on(settings, tmp_path):
    """A process died mid-run (its claim has no outcome): the next step runs, the claimed one never does."""
    from datetime import datetime, timedelta

    from remediator_kit import marker_step, wait_for_status

    from fleetmedic.schemas import Remediation
    from remediator.claims import claim_reason, remediation_id

    marker = tmp_path / "marker.txt"
    policy = make_policy(
        marker, steps=[marker_step(marker, timeout_s=1), marker_step(marker, action="collect_diagnostics")]
    )
    inc = incident("node1", "inc-orphan")
    claimed_at = datetime.now(UTC) - timedelta(seconds=5)
    orphan = Remediation(
        id=remediation_id(inc.id, "restart_service", 0),
        incident_id=inc.id,
        fingerprint=inc.fingerprint,
        host="node1",
        action="restart_service",
        playbook="marker.yml",
        status="claimed",
        step=0,
        time=claimed_at,
        reason=claim_reason(None),
    )
    send(settings, orphan, inc)
    with EngineThread(settings, policy, tmp_path, group_id=settings.topic_prefix + "orphan", orphan_grace_s=0):
        wait_for_status(settings, "succeeded", incident_id=inc.id)
    records = statuses(settings, inc.id)
    assert records == [
        ("claimed", "restart_service", 0),
        ("escalated", "restart_service", 0),
        ("claimed", "collect_diagnostics", 1),
        ("running", "collect_diagnostics", 1),
        ("succeeded", "collect_diagnostics", 1),
    ]
    assert len(marker_lines(marker)) == 1  # only step 1 ran; the orphaned claim never did


def test_a_crash_between_escalation_and_the_next_step_still_takes_the_next_step(settings, tmp_path):
    from datetime import datetime, timedelta

    from remediator_kit import marker_step, wait_for_status

    from fleetmedic.schemas import Remediation
    from remediator.claims import remediation_id

    marker = tmp_path / "marker.txt"
    policy = make_policy(marker, steps=[marker_step(marker), marker_step(marker, action="drain_node")])
    inc = incident("node2", "inc-esc")
    t = datetime.now(UTC) - timedelta(seconds=30)
    base = dict(
        id=remediation_id(inc.id, "restart_service", 0),
        incident_id=inc.id,
        fingerprint=inc.fingerprint,
        host="node2",
        action="restart_service",
        playbook="marker.yml",
        step=0,
    )
    history = [
        Remediation(status=s, time=t + timedelta(seconds=i), **base)
        for i, s in enumerate(["claimed", "running", "succeeded", "escalated"])
    ]
    send(settings, *history, inc)
    with EngineThread(settings, policy, tmp_path, group_id=settings.topic_prefix + "esc"):
        wait_for_status(settings, "succeeded", incident_id=inc.id, count=2)
    assert [(s, a) for s, a, _ in statuses(settings, inc.id)][4:] == [
        ("claimed", "drain_node"),
        ("running", "drain_node"),
        ("succeeded", "drain_node"),
    ]
    assert [line.split()[0] for line in marker_lines(marker)] == ["inc-esc"]  # step 1 only
