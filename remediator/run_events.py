"""A run's task results, from ansible-runner's events: counts, failed task names, the play's outputs.

`EventSummary` is the run's event handler (it keeps every event in the artifacts); its
`summary()` is the run record's `RunSummary`: the play's final stats when the play got that far,
else the per-event counts (a timed-out or cancelled play has no final stats).
"""

from __future__ import annotations

import json

from fleetmedic.schemas import MAX_OUTPUT_CHARS, RunSummary

MAX_FAILED_TASKS = 20


class EventSummary:
    """Counts task results from ansible-runner's events; the final stats win when present."""

    def __init__(self) -> None:
        self.ok = self.changed = self.failed = self.skipped = self.unreachable = 0
        self.failed_tasks: list[str] = []
        self.stats: dict | None = None
        self.unreachable_msg: str | None = None

    def __call__(self, event: dict) -> bool:
        kind = event.get("event", "")
        data = event.get("event_data") or {}
        if kind == "runner_on_ok":
            self.ok += 1
            self.changed += bool((data.get("res") or {}).get("changed"))
        elif kind == "runner_on_failed":
            if data.get("ignore_errors"):
                self.ok += 1
            else:
                self.failed += 1
                self._failed_task(data)
        elif kind == "runner_on_skipped":
            self.skipped += 1
        elif kind == "runner_on_unreachable":
            self.unreachable += 1
            self._failed_task(data)
            if self.unreachable_msg is None:
                msg = (data.get("res") or {}).get("msg") or "unreachable"
                self.unreachable_msg = f"{data.get('host', '?')}: {str(msg).strip()}"[:1000]
        elif kind == "playbook_on_stats":
            self.stats = data
        return True  # keep the event in the artifacts

    def _failed_task(self, data: dict) -> None:
        name = str(data.get("task") or data.get("task_action") or "?")
        if len(self.failed_tasks) < MAX_FAILED_TASKS and name not in self.failed_tasks:
            self.failed_tasks.append(name[:512])

    def outputs(self) -> dict[str, str]:
        """The play's set_stats data, one JSON text per key, bounded to fit the record."""
        data = (self.stats or {}).get("artifact_data") or {}
        out = {}
        for key in sorted(data)[:32]:
            text = json.dumps(data[key], sort_keys=True, default=str)
            out[str(key)[:128]] = (
                text if len(text) <= MAX_OUTPUT_CHARS else text[: MAX_OUTPUT_CHARS - 14] + "...(truncated)"
            )
        return out

    def summary(self) -> RunSummary:
        stats = self.stats
        if stats is not None:

            def total(key: str) -> int:
                return sum(int(v) for v in (stats.get(key) or {}).values())

            # Ansible's "ok" includes the changed results; so does ours.
            return RunSummary(
                ok=total("ok"),
                changed=total("changed"),
                failed=total("failures"),
                skipped=total("skipped"),
                unreachable=total("dark"),
                failed_tasks=self.failed_tasks,
                outputs=self.outputs(),
            )
        return RunSummary(
            ok=self.ok,
            changed=self.changed,
            failed=self.failed,
            skipped=self.skipped,
            unreachable=self.unreachable,
            failed_tasks=self.failed_tasks,
        )
