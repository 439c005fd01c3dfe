"""The simulator's output does not change when its code is restructured: the same seed and
configuration give the same records byte for byte as the code that wrote the fixture.

tests/data/simulator_golden.json holds, per configuration below, the SHA-256 of every record's
wire bytes and of the ground truth, with the record counts. It was written by `_digest` from the
simulator before its fault kinds became classes (commit ac2c317, the seven-branch `tick`), so
this is a differential test against that code. When the simulator's output is changed on
purpose, regenerate it (`python tests/test_ingest_simulator_golden.py`) and say why in the commit.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest

from ingest.simulator import FleetSimulator, SimConfig

FIXTURE = Path(__file__).parent / "data" / "simulator_golden.json"

# Chosen to reach every branch of every fault kind: one of each kind with precursors (default
# 0.7 share), many XID bursts (79, 48, 74 and the generic text), frequent false alarms, no GPUs.
CONFIGS: dict[str, dict] = {
    "every_kind": dict(nodes=7, gpus=2, seconds=3600, interval_s=30, seed=11, faults=7),
    "xid_bursts": dict(nodes=24, gpus=2, seconds=1200, interval_s=20, seed=0, faults=30, fault_kinds=("xid_burst",)),
    "false_alarms": dict(
        nodes=6,
        gpus=2,
        seconds=7200,
        interval_s=30,
        seed=3,
        faults=4,
        false_alarms_per_node_day=40.0,
        precursor_lead_s=(300.0, 1800.0),
    ),
    "host_faults_no_gpus": dict(
        nodes=5,
        gpus=0,
        seconds=1800,
        interval_s=20,
        seed=9,
        faults=6,
        fault_kinds=("memory_leak", "disk_fill", "service_crash"),
    ),
}


def _digest(params: dict) -> dict:
    sim = FleetSimulator(SimConfig(**params))
    records, logs = hashlib.sha256(), 0
    batches = 0
    for k in range(sim.cfg.ticks):
        tick_batches, events = sim.tick(k)
        for r in [*tick_batches, *events]:
            records.update(r.to_bytes())
            records.update(b"\n")
        batches += len(tick_batches)
        logs += len(events)
    truth = "".join(json.dumps(f.truth(), sort_keys=True) + "\n" for f in sim.faults_)
    kinds = sorted({f.fault for f in sim.faults_})
    xids = sorted({f.detail["xid"] for f in sim.faults_ if "xid" in f.detail})
    return {
        "records_sha256": records.hexdigest(),
        "truth_sha256": hashlib.sha256(truth.encode()).hexdigest(),
        "batches": batches,
        "logs": logs,
        "kinds": kinds,
        "xids": xids,
        "precursors": len(sim.precursors_),
        "false_alarms": len(sim.false_alarms_),
    }


@pytest.mark.parametrize("name", list(CONFIGS))
def test_same_seed_gives_the_records_the_fixture_recorded(name):
    expected = json.loads(FIXTURE.read_text())[name]
    assert _digest(CONFIGS[name]) == expected


def test_the_fixture_reaches_every_fault_kind_and_burst_text():
    golden = json.loads(FIXTURE.read_text())
    from ingest.sim_faults import FAULT_KINDS

    assert set().union(*(set(g["kinds"]) for g in golden.values())) == set(FAULT_KINDS)
    assert {79, 48, 74} <= set(golden["xid_bursts"]["xids"]) and len(golden["xid_bursts"]["xids"]) > 3
    assert golden["false_alarms"]["false_alarms"] > 0 and golden["every_kind"]["precursors"] > 0


if __name__ == "__main__":  # regenerate (only when the output changes on purpose)
    FIXTURE.write_text(json.dumps({name: _digest(p) for name, p in CONFIGS.items()}, indent=2, sort_keys=True) + "\n")
    print(f"wrote {FIXTURE}", file=sys.stderr)
