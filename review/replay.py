"""`fleetmedic replay`: re-run the detectors over a recorded topic range and diff the outcome.

The range is read with `fleetmedic.ranges` (offsets, or Kafka timestamps via offsets-for-times),
optionally for some hosts only, and fed to a fresh `detectors.engine.Engine` built from the
given configuration. Results go to a JSON-lines file (or a scratch topic), never to the live
incidents topic. Metrics and logs are replayed topic after topic: the engine keeps each host's
order within a topic, and no detector decision depends on the interleaving of the two topics.

A replay starts its detectors cold: a range that begins mid-stream re-warms the EWMA series and
the isolation forests, so compare from the start of a recording (or expect differences early in
the range). Each forest follows one source partition (docs/detectors.md), so the order in which
the replay interleaves partitions changes nothing.
"""

from __future__ import annotations

import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, TextIO

from fleetmedic.config import Settings
from fleetmedic.ranges import RangeSpec, RangeStats, read_range
from fleetmedic.schemas import Contract, Incident, LogEvent, MetricBatch, Remediation
from fleetmedic.topics import topic_name

if TYPE_CHECKING:
    from detectors.config import DetectorConfig
    from remediator.policy import Policy


@dataclass
class ReplayResult:
    incidents: list[Incident]
    records: int = 0
    values: int = 0
    seconds: float = 0.0
    ranges: dict[str, RangeStats] = field(default_factory=dict)

    @property
    def values_per_s(self) -> float:
        return self.values / self.seconds if self.seconds > 0 else 0.0


def replay(
    settings: Settings,
    config: DetectorConfig,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    offsets: dict[str, tuple[dict[int, int], dict[int, int]]] | None = None,
    hosts: set[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> ReplayResult:
    """Run `config`'s detectors over the range; `offsets` maps 'metrics.v1'/'logs.v1' → (starts, ends)."""
    from detectors.engine import Engine

    engine = Engine(config)
    result = ReplayResult(incidents=[])
    keep = (lambda r: r.host in hosts) if hosts else None
    t0 = time.perf_counter()
    last_report = t0
    for name, model in (("metrics.v1", MetricBatch), ("logs.v1", LogEvent)):
        starts, ends = (offsets or {}).get(name, ({}, {}))
        spec = RangeSpec(
            topic=topic_name(settings, name), start_offsets=starts, end_offsets=ends, start_time=start, end_time=end
        )
        stats = result.ranges[name] = RangeStats()
        for batch in read_range(settings, spec, model, keep=keep, stats=stats):
            result.incidents.extend(engine.process(batch))
            result.records += len(batch)
            if model is MetricBatch:
                result.values += sum(len(item.record.values) for item in batch)
            now = time.perf_counter()
            if progress and now - last_report >= 1.0:
                last_report = now
                total = sum(b[1] - b[0] for b in stats.bounds.values()) or 1
                progress(
                    f"replay {name}: {stats.read}/{total} records ({100 * stats.read / total:.0f}%), "
                    f"{result.values / (now - t0):,.0f} values/s, {len(result.incidents)} incident records"
                )
    result.seconds = time.perf_counter() - t0
    return result


def recorded_incidents(
    settings: Settings, hosts: set[str] | None = None, start: datetime | None = None, end: datetime | None = None
) -> list[Incident]:
    """What the live detectors recorded, for the same hosts and event-time span."""
    spec = RangeSpec(topic=topic_name(settings, Incident.topic))

    def keep(r: Contract) -> bool:  # read_range decodes with Incident: the isinstance always holds
        return (
            isinstance(r, Incident)
            and (not hosts or r.host in hosts)
            and (start is None or r.time >= start)
            and (end is None or r.time < end)
        )

    return [i.record for b in read_range(settings, spec, Incident, keep=keep) for i in b]


@dataclass
class IncidentDiff:
    added: dict[str, list[Incident]]  # incident id → records only the replay raised
    removed: dict[str, list[Incident]]  # incident id → records only the recording has
    changed: dict[str, tuple[list[Incident], list[Incident]]]  # same lifecycle step, other content

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed)


def diff(recorded: list[Incident], replayed: list[Incident]) -> IncidentDiff:
    """Compare lifecycle records by (incident id, status, event time); bytes decide 'changed'."""

    def index(records: list[Incident]) -> dict[tuple, Incident]:
        out: dict[tuple, Incident] = {}
        for r in records:
            out[(r.id, r.status, r.time)] = r
        return out

    old, new = index(recorded), index(replayed)
    by_id_old, by_id_new = defaultdict(list), defaultdict(list)
    for r in recorded:
        by_id_old[r.id].append(r)
    for r in replayed:
        by_id_new[r.id].append(r)
    added: dict[str, list[Incident]] = {}
    removed: dict[str, list[Incident]] = {}
    changed: dict[str, tuple[list[Incident], list[Incident]]] = {}
    for key in new.keys() - old.keys():
        added.setdefault(key[0], []).append(new[key])
    for key in old.keys() - new.keys():
        removed.setdefault(key[0], []).append(old[key])
    for key in old.keys() & new.keys():
        if old[key].to_bytes() != new[key].to_bytes():
            changed[key[0]] = (by_id_old[key[0]], by_id_new[key[0]])
    for group in (added, removed):
        for records in group.values():
            records.sort(key=lambda r: r.time)
    return IncidentDiff(added, removed, changed)


def plan(records: list[Incident], policy: Policy) -> list[tuple[Incident, str]]:
    """What the remediator would have decided for each opening record, as a dry plan: the policy's
    first step through the real gate pipeline, in event-time order, nothing run. Each planned run
    is taken to finish at once, so cooldown, flapping and rate limits see it; approvals are not
    waited for; escalation steps are not planned."""
    from remediator.claims import Ledger, claim_reason
    from remediator.gates import Skip, default_pipeline, propose
    from remediator.policy import HUMAN

    pipeline, ledger = default_pipeline(policy), Ledger()
    out = []
    for r in sorted((r for r in records if r.status == "open"), key=lambda r: (r.time, r.id)):
        proposal = propose(policy, r, 0, r.time)
        if proposal is None:
            out.append((r, "no rule matches: no action"))
            continue
        if isinstance(proposal, Remediation):
            out.append((r, f"skipped by {proposal.gate}: {proposal.reason}"))
            continue
        rule, step = proposal.rule.name, proposal.step
        if step.action == HUMAN:
            out.append((r, f"rule {rule}: a human"))
            continue
        verdict = pipeline.run(proposal, ledger, r.time)
        if isinstance(verdict, Skip):
            out.append((r, f"rule {rule}: {step.action} skipped by {verdict.gate}: {verdict.reason}"))
            continue
        mode = " (dry run)" if verdict.dry_run else ""
        approval = " after approval" if verdict.needs_approval else ""
        out.append((r, f"rule {rule}: {step.action} via {step.playbook} {verdict.extra_vars}{mode}{approval}"))
        for status in ("claimed", "succeeded"):
            ledger.apply(
                Remediation(
                    id=verdict.remediation_id,
                    incident_id=r.id,
                    fingerprint=r.fingerprint,
                    host=r.host,
                    action=step.action,
                    playbook=step.playbook,
                    status=status,
                    step=0,
                    time=r.time,
                    reason=claim_reason(None) if status == "claimed" else None,
                    extra_vars=verdict.extra_vars,
                )
            )
    return out


def print_diff(d: IncidentDiff, policy: Policy | None = None, out: TextIO = sys.stdout) -> None:
    if d.empty:
        print("diff: no difference between the recorded and the replayed incidents", file=out)
        return
    print(f"diff: {len(d.added)} incidents added, {len(d.removed)} removed, {len(d.changed)} changed", file=out)
    print(f"{'change':8s} {'incident':28s} {'host':14s} {'kind/subject':40s} {'lifecycle'}", file=out)
    for label, group in (("added", d.added), ("removed", d.removed)):
        for iid, records in sorted(group.items()):
            r = records[0]
            steps = ", ".join(f"{x.status}@{x.time:%H:%M:%S}" for x in records)
            print(f"{label:8s} {iid:28s} {r.host:14s} {r.kind + '/' + r.subject:40s} {steps}", file=out)
            if policy is not None:
                for _, action in plan(records, policy):
                    print(
                        f"{'':8s} {'would have' if label == 'added' else 'would not have'} planned: {action}", file=out
                    )
    for iid, (old, new) in sorted(d.changed.items()):
        r = new[0]
        was = ", ".join(f"{x.status}@{x.time:%H:%M:%S}" for x in old)
        now = ", ".join(f"{x.status}@{x.time:%H:%M:%S}" for x in new)
        print(f"{'changed':8s} {iid:28s} {r.host:14s} {r.kind + '/' + r.subject:40s} {was} → {now}", file=out)
