"""The escalation ladder and the closed loop, driven by the ledger and a clock.

`Ladder` is the part of `remediator.engine.Remediator` that moves an incident's ladder on
without a new incident record: on every tick, approval requests nobody answered are cancelled
(the default is deny), a step whose incident did not resolve in time (or whose run failed, or
whose claim never got an outcome) is marked `escalated` and the next step is proposed; when the
incident resolves the ladder closes (a `cancelled` record with gate `closed_loop`) and, after an
`out_of_service` step, the rule's return-to-service step is proposed. The incidents of open
ladders are read back from the incidents topic after a restart or a partition hand-off.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from fleetmedic.config import Settings
from fleetmedic.lifecycle import TopicReader
from fleetmedic.schemas import Incident, Remediation

from . import approvals
from .claims import CLOSED_LOOP_GATE, Entry, Ledger, LedgerReader, remediation_id
from .gates import RETRYABLE, Proposal
from .policy import HUMAN, Policy

log = logging.getLogger(__name__)

# A claim with no outcome (its process died mid-run) is escalated this long after its timeout.
ORPHAN_GRACE_S = 30.0


class Ladder:
    """The ladder's timers and its close (`remediator.engine.Remediator` provides the attributes declared here)."""

    if TYPE_CHECKING:
        settings: Settings
        policy: Policy
        ledger: Ledger
        reader: LedgerReader
        clock: Callable[[], datetime]
        incidents: dict[str, Incident]
        resolved: set[str]
        incidents_topic: str
        orphan_grace_s: float

        def owns(self, host: str) -> bool: ...

        def propose(self, incident: Incident, step_index: int = 0) -> Proposal | Remediation | None: ...

        def _emit(self, record: Remediation, out: list) -> None: ...

        def _decide(self, proposal: Proposal, out: list, runs: list, *, approved: str | None = None) -> None: ...

        def _run_all(self, runs: list[Proposal], out: list) -> None: ...

    def tick(self) -> list[Remediation]:
        """Timers: approval expiry and escalation deadlines, for the incidents this process owns."""
        self.reader.poll(0)
        now = self.clock()
        out: list[Remediation] = []
        runs: list[Proposal] = []
        returns = self.policy.return_actions()
        for incident_id, ids in list(self.ledger.by_incident.items()):
            entries = [self.ledger.entries[i] for i in ids]
            if any(e.first.gate == CLOSED_LOOP_GATE for e in entries) or incident_id in self.resolved:
                if returns:  # a closed ladder's return-to-service step may still wait for a person
                    self._expire_approvals([e for e in entries if e.first.action in returns], now, out)
                continue
            if not self.owns(entries[0].first.host):
                continue
            self._expire_approvals(entries, now, out)
            top = max(entries, key=lambda e: e.first.step)
            if top.latest.status == "escalated" and top.first.action != HUMAN:
                self._next_step_after_crash(incident_id, top, out, runs)
                continue
            due = self._escalation_due(top, now)
            if due is not None:
                self._escalate(incident_id, top, due, now, out, runs)
        self._run_all(runs, out)
        return out

    def _expire_approvals(self, entries: list[Entry], now: datetime, out: list) -> None:
        if not entries or not self.owns(entries[0].first.host):
            return
        for e in entries:
            if approvals.expired(e, now, self.policy.approvals.expire_s):
                self._emit(
                    e.latest.model_copy(
                        update={
                            "status": "cancelled",
                            "time": now,
                            "gate": "approval",
                            "reason": f"no answer within {self.policy.approvals.expire_s:g}s: denied by default",
                        }
                    ),
                    out,
                )

    def _escalation_due(self, top: Entry, now: datetime) -> str | None:
        """Why the ladder must move on from `top`, or None while it waits."""
        status = top.latest.status
        incident = self.incidents.get(top.first.incident_id)
        rule = self.policy.rule_for(incident) if incident else None
        step = rule.steps[top.first.step] if rule and top.first.step < len(rule.steps) else None
        if step is None:
            return None
        if status in ("succeeded", "dry_run"):
            done = top.latest.finished_at or top.latest.time
            if now >= done + timedelta(seconds=step.resolve_within_s):
                return f"not resolved {step.resolve_within_s:g}s after {top.first.action} finished"
        elif (
            status in ("failed", "timed_out", "cancelled", "unreachable")
            and top.claimed_at is not None
            and top.latest.gate is None
        ):
            return f"{top.first.action} ended {status}"
        elif status in ("claimed", "running") and top.claimed_at is not None:
            if now >= top.claimed_at + timedelta(seconds=step.timeout_s + self.orphan_grace_s):
                return (
                    f"{top.first.action} was claimed at {top.claimed_at.isoformat()} but no outcome was "
                    f"recorded (the remediator stopped during the run); not run again"
                )
        return None

    def _next_step_after_crash(self, incident_id: str, top: Entry, out: list, runs: list) -> None:
        """A step was marked escalated but the process stopped before the next step was recorded."""
        incident = self.incidents.get(incident_id)
        rule = self.policy.rule_for(incident) if incident else None
        if incident is None or rule is None or top.first.step + 1 >= len(rule.steps):
            return  # the ladder ended with that escalation (a human has it)
        proposal = self.propose(incident, top.first.step + 1)
        if isinstance(proposal, Remediation):
            self._emit(proposal, out)
        elif proposal is not None:
            self._decide(proposal, out, runs)

    def _escalate(self, incident_id: str, top: Entry, why: str, now: datetime, out: list, runs: list) -> None:
        incident = self.incidents[incident_id]
        rule = self.policy.rule_for(incident)
        assert rule is not None, "only a claimed step of a known rule escalates"
        nxt = top.first.step + 1
        if nxt >= len(rule.steps):
            self._emit(
                top.latest.model_copy(
                    update={
                        "status": "escalated",
                        "time": now,
                        "gate": None,
                        "reason": f"{why}; rule {rule.name} has no further step: handed to a human",
                    }
                ),
                out,
            )
            return
        self._emit(
            top.latest.model_copy(
                update={
                    "status": "escalated",
                    "time": now,
                    "gate": None,
                    "reason": f"{why}; next: step {nxt} ({rule.steps[nxt].action})",
                }
            ),
            out,
        )
        proposal = self.propose(incident, nxt)
        if isinstance(proposal, Remediation):
            self._emit(proposal, out)
        elif proposal is not None:
            self._decide(proposal, out, runs)

    def _close_ladder(self, incident: Incident, out: list) -> bool:
        """Close the incident's ladder (once); True when this call closed it."""
        entries = [e for e in self.ledger.incident_entries(incident.id) if e.first.gate != CLOSED_LOOP_GATE]
        if not entries or self.ledger.get(remediation_id(incident.id, CLOSED_LOOP_GATE, 0)) is not None:
            return False
        now = self.clock()
        for e in entries:
            if e.latest.status == "awaiting_approval":
                self._emit(
                    e.latest.model_copy(
                        update={
                            "status": "cancelled",
                            "time": now,
                            "gate": CLOSED_LOOP_GATE,
                            "reason": "incident resolved before approval",
                        }
                    ),
                    out,
                )
        top = max(entries, key=lambda e: e.first.step)
        close_id = remediation_id(incident.id, CLOSED_LOOP_GATE, 0)
        if self.ledger.get(close_id) is None:
            self._emit(
                Remediation(
                    id=close_id,
                    incident_id=incident.id,
                    fingerprint=incident.fingerprint,
                    host=incident.host,
                    action=top.first.action,
                    playbook=top.first.playbook,
                    status="cancelled",
                    gate=CLOSED_LOOP_GATE,
                    step=top.first.step,
                    time=now,
                    reason=f"incident resolved at {incident.time.isoformat()}: the escalation "
                    f"ladder stops after step {top.first.step} ({top.first.action})",
                ),
                out,
            )
        return True

    def _return_to_service(self, incident: Incident, out: list, runs: list) -> None:
        """After a resolve: the rule's return-to-service step, when an out_of_service step was claimed."""
        from .gates import return_step_due

        if return_step_due(self.policy, self.ledger, incident):
            rule = self.policy.rule_for(incident.model_copy(update={"status": "open"}))
            assert rule is not None, "return_step_due found the rule"
            proposal = self.propose(incident, len(rule.steps))
            if isinstance(proposal, Remediation):
                self._emit(proposal, out)
            elif proposal is not None and self.ledger.get(proposal.remediation_id) is None:
                self._decide(proposal, out, runs)

    def incident(self, incident_id: str) -> Incident | None:
        if incident_id not in self.incidents:
            self._recover_incidents({incident_id})
        return self.incidents.get(incident_id)

    def _recover_incidents(self, wanted: set[str] | None = None) -> None:
        """Read back the incidents that the ledger shows in progress (their offsets are committed)."""
        if wanted is None:
            wanted = {i for i, ids in self.ledger.by_incident.items() if self._in_progress(ids)}
        wanted -= set(self.incidents)
        if not wanted:
            return
        with TopicReader(self.settings, [self.incidents_topic], require=False, name="incidents") as reader:
            try:
                for batch in reader.read_to_end(timeout_s=60):
                    for item in reader.records(batch, Incident):
                        rec = item.record
                        if rec.id in wanted:
                            if rec.status == "resolve":
                                self.resolved.add(rec.id)
                            self.incidents[rec.id] = rec
            except TimeoutError as exc:  # what was read is kept; the rest is read when asked for
                log.warning("recovering incidents: %s", exc)

    def _in_progress(self, ids: list[str]) -> bool:
        """Can this incident's ladder still move (a timer, a retry, an answer)? Ended ladders need no incident."""
        entries = [self.ledger.entries[x] for x in ids]
        if any(e.first.gate == CLOSED_LOOP_GATE for e in entries):
            return False
        top = max(entries, key=lambda e: e.first.step).latest
        if top.status == "cancelled" or (top.status == "escalated" and top.action == HUMAN):
            return False
        return not (top.status == "skipped" and top.gate not in RETRYABLE)
