"""The counting of `make chaos` (tests/chaos_kit.py), over hand-made record lists: each count can fail."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from types import SimpleNamespace as NS

import chaos_kit as kit

M = "p.metrics.v1"
T = datetime(2026, 1, 1, tzinfo=UTC)


def _inputs():
    # h1 on partition 0 (offsets 0, 1), h2 on partition 1 (offsets 0, 1, 2)
    return [
        kit.InputRecord(M, 0, 0, "h1"),
        kit.InputRecord(M, 0, 1, "h1"),
        kit.InputRecord(M, 1, 0, "h2"),
        kit.InputRecord(M, 1, 1, "h2"),
        kit.InputRecord(M, 1, 2, "h2"),
    ]


def test_nothing_lost_when_committed_and_covered():
    lost = kit.lost_records(
        Counter({(M, "h1"): 2, (M, "h2"): 3}),
        _inputs(),
        {(M, 0): 2, (M, 1): 3},
        {"h1": {f"{M}:0": 2}, "h2": {f"{M}:1": 3}},
    )
    assert lost.total == 0 and lost.examples == []


def test_a_record_past_the_committed_offset_is_lost():
    lost = kit.lost_records(
        Counter({(M, "h1"): 2, (M, "h2"): 3}),
        _inputs(),
        {(M, 0): 2, (M, 1): 2},
        {"h1": {f"{M}:0": 2}, "h2": {f"{M}:1": 3}},
    )
    assert (lost.not_committed, lost.not_in_state, lost.missing_from_topic) == (1, 0, 0)
    assert "p.metrics.v1[1]@2 (h2): not committed" in lost.examples


def test_a_committed_record_the_snapshot_does_not_cover_is_lost():
    # h2's snapshot stops at offset 1 (next 2): its last record is committed but in no state; h1 has none
    lost = kit.lost_records(Counter(), _inputs(), {(M, 0): 2, (M, 1): 3}, {"h2": {f"{M}:1": 2}})
    assert (lost.not_committed, lost.not_in_state) == (0, 3)


def test_a_produced_record_missing_from_the_topic_is_lost():
    lost = kit.lost_records(
        Counter({("metrics", "h1"): 3, ("metrics", "h2"): 3}),
        _inputs(),
        {(M, 0): 2, (M, 1): 3},
        {"h1": {f"{M}:0": 2}, "h2": {f"{M}:1": 3}},
        kind_of=lambda topic: "metrics",
    )
    assert (lost.missing_from_topic, lost.total) == (1, 1)


def _inc(i, status, host="h1", kind="k"):
    return NS(id=i, status=status, host=host, kind=kind, opened_at=T)


def test_incidents_equal_to_the_reference_count_nothing():
    ref = [_inc("a", "open"), _inc("a", "update"), _inc("a", "resolve"), _inc("b", "open")]
    got = [_inc("b", "open"), _inc("a", "open"), _inc("a", "resolve")]  # updates are not compared
    d = kit.incident_diff(ref, got)
    assert (d.duplicates, d.missed, d.missed_resolves, d.reference_opened, d.chaos_opened) == (0, 0, 0, 2, 2)


def test_duplicate_extra_and_missed_incidents():
    ref = [_inc("a", "open"), _inc("a", "resolve"), _inc("b", "open"), _inc("c", "open")]
    got = [_inc("a", "open"), _inc("a", "open"), _inc("b", "open"), _inc("x", "open", host="h9")]
    d = kit.incident_diff(ref, got)
    assert (d.duplicate_opens, d.extra, d.duplicates) == (1, 1, 2)
    assert (d.missed, d.missed_resolves) == (1, 1)
    assert "x (h9 k) opened only in the chaos run" in d.examples


def _rem(incident, status, action="restart_service", step=0, gate=None):
    return NS(incident_id=incident, action=action, step=step, status=status, gate=gate)


def test_remediation_runs_per_incident_action_step():
    recs = [
        _rem("i1", "claimed"),
        _rem("i1", "running"),
        _rem("i1", "succeeded"),
        _rem("i1", "cancelled", gate="closed_loop"),  # the incident resolved: not a run
        _rem("i2", "skipped"),  # never ran
        _rem("i3", "claimed"),
        _rem("i3", "running"),  # crashed mid-run: one run
        _rem("i3", "escalated", action="human", step=1),
    ]
    c = kit.remediation_runs(recs)
    assert (c.runs, c.keys, c.duplicates, c.decided) == (2, 2, 0, 3)


def test_a_second_run_of_one_key_is_a_duplicate():
    recs = [
        _rem("i1", "running"),
        _rem("i1", "succeeded"),
        _rem("i1", "running"),
        _rem("i1", "failed"),
        _rem("i2", "running", step=1),
        _rem("i2", "succeeded", step=1),
        _rem("i2", "succeeded", step=1),
    ]
    c = kit.remediation_runs(recs)
    assert (c.duplicates, c.runs) == (2, 4)


def test_faults_detected_by_host_and_window():
    truth = [
        {"host": "h1", "start": "2026-01-01T00:00:00Z", "end": "2026-01-01T00:10:00Z"},
        {"host": "h2", "start": "2026-01-01T00:00:00Z", "end": "2026-01-01T00:10:00Z"},
    ]
    late = datetime(2026, 1, 1, 0, 30, tzinfo=UTC)
    incidents = [NS(host="h1", status="open", opened_at=T), NS(host="h2", status="open", opened_at=late)]
    assert kit.faults_detected(truth, incidents) == {0}


def test_the_summary_line_is_the_contract():
    assert kit.summary_line(20, 2, 31, 0, 0, 0, 0) == (
        "chaos: kills 20, broker restarts 2, rebalances 31, records lost 0, duplicate incidents 0, "
        "missed faults 0, duplicate remediations 0"
    )
