"""`fleetmedic detect` against the real broker: incidents raised and resolved, quiet on healthy hosts,
byte-identical on a rerun, and state restored after a SIGKILL (no re-warm, no re-raise)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections import defaultdict
from pathlib import Path

from conftest import make_settings
from detector_scenarios import STEP_S, T0, fleet, loaded_fleet, write_config, write_forest_config, xid
from kafka_helpers import caught_up, read_topic

from detectors.config import load_config
from detectors.engine import Engine
from detectors.service import DetectService
from fleetmedic.producer import Producer
from fleetmedic.schemas import Incident, MetricBatch
from fleetmedic.topics import create_topics, topic_name
from fleetmedic.transport import Received, wait_until

HERE = Path(__file__).resolve().parent


def produce(settings, records) -> None:
    with Producer(settings) as producer:
        for r in records:
            producer.send(r)


def incidents_by_partition(settings) -> dict[int, list[bytes]]:
    out = defaultdict(list)
    for p, _, _, value in read_topic(settings, topic_name(settings, "incidents.v1")):
        out[p].append(value)
    return dict(out)


def run_detect_in_thread(settings, config, group, n_records):
    service = DetectService(settings, Engine(config), group_id=group)
    service.run(until=lambda s: s.loop.stats.consumed >= n_records, install_signals=False)
    return service


def scenario():
    metrics = fleet(n_hosts=5, steps=120, overheat={1: (40, 59)}, power_spike={2: (60, 70)}, ecc_at={3: 90})
    logs = [xid("node04", 30, 48), xid("node04", 31, 79), xid("node04", 80, 13)]  # the last burst stays open
    return metrics, logs


def test_detect_raises_resolves_stays_quiet_and_replays_byte_identical(kafka_bootstrap, tmp_path):
    config = load_config(write_config(tmp_path))
    metrics, logs = scenario()
    settings = make_settings(kafka_bootstrap)
    create_topics(settings)
    produce(settings, metrics + logs)
    service = run_detect_in_thread(settings, config, f"detectors-{uuid.uuid4().hex[:8]}", len(metrics) + len(logs))
    assert service.engine.stats.dropped_late == 0
    first = incidents_by_partition(settings)
    # a replay of the same topics by a second group appends the very same records, in the same order
    run_detect_in_thread(settings, config, f"replay-{uuid.uuid4().hex[:8]}", len(metrics) + len(logs))
    both = incidents_by_partition(settings)
    assert both == {p: values + values for p, values in first.items()}

    incidents = [Incident.model_validate_json(v) for values in first.values() for v in values]
    seen = defaultdict(list)
    for inc in incidents:
        seen[inc.fingerprint].append(inc.status)
    assert dict(seen) == {
        "node01/gpu_overheat/gpu0.temperature_c": ["open", "resolve"],
        "node02/gpu_power_anomaly/gpu0.power_w": ["open", "resolve"],
        "node03/gpu_ecc_uncorrected/gpu0.ecc.volatile.uncorrected": ["open", "resolve"],
        "node04/xid/node": ["open", "update", "resolve", "open"],
    }  # node00 is healthy throughout: nothing
    # evidence points at the real source records
    overheat = next(i for i in incidents if i.kind == "gpu_overheat" and i.status == "open")
    src = overheat.evidence.sources[0]
    assert src.topic == topic_name(settings, "metrics.v1")
    records = {(p, o): r for p, o, _, r in read_topic(settings, src.topic, MetricBatch)}
    first_rec, last_rec = records[(src.partition, src.first_offset)], records[(src.partition, src.last_offset)]
    assert first_rec.host == last_rec.host == "node01"
    assert (first_rec.time, last_rec.time) == (overheat.evidence.window_start, overheat.time)
    assert last_rec.values["gpu0.temperature_c"] == overheat.evidence.values[0] >= 85


def _detect_proc(settings, config_path, group) -> subprocess.Popen:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE.parent), str(HERE)]),
        "FLEETMEDIC_BOOTSTRAP_SERVERS": settings.bootstrap_servers[0],
        "FLEETMEDIC_TOPIC_PREFIX": settings.topic_prefix,
        "FLEETMEDIC_TOPICS__PARTITIONS": str(settings.topics.partitions),
    }
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fleetmedic.cli",
            "detect",
            "--detectors",
            config_path,
            "--group",
            group,
            "--session-timeout-s",
            "6",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _sigkill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert proc.returncode == -signal.SIGKILL


def _restart_until_caught_up(settings, config_path, group, source) -> None:
    """A fresh `detect` in the same group, run until it has consumed `source`, then SIGTERM (exit 0)."""
    proc = _detect_proc(settings, config_path, group)
    try:
        wait_until(lambda: caught_up(settings, group, source), 60, what="the restarted detect to catch up")
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out


def expected_incidents(settings, config) -> dict[int, list[bytes]]:
    """What one uninterrupted engine makes of everything now in the metrics topic, per partition."""
    topic = topic_name(settings, "metrics.v1")
    records = [Received(r, topic, p, o, 0, k) for p, o, k, r in read_topic(settings, topic, MetricBatch)]
    out = defaultdict(list)
    for inc in Engine(config).process(records):
        out[inc.evidence.sources[0].partition].append(inc.to_bytes())
    return dict(out)


def test_sigkill_restart_neither_rewarms_nor_reraises(settings, tmp_path):
    config_path = write_config(tmp_path)
    config = load_config(config_path)
    # the power spike comes 5 values after the restart: only a detector that kept its warm state
    # (warm-up is 20 values) can see it
    metrics = fleet(n_hosts=4, steps=100, overheat={1: (40, 59)}, power_spike={2: (65, 70)})
    phase = lambda lo, hi: [r for r in metrics if lo * STEP_S <= (r.time - T0).total_seconds() < hi * STEP_S]
    source = topic_name(settings, "metrics.v1")
    state_topic = topic_name(settings, "state.v1")

    group = f"det-{uuid.uuid4().hex[:8]}"
    proc = _detect_proc(settings, config_path, group)
    try:
        produce(settings, phase(0, 30))
        wait_until(lambda: caught_up(settings, group, source), 60, what="detect to consume the first part")
        wait_until(lambda: len(read_topic(settings, state_topic)) >= 4, 30, what="a state checkpoint")
        produce(settings, phase(30, 60))
        wait_until(lambda: caught_up(settings, group, source), 60, what="detect to consume the second part")
        wait_until(
            lambda: any(b'"status":"open"' in v for vs in incidents_by_partition(settings).values() for v in vs),
            30,
            what="the overheat incident",
        )
    finally:
        _sigkill(proc)

    produce(settings, phase(60, 100))
    _restart_until_caught_up(settings, config_path, group, source)

    got = incidents_by_partition(settings)
    assert got == expected_incidents(settings, config)  # exactly once, byte for byte
    statuses = sorted(
        (Incident.model_validate_json(v).fingerprint, Incident.model_validate_json(v).status)
        for vs in got.values()
        for v in vs
    )
    assert statuses == [
        ("node01/gpu_overheat/gpu0.temperature_c", "open"),
        ("node01/gpu_overheat/gpu0.temperature_c", "resolve"),
        ("node02/gpu_power_anomaly/gpu0.power_w", "open"),
        ("node02/gpu_power_anomaly/gpu0.power_w", "resolve"),
    ]


def test_sigkill_restart_keeps_the_isolation_forests(settings, tmp_path):
    """The forests' windows, models and open incidents survive a SIGKILL: the incidents topic is
    byte-identical to an uninterrupted run, node01's open incident is not raised again, and
    node03's anomaly after the restart is scored by the model fitted before it (no re-warm)."""
    config_path = write_forest_config(tmp_path)
    config = load_config(config_path)
    metrics = loaded_fleet(n_hosts=9, odd_combination={1: (100, 109), 3: (120, 129)})
    phase = lambda lo, hi: [r for r in metrics if lo * STEP_S <= (r.time - T0).total_seconds() < hi * STEP_S]
    source = topic_name(settings, "metrics.v1")
    state_topic = topic_name(settings, "state.v1")
    forest_states = lambda: [k for _, _, k, _ in read_topic(settings, state_topic) if k and b"/iforest:" in k]

    group = f"det-{uuid.uuid4().hex[:8]}"
    proc = _detect_proc(settings, config_path, group)
    try:
        produce(settings, phase(0, 105))  # node01's odd combination opens at step 102
        wait_until(lambda: caught_up(settings, group, source), 60, what="detect to consume the first part")
        wait_until(
            lambda: any(b'"status":"open"' in v for vs in incidents_by_partition(settings).values() for v in vs),
            30,
            what="node01's incident",
        )
        wait_until(lambda: len(set(forest_states())) >= 3, 30, what="a checkpoint of every forest")
    finally:
        _sigkill(proc)

    produce(settings, phase(105, 150))
    _restart_until_caught_up(settings, config_path, group, source)

    got = incidents_by_partition(settings)
    assert got == expected_incidents(settings, config)  # exactly once, byte for byte, same model versions
    incidents = [Incident.model_validate_json(v) for vs in got.values() for v in vs]
    assert sorted((i.host, i.status) for i in incidents) == [
        ("node01", "open"),
        ("node01", "resolve"),
        ("node03", "open"),
        ("node03", "resolve"),
    ]
    assert all(i.kind == "multivariate_anomaly" and i.model_version.startswith("iforest:h100x2:p") for i in incidents)


def test_a_rebalance_between_two_detectors_neither_rewarms_nor_duplicates(settings, tmp_path):
    """A second member joins mid-stream and takes partitions over: it restores their state (paused
    until restored) and the incidents are those of one uninterrupted engine, byte for byte."""
    config_path = write_config(tmp_path)
    config = load_config(config_path)
    # the power spike comes after the hand-over: only a warm state (warm-up 20 values) can see it
    metrics = fleet(n_hosts=6, steps=100, overheat={1: (40, 59)}, power_spike={2: (65, 70), 4: (66, 72)})
    phase = lambda lo, hi: [r for r in metrics if lo * STEP_S <= (r.time - T0).total_seconds() < hi * STEP_S]
    source = topic_name(settings, "metrics.v1")
    group = f"det-{uuid.uuid4().hex[:8]}"
    first = _detect_proc(settings, config_path, group)
    second = None
    try:
        produce(settings, phase(0, 45))
        wait_until(lambda: caught_up(settings, group, source), 90, what="the first member to consume part one")
        second = _detect_proc(settings, config_path, group)
        from kafka.admin import KafkaAdminClient

        admin = KafkaAdminClient(**settings.kafka_kwargs())
        try:

            def both_members_hold_partitions():
                desc = admin.describe_consumer_groups([group])[0]
                return desc.state == "Stable" and len(desc.members) == 2

            wait_until(both_members_hold_partitions, 90, what="the second member to join")
        finally:
            admin.close()
        produce(settings, phase(45, 100))
        wait_until(lambda: caught_up(settings, group, source), 90, what="both members to consume part two")
    finally:
        for proc in (first, second):
            if proc is not None:
                proc.send_signal(signal.SIGTERM)
        outs = [proc.communicate(timeout=60)[0] for proc in (first, second) if proc is not None]
    assert [p.returncode for p in (first, second)] == [0, 0], outs
    got = incidents_by_partition(settings)
    assert got == expected_incidents(settings, config)  # exactly once, byte for byte: no re-warm, no duplicate
    kinds = sorted(Incident.model_validate_json(v).fingerprint for vs in got.values() for v in vs)
    assert kinds.count("node02/gpu_power_anomaly/gpu0.power_w") == 2  # open and resolve, seen warm
