"""Claims and outcomes: what the remediations topic says has happened, read back at start.

At most once per (incident, action): a remediation's id is derived from (incident id, action,
step), the engine writes a `claimed` record and waits for the broker's acknowledgement BEFORE it
starts the playbook, and a claimed id is never run again, by this process or any other. After a
crash between the claim and the outcome the run's effect is unknown; it is not repeated (at most
once), and the incident's ladder moves on once its deadline passes.

`Ledger` is the in-memory view built from the remediations topic (every partition, from the
beginning) and kept current by reading the topic while the engine runs, so limits that span the
fleet (rate, concurrency, blast radius) also count what other remediator processes did.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from kafka import TopicPartition

from fleetmedic.config import Settings
from fleetmedic.lifecycle import TopicReader, warn_unreadable
from fleetmedic.schemas import Remediation
from fleetmedic.topics import topic_name

# Every claim (and the record releasing a claim that lost a race) goes to this partition of the
# remediations topic: one log order of claims that every remediator member reads alike.
CLAIMS_PARTITION = 0
# Statuses after which nothing more happens to that remediation id.
FINAL = frozenset({"skipped", "succeeded", "failed", "dry_run", "cancelled", "timed_out", "escalated", "unreachable"})
# Outcomes of a run that was started (the closed loop watches these).
RUN_OUTCOMES = frozenset({"succeeded", "failed", "dry_run", "timed_out", "cancelled", "unreachable"})
# The gate of the record that closes an incident's ladder when the incident resolves (ladder.py).
CLOSED_LOOP_GATE = "closed_loop"
# A claim whose outcome never arrived (its process died) stops counting as "running" after this.
ORPHAN_AFTER_S = 3600.0
# A claim's reason is ours up to its job field; what follows (the approvers' verdict and comment)
# is their text. So the job is read only where we write it: never from the approvers' part.
_CLAIMED = "claimed before the run"
_JOB_NAME = re.compile(r"[A-Za-z0-9._:/-]{1,128}")
_JOB = re.compile(r"^claimed before the run; job=([A-Za-z0-9._:/-]{1,128})(?:;|$)")


def remediation_id(incident_id: str, action: str, step: int) -> str:
    """The id of the remediation of (incident, action, step): the same after any crash."""
    digest = hashlib.sha256(f"{incident_id}\x00{action}\x00{step}".encode()).hexdigest()[:20]
    return f"rem-{digest}"


# Remediation.reason's limit; a longer reason (a long approval comment, a runner's error) is cut.
REASON_MAX = 4096


def clip_reason(reason: str, limit: int = REASON_MAX) -> str:
    """`reason` cut to `limit` characters, saying how much was cut: a reason built from user input
    (an approval comment) must never make the record invalid, which would stop the remediator."""
    if len(reason) <= limit:
        return reason
    tail = f" … (cut: {len(reason)} characters in all)"
    return reason[: limit - len(tail)] + tail


# Reason prefix of the `skipped` record that releases a claim which lost the race for a
# fleet-wide gate (remediator/agreement.py); only such a record un-claims an id.
RELEASED = "released: "


def is_released(record: Remediation) -> bool:
    """Is `record` the release of a claim that lost the race (remediator/agreement.py)?"""
    return record.status == "skipped" and (record.reason or "").startswith(RELEASED)


def claim_reason(job: str | None, approved: str | None = None) -> str:
    """The claim record's reason; it carries the job so blast radius per job survives restarts,
    ahead of the approvers' verdict (`approved`) so that their comment cannot name the job."""
    reason = f"{_CLAIMED}; job={job}" if job and _JOB_NAME.fullmatch(job) else _CLAIMED
    return f"{reason}; {approved}" if approved else reason


@dataclass
class Entry:
    """Everything recorded about one remediation id."""

    first: Remediation
    latest: Remediation
    claimed_at: datetime | None = None
    job: str | None = None
    statuses: list[str] = field(default_factory=list)
    claim_offset: int | None = None  # the claim's offset in the claims partition (remediator/agreement.py)
    released: bool = False  # its claim lost the race for a fleet-wide gate: never run, may be claimed again

    @property
    def final(self) -> bool:
        return self.latest.status in FINAL


class Ledger:
    """Latest status per remediation id, and the fleet-wide history the gates look at."""

    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {}
        self.by_incident: dict[str, list[str]] = defaultdict(list)
        self.applied = 0

    def apply(self, record: Remediation, claim_offset: int | None = None) -> None:
        """Apply one record; `claim_offset`: its offset, when read from the claims partition."""
        entry = self.entries.get(record.id)
        if entry is None:
            entry = self.entries[record.id] = Entry(first=record, latest=record)
            self.by_incident[record.incident_id].append(record.id)
        elif record.status == "claimed" and not entry.released:
            # A claim is never lost by read order (claims and outcomes can sit in different
            # partitions): it counts even when a later status was read first.
            self._claimed(entry, record, claim_offset)
            # ...and it follows a wait or a skip (a retry), never a run or an outcome read first
            if entry.latest.status != "running" and (not entry.final or entry.latest.status == "skipped"):
                entry.latest = record
            entry.statuses.append(record.status)
            self.applied += 1
            return
        elif entry.latest.status in FINAL and not entry.released and record.status not in ("escalated", "cancelled"):
            # a late or duplicate record never reopens a final remediation (escalated/cancelled
            # close the ladder after an outcome and are allowed to follow it)
            entry.statuses.append(record.status)
            self.applied += 1
            return
        else:
            entry.latest = record
        entry.statuses.append(record.status)
        if record.status == "claimed":
            entry.released = False
            self._claimed(entry, record, claim_offset)
        elif is_released(record) and "running" not in entry.statuses:
            # the claim lost the race and was never run: it no longer counts (agreement.py)
            entry.claimed_at, entry.job, entry.claim_offset, entry.released = None, None, None, True
        self.applied += 1

    @staticmethod
    def _claimed(entry: Entry, record: Remediation, claim_offset: int | None) -> None:
        entry.claimed_at = entry.claimed_at or record.time
        if claim_offset is not None:
            entry.claim_offset = claim_offset
        m = _JOB.search(record.reason or "")
        entry.job = m.group(1) if m else None

    def get(self, rem_id: str) -> Entry | None:
        return self.entries.get(rem_id)

    def was_claimed(self, rem_id: str) -> bool:
        entry = self.entries.get(rem_id)
        return entry is not None and entry.claimed_at is not None

    def incident_entries(self, incident_id: str) -> list[Entry]:
        return [self.entries[i] for i in self.by_incident.get(incident_id, ())]

    # --- what the gates count -------------------------------------------------------------
    def claims(self) -> list[Entry]:
        return [e for e in self.entries.values() if e.claimed_at is not None]

    def running(self, now: datetime) -> list[Entry]:
        cutoff = now - timedelta(seconds=ORPHAN_AFTER_S)
        return [e for e in self.claims() if not e.final and e.claimed_at is not None and e.claimed_at >= cutoff]

    def claims_since(self, since: datetime, *, real_only: bool = False) -> list[Entry]:
        """Claims made at or after `since`; `real_only` leaves out check-mode (dry-run) runs."""
        out = [e for e in self.claims() if e.claimed_at is not None and e.claimed_at >= since]
        if real_only:
            out = [e for e in out if "dry_run" not in e.statuses]
        return out


class LedgerReader:
    """Reads the remediations topic into a Ledger: to its end at start, then what is new."""

    def __init__(self, settings: Settings, ledger: Ledger | None = None) -> None:
        self.settings = settings
        self.ledger = ledger or Ledger()
        self.topic = topic_name(settings, Remediation.topic)
        self.reader = TopicReader(settings, [self.topic], name="ledger")

    def catch_up(self, timeout_s: float = 60.0) -> int:
        """Read everything written up to now; returns the number of records applied."""
        return sum(self._apply(batch) for batch in self.reader.read_to_end(timeout_s=timeout_s))

    def poll(self, timeout_ms: int = 0) -> int:
        return self._apply(self.reader.poll(timeout_ms))

    def _apply(self, batch: list) -> int:
        # an unreadable record is not ours to dead-letter: the writer's consumer does
        records = self.reader.records(batch, Remediation, on_error=warn_unreadable)
        for item in records:
            self.ledger.apply(item.record, item.offset if item.partition == CLAIMS_PARTITION else None)
        return len(records)

    def catch_up_to(self, partition: int, offset: int, timeout_s: float = 30.0) -> None:
        """Read until `offset` of `partition` has been applied (TimeoutError otherwise)."""
        tp = TopicPartition(self.topic, partition)
        deadline = time.monotonic() + timeout_s
        while self.reader.consumer.position(tp) <= offset:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"could not read {self.topic}[{partition}] up to offset {offset} in {timeout_s:.0f}s"
                )
            self.poll(100)

    def close(self) -> None:
        self.reader.close()
