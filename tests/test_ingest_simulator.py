"""The fleet simulator: determinism, ground truth, visible faults, names shared with the exporters,
and a run published to the real broker (and through the CLI)."""

import re
from datetime import datetime, timedelta

import pytest
from kafka_helpers import read_topic

from fleetmedic.cli import main
from fleetmedic.schemas import LogEvent, MetricBatch
from fleetmedic.topics import topic_name
from ingest.publisher import ExporterHealth, Publisher
from ingest.sim_faults import FAULT_KINDS
from ingest.sim_run import run_simulation
from ingest.sim_schedule import read_ground_truth
from ingest.simulator import FleetSimulator, SimConfig


def _run(cfg):
    out = []
    run_simulation(cfg, out.extend)
    return out


def _bytes(records):
    return [r.to_bytes() for r in records]


def test_same_seed_same_records_byte_for_byte_and_another_seed_differs():
    cfg = SimConfig(nodes=5, gpus=2, seconds=600, interval_s=10, seed=42, faults=4)
    first, again = _run(cfg), _run(cfg)
    assert _bytes(first) == _bytes(again)
    other = _run(SimConfig(nodes=5, gpus=2, seconds=600, interval_s=10, seed=43, faults=4))
    assert _bytes(other) != _bytes(first)
    batches = [r for r in first if isinstance(r, MetricBatch)]
    assert len(batches) == 5 * 60
    assert batches[0].time == cfg.start and batches[-1].time == cfg.start + timedelta(seconds=590)  # simulated clock


def test_ground_truth_lines_name_host_fault_start_end_in_iso_utc(tmp_path):
    cfg = SimConfig(nodes=6, gpus=4, seconds=3600, interval_s=10, seed=7, faults=len(FAULT_KINDS))
    path = tmp_path / "truth.jsonl"
    run_simulation(cfg, lambda records: None, truth_path=path)
    truth = read_ground_truth(path)
    assert {t["fault"] for t in truth} == set(FAULT_KINDS)  # one of each kind
    by_host: dict[str, list] = {}
    for t in truth:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", t["start"]) and t["end"].endswith("Z")
        start, end = (datetime.fromisoformat(t[k].replace("Z", "+00:00")) for k in ("start", "end"))
        assert cfg.start < start < end <= cfg.start + timedelta(seconds=cfg.seconds)
        assert t["host"].startswith("sim-node-")
        if t["fault"] in ("xid_burst", "thermal_runaway", "ecc_growth", "nvlink_errors"):
            assert 0 <= t["gpu"] < 4
        by_host.setdefault(t["host"], []).append((start, end))
    for spans in by_host.values():  # no overlapping faults on one host
        spans.sort()
        assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:], strict=False))


def _window(records, fault):
    start = datetime.fromisoformat(fault["start"].replace("Z", "+00:00"))
    end = datetime.fromisoformat(fault["end"].replace("Z", "+00:00"))
    inside = [r for r in records if r.host == fault["host"] and start <= r.time < end]
    before = [r for r in records if r.host == fault["host"] and r.time < start]
    return inside, before


def test_each_fault_shows_in_the_signals_where_the_ground_truth_says(tmp_path):
    cfg = SimConfig(nodes=7, gpus=2, seconds=3600, interval_s=10, seed=11, faults=len(FAULT_KINDS))
    path = tmp_path / "truth.jsonl"
    records = []
    run_simulation(cfg, records.extend, truth_path=path)
    batches = [r for r in records if isinstance(r, MetricBatch)]
    logs = [r for r in records if isinstance(r, LogEvent)]
    truth = read_ground_truth(path)
    assert sorted(f["fault"] for f in truth) == sorted(FAULT_KINDS)
    for fault in truth:
        inside, before = _window(batches, fault)
        in_logs, _ = _window(logs, fault)
        kind = fault["fault"]
        g = f"gpu{fault.get('gpu', 0)}"
        if kind == "thermal_runaway":
            assert max(b.values[f"{g}.temperature_c"] for b in inside) > 88
            assert max(b.values[f"{g}.temperature_c"] for b in before) < 82
            assert max(b.values[f"{g}.throttle.hw_thermal"] for b in inside) == 1.0
        elif kind == "memory_leak":
            assert min(b.values["mem.available_pct"] for b in inside) < 2
            assert any(e.kind == "oom_kill" for e in in_logs)
        elif kind == "disk_fill":
            assert min(b.values["fs./.free_pct"] for b in inside) < 2
        elif kind == "service_crash":
            assert all(b.values["service.slurmd.up"] == 0.0 for b in inside)
            assert all(b.values["service.slurmd.up"] == 1.0 for b in before)
            assert any(e.kind == "service_crash" and e.fields["service"] == "slurmd" for e in in_logs)
        elif kind == "ecc_growth":
            growth = inside[-1].values[f"{g}.ecc.volatile.corrected"] - inside[0].values[f"{g}.ecc.volatile.corrected"]
            assert growth > 200
            assert any(e.kind == "xid" and e.fields["xid"] == 48 for e in in_logs)
        elif kind == "xid_burst":
            xids = [e for e in in_logs if e.kind == "xid" and e.fields["xid"] == fault["xid"]]
            assert len(xids) >= 3
            if fault["xid"] == 79:  # off the bus: the GPU answers nothing
                assert all(b.values[f"{g}.up"] == 0.0 and b.values[f"{g}.temperature_c"] is None for b in inside)
        elif kind == "nvlink_errors":
            name = f"{g}.nvlink{fault['link']}.crc_flit"
            assert inside[-1].values[name] - inside[0].values[name] > 100
            assert name in inside[0].counters


def test_simulated_names_follow_the_exporters_naming():
    sim = FleetSimulator(SimConfig(nodes=1, gpus=2, seconds=60, seed=0))
    batch = sim.tick(0)[0][0]
    exporter_shapes = re.compile(
        r"^(cpu\.(user|nice|system|idle|iowait|irq|softirq|steal|util)_pct|load\.(1|5|15)|mem\.(total|available)_bytes"
        r"|mem\.available_pct|swap\.used_pct|fs\./\.(free_pct|free_bytes|readonly)|disk\.\w+\.io_time_s"
        r"|net\.\w+\.(rx|tx)_(errors|drops)|temp\.\w+\.\w+_c|service\.\w+\.up|vmstat\.oom_kill"
        r"|gpu\d+\.(up|util_pct|mem_util_pct|mem\.(used|total)_bytes|temperature_c|power_w|power_limit_w"
        r"|clock\.(sm|mem)_mhz|throttle\.(reasons|hw_slowdown|sw_thermal|hw_thermal|power_brake)"
        r"|ecc\.(volatile|aggregate)\.(corrected|uncorrected)|remap\.(correctable|uncorrectable|pending|failure)"
        r"|pcie\.replay|nvlink\d+\.(replay|recovery|crc_flit|crc_data)))$"
    )
    odd = [name for name in batch.values if not exporter_shapes.match(name)]
    assert odd == []
    assert set(batch.counters) <= set(batch.values)
    assert batch.labels["gpu1.pci"] == "0000:2a:00"


def test_simulation_lands_in_kafka_through_the_exporters_publisher(settings):
    cfg = SimConfig(
        nodes=4, gpus=1, seconds=300, interval_s=10, seed=5, faults=2, fault_kinds=("service_crash", "xid_burst")
    )
    health = ExporterHealth("sim")
    pub = Publisher(settings, health)
    stats = run_simulation(cfg, pub.publish, flush_every=50)
    pub.close()
    metrics = read_topic(settings, topic_name(settings, "metrics.v1"), MetricBatch)
    logs = read_topic(settings, topic_name(settings, "logs.v1"), LogEvent)
    assert len(metrics) == stats.batches == 4 * 30
    assert len(logs) == stats.logs > 0
    assert health.sent == stats.batches + stats.logs and health.dropped == 0
    for _partition, _, key, record in metrics:
        assert key == record.host.encode()
    per_host = {}
    for _, _, _, r in metrics:
        per_host.setdefault(r.host, []).append(r.time)
    assert all(times == sorted(times) and len(times) == 30 for times in per_host.values())


def test_simulate_command_prints_progress_and_faults_and_writes_truth(settings, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FLEETMEDIC_BOOTSTRAP_SERVERS", settings.bootstrap_servers[0])
    monkeypatch.setenv("FLEETMEDIC_TOPIC_PREFIX", settings.topic_prefix)
    truth = tmp_path / "truth.jsonl"
    code = main(
        [
            "simulate",
            "--nodes",
            "3",
            "--gpus",
            "2",
            "--seconds",
            "3",
            "--interval",
            "1",
            "--realtime",
            "--speed",
            "3",
            "--faults",
            "1",
            "--fault-kinds",
            "service_crash",
            "--truth",
            str(truth),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "fault ▶ sim-node-" in out and "service_crash" in out and "done: 3 ticks, 9 metric batches" in out
    assert [t["fault"] for t in read_ground_truth(truth)] == ["service_crash"]
    assert len(read_topic(settings, topic_name(settings, "metrics.v1"))) == 9
    assert main(["simulate", "--nodes", "0"]) == 2


# Precursors: a lead-up before some GPU faults, and look-alike episodes on GPUs that never fault.


def _series(batches, host, name):
    return [(b.time, b.values[name]) for b in batches if b.host == host]


def _growth(points, lo, hi):
    inside = [v for t, v in points if lo <= t < hi]
    return inside[-1] - inside[0]


def _one_fault_with_precursor(cfg: SimConfig, tmp_path):
    """Run a one-fault simulation: (metric batches, the fault's ground truth, its start, its precursor's start)."""
    path = tmp_path / "truth.jsonl"
    records = []
    run_simulation(cfg, records.extend, truth_path=path)
    batches = [r for r in records if isinstance(r, MetricBatch)]
    (fault,) = read_ground_truth(path)
    start, pre = (datetime.fromisoformat(fault[k].replace("Z", "+00:00")) for k in ("start", "precursor_start"))
    return batches, fault, start, pre


def test_ecc_precursor_raises_corrected_ecc_on_the_faulty_gpu_only_before_the_fault(tmp_path):
    cfg = SimConfig(
        nodes=3,
        gpus=2,
        seconds=4 * 3600,
        interval_s=60,
        seed=0,
        faults=1,
        fault_kinds=("ecc_growth",),
        precursor_fraction=1.0,
        precursor_lead_s=(3600, 3600),
        false_alarms_per_node_day=0,
    )
    batches, fault, start, pre = _one_fault_with_precursor(cfg, tmp_path)
    assert fault["precursor"] == "ecc" and start - pre == timedelta(hours=1)
    g, other = fault["gpu"], 1 - fault["gpu"]
    name = "gpu{}.ecc.volatile.corrected"
    lead = _growth(_series(batches, fault["host"], name.format(g)), pre, start)
    assert lead >= 25  # about 60 expected: 0.05/s × 60 s × Σ strength (≈ 20 ticks at full)
    assert _growth(_series(batches, fault["host"], name.format(g)), cfg.start, pre) <= 3  # normal: 0.0002/s
    assert _growth(_series(batches, fault["host"], name.format(other)), cfg.start, start) <= 5
    for host in {b.host for b in batches} - {fault["host"]}:  # clean nodes: normal rate the whole run
        for gi in range(2):
            points = _series(batches, host, name.format(gi))
            assert points[-1][1] - points[0][1] <= 8
    up_to_start = [b for b in batches if b.host == fault["host"] and b.time < start]
    assert max(b.values[f"gpu{g}.ecc.volatile.uncorrected"] for b in up_to_start) == 0  # a warning, not the fault


def test_thermal_precursor_throttles_and_creeps_below_the_overheat_rule(tmp_path):
    cfg = SimConfig(
        nodes=2,
        gpus=2,
        seconds=6 * 3600,
        interval_s=60,
        seed=0,
        faults=1,
        fault_kinds=("thermal_runaway",),
        precursor_fraction=1.0,
        precursor_lead_s=(7200, 7200),
        false_alarms_per_node_day=0,
    )
    batches, fault, start, pre = _one_fault_with_precursor(cfg, tmp_path)
    assert fault["precursor"] == "thermal" and start - pre == timedelta(hours=2)
    g = f"gpu{fault['gpu']}"
    lead = [b for b in batches if b.host == fault["host"] and pre <= b.time < start]
    before = [b for b in batches if b.host == fault["host"] and b.time < pre]
    assert sum(b.values[f"{g}.throttle.sw_thermal"] for b in lead) >= 3
    assert all(b.values[f"{g}.throttle.sw_thermal"] == 0 for b in before)
    assert max(b.values[f"{g}.temperature_c"] for b in lead) < 82
    throttled = [b.values[f"{g}.clock.sm_mhz"] for b in lead if b.values[f"{g}.throttle.sw_thermal"]]
    assert max(throttled) < 1980 - 30


def test_precursors_leave_the_faults_and_the_rest_of_the_fleet_unchanged():
    base = dict(nodes=8, gpus=2, seconds=6 * 3600, interval_s=60, seed=9, faults=8)
    off = FleetSimulator(SimConfig(**base, precursor_fraction=0.0, false_alarms_per_node_day=0))
    on = FleetSimulator(SimConfig(**base, precursor_fraction=1.0, false_alarms_per_node_day=0))
    assert [f.truth() for f in off.faults_] == [
        {k: v for k, v in f.truth().items() if not k.startswith("precursor")} for f in on.faults_
    ]
    assert all("precursor_start" not in f.truth() for f in off.faults_)
    with_lead = [f for f in on.faults_ if f.precursor_start is not None]
    assert with_lead and all(
        f.fault in ("xid_burst", "thermal_runaway", "ecc_growth", "nvlink_errors") and cfg_start_ok(f, on.cfg)
        for f in with_lead
    )
    touched = {f.host for f in with_lead}
    for k in range(on.cfg.ticks):
        a, b = off.tick(k)[0], on.tick(k)[0]
        for x, y in zip(a, b, strict=True):
            if x.host not in touched:
                assert x.values == y.values


def cfg_start_ok(f, cfg) -> bool:
    return cfg.start < f.precursor_start < f.start


def test_false_alarms_show_precursor_signals_but_no_fault_and_no_incident():
    from detectors.config import load_config
    from detectors.engine import Engine
    from fleetmedic.transport import Received

    def incidents(cfg):
        sim = FleetSimulator(cfg)
        engine, out, offset = Engine(load_config()), [], 0
        for k in range(cfg.ticks):
            batches, logs = sim.tick(k)
            items = [
                Received(r, "t.metrics.v1" if isinstance(r, MetricBatch) else "t.logs.v1", 0, offset + i, 0, None)
                for i, r in enumerate(batches + logs)
            ]
            offset += len(items)
            out += engine.process(items)
        return sim, [(i.host, i.kind, i.status, i.time) for i in out]

    base = dict(nodes=6, gpus=2, seconds=8 * 3600, interval_s=30, seed=5, faults=0, precursor_lead_s=(1800, 3600))
    sim, noisy = incidents(SimConfig(**base, false_alarms_per_node_day=12))
    _, quiet = incidents(SimConfig(**base, false_alarms_per_node_day=0))
    alarms = sim.false_alarms_
    assert sim.faults_ == [] and len(alarms) >= 6
    assert {a.signal for a in alarms} == {"ecc", "pcie", "nvlink", "thermal"}
    assert noisy == quiet  # the same incidents (if any) as the fleet without false alarms


def test_precursor_configuration_is_checked():
    with pytest.raises(ValueError, match="precursor"):
        SimConfig(precursor_fraction=1.5)
    with pytest.raises(ValueError, match="precursor"):
        SimConfig(precursor_lead_s=(3600, 60))
