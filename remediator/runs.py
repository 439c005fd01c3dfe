"""Running the claimed playbooks: one run per claim, its `running` record and its outcome record.

`Runs` is the part of `remediator.engine.Remediator` that hands a claimed proposal to
`remediator.runner.run_playbook` (the one call into ansible-runner) and turns what came back,
or what went wrong, into the outcome record; claims of one batch run side by side, at most
`gates.max_concurrent` at once. Also the crash points the tests kill the process at.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import TYPE_CHECKING, Any

from fleetmedic.producer import Producer
from fleetmedic.schemas import Remediation

from .control import ControlState
from .gates import Proposal
from .policy import Policy

if TYPE_CHECKING:
    from .engine import RunnerConfig
    from .inventory import Inventory

log = logging.getLogger(__name__)

# Tests kill the process (SIGKILL) at one of these points to show that no run happens twice.
# (not FLEETMEDIC_*: that prefix is reserved for settings)
CRASH_ENV = "FM_REMEDIATOR_CRASH_AT"
CRASH_POINTS = ("claimed", "started", "ran", "produced")


def crash_point(point: str) -> None:
    """SIGKILL this process when the crash-test environment variable names `point`."""
    if os.environ.get(CRASH_ENV) == point:
        log.warning("crash point %s: SIGKILL", point)
        os.kill(os.getpid(), signal.SIGKILL)


class Runs:
    """The runs of `remediator.engine.Remediator` (it provides the attributes declared here)."""

    if TYPE_CHECKING:
        policy: Policy
        runner: RunnerConfig
        inventory: Inventory | None
        control: ControlState
        producer: Producer
        clock: Callable[[], datetime]
        started: int
        _run_playbook: Any

        def _emit(self, record: Remediation, out: list) -> None: ...

    def _execute(self, p: Proposal) -> Remediation:
        from .runner import PlaybookRefused, PlaybookRun, where_it_runs

        target = self.inventory.target(p.host) if self.inventory is not None else None
        assert p.step.playbook is not None, "only `action: human` has no playbook (policy.Step), and it never runs"
        playbook = p.step.playbook

        def on_start() -> None:
            self.producer.send(
                p.record(
                    "running",
                    self.clock(),
                    started_at=self.clock(),
                    reason=where_it_runs(playbook, self.runner.playbooks_dir, target),
                )
            )
            self.started += 1
            crash_point("started")

        run = PlaybookRun(
            playbook=playbook,
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
            return p.record("failed", self.clock(), reason=f"refused before the run: {exc}")
        except Exception as exc:  # the run's outcome must be recorded whatever went wrong
            log.exception(
                "run of %s failed to complete",
                p.remediation_id,
                extra={"incident_id": p.incident.id, "host": p.host, "remediation_id": p.remediation_id},
            )
            return p.record("failed", self.clock(), reason=f"runner error: {type(exc).__name__}: {exc}")
        crash_point("ran")
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
        return p.record(
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
