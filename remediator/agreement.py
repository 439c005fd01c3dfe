"""Remediator members agree on fleet-wide gates: a claim counts only if it passes given the
claims before it in one log.

Each member decides its own incidents, against its own view of the ledger, and two members can
both see the last free slot of a blast radius (or of the fleet's concurrency or rate limit) and
both claim it. So every claim goes to one partition of the remediations topic
(`claims.CLAIMS_PARTITION`), which gives all claims one order that every member reads alike.
After its claim is acknowledged, a member reads that partition up to its claim and runs the
gates again over a view of the ledger holding only the claims before its own (`before`, below).
If they no longer pass, an earlier claim took the slot: it does not run, and records `skipped`
with a reason starting `released: ` (also on the claims partition, so it follows the claim),
which un-claims the id so the incident is tried again when the gate lifts. The first claim in
the log wins, whichever member wrote it; members need no coordinator. The rule is the same for
every gate that counts claims, however it counts them (gates.py).

A crash between the claim and this check leaves a claim that is never run (at most once): it
counts until the ladder's orphan deadline, as before.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from datetime import datetime

from fleetmedic.schemas import Remediation

from .claims import CLAIMS_PARTITION, RELEASED, Ledger, LedgerReader
from .gates import Pipeline, Proposal, Skip


def before(ledger: Ledger, rem_id: str, offset: int) -> Ledger:
    """A view of `ledger` whose claims are those before `offset` of the claims partition (claims
    with no known offset, e.g. written before claims had a partition of their own, count too),
    without `rem_id`'s own claim."""
    view = copy.copy(ledger)
    view.entries = dict(ledger.entries)
    for key, entry in ledger.entries.items():
        later = entry.claim_offset is not None and entry.claim_offset >= offset
        if entry.claimed_at is not None and (key == rem_id or later):
            view.entries[key] = replace(entry, claimed_at=None, job=None)
    return view


class Agreement:
    """The after-claim check: did an earlier claim in the log take the slot?"""

    def __init__(self, pipeline: Pipeline, reader: LedgerReader, timeout_s: float = 30.0) -> None:
        self.pipeline = pipeline
        self.reader = reader
        self.timeout_s = timeout_s
        self.lost = 0  # claims released because an earlier one took the slot

    def check(self, proposal: Proposal, claim: Remediation, offset: int, now: datetime) -> Skip | None:
        """None: the claim stands (run it). A Skip: release it, do not run."""
        if offset > 0:
            self.reader.catch_up_to(CLAIMS_PARTITION, offset - 1, self.timeout_s)
        verdict = self.pipeline.run(proposal, before(self.reader.ledger, claim.id, offset), now)
        if isinstance(verdict, Skip):
            self.lost += 1
            return verdict
        return None

    @staticmethod
    def release(claim: Remediation, skip: Skip, now: datetime) -> Remediation:
        return claim.model_copy(
            update={
                "status": "skipped",
                "time": now,
                "gate": skip.gate,
                "reason": (RELEASED + f"an earlier claim in the claims log took the slot: {skip.reason}")[:4096],
            }
        )


__all__ = ["Agreement", "before"]
