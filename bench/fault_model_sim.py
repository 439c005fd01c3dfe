"""The fault model on simulated fleet data: held-out scores with and without the XID history.

    PYTHONPATH=. python bench/fault_model_sim.py [--nodes 96] [--gpus 2] [--hours 48] [--faults 96] [--seed 3]
                                                 [--no-precursors] [--out DIR]

Runs the fleet simulator (ingest/simulator.py) in this process, without a broker, and writes
what `fleetmedic tail` would have written: metric batches (metrics.jsonl), log events
(logs.jsonl), and the ground truth as `host,time,end` of each fault (faults.csv; batches inside
a fault are left out, see `fleetmedic model train`). Then it runs
`fleetmedic model train` twice on the same files, without and with `--logs`, so the only
difference is the XID-history features; each prints its held-out precision, recall and PR-AUC
(the later 40 % of the time range by default: the simulator starts
faults between about 0 and 80 % of its span). Everything is seeded: the same options give the same
figures.
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
from pathlib import Path

from fleetmedic.cli import main as fleetmedic
from ingest.sim_schedule import iso
from ingest.simulator import FleetSimulator, SimConfig


def simulate(
    out: Path, nodes: int, gpus: int, hours: float, interval_s: float, seed: int, faults: int, precursors: bool = True
) -> None:
    off = {} if precursors else {"precursor_fraction": 0.0, "false_alarms_per_node_day": 0.0}
    sim = FleetSimulator(
        SimConfig(nodes=nodes, gpus=gpus, seconds=hours * 3600, interval_s=interval_s, seed=seed, faults=faults, **off)
    )
    with open(out / "metrics.jsonl", "w") as metrics, open(out / "logs.jsonl", "w") as logs:
        for k in range(sim.cfg.ticks):
            batches, events = sim.tick(k)
            metrics.writelines(b.model_dump_json() + "\n" for b in batches)
            logs.writelines(e.model_dump_json() + "\n" for e in events)
    with open(out / "faults.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["host", "time", "end"])
        for f in sim.faults_:
            w.writerow([f.host, iso(f.start), iso(f.end)])
    lead = sum(f.precursor_start is not None for f in sim.faults_)
    print(
        f"simulated {nodes} nodes x {gpus} GPUs, {hours:g} h every {interval_s:g} s, seed {seed}: "
        f"{len(sim.faults_)} faults ({', '.join(sorted({f.fault for f in sim.faults_}))}), "
        f"{lead} with a lead-up, {len(sim.false_alarms_)} false alarms",
        flush=True,
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=96)
    ap.add_argument("--gpus", type=int, default=2)
    ap.add_argument("--hours", type=float, default=48.0)
    ap.add_argument("--interval", type=float, default=60.0)
    ap.add_argument("--faults", type=int, default=96)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--horizon-s", default="3600")
    ap.add_argument("--test-fraction", default="0.4", help="later share of the time range held out")
    ap.add_argument(
        "--no-precursors",
        action="store_true",
        help="faults without a lead-up and no false alarms (the control: nothing to predict from)",
    )
    ap.add_argument("--out", default=None, help="folder for the files and models (default: a temporary one)")
    args = ap.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="fault-model-sim-"))
    out.mkdir(parents=True, exist_ok=True)
    simulate(out, args.nodes, args.gpus, args.hours, args.interval, args.seed, args.faults, not args.no_precursors)
    common = [
        "model",
        "train",
        "--history",
        str(out / "metrics.jsonl"),
        "--faults",
        str(out / "faults.csv"),
        "--horizon-s",
        args.horizon_s,
        "--test-fraction",
        args.test_fraction,
    ]
    print("\nmetric features only:", flush=True)
    rc = fleetmedic([*common, "--out", str(out / "metrics-only")])
    print("\nwith the XID history (--logs):", flush=True)
    return rc or fleetmedic([*common, "--logs", str(out / "logs.jsonl"), "--out", str(out / "with-xids")])


if __name__ == "__main__":
    sys.exit(main())
