"""Labelled synthetic fleet streams for the detector tests (the simulator is built elsewhere).

Each host reports every 10 s: GPU temperature and power, available memory, filesystem free %, an
uncorrected-ECC counter. Faults are injected on chosen hosts and steps; everything else is noise
around a per-host level, seeded, so runs are reproducible.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

from fleetmedic.schemas import LogEvent, MetricBatch
from fleetmedic.transport import Received

T0 = datetime(2026, 11, 25, 0, 0, 0, tzinfo=UTC)
STEP_S = 10

CONFIG_YAML = """
late_tolerance_s: 60
max_gap_s: 300
checkpoint_interval_s: 0.5
static:
  - name: gpu_overheat
    match: ["gpu*.temperature_c"]
    op: ">="
    threshold: 85
    clear_threshold: 80
    for_s: 20
    resolve_after_s: 30
    severity: critical
    action_class: drain_and_reset
  - name: gpu_ecc_uncorrected
    match: ["gpu*.ecc.volatile.uncorrected"]
    op: ">"
    threshold: 0
    resolve_after_s: 60
    severity: critical
ewma:
  - name: gpu_power_anomaly
    match: ["gpu*.power_w"]
    direction: both
    alpha: 0.05
    sigmas: 6
    warmup: 20
    for_s: 20
    resolve_after_s: 30
  - name: memory_available_drop
    match: ["mem.available_bytes"]
    direction: down
    sigmas: 6
    warmup: 20
    for_s: 20
    resolve_after_s: 30
log_rules:
  burst_window_s: 180
"""


def write_config(tmp_path) -> str:
    path = tmp_path / "detectors.yaml"
    path.write_text(CONFIG_YAML)
    return str(path)


def fleet(
    n_hosts: int = 4,
    steps: int = 120,
    *,
    seed: int = 7,
    overheat: dict | None = None,
    power_spike: dict | None = None,
    ecc_at: dict | None = None,
    start: int = 0,
) -> list[MetricBatch]:
    """Metric batches in time order. overheat/power_spike: host index → (first, last) step; ecc_at: host → step."""
    rng = np.random.default_rng(seed)
    overheat, power_spike, ecc_at = overheat or {}, power_spike or {}, ecc_at or {}
    out = []
    for step in range(steps):
        for h in range(n_hosts):
            noise = rng.normal(0, 1, 4)
            if step < start:
                continue
            temp = 62 + 0.6 * noise[0]
            lo, hi = overheat.get(h, (-1, -2))
            if lo <= step <= hi:
                temp += 30
            power = 300 + 4 * noise[1]
            lo, hi = power_spike.get(h, (-1, -2))
            if lo <= step <= hi:
                power += 150
            ecc = 0.0 if step < ecc_at.get(h, 10**9) else 2.0
            out.append(
                MetricBatch(
                    host=f"node{h:02d}",
                    time=T0 + timedelta(seconds=STEP_S * step),
                    source="sim",
                    labels={"class": "h100x8"},
                    values={
                        "gpu0.temperature_c": round(temp, 3),
                        "gpu0.power_w": round(power, 3),
                        "mem.available_bytes": round(2e11 + 1e8 * noise[2], 1),
                        "fs./.free_pct": round(40 + 0.1 * noise[3], 3),
                        "gpu0.ecc.volatile.uncorrected": ecc,
                    },
                    counters=["gpu0.ecc.volatile.uncorrected"],
                )
            )
    return out


def xid(host: str, step: int, code: int) -> LogEvent:
    return LogEvent(
        host=host,
        time=T0 + timedelta(seconds=STEP_S * step),
        source="sim",
        kind="xid",
        severity="critical",
        line=f"NVRM: Xid (PCI:0000:3b:00): {code}, pid=1911",
        fields={"xid": code, "pci": "0000:3b:00"},
    )


def received(records, topic="metrics", partition=0, first_offset=0) -> list[Received]:
    """Records as the consumer loop hands them over (one partition, consecutive offsets)."""
    return [Received(r, f"t.{topic}.v1", partition, first_offset + i, 0, r.key()) for i, r in enumerate(records)]


FOREST_YAML = """
late_tolerance_s: 60
max_gap_s: 300
checkpoint_interval_s: 0.5
iforest:
  class_label: class
  features:
    - {name: gpu_temp_max, match: ["gpu*.temperature_c"], agg: max}
    - {name: gpu_power_max, match: ["gpu*.power_w"], agg: max}
    - {name: gpu_util_mean, match: ["gpu*.util_pct"], agg: mean}
  window: 512
  refit_interval_s: 300
  min_train: 100
  n_estimators: 50
  threshold: 0.66
  seed: 3
  for_s: 20
  resolve_after_s: 30
  severity: warning
  action_class: drain_and_reset
"""


def write_forest_config(tmp_path, extra: str = "") -> str:
    path = tmp_path / "forest.yaml"
    path.write_text(FOREST_YAML + extra)
    return str(path)


def loaded_fleet(
    n_hosts: int = 6,
    steps: int = 150,
    *,
    gpus: int = 2,
    seed: int = 11,
    host_class: str = "h100x2",
    odd_combination: dict | None = None,
) -> list[MetricBatch]:
    """Hosts whose GPU temperature, power and utilisation all follow one load (a 20-minute cycle).

    odd_combination: host index → (first, last) step during which the host draws high-load power at
    low-load temperature and utilisation: every value stays inside the fleet's normal range, only
    the combination is unusual (the multivariate case; no single-series rule could tell).
    """
    rng = np.random.default_rng(seed)
    odd = odd_combination or {}
    phase = rng.uniform(0, 1, n_hosts)
    noise = np.zeros(n_hosts)
    out = []
    for step in range(steps):
        noise = 0.8 * noise + rng.normal(0, 0.02, n_hosts)
        load = np.clip(0.5 + 0.35 * np.sin(2 * np.pi * (step / 120 + phase)) + noise, 0.05, 1.0)
        for h in range(n_hosts):
            gload = np.clip(load[h] + rng.normal(0, 0.02, gpus), 0, 1)
            temp = 33 + 42 * gload + rng.normal(0, 0.4, gpus)
            power = 75 + 590 * gload + rng.normal(0, 6, gpus)
            lo, hi = odd.get(h, (-1, -2))
            if lo <= step <= hi:
                temp = 33 + 42 * 0.3 + rng.normal(0, 0.4, gpus)
                power = 75 + 590 * 0.8 + rng.normal(0, 6, gpus)
                gload = 0.3 + rng.normal(0, 0.02, gpus)
            values = {}
            for g in range(gpus):
                values[f"gpu{g}.temperature_c"] = round(float(temp[g]), 2)
                values[f"gpu{g}.power_w"] = round(float(power[g]), 1)
                values[f"gpu{g}.util_pct"] = round(float(100 * gload[g]), 1)
            values["gpu0.ecc.volatile.corrected"] = float(step)
            out.append(
                MetricBatch(
                    host=f"node{h:02d}",
                    time=T0 + timedelta(seconds=STEP_S * step),
                    source="sim",
                    labels={"class": host_class},
                    values=values,
                    counters=["gpu0.ecc.volatile.corrected"],
                )
            )
    return out
