"""The remediator: incidents in, gated playbook runs out, every decision on the remediations topic.

One `Remediator` is a member of a consumer group reading incidents.v1 and approvals.v1 through
the shared `ConsumerLoop`. For each incident it picks a rule (first match in the policy file),
renders the step's typed variables, and passes the action through the gates. Then:

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
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from kafka import TopicPartition
from kafka.partitioner.default import murmur2

from fleetmedic import metrics
from fleetmedic.config import Settings
from fleetmedic.lifecycle import Periodic, TopicReader
from fleetmedic.logfmt import incident_fields
from fleetmedic.schemas import Approval, Incident, Remediation
from fleetmedic.topics import topic_name
from fleetmedic.transport import ConsumerLoop, Producer, Received

from . import approvals
from .agreement import Agreement
from .claims import CLAIMS_PARTITION, REASON_MAX, Entry, LedgerReader, claim_reason, clip_reason, remediation_id
from .control import ControlState
from .gates import RETRYABLE, Pipeline, Proposal, Skip, default_pipeline, propose
from .policy import HUMAN, Policy
from .policy_reload import PolicyWatcher

log = logging.getLogger(__name__)

# Tests kill the process (SIGKILL) at one of these points to show that no run happens twice.
# (not FLEETMEDIC_*: that prefix is reserved for settings)
CRASH_ENV = "FM_REMEDIATOR_CRASH_AT"
CRASH_POINTS = ("claimed", "started", "ran", "produced")
# A claim with no outcome (its process died mid-run) is escalated this long after its timeout.
ORPHAN_GRACE_S = 30.0
CLOSED_LOOP = "closed_loop"


def _crash_point(point: str) -> None:
    if os.environ.get(CRASH_ENV) == point:
        log.warning("crash point %s: SIGKILL", point)
        os.kill(os.getpid(), signal.SIGKILL)


@dataclass(frozen=True)
class RunnerConfig:
    playbooks_dir: Path
    artifacts_dir: Path
    keep_artifacts: int = 50


def utcnow() -> datetime:
    return datetime.now(UTC)


class Remediator:
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
        run_playbook=None,
        tick_s: float = 0.5,
        session_timeout_ms: int = 10_000,
        orphan_grace_s: float = ORPHAN_GRACE_S,
        control: ControlState | None = None,
        policy_path: str | Path | None = None,
        inventory=None,
    ):
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
        self.pipeline = pipeline or default_pipeline(policy, self.control, inventory)
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
            after_flush=lambda stats: _crash_point("produced"),
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
    def _record(self, p: Proposal, status: str, now: datetime, **fields) -> Remediation:
        if fields.get("reason") is not None:
            fields["reason"] = clip_reason(fields["reason"])
        return Remediation(
            id=p.remediation_id,
            incident_id=p.incident.id,
            fingerprint=p.incident.fingerprint,
            host=p.host,
            action=p.action,
            playbook=p.step.playbook,
            status=status,
            step=p.step_index,
            time=now,
            extra_vars=p.extra_vars,
            **fields,
        )

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
        """Gates, then: skip record, approval request, hand to a human, or claim for a run."""
        now = self.clock()
        if proposal.action == HUMAN:
            self._emit(
                self._record(
                    proposal,
                    "escalated",
                    now,
                    reason=f"rule {proposal.rule.name}: "
                    f"handed to a human ({proposal.incident.summary or proposal.incident.kind})",
                ),
                out,
            )
            return
        verdict = self.pipeline.run(proposal, self.ledger, now)
        if isinstance(verdict, Skip):
            self._emit(self._record(proposal, "skipped", now, gate=verdict.gate, reason=verdict.reason), out)
            return
        if verdict.needs_approval and approved is None:
            self._emit(
                self._record(
                    verdict,
                    "awaiting_approval",
                    now,
                    reason=f"rule {proposal.rule.name} needs approval: fleetmedic approve "
                    f"{proposal.remediation_id} (or --deny); expires in "
                    f"{self.policy.approvals.expire_s:g}s",
                ),
                out,
            )
            return
        # The claim must be on the broker before the run: flush what is pending, then claim.
        claim = self._record(
            verdict,
            "claimed",
            now,
            reason=claim_reason(verdict.incident.labels.get(self.policy.gates.blast_radius.job_label))
            + (f"; {approved}" if approved else ""),
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
        _crash_point("claimed")
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
        entries = [e for e in self.ledger.incident_entries(incident.id) if e.first.gate != CLOSED_LOOP]
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
            entry = self.ledger.get(proposal.remediation_id)
            if entry is not None and (entry.claimed_at is not None or entry.latest.status == "awaiting_approval"):
                return  # claimed once already (at most once), or waiting for a person
            self._decide(proposal, out, runs)

    def _close_ladder(self, incident: Incident, out: list) -> bool:
        """Close the incident's ladder (once); True when this call closed it."""
        entries = [e for e in self.ledger.incident_entries(incident.id) if e.first.gate != CLOSED_LOOP]
        if not entries or self.ledger.get(remediation_id(incident.id, CLOSED_LOOP, 0)) is not None:
            return False
        now = self.clock()
        for e in entries:
            if e.latest.status == "awaiting_approval":
                self._emit(
                    e.latest.model_copy(
                        update={
                            "status": "cancelled",
                            "time": now,
                            "gate": CLOSED_LOOP,
                            "reason": "incident resolved before approval",
                        }
                    ),
                    out,
                )
        top = max(entries, key=lambda e: e.first.step)
        close_id = remediation_id(incident.id, CLOSED_LOOP, 0)
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
                    gate=CLOSED_LOOP,
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
    def _execute(self, p: Proposal) -> Remediation:
        from .runner import PlaybookRefused, PlaybookRun, where_it_runs

        target = self.inventory.target(p.host) if self.inventory is not None else None

        def on_start():
            self.producer.send(
                self._record(
                    p,
                    "running",
                    self.clock(),
                    started_at=self.clock(),
                    reason=where_it_runs(p.step.playbook, self.runner.playbooks_dir, target),
                )
            )
            self.started += 1
            _crash_point("started")

        assert p.step.playbook is not None, "only `action: human` has no playbook (policy.Step), and it never runs"
        run = PlaybookRun(
            playbook=p.step.playbook,
            extra_vars=p.extra_vars,
            check=p.dry_run,
            timeout_s=p.step.timeout_s,
            target=target,
        )
        try:
            result = self._run_playbook(
                run,
                playbooks_dir=self.runner.playbooks_dir,
                artifacts_dir=self.runner.artifacts_dir,
                on_start=on_start,
                keep_artifacts=self.runner.keep_artifacts,
                cancel=self.control.cancel,
            )
        except PlaybookRefused as exc:
            return self._record(p, "failed", self.clock(), reason=f"refused before the run: {exc}")
        except Exception as exc:  # the run's outcome must be recorded whatever went wrong
            log.exception(
                "run of %s failed to complete",
                p.remediation_id,
                extra={"incident_id": p.incident.id, "host": p.host, "remediation_id": p.remediation_id},
            )
            return self._record(p, "failed", self.clock(), reason=f"runner error: {type(exc).__name__}: {exc}")
        _crash_point("ran")
        status = "dry_run" if p.dry_run and result.status == "succeeded" else result.status
        reason = gate = None
        if getattr(result, "unreachable_reason", None):
            reason = f"unreachable: {result.unreachable_reason}"
        elif result.summary.failed_tasks:
            reason = "failed tasks: " + ", ".join(result.summary.failed_tasks)
        engaged = self.control.kill_switch
        if status == "cancelled" and engaged is not None:
            # stopped by `fleetmedic pause`: the ladder stops here too (no escalation past a person's stop)
            gate = "kill_switch"
            reason = f"cancelled by the kill switch (fleetmedic pause by {engaged.by}: {engaged.reason or 'no reason'})"
        return self._record(
            p,
            status,
            self.clock(),
            started_at=result.started_at,
            finished_at=result.finished_at,
            rc=result.rc,
            run=result.summary,
            reason=reason,
            gate=gate,
        )

    def _run_all(self, runs: list[Proposal], out: list) -> None:
        if not runs:
            return
        if len(runs) == 1:
            results = [self._execute(runs[0])]
        else:
            with ThreadPoolExecutor(max_workers=min(len(runs), self.policy.gates.max_concurrent)) as pool:
                results = list(pool.map(self._execute, runs))
        for record in results:
            self._emit(record, out)

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

    def tick(self) -> list[Remediation]:
        """Timers: approval expiry and escalation deadlines, for the incidents this process owns."""
        self.reader.poll(0)
        now = self.clock()
        out: list[Remediation] = []
        runs: list[Proposal] = []
        returns = self.policy.return_actions()
        for incident_id, ids in list(self.ledger.by_incident.items()):
            entries = [self.ledger.entries[i] for i in ids]
            if any(e.first.gate == CLOSED_LOOP for e in entries) or incident_id in self.resolved:
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
        if any(e.first.gate == CLOSED_LOOP for e in entries):
            return False
        top = max(entries, key=lambda e: e.first.step).latest
        if top.status == "cancelled" or (top.status == "escalated" and top.action == HUMAN):
            return False
        return not (top.status == "skipped" and top.gate not in RETRYABLE)

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


__all__ = ["Remediator", "RunnerConfig", "CRASH_ENV", "CRASH_POINTS"]
