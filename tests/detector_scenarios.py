"""Labelled synthetic fleet streams for the detector tests (the simulator is built elsewhere).

Each host reports every 10 s: GPU temperature and power, available memory, filesystem free %, an
uncorrected-ECC counter. Faults are injected on chosen hosts and steps; everything else is noise
around a per-host level, seeded, so runs are reproducible.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np

from fleetmedic.schemas import LogEvent, MetricBatch
from fleetmedic.transport import Received

T0 = datetime(2026, 11, 25, 0, 0, 0, tzinfo=timezone.utc)
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


def fleet(n_hosts: int = 4, steps: int = 120, *, seed: int = 7, overheat: dict | None = None,
          power_spike: dict | None = None, ecc_at: dict | None = None, start: int = 0) -> list[MetricBatch]:
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
            out.append(MetricBatch(
                host=f"node{h:02d}", time=T0 + timedelta(seconds=STEP_S * step), source="sim",
                labels={"class": "h100x8"},
                values={"gpu0.temperature_c": round(temp, 3), "gpu0.power_w": round(power, 3),
                        "mem.available_bytes": round(2e11 + 1e8 * noise[2], 1),
                        "fs./.free_pct": round(40 + 0.1 * noise[3], 3),
                        "gpu0.ecc.volatile.uncorrected": ecc},
                counters=["gpu0.ecc.volatile.uncorrected"]))
    return out


def xid(host: str, step: int, code: int) -> LogEvent:
    return LogEvent(host=host, time=T0 + timedelta(seconds=STEP_S * step), source="sim", kind="xid",
                    severity="critical", line=f"NVRM: Xid (PCI:0000:3b:00): {code}, pid=1911",
                    fields={"xid": code, "pci": "0000:3b:00"})


def received(records, topic="metrics", partition=0, first_offset=0) -> list[Received]:
    """Records as the consumer loop hands them over (one partition, consecutive offsets)."""
    return [Received(r, f"t.{topic}.v1", partition, first_offset + i, 0, r.key()) for i, r in enumerate(records)]
