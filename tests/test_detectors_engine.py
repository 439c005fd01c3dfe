"""The detection engine without Kafka: rules, lifecycle, messy-stream rules, determinism, state."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from detector_scenarios import T0, fleet, received, write_config, xid

from detectors.config import load_config
from detectors.engine import Engine
from detectors.engine_state import STATE_VERSION
from detectors.series_rule import SeriesRule
from fleetmedic.config import Settings
from fleetmedic.schemas import DetectorState, MetricBatch
from fleetmedic.yamlfile import ConfigFileError

OLD_STATES = Path(__file__).parent / "data" / "engine_state_v1.jsonl"


@pytest.fixture
def config(tmp_path):
    return load_config(write_config(tmp_path))


def by_fp(incidents):
    out = {}
    for inc in incidents:
        out.setdefault(inc.fingerprint, []).append(inc)
    return out


def test_static_threshold_pends_fires_and_resolves_after_quiet_time(config):
    records = fleet(overheat={1: (40, 59)})
    out = Engine(config).process(received(records))
    incidents = by_fp(out)
    overheat = incidents.pop("node01/gpu_overheat/gpu0.temperature_c")
    assert [i.status for i in overheat] == ["open", "resolve"]
    opened, resolved = overheat
    assert opened.time == T0 + timedelta(seconds=10 * 42)  # pending at 40, for 20 s → fires at 42
    assert opened.evidence.window_start == T0 + timedelta(seconds=400)
    assert opened.severity == "critical" and opened.action_class == "drain_and_reset"
    assert opened.evidence.values[0] >= 85 and opened.threshold == 85
    src = opened.evidence.sources[0]
    assert (src.first_offset, src.last_offset) == (40 * 4 + 1, 42 * 4 + 1)  # the pending and the firing record
    assert resolved.id == opened.id and resolved.opened_at == opened.time
    assert resolved.time == T0 + timedelta(seconds=10 * (60 + 3))  # clear from 60, 30 s quiet
    # the power/memory EWMA and the other hosts stay quiet on the normal noise
    assert incidents == {}


def test_ewma_raises_on_a_spike_in_both_directions_only_after_warmup(config):
    out = Engine(config).process(received(fleet(power_spike={2: (60, 70), 3: (5, 15)})))
    incidents = by_fp(out)
    spike = incidents.pop("node02/gpu_power_anomaly/gpu0.power_w")
    assert [i.status for i in spike] == ["open", "resolve"]
    assert spike[0].time == T0 + timedelta(seconds=620) and spike[0].score >= 6
    assert spike[0].evidence.details["count"] >= 20
    assert incidents == {}  # node03's spike came during warm-up: no alert


def test_hysteresis_keeps_firing_between_clear_and_threshold(config):
    engine = Engine(config)
    rec = lambda i, temp: MetricBatch(
        host="n1", time=T0 + timedelta(seconds=10 * i), source="t", values={"gpu0.temperature_c": temp}
    )
    temps = [70] * 5 + [90] * 3 + [83] * 10 + [79] * 4
    out = engine.process(received([rec(i, t) for i, t in enumerate(temps)]))
    assert [(i.status, i.time) for i in out] == [
        ("open", T0 + timedelta(seconds=70)),
        ("resolve", T0 + timedelta(seconds=210)),
    ]


def test_counters_become_rates_and_resets_are_not_alarms(config):
    engine = Engine(config)
    rec = lambda i, v: MetricBatch(
        host="n1",
        time=T0 + timedelta(seconds=10 * i),
        source="t",
        values={"gpu0.ecc.volatile.uncorrected": v},
        counters=["gpu0.ecc.volatile.uncorrected"],
    )
    values = [5, 5, 5, 0, 0, 0, 3, 3]  # reset to 0 at step 3 (driver reload), real errors at step 6
    out = engine.process(received([rec(i, v) for i, v in enumerate(values)]))
    assert engine.stats.counter_resets == 1
    assert [(i.status, i.time, i.evidence.values) for i in out] == [("open", T0 + timedelta(seconds=60), [0.3])]


def test_nulls_gaps_late_and_out_of_order_records(config):
    engine = Engine(config)
    rec = lambda s, v: MetricBatch(
        host="n1", time=T0 + timedelta(seconds=s), source="t", values={"gpu0.temperature_c": v, "gpu0.power_w": 300.0}
    )
    records = [
        rec(0, 70.0),
        rec(10, None),
        rec(20, 90.0),
        rec(15, 91.0),  # out of order, within tolerance
        rec(30, 90.0),
        rec(40, 90.0),
        rec(-100, 95.0),  # beyond the 60 s tolerance: dropped
        rec(50, None),
        rec(60, 90.0),
    ]
    out = engine.process(received(records))
    s = engine.stats
    assert (s.null_values, s.stale_values, s.dropped_late) == (2, 2, 1)  # two nulls; the 15 s values
    assert [(i.status, i.time) for i in out] == [("open", T0 + timedelta(seconds=40))]  # 20 → 40: for 20 s


def test_series_appearing_mid_stream_warm_up_on_their_own(config):
    old = fleet(n_hosts=1, steps=100)
    new = [r.model_copy(update={"host": "late-node"}) for r in fleet(n_hosts=1, steps=100, seed=9, start=90)]
    engine = Engine(config)
    out = engine.process(received(sorted(old + new, key=lambda r: r.time)))
    assert out == []
    assert engine.hosts["late-node"].names.keys() == engine.hosts["node00"].names.keys()
    rule = next(r for r in engine.rules if r.cfg.name == "gpu_power_anomaly")
    counts = rule.scorer.count[: rule.n]
    assert sorted(counts.tolist()) == [10, 100]


def test_xid_burst_is_one_incident_escalating_then_resolving(config):
    logs = [
        xid("node00", 10, 13),
        xid("node00", 12, 48),
        xid("node00", 13, 48),
        xid("node00", 14, 79),
        xid("node00", 20, 43),  # log-only code: part of the burst, no update
        xid("node00", 60, 9999),
    ]  # unknown code after 3+ min of quiet: a new burst, contact support
    out = Engine(config).process(received(logs, topic="logs"))
    assert [(i.status, i.severity, i.action_class) for i in out] == [
        ("open", "warning", "restart_app"),
        ("update", "critical", "drain_and_reset"),
        ("update", "critical", "reboot"),
        ("resolve", "critical", "reboot"),
        ("open", "warning", "contact_support"),
    ]
    first = out[0]
    assert {i.id for i in out[:4]} == {first.id} and out[4].id != first.id
    assert out[3].time == T0 + timedelta(seconds=200 + 180)
    assert out[3].evidence.details["codes"] == "13,48,79,43"
    assert out[4].fingerprint == "node00/xid/node"


def test_same_input_gives_identical_bytes_whatever_the_batching(config):
    records = received(fleet(overheat={1: (40, 59)}, power_spike={2: (60, 70)}, ecc_at={0: 90}))
    whole = [i.to_bytes() for i in Engine(config).process(records)]
    engine = Engine(config)
    pieces = []
    for lo in range(0, len(records), 37):
        pieces += [i.to_bytes() for i in engine.process(records[lo : lo + 37])]
    assert len(whole) == 6 and pieces == whole


def test_snapshot_restore_continues_exactly(config):
    records = received(fleet(overheat={1: (40, 59)}, power_spike={2: (60, 70)}))
    straight = [i.to_bytes() for i in Engine(config).process(records)]
    first = Engine(config)
    head = [i.to_bytes() for i in first.process(records[:250])]
    states = first.take_dirty()
    assert len(states) == 4 and first.dirty == set()
    second = Engine(config)
    for s in states:
        second.restore(s)
    # the restart replays from the oldest covered offset: covered records are skipped, not re-learned
    tail = [i.to_bytes() for i in second.process(records[200:])]
    assert second.stats.skipped_restored == 50
    assert head + tail == straight


def test_state_written_by_the_previous_version_still_restores_exactly(config):
    """An upgrade over a state topic written by version 1 (the .npz payload) neither re-warms nor re-raises.

    tests/data/engine_state_v1.jsonl: the states of this scenario after records[:250], written by
    the version-1 code (commit 6ef4c1b).
    """
    records = received(fleet(overheat={1: (40, 59)}, power_spike={2: (60, 70)}))
    straight = [i.to_bytes() for i in Engine(config).process(records)]
    head = [i.to_bytes() for i in Engine(config).process(records[:250])]
    old = [DetectorState.model_validate_json(line) for line in OLD_STATES.read_bytes().splitlines()]
    assert {s.state_version for s in old} == {1} and len(old) == 4
    second = Engine(config)
    for s in old:
        second.restore(s)
    tail = [i.to_bytes() for i in second.process(records[200:])]
    assert second.stats.skipped_restored == 50
    assert head + tail == straight
    # and the upgraded engine writes the current version, the same state as an engine that never stopped
    first = Engine(config)
    first.process(records[:250])
    again = Engine(config)
    for s in old:
        again.restore(s)
    assert all(again.snapshot(h).state_b64 == first.snapshot(h).state_b64 for h in first.hosts)
    assert again.snapshot("node00").state_version == STATE_VERSION == 2


def test_a_restored_host_snapshots_to_the_same_bytes_after_gaining_series(config):
    """The snapshot's cached series table follows series that appear after an earlier snapshot."""
    early = fleet(n_hosts=2, steps=60)
    late = [
        r.model_copy(update={"values": {**r.values, "gpu1.power_w": r.values["gpu0.power_w"] + 1}})
        for r in fleet(n_hosts=2, steps=60, start=30)
    ]
    records = received([r for r in early if r.time < T0 + timedelta(seconds=300)] + late)
    engine = Engine(config)
    engine.process(records[:40])
    before = engine.take_dirty()
    engine.process(records[40:])
    after = {s.host: s for s in engine.take_dirty()}
    assert all(len(s.state_b64) < len(after[s.host].state_b64) for s in before)
    restored = Engine(config)
    for s in after.values():
        restored.restore(s)
    assert set(restored.hosts["node00"].names) >= {"gpu0.power_w", "gpu1.power_w"}
    for host, s in after.items():
        assert restored.snapshot(host).state_b64 == s.state_b64


def test_a_thousand_series_host_fits_a_record_many_times_over(config):
    names = [f"gpu{g}.{m}" for g in range(100) for m in ("temperature_c", "power_w", "ecc.volatile.uncorrected")]
    names += [f"node.extra{i:03d}" for i in range(1000 - len(names))]
    rng = np.random.default_rng(5)
    engine = Engine(config)
    records = [
        MetricBatch(
            host="big",
            time=T0 + timedelta(seconds=10 * i),
            source="t",
            values=dict(zip(names, np.round(50 + rng.normal(0, 1, len(names)), 3).tolist(), strict=True)),
        )
        for i in range(30)
    ]
    engine.process(received(records))
    size = len(engine.snapshot("big").to_bytes())
    assert size < Settings().max_record_bytes / 10, size


def test_config_errors_name_file_line_and_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("ewma:\n  - name: x\n    match: ['a*']\n    sigmas: -1\n")
    with pytest.raises(ConfigFileError) as err:
        load_config(bad)
    assert f"{bad}:4: ewma.0.sigmas: Input should be greater than 0" in str(err.value)


def test_run_series_alarms_are_the_live_engine_openings(config):
    rule = SeriesRule.from_config(config.static[0], 300)
    times = np.arange(10) * 10.0
    values = np.array([70, 90, 90, 90, 90, 70, 70, 70, 70, 90.0])
    scores, alarms = rule.run_series(times, values)
    assert alarms.tolist() == [False, False, False, True] + [False] * 6  # for 20 s; resolved later


def test_snapshot_restore_carries_univariate_state_too(config):
    from detectors.config import DetectorConfig

    cfg = DetectorConfig.model_validate(
        {"univariate": [{"name": "surprise", "match": ["gpu0.power_w"], "params": {"warmup": 10, "season_buckets": 0}}]}
    )
    records = received(fleet(power_spike={2: (60, 70)}))
    straight = [i.to_bytes() for i in Engine(cfg).process(records)]
    first = Engine(cfg)
    head = [i.to_bytes() for i in first.process(records[:250])]
    second = Engine(cfg)
    for s in first.take_dirty():
        second.restore(s)
    tail = [i.to_bytes() for i in second.process(records[250:])]
    assert b'"status":"open"' in b"".join(straight) and head + tail == straight


def test_records_below_the_committed_offset_update_state_but_emit_nothing(config):
    """After a restore from an older checkpoint: the replayed range's incidents were produced already."""
    records = received(fleet(overheat={1: (40, 59)}))
    straight = Engine(config).process(records)
    engine = Engine(config)
    engine.replay_until[("t.metrics.v1", 0)] = 42 * 4 + 2  # committed just after the opening record
    out = engine.process(records)
    assert engine.stats.suppressed == 1
    assert [i.to_bytes() for i in out] == [i.to_bytes() for i in straight[1:]]  # the resolve, same id


def test_packaged_default_configuration_loads_and_covers_the_exporters_names():
    config = load_config()
    engine = Engine(config)
    rules = {
        n: [engine.rules[i].cfg.name for i in range(len(engine.rules)) if engine.rules[i].cfg.matches(n)]
        for n in ("gpu0.temperature_c", "gpu7.ecc.volatile.uncorrected", "fs./.free_pct", "mem.available_bytes")
    }
    assert rules == {
        "gpu0.temperature_c": ["gpu_overheat", "gpu_temperature_drift"],
        "gpu7.ecc.volatile.uncorrected": ["gpu_ecc_uncorrected"],
        "fs./.free_pct": ["filesystem_nearly_out_of_space"],
        "mem.available_bytes": ["memory_available_drop"],
    }


def test_detect_command_rejects_a_bad_configuration_with_its_line(tmp_path, capsys):
    from fleetmedic.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("static:\n  - name: hot\n    match: ['gpu*']\n    op: '=='\n    threshold: 1\n")
    assert main(["detect", "--detectors", str(bad)]) == 2
    assert f"{bad}:4: static.0.op" in capsys.readouterr().err


def test_compaction_after_hosts_leave_frees_their_slots_and_changes_nothing(config):
    """Hosts that moved away (rebalance) or left the fleet used to keep their series slots for
    good; compaction renumbers the survivors through snapshot and restore, exactly."""
    records = received(fleet(n_hosts=4, overheat={1: (40, 59)}, power_spike={2: (60, 70)}))
    straight = [i.to_bytes() for i in Engine(config).process(records)]
    engine = Engine(config)
    head = [i.to_bytes() for i in engine.process(records[:200])]
    hosts = sorted(engine.hosts)
    before = len(engine.slot_name)
    # a host of another partition joins and leaves (say, a rebalance moved it here and away again)
    engine.process(
        received([r.model_copy(update={"host": "gone-node"}) for r in fleet(n_hosts=1, steps=5)], partition=1)
    )
    assert len(engine.slot_name) > before
    engine.forget("gone-node")
    assert engine.compact(minimum=0, slack=0.0) > 0
    assert len(engine.slot_name) == before and sorted(engine.hosts) == hosts
    tail = [i.to_bytes() for i in engine.process(records[200:])]
    assert head + tail == straight
    assert engine.stats.compactions == 1
    assert engine.compact() == 0  # nothing to free: no work
