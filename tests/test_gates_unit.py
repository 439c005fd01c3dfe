"""Every safety gate in-process: an in-memory `Ledger`, a fixed clock, no broker, no thread.

The gates are functions of (proposal, ledger, now): the ledger is what the remediations topic
holds (here built from the same `Remediation` records another remediator would have written)
and `now` is passed in. So each case states the history, the clock and the exact reason text.
tests/test_remediator_gates.py keeps one broker-backed case per gate family: that the engine
turns a skip into a `skipped` record, and nothing runs.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from remediator_kit import incident, make_policy

from fleetmedic.schemas import Remediation
from remediator.claims import CLOSED_LOOP_GATE, ORPHAN_AFTER_S, Ledger, claim_reason, remediation_id
from remediator.gates import (
    BlastRadius,
    Cooldown,
    DryRun,
    Flapping,
    InInventory,
    KillSwitch,
    Maintenance,
    MaxConcurrent,
    Pipeline,
    Proposal,
    RateLimit,
    Silences,
    Skip,
    default_pipeline,
    impaired,
    propose,
)
from remediator.inventory import Inventory

# The fixed clock: a Wednesday (2026-01-01 was a Thursday; 4 March is 62 days later, 62 = 8·7 + 6).
NOW = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)


def history(
    host: str,
    n: int = 1,
    *,
    ago_s: float = 60,
    outcome: str | None = "succeeded",
    job: str | None = None,
    action: str = "restart_service",
    dry_run: bool = False,
    first: int = 0,
) -> list[Remediation]:
    """What another remediator recorded: `n` claims on `host` `ago_s` seconds before NOW, with their outcome."""
    when = NOW - timedelta(seconds=ago_s)
    out = []
    for i in range(first, first + n):
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
        if dry_run:
            out.append(Remediation(status="dry_run", time=when, **base))
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


def ledger_of(*records: Remediation) -> Ledger:
    ledger = Ledger()
    for record in records:
        ledger.apply(record)
    return ledger


def proposal(policy, host: str = "node1", labels: dict | None = None) -> Proposal:
    out = propose(policy, incident(host, "inc-g", labels=labels, time=NOW), 0, NOW)
    assert isinstance(out, Proposal)
    return out


@pytest.fixture
def policy(tmp_path):
    """The broker tests' policy: four hosts in group `all`, one rule, every limit relaxed."""
    return make_policy(tmp_path / "marker.txt")


def with_gates(tmp_path, **gates):
    return make_policy(tmp_path / "marker.txt", gates=gates)


# --- stops a person asked for -----------------------------------------------------------------
def test_kill_switch_flag_and_file(tmp_path, policy):
    p = proposal(policy)
    assert KillSwitch(policy.gates)(p, Ledger(), NOW) is p
    on = with_gates(tmp_path, kill_switch=True)
    assert KillSwitch(on.gates)(p, Ledger(), NOW) == Skip(
        "kill_switch", "the kill switch is on (policy gates.kill_switch): nothing runs"
    )
    stop = tmp_path / "STOP"
    by_file = with_gates(tmp_path, kill_switch_file=str(stop))
    assert KillSwitch(by_file.gates)(p, Ledger(), NOW) is p  # the file does not exist yet
    stop.touch()
    assert KillSwitch(by_file.gates)(p, Ledger(), NOW) == Skip(
        "kill_switch", f"the kill switch file {stop} exists: nothing runs"
    )


def test_silence_holds_between_its_start_and_end_for_matching_hosts(tmp_path):
    silenced = with_gates(
        tmp_path,
        silences=[
            {
                "hosts": ["node1"],
                "starts_at": NOW - timedelta(hours=1),
                "ends_at": NOW + timedelta(hours=6),
                "comment": "OPS-1 firmware",
            }
        ],
    )
    gate = Silences(silenced)
    assert gate(proposal(silenced), Ledger(), NOW) == Skip(
        "silence", "silenced until 2026-03-04T18:00:00+00:00 (OPS-1 firmware)"
    )
    other = proposal(silenced, "node2")
    assert gate(other, Ledger(), NOW) is other  # another host
    p = proposal(silenced)
    assert gate(p, Ledger(), NOW + timedelta(hours=6)) is p  # ends_at is exclusive
    assert gate(p, Ledger(), NOW - timedelta(hours=1, seconds=1)) is p  # before starts_at


def test_maintenance_window_on_its_weekdays_only(tmp_path):
    window = {"name": "patching", "host_groups": ["all"], "start": "11:00", "duration_min": 120}
    wednesday = with_gates(tmp_path, maintenance=[dict(window, weekdays=["wed"])])
    assert Maintenance(wednesday)(proposal(wednesday), Ledger(), NOW) == Skip(
        "maintenance", "maintenance window patching is active for group all"
    )
    p = proposal(wednesday)
    assert Maintenance(wednesday)(p, Ledger(), NOW + timedelta(hours=1)) is p  # 13:00: the window ended
    sunday = with_gates(tmp_path, maintenance=[dict(window, weekdays=["sun"])])
    assert Maintenance(sunday)(p, Ledger(), NOW) is p


def test_inventory_gate_acts_only_on_inventory_hosts(policy):
    inventory = Inventory.from_listing(
        {
            "_meta": {"hostvars": {"gpu-a": {"fleetmedic_host": "node1"}}},
            "all": {"children": ["ungrouped"]},
            "ungrouped": {"hosts": ["gpu-a"]},
        }
    )
    gate = InInventory(inventory)
    p = proposal(policy)
    assert gate(p, Ledger(), NOW) is p  # node1 is gpu-a's fleetmedic_host
    stranger = proposal(policy, "node9")
    assert gate(stranger, Ledger(), NOW) == Skip(
        "inventory",
        "host node9 is not in the inventory None (no host of that name nor with "
        "fleetmedic_host=node9): not ours to touch",
    )
    assert InInventory(None)(stranger, Ledger(), NOW) is stranger


# --- check mode ---------------------------------------------------------------------------------
def test_dry_run_marks_the_proposal_for_check_mode(tmp_path, policy):
    p = proposal(policy)
    assert DryRun()(p, Ledger(), NOW) is p
    checked = make_policy(tmp_path / "marker.txt", dry_run=True)
    out = DryRun()(proposal(checked), Ledger(), NOW)
    assert isinstance(out, Proposal) and out.dry_run


# --- per-host history ---------------------------------------------------------------------------
def test_flapping_counts_real_runs_of_the_host_within_the_window(tmp_path):
    flappy = with_gates(tmp_path, flapping={"max_runs": 2, "within_s": 3600})
    gate, p = Flapping(flappy.gates), proposal(flappy)
    assert gate(p, ledger_of(*history("node1", 2)), NOW) == Skip(
        "flapping", "node1 was remediated 2 times in the last 3600s (limit 2): handed to a human"
    )
    assert gate(p, ledger_of(*history("node1", 1)), NOW) is p  # one run: under the limit
    assert gate(p, ledger_of(*history("node1", 2, ago_s=3601)), NOW) is p  # outside the window
    assert gate(p, ledger_of(*history("node2", 2)), NOW) is p  # another host
    assert gate(p, ledger_of(*history("node1", 2, dry_run=True)), NOW) is p  # check mode changes nothing


def test_cooldown_waits_after_the_last_run_of_the_same_action_on_the_host(tmp_path):
    cool = with_gates(tmp_path, cooldown_s=600)
    gate, p = Cooldown(cool.gates), proposal(cool)
    # the claim 60 s before NOW (11:59:00), so the cooldown lasts until 11:59:00 + 600 s = 12:09:00
    assert gate(p, ledger_of(*history("node1")), NOW) == Skip(
        "cooldown",
        "restart_service ran on node1 at 2026-03-04T11:59:00+00:00; cooldown 600s lasts until "
        "2026-03-04T12:09:00+00:00",
    )
    assert gate(p, ledger_of(*history("node1", ago_s=601)), NOW) is p
    assert gate(p, ledger_of(*history("node1", action="drain_node")), NOW) is p
    assert gate(p, ledger_of(*history("node1", dry_run=True)), NOW) is p
    assert Cooldown(with_gates(tmp_path, cooldown_s=0).gates)(p, ledger_of(*history("node1")), NOW) is p


# --- fleet capacity -----------------------------------------------------------------------------
def test_blast_radius_per_group(tmp_path):
    half = with_gates(tmp_path, blast_radius={"max_percent": 50})
    gate, p = BlastRadius(half), proposal(half)
    busy = ledger_of(*history("node2"), *history("node3"))
    # group all has 4 hosts: 50 % allows floor(4 · 0.5) = 2; node2 and node3 are impaired, node1 would be a third
    assert gate(p, busy, NOW) == Skip(
        "blast_radius", "group all: 2 of 4 hosts already under remediation; one more exceeds 50% (at most 2)"
    )
    assert gate(p, ledger_of(*history("node2")), NOW) is p
    assert gate(p, ledger_of(*history("node1"), *history("node2")), NOW) is p  # node1 already counts: no new host
    checked = replace(p, dry_run=True)
    assert gate(checked, busy, NOW) is checked  # check mode goes through


def test_blast_radius_per_job(tmp_path):
    per_job = with_gates(tmp_path, blast_radius={"max_percent": 100, "max_nodes_per_job": 1})
    gate = BlastRadius(per_job)
    p = proposal(per_job, labels={"slurm_job": "77"})
    assert gate(p, ledger_of(*history("node2", job="77")), NOW) == Skip(
        "blast_radius", "job 77: 1 of its nodes already under remediation (node2); limit 1"
    )
    assert gate(p, ledger_of(*history("node2", job="78")), NOW) is p


def test_a_host_healed_in_place_stops_counting(tmp_path, policy):
    healed = history("node2")
    inc = healed[0].incident_id
    closed = Remediation(
        id=remediation_id(inc, "closed_loop", 0),
        incident_id=inc,
        fingerprint="node2/old",
        host="node2",
        action="restart_service",
        playbook="marker.yml",
        step=0,
        status="skipped",
        gate=CLOSED_LOOP_GATE,
        reason="resolved",
        time=NOW - timedelta(seconds=30),
    )
    assert [e.first.host for e in impaired(ledger_of(*healed), policy)] == ["node2"]
    assert impaired(ledger_of(*healed, closed), policy) == []


def test_max_concurrent_counts_runs_in_flight(tmp_path):
    one = with_gates(tmp_path, max_concurrent=1)
    gate, p = MaxConcurrent(one.gates), proposal(one)
    assert gate(p, ledger_of(*history("node2", outcome=None)), NOW) == Skip(
        "max_concurrent", "1 runs in flight (limit 1)"
    )
    assert gate(p, ledger_of(*history("node2")), NOW) is p  # it finished
    # a claim with no outcome for longer than ORPHAN_AFTER_S is an orphan, not a run in flight
    assert gate(p, ledger_of(*history("node2", outcome=None, ago_s=ORPHAN_AFTER_S + 1)), NOW) is p


def test_rate_limit_counts_claims_in_the_window(tmp_path):
    limited = with_gates(tmp_path, rate_limit={"max_runs": 2, "per_s": 600})
    gate, p = RateLimit(limited.gates), proposal(limited)
    assert gate(p, ledger_of(*history("node2"), *history("node3")), NOW) == Skip(
        "rate_limit", "2 runs started in the last 600s (limit 2)"
    )
    assert gate(p, ledger_of(*history("node2"), *history("node3", ago_s=601)), NOW) is p


# --- the pipeline -------------------------------------------------------------------------------
def test_the_pipeline_stops_at_the_first_skip_and_passes_changes_on(tmp_path):
    checked = make_policy(tmp_path / "marker.txt", dry_run=True, gates={"max_concurrent": 1})
    busy = ledger_of(*history("node2", outcome=None))
    out = Pipeline([DryRun(), MaxConcurrent(checked.gates)]).run(proposal(checked), busy, NOW)
    assert out == Skip("max_concurrent", "1 runs in flight (limit 1)")
    passed = Pipeline([DryRun()]).run(proposal(checked), Ledger(), NOW)
    assert isinstance(passed, Proposal) and passed.dry_run


def test_the_pipeline_order_is_the_documented_one(policy):
    assert default_pipeline(policy).names == [
        "kill_switch",
        "silence",
        "maintenance",
        "dry_run",
        "flapping",
        "cooldown",
        "blast_radius",
        "max_concurrent",
        "rate_limit",
    ]
