"""The counting of `make chaos` (tests/chaos_run.py): pure functions over records read back from
the topics, so the counter itself is tested (tests/test_chaos_count.py) and can fail.

Each function takes plain tuples or objects with the named attributes, never a broker:

- `lost_records`: a produced input record is lost unless (1) it is on its input topic (the
  simulator's output, regenerated from the same seed, is the list of what was produced), (2) the
  detector group's committed offset of its partition is past it, and (3) the newest committed
  state snapshot of its host covers it (`source_offsets["topic:partition"]`, the next offset the
  snapshot reflects, is past it).
- `incident_diff`: the chaos run's incident records against a fault-free run over the same
  input. Duplicates: an incident id opened (or resolved) more than once, plus incidents opened
  that the fault-free run never opened (a fault re-opened under a new id, e.g. after a cold
  restore). Missed: incidents the fault-free run opened that the chaos run did not (`missed
  faults`), and resolves it wrote that the chaos run did not.
- `remediation_runs`: playbook runs per (incident, action, step) from the remediations topic; a
  run is a `running` record (written just before the playbook starts) or a run outcome (not the
  `cancelled` record, gate `closed_loop`, that ends a ladder when its incident resolves), and a key
  with more than one of either is a duplicate remediation.
- `faults_detected`: which ground-truth faults an incident list detects (an incident opened on
  the fault's host between its start and its end plus a slack), for the table.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

# The `cancelled` record that closes a ladder when its incident resolves: not a run (remediator/engine.py).
CLOSED_LOOP_GATE = "closed_loop"
# A playbook ran for these (remediator/claims.py RUN_OUTCOMES, plus the record written just before it starts).
RUN_OUTCOMES = frozenset({"succeeded", "failed", "dry_run", "timed_out", "cancelled", "unreachable"})


@dataclass(frozen=True)
class InputRecord:
    """One record of an input topic as read back: where it is and whose it is."""

    topic: str
    partition: int
    offset: int
    host: str


@dataclass
class LostCount:
    missing_from_topic: int = 0  # produced (by the seeded simulator) but not on the input topic
    not_committed: int = 0  # on the topic, at or past the group's committed offset
    not_in_state: int = 0  # committed, but the host's newest snapshot does not cover it
    examples: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.missing_from_topic + self.not_committed + self.not_in_state


def lost_records(
    expected: Counter,
    on_topic: Iterable[InputRecord],
    committed: dict[tuple[str, int], int],
    states: dict[str, dict[str, int]],
    kind_of=lambda topic: topic,
) -> LostCount:
    """`expected`: (kind, host) → how many records the simulator produced (kind = `kind_of(topic)`,
    e.g. "metrics"); `committed`: (topic, partition) → the group's committed offset (next to read);
    `states`: host → its newest snapshot's source_offsets ("topic:partition" → next offset)."""
    out = LostCount()
    found: Counter = Counter()
    for r in on_topic:
        found[(kind_of(r.topic), r.host)] += 1
        if r.offset >= committed.get((r.topic, r.partition), 0):
            out.not_committed += 1
            _example(out, f"{r.topic}[{r.partition}]@{r.offset} ({r.host}): not committed")
        elif states.get(r.host, {}).get(f"{r.topic}:{r.partition}", 0) <= r.offset:
            out.not_in_state += 1
            _example(out, f"{r.topic}[{r.partition}]@{r.offset} ({r.host}): not in the host's snapshot")
    for key, n in expected.items():
        if found[key] < n:
            out.missing_from_topic += n - found[key]
            _example(out, f"{key[0]} of {key[1]}: {n - found[key]} of {n} produced records not on the topic")
    return out


def _example(out: LostCount, text: str) -> None:
    if len(out.examples) < 5:
        out.examples.append(text)


@dataclass
class IncidentDiff:
    reference_opened: int = 0
    chaos_opened: int = 0
    duplicate_opens: int = 0  # an id opened again
    duplicate_resolves: int = 0  # an id resolved again
    extra: int = 0  # opened in the chaos run only (a new id for a known fault)
    missed: int = 0  # opened in the fault-free run only
    missed_resolves: int = 0  # resolved in the fault-free run, never in the chaos run
    examples: list[str] = field(default_factory=list)

    @property
    def duplicates(self) -> int:
        return self.duplicate_opens + self.duplicate_resolves + self.extra


def incident_diff(reference: Iterable, chaos: Iterable) -> IncidentDiff:
    """Incidents (objects with `id`, `status`, `host`, `kind`) of a fault-free run and of the chaos run."""
    ref = [(i.id, i.status) for i in reference]
    got = list(chaos)
    seen = Counter((i.id, i.status) for i in got)
    names = {i.id: f"{i.host} {i.kind}" for i in got}
    ref_open = {i for i, s in ref if s == "open"}
    ref_resolve = {i for i, s in ref if s == "resolve"}
    got_open = {i for (i, s) in seen if s == "open"}
    got_resolve = {i for (i, s) in seen if s == "resolve"}
    out = IncidentDiff(reference_opened=len(ref_open), chaos_opened=len(got_open))
    for (i, s), n in sorted(seen.items()):
        if n > 1 and s in ("open", "resolve"):
            if s == "open":
                out.duplicate_opens += n - 1
            else:
                out.duplicate_resolves += n - 1
            _example(out, f"{i} ({names[i]}) {s} {n} times")
    for i in sorted(got_open - ref_open):
        out.extra += 1
        _example(out, f"{i} ({names[i]}) opened only in the chaos run")
    for i in sorted(ref_open - got_open):
        out.missed += 1
        _example(out, f"{i} opened only in the fault-free run")
    for i in sorted(ref_resolve - got_resolve):
        out.missed_resolves += 1
        _example(out, f"{i} resolved only in the fault-free run")
    return out


@dataclass
class RemediationCount:
    keys: int = 0  # (incident, action, step) with at least one run
    runs: int = 0
    duplicates: int = 0  # runs beyond the first, summed over keys
    decided: int = 0  # incidents with any remediation record
    examples: list[str] = field(default_factory=list)


def remediation_runs(records: Iterable) -> RemediationCount:
    """Remediation records (objects with `incident_id`, `action`, `step`, `status`)."""
    started: Counter = Counter()
    finished: Counter = Counter()
    incidents = set()
    for r in records:
        incidents.add(r.incident_id)
        key = (r.incident_id, r.action, r.step)
        if r.status == "running":
            started[key] += 1
        elif r.status in RUN_OUTCOMES and getattr(r, "gate", None) != CLOSED_LOOP_GATE:
            finished[key] += 1
    out = RemediationCount(decided=len(incidents))
    for key in sorted(set(started) | set(finished)):
        n = max(started[key], finished[key])
        out.keys += 1
        out.runs += n
        if n > 1:
            out.duplicates += n - 1
            _example(out, f"{key[0]} {key[1]} step {key[2]}: {started[key]} started, {finished[key]} outcomes")
    return out


def faults_detected(truth: Iterable[dict], incidents: Iterable, slack: timedelta = timedelta(minutes=10)) -> set[int]:
    """Indexes of the ground-truth faults (dicts with host, start, end as ISO text) that an incident
    opened on their host within [start, end + slack] detects."""
    opened: dict[str, list[datetime]] = {}
    for i in incidents:
        if i.status == "open":
            opened.setdefault(i.host, []).append(i.opened_at)
    out = set()
    for k, f in enumerate(truth):
        start = datetime.fromisoformat(f["start"].replace("Z", "+00:00"))
        end = datetime.fromisoformat(f["end"].replace("Z", "+00:00")) + slack
        if any(start <= t <= end for t in opened.get(f["host"], [])):
            out.add(k)
    return out


def table(rows: list[tuple[str, str, str]]) -> str:
    """A markdown table of (what, count, notes) rows."""
    head = ("what", "count", "notes")
    w = [max(len(r[i]) for r in [head, *rows]) for i in range(3)]
    line = lambda r: "| " + " | ".join(c.ljust(n) for c, n in zip(r, w, strict=True)) + " |"  # noqa: E731
    return "\n".join([line(head), "|" + "|".join("-" * (n + 2) for n in w) + "|"] + [line(r) for r in rows])


def summary_line(
    kills: int,
    broker_restarts: int,
    rebalances: int,
    lost: int,
    duplicate_incidents: int,
    missed: int,
    duplicate_remediations: int,
) -> str:
    return (
        f"chaos: kills {kills}, broker restarts {broker_restarts}, rebalances {rebalances}, records lost {lost}, "
        f"duplicate incidents {duplicate_incidents}, missed faults {missed}, "
        f"duplicate remediations {duplicate_remediations}"
    )
