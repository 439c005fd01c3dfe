"""The remediator: incidents in, gated playbook runs out, every decision on the remediations topic.

One `Remediator` is a member of a consumer group reading incidents.v1 and approvals.v1 through
the shared `ConsumerLoop`. For each incident it picks a rule (first match in the policy file),
renders the step's typed variables, and passes the action through the decision pipeline (dedup,
claim, human, the gates, approval: remediator/stages.py). Then:

1. `claimed` is written and acknowledged by the broker (flush) BEFORE anything runs; the
   remediation id is derived from (incident id, action, step), so a claim is recognised after
   any crash, restart or rebalance, and a claimed id is never run again (at most once);
2. `running` is written as the playbook process starts; the run goes through
   `remediator.runner.run_playbook` (the one call into ansible-runner);
3. the outcome (`succeeded`, `failed`, `timed_out`, `cancelled`, `unreachable` (the host could not
   be reached over SSH), or `dry_run` in check mode)
   is produced, flushed, and only then are the input offsets committed.

At start, and on every partition assignment, the remediations topic is read back into a
`Ledger` (claims and outcomes from every process). A step that waits (for an approval, or for
the incident to resolve) is durable as its record on the remediations topic, so the incident's
offset is committed once that record is written; timers (approval expiry, escalation deadlines)
are re-derived from the ledger after a restart.

Closed loop: after a run, the incident is watched. When its `resolve` record arrives the ladder
stops (a `cancelled` record with gate `closed_loop`). When it has not resolved within the step's
`resolve_within_s` (at once when the run failed), the step is marked `escalated` and the next step
of the rule's ladder is proposed, through the gates again; `action: human` ends the ladder. When
the resolved incident's ladder had claimed an `out_of_service` step (drain, cordon), the rule's
`return_to_service` step (resume, uncordon) is proposed next, through the gates (and an approval
where it asks for one). With an inventory (`remediator.inventory`), each run targets the incident's
inventory host.

This module is the consumer and the decisions; the ladder's timers and close are in
`remediator.ladder`, the runs in `remediator.runs` (both parts of `Remediator`).
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kafka import TopicPartition
from kafka.partitioner.default import murmur2

from fleetmedic import metrics
from fleetmedic.config import Settings
from fleetmedic.lifecycle import Periodic
from fleetmedic.logfmt import incident_fields
from fleetmedic.producer import Producer
from fleetmedic.schemas import Approval, Incident, Remediation
from fleetmedic.topics import topic_name
from fleetmedic.transport import ConsumerLoop, Received

from . import approvals
from .agreement import Agreement
from .claims import CLAIMS_PARTITION, CLOSED_LOOP_GATE, REASON_MAX, Entry, LedgerReader, claim_reason, clip_reason
from .control import ControlState
from .gates import RETRYABLE, Pipeline, Proposal, Skip, default_pipeline, propose
from .ladder import ORPHAN_GRACE_S, Ladder
from .policy import Policy
from .policy_reload import PolicyWatcher
from .runs import Runs, crash_point
from .stages import Hold, Stop, decision_pipeline

if TYPE_CHECKING:
    from .inventory import Inventory

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunnerConfig:
    """Where the playbooks are, where each run's artifacts go, and how many runs' artifacts are kept."""

    playbooks_dir: Path
    artifacts_dir: Path
    keep_artifacts: int = 50


def utcnow() -> datetime:
    """The remediator's default clock: now, in UTC."""
    return datetime.now(UTC)


class Remediator(Ladder, Runs):
    """The `fleetmedic remediate` consumer (see the module docstring for the protocol)."""

    def __init__(
        self,
        settings: Settings,
        policy: Policy,
        runner: RunnerConfig,
        *,
        group_id: str = "fleetmedic-remediator",
        pipeline: Pipeline | None = None,
        clock: Callable[[], datetime] = utcnow,
        run_playbook: Callable[..., Any] | None = None,
        tick_s: float = 0.5,
        session_timeout_ms: int = 10_000,
        orphan_grace_s: float = ORPHAN_GRACE_S,
        control: ControlState | None = None,
        policy_path: str | Path | None = None,
        inventory: Inventory | None = None,
    ) -> None:
        if run_playbook is None:
            from .runner import run_playbook
        self.settings = settings
        self.policy = policy
        self.runner = runner
        # the fleet model (remediator.inventory.Inventory); None: single-machine mode (runs act on localhost)
        self.inventory = inventory
        # runtime control: the control topic's pause/silences/maintenance and Alertmanager's silences
        self._own_control = control is None
        self.control = control if control is not None else ControlState(settings).start()
        self._default_pipeline = pipeline is None
        # the gates (remediator/gates.py), inside the decision stages (remediator/stages.py)
        self.pipeline = pipeline or default_pipeline(policy, self.control, inventory)
        self.decision = decision_pipeline(policy, self.pipeline)
        self.policy_watcher = PolicyWatcher(policy_path, policy) if policy_path is not None else None
        self.clock = clock
        self.tick_s = tick_s
        self.orphan_grace_s = orphan_grace_s
        self._run_playbook = run_playbook
        self.incidents: dict[str, Incident] = {}
        self.resolved: set[str] = set()
        self.assigned: set[int] = set()
        self.reader = LedgerReader(settings)
        self.reader.catch_up()
        self.ledger = self.reader.ledger
        self.agreement = Agreement(self.pipeline, self.reader)
        self.producer = Producer(settings)
        self.incidents_topic = topic_name(settings, Incident.topic)
        self.loop = ConsumerLoop(
            settings,
            group_id=group_id,
            inputs={Incident.topic: Incident, Approval.topic: Approval},
            handle=self.handle,
            producer=self.producer,
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_restore=self._on_restore,
            after_flush=lambda stats: crash_point("produced"),
            max_records=100,
            # a batch waits for its playbook runs before the commit: allow long runs between polls
            max_poll_interval_ms=3_600_000,
            # a crashed member's partitions move to another process after this long
            session_timeout_ms=session_timeout_ms,
            heartbeat_interval_ms=max(session_timeout_ms // 4, 500),
        )
        self._partitions = len(self.loop.consumer.partitions_for_topic(self.incidents_topic) or ()) or 1
        self._recover_incidents()
        signals = {signal.SIGHUP: self.policy_watcher.request} if self.policy_watcher is not None else {}
        self.service = self.loop.service_loop(
            periodic=[Periodic(tick_s, self._on_tick)], signals=signals, close=self.close
        )
        self.desk = approvals.ApprovalDesk(policy.approvals.approvers, policy.approvals.expire_s)
        metrics.watch_loop(self.loop, "remediate")
        self.started = 0  # playbook processes started by this process (tests and benchmark)

    # --- ownership ------------------------------------------------------------------------
    def _on_assign(self, tps: set[TopicPartition]) -> None:
        self.assigned = {tp.partition for tp in tps if tp.topic == self.incidents_topic}

    def _on_restore(self, tps: set[TopicPartition]) -> None:
        """Before these partitions are processed (the loop keeps them paused until this returns,
        and retries it if it raises): what the previous owner recorded, and the incidents of
        its open ladders, so escalations, approvals and orphan handling go on here."""
        self.reader.catch_up()
        self._recover_incidents()

    def _on_revoke(self, tps: set[TopicPartition]) -> None:
        self.assigned = set()

    def owns(self, host: str) -> bool:
        """Is this process the owner of the incidents partition of `host` (same partitioner)?"""
        p = (murmur2(host.encode()) & 0x7FFFFFFF) % self._partitions
        # a partition whose hand-off has not completed is not ours to act on yet
        return p in self.assigned and TopicPartition(self.incidents_topic, p) not in self.loop.restoring

    # --- the records ----------------------------------------------------------------------

    def _emit(self, record: Remediation, out: list) -> None:
        if record.reason is not None and len(record.reason) > REASON_MAX:  # model_copy does not validate
            record = record.model_copy(update={"reason": clip_reason(record.reason)})
        self.ledger.apply(record)  # our own decisions count at once (the topic echo is idempotent)
        out.append(record)
        metrics.remediation(record)
        log.info(
            "remediation %s %s: %s (%s) for incident %s on %s%s",
            record.id,
            record.status,
            record.action,
            record.playbook,
            record.incident_id,
            record.host,
            f" [{record.gate}] {record.reason}" if record.gate else (f": {record.reason}" if record.reason else ""),
            extra={
                **incident_fields(record),
                "status": record.status,
                "gate": record.gate,
                "playbook": record.playbook,
            },
        )

    # --- planning -------------------------------------------------------------------------
    def propose(self, incident: Incident, step_index: int = 0) -> Proposal | Remediation | None:
        """The proposal for step `step_index` of the incident's rule; a record when it cannot be planned."""
        return propose(self.policy, incident, step_index, self.clock())

    def _decide(self, proposal: Proposal, out: list, runs: list, *, approved: str | None = None) -> None:
        """The decision stages (remediator/stages.py), then: nothing (already decided), a skip record,
        a record of the stage's own status (a human, an approval request), or a claim for a run;
        `approved`: the approvers' verdict when this proposal answers its wait for approval."""
        now = self.clock()
        if approved is not None:
            proposal = replace(proposal, approved=approved)
        verdict = self.decision.run(proposal, self.ledger, now)
        if isinstance(verdict, Hold):
            return
        if isinstance(verdict, Skip):
            self._emit(proposal.record("skipped", now, gate=verdict.gate, reason=verdict.reason), out)
            return
        if isinstance(verdict, Stop):
            self._emit(proposal.record(verdict.status, now, reason=verdict.reason), out)
            return
        # The claim must be on the broker before the run: flush what is pending, then claim.
        claim = verdict.record(
            "claimed",
            now,
            reason=claim_reason(
                verdict.incident.labels.get(self.policy.gates.blast_radius.job_label), verdict.approved
            ),
        )
        for record in out:  # earlier decisions of this batch stay ahead of the claim
            self.producer.send(record)
        out.clear()
        # on the claims partition: one order of claims for every member (remediator/agreement.py)
        future = self.producer.send_raw(
            self.producer.topic(Remediation.topic), claim.to_bytes(), claim.key(), partition=CLAIMS_PARTITION
        )
        self.producer.flush()
        offset = future.get(timeout=0).offset
        self.ledger.apply(claim, offset)
        crash_point("claimed")
        lost = self.agreement.check(proposal, claim, offset, now)
        if lost is not None:
            release = Agreement.release(claim, lost, self.clock())
            self.producer.send_raw(
                self.producer.topic(Remediation.topic), release.to_bytes(), release.key(), partition=CLAIMS_PARTITION
            )
            self.producer.flush()
            self.ledger.apply(release)
            log.info("%s: released its claim: %s", claim.id, release.reason)
            return
        runs.append(verdict)

    def _on_incident(self, incident: Incident, out: list, runs: list) -> None:
        if incident.status == "resolve":
            if self.ledger.by_incident.get(incident.id):
                self.resolved.add(incident.id)
                if self._close_ladder(incident, out):
                    self._return_to_service(self.incidents.get(incident.id, incident), out, runs)
            self.incidents.pop(incident.id, None)  # its ladder is over: keep memory bounded
            return
        if self.policy.rule_for(incident) is None and incident.id not in self.ledger.by_incident:
            return  # no rule, no history: nothing to do and nothing to remember
        self.incidents[incident.id] = incident
        if incident.id in self.resolved:
            return
        entries = [e for e in self.ledger.incident_entries(incident.id) if e.first.gate != CLOSED_LOOP_GATE]
        if entries:
            top = max(entries, key=lambda e: e.first.step)
            retry = top.latest.status == "skipped" and top.latest.gate in RETRYABLE
            if not retry:
                return  # in hand: a run, a wait for approval, or the ladder's timer
            step = top.first.step
        else:
            step = 0
        proposal = self.propose(incident, step)
        if isinstance(proposal, Remediation):
            if not self.ledger.get(proposal.id):
                self._emit(proposal, out)
        elif proposal is not None:
            self._decide(proposal, out, runs)  # dedup and claim hold one claimed or waiting for a person

    def _on_approval(self, item: Received, out: list, runs: list) -> None:
        approval: Approval = item.record
        entry = self.ledger.get(approval.remediation_id)
        now = datetime.fromtimestamp(item.timestamp_ms / 1000, UTC)  # the broker's clock (LogAppendTime)
        verdict = self.desk.consider(approval, entry, now, lambda: self._approvers_required(entry))
        if isinstance(verdict, approvals.Refused):
            log.warning("approval for %s refused: %s", approval.remediation_id, verdict.reason)
            out.append(approvals.refusal_record(item, self.loop.group_id, verdict.reason))
            return
        if isinstance(verdict, approvals.Counted):
            log.info("approval for %s counted: %s", approval.remediation_id, verdict.reason)
            return
        assert entry is not None, "consider() refuses an approval for an unknown request"
        if not verdict.run:
            self._emit(
                entry.latest.model_copy(
                    update={"status": "cancelled", "time": self.clock(), "gate": "approval", "reason": verdict.reason}
                ),
                out,
            )
            return
        now = self.clock()
        incident = self.incident(entry.first.incident_id)
        proposal = self.propose(incident, entry.first.step) if incident else None
        if not isinstance(proposal, Proposal) or proposal.remediation_id != entry.first.id:
            self._emit(
                entry.latest.model_copy(
                    update={
                        "status": "cancelled",
                        "time": now,
                        "gate": "approval",
                        "reason": "approved, but the incident or its rule is no longer known",
                    }
                ),
                out,
            )
            return
        self._decide(proposal, out, runs, approved=verdict.reason)

    def _approvers_required(self, entry: Entry | None) -> int:
        incident = self.incident(entry.first.incident_id) if entry is not None else None
        rule = self.policy.rule_for(incident) if incident else None
        return rule.approvers_required if rule else 1

    # --- running --------------------------------------------------------------------------

    # --- the loop -------------------------------------------------------------------------
    def handle(self, batch: list[Received]) -> list[Remediation]:
        self.reader.poll(0)
        out: list[Remediation] = []
        runs: list[Proposal] = []
        for item in batch:
            if isinstance(item.record, Incident):
                self._on_incident(item.record, out, runs)
            else:
                self._on_approval(item, out, runs)
        self._run_all(runs, out)
        return out

    def reload_policy(self) -> bool:
        """Take a changed (or SIGHUP-requested) policy file if it validates; True when one was taken."""
        if self.policy_watcher is None:
            return False
        new = self.policy_watcher.check()
        if new is None:
            return False
        self.policy = new
        if self._default_pipeline:
            self.pipeline = default_pipeline(new, self.control, self.inventory)
        self.decision = decision_pipeline(new, self.pipeline)
        return True

    def _on_tick(self) -> None:
        """Every `tick_s`: a changed policy, the timers (escalations, approvals, orphans), gauges."""
        self.reload_policy()
        out = self.tick()
        metrics.PENDING_CLAIMS.set(len(self.ledger.running(self.clock())))
        metrics.set_kill_switch(self.control.kill_switch is not None)
        for record in out:
            self.producer.send(record)
        if out:
            self.producer.flush()

    def run_once(self) -> int:
        """One batch, then the tick if it is due; returns the records consumed."""
        return self.service.run_once()

    def stop(self) -> None:
        self.loop.stop()

    def run(self, *, until: Callable[[Remediator], bool] | None = None, install_signals: bool = True) -> None:
        """Until SIGTERM/SIGINT, `stop()` or `until(self)`: the batch in hand finishes and is committed.
        SIGHUP asks for the policy file to be read again (taken at the next tick if it validates)."""
        self.service.run(until=until and (lambda: until(self)), install_signals=install_signals)

    def close(self) -> None:
        try:
            self.loop.close()
        finally:
            try:
                self.producer.close()
            finally:
                try:
                    self.reader.close()
                finally:
                    if self._own_control:
                        self.control.close()


__all__ = ["Remediator", "RunnerConfig"]
