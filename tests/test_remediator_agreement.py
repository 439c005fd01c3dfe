"""Remediator members agree on fleet-wide gates: two members racing for the last slot of a
blast radius yield one run (remediator/agreement.py), against the real broker and playbooks."""

from __future__ import annotations

import threading
from datetime import UTC

from kafka.partitioner.default import murmur2
from remediator_kit import EngineThread, incident, make_policy, marker_lines, remediations, send

from fleetmedic.transport import wait_until
from remediator.agreement import before
from remediator.claims import RELEASED, Ledger
from remediator.gates import default_pipeline
from remediator.policy import Policy

HOSTS = [f"node{i}" for i in range(1, 9)]


class RacingPipeline:
    """The real gates, but each member's first decision waits for the other's: both decide on a
    ledger that cannot hold the other's claim yet (the race, made certain)."""

    def __init__(self, policy: Policy, barrier: threading.Barrier):
        self.inner = default_pipeline(policy)
        self.barrier = barrier
        self.raced = False

    def run(self, proposal, ledger, now):
        if not self.raced:
            self.raced = True
            self.barrier.wait()
        return self.inner.run(proposal, ledger, now)

    @property
    def names(self):
        return self.inner.names


def _partition(host: str, n: int) -> int:
    return (murmur2(host.encode()) & 0x7FFFFFFF) % n


def test_two_members_racing_for_a_one_slot_blast_radius_yield_one_run(settings, tmp_path):
    marker = tmp_path / "marker.txt"
    raw = make_policy(marker, gates={"blast_radius": {"max_percent": 12.5}}).model_dump(mode="json")
    policy = Policy.model_validate({**raw, "host_groups": {"all": HOSTS}})  # 8 hosts x 12.5 %: one slot
    barrier = threading.Barrier(2, timeout=120)
    group = settings.topic_prefix + "race"
    a = EngineThread(settings, policy, tmp_path / "a", group_id=group, pipeline=RacingPipeline(policy, barrier))
    b = EngineThread(settings, policy, tmp_path / "b", group_id=group, pipeline=RacingPipeline(policy, barrier))
    try:
        n = settings.topics.partitions
        wait_until(
            lambda: a.engine.assigned and b.engine.assigned and len(a.engine.assigned | b.engine.assigned) == n,
            90,
            what="both members to own partitions",
        )
        host_a = next(h for h in HOSTS if _partition(h, n) in a.engine.assigned)
        host_b = next(h for h in HOSTS if _partition(h, n) in b.engine.assigned)
        send(settings, incident(host_a, "inc-a"), incident(host_b, "inc-b"))
        wait_until(
            lambda: (
                sum(r.status == "succeeded" for r in remediations(settings)) == 1
                and sum(r.status == "skipped" for r in remediations(settings)) == 1
            ),
            90,
            what="one run and one released claim",
        )
        claims = [r.id for r in remediations(settings) if r.status == "claimed"]

        def counted(member) -> list[bool] | None:
            entries = [member.engine.ledger.get(i) for i in claims]
            return None if None in entries else sorted(e.claimed_at is not None for e in entries)

        # both members' ledgers come to agree: one claim counts, the other is released
        wait_until(lambda: counted(a) == counted(b) == [False, True], 60, what="both ledgers to agree")
    finally:
        a.stop()
        b.stop()
    records = remediations(settings)
    assert len(marker_lines(marker)) == 1  # one playbook run in all
    assert sum(r.status == "claimed" for r in records) == 2  # both claimed ...
    [released] = [r for r in records if r.status == "skipped"]
    assert released.gate == "blast_radius" and released.reason.startswith(RELEASED)  # ... the later one yielded
    assert "an earlier claim in the claims log took the slot" in released.reason
    for member in (a, b):
        assert member.engine.ledger.get(released.id).released


def test_the_view_before_a_claim_holds_only_earlier_claims():
    ledger = Ledger()
    from datetime import datetime

    from fleetmedic.schemas import Remediation

    now = datetime.now(UTC)
    for i, rid in enumerate(["rem-" + "a" * 20, "rem-" + "b" * 20, "rem-" + "c" * 20]):
        ledger.apply(
            Remediation(
                id=rid, incident_id=f"inc-{i}", fingerprint="f", host=f"node{i}", action="x", status="claimed", time=now
            ),
            claim_offset=i,
        )
    view = before(ledger, "rem-" + "b" * 20, 1)
    assert [e.claimed_at is not None for e in view.entries.values()] == [True, False, False]
    assert [e.claimed_at is not None for e in ledger.entries.values()] == [True, True, True]  # untouched
