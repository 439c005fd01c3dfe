"""Approvals: an action marked `needs_approval` waits for a person, and silence means no.

The remediator records `awaiting_approval` (the id, playbook and variables a person is asked to
approve) and goes on with other work. `fleetmedic approve ID` (or `--deny`) writes an `Approval`
record to approvals.v1; the remediator consumes it, passes the action through the gates again
(the fleet may have changed meanwhile) and runs it. A request nobody answers within the policy's
`approvals.expire_s` is cancelled: the default is deny. An approval whose own `expires_at` has
passed, or that names an id not awaiting approval, does nothing but leave a record saying so.
"""

from __future__ import annotations

import getpass
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from fleetmedic.config import Settings
from fleetmedic.schemas import Approval, Remediation
from fleetmedic.transport import Producer

from .claims import Entry, LedgerReader

_ID = re.compile(r"^rem-[0-9a-f]{20}$")


@dataclass(frozen=True)
class Verdict:
    """What an approval means for a waiting remediation: run it, or close it with a reason."""

    run: bool
    reason: str


def judge(approval: Approval, entry: Entry | None, now: datetime, expire_s: float) -> Verdict | None:
    """The verdict on `approval` for the remediation `entry`; None when it has nothing to act on."""
    if entry is None or entry.latest.status != "awaiting_approval":
        return None
    requested = entry.latest.time
    if now > requested + timedelta(seconds=expire_s) or approval.time > requested + timedelta(seconds=expire_s):
        return Verdict(False, f"approval request expired {expire_s:g}s after {requested.isoformat()}: denied by default")
    if approval.decision == "deny":
        note = f": {approval.comment}" if approval.comment else ""
        return Verdict(False, f"denied by {approval.by}{note}")
    if approval.expires_at is not None and now > approval.expires_at:
        return Verdict(False, f"approval by {approval.by} expired at {approval.expires_at.isoformat()}: denied by default")
    return Verdict(True, f"approved by {approval.by}" + (f": {approval.comment}" if approval.comment else ""))


def expired(entry: Entry, now: datetime, expire_s: float) -> bool:
    return entry.latest.status == "awaiting_approval" and now > entry.latest.time + timedelta(seconds=expire_s)


class ApprovalError(ValueError):
    pass


def write_approval(settings: Settings, remediation_id: str, *, deny: bool = False, by: str | None = None,
                   comment: str = "", valid_s: float | None = 3600.0) -> tuple[Approval, Remediation]:
    """Write an Approval for a remediation that is awaiting approval; ApprovalError otherwise."""
    if not _ID.match(remediation_id):
        raise ApprovalError(f"{remediation_id!r} is not a remediation id (rem- and 20 hex digits)")
    reader = LedgerReader(settings)
    try:
        reader.catch_up()
    finally:
        reader.close()
    entry = reader.ledger.get(remediation_id)
    if entry is None:
        raise ApprovalError(f"no remediation {remediation_id} on the remediations topic")
    if entry.latest.status != "awaiting_approval":
        raise ApprovalError(f"remediation {remediation_id} is {entry.latest.status}, not awaiting approval")
    now = datetime.now(timezone.utc)
    approval = Approval(remediation_id=remediation_id, host=entry.latest.host,
                        decision="deny" if deny else "approve", by=by or getpass.getuser() or "unknown",
                        comment=comment, time=now,
                        expires_at=now + timedelta(seconds=valid_s) if valid_s else None)
    with Producer(settings) as producer:
        producer.send(approval)
        producer.flush()
    return approval, entry.latest
