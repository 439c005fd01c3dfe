"""`make fuzz`: the hostile-input suite at full size, a table of what happened, and one summary line.

Runs every fuzz target of tests/test_fuzz_hostile.py (random, not derandomised) in worker processes
(one per core), each again and again until it has fed at least WANT hostile inputs, plus the
wire-path sample through a real broker (FLEETMEDIC_KAFKA_BOOTSTRAP, else an embedded broker on free
ports, started while the in-process targets run). It prints one row per target and the last line

    fuzz: inputs N, crashes C, stalls S, valid records lost L, dead-lettered D

N is the sum of the `inputs` column: each row counts what its `counts` column says (a record, a
log line, a document, a file; the 10^6-series row counts its records, each carrying 2,000 new
names). The handler's calls on those same inputs are timed and checked (their crashes and stalls
are in the row) but not counted again. The exit status is 1 when anything crashed, stalled or was
lost, or a target failed.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
import threading
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

logging.disable(logging.WARNING)  # every dead letter and unreadable state logs a warning: thousands of lines
warnings.simplefilter("ignore")  # numpy's per-row timezone warning on hostile CSV times, likewise (in every worker)

WANT = int(os.environ.get("FLEETMEDIC_FUZZ_INPUTS", "10000"))  # per target
os.environ.setdefault("FLEETMEDIC_FUZZ", "full")
os.environ.setdefault("FLEETMEDIC_FUZZ_PER_EXAMPLE", "250")
# examples per call of a target: about WANT inputs (the loop below calls again if it fell short)
os.environ.setdefault("FLEETMEDIC_FUZZ_EXAMPLES", str(max(1, WANT // int(os.environ["FLEETMEDIC_FUZZ_PER_EXAMPLE"]))))
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

TARGETS = {  # test → the tally that must reach WANT (the 10^6-series test runs once: its size is fixed)
    "test_fuzz_policy_yaml": "parser: policy YAML",
    "test_fuzz_detector_yaml": "parser: detector YAML",
    "test_fuzz_metrics_consumer": "metrics",
    "test_fuzz_logs_consumer": "logs",
    "test_fuzz_incidents_consumer": "incidents",
    "test_fuzz_remediations_consumer": "remediations",
    "test_fuzz_approvals_consumer": "approvals",
    "test_fuzz_state_consumer": "state",
    "test_fuzz_log_line_parser": "parser: log lines",
    "test_fuzz_prometheus_text_parser": "parser: prometheus text",
    "test_fuzz_csv_input": "parser: detect csv",
    "test_fuzz_a_million_distinct_series_names_stay_within_the_caps": None,
}


def _load():
    import fuzz_kit
    import test_fuzz_hostile

    return fuzz_kit, test_fuzz_hostile


def run_target(name: str, main: str | None) -> dict:
    """One target in this (worker) process: its tallies, errors, wall and CPU seconds."""
    fuzz_kit, suite = _load()
    fuzz_kit.TALLIES.clear()
    test = getattr(suite, name)
    errors = []
    wall, cpu = time.monotonic(), time.process_time()
    while True:
        t = fuzz_kit.TALLIES.get(main) if main else None
        before = t.inputs if t else 0
        try:
            test()
        except Exception as exc:  # a FuzzFailure (counted where it happened) or a crash outside `timed`
            if not isinstance(exc, fuzz_kit.FuzzFailure) and "FuzzFailure" not in repr(exc):
                first = next(iter(fuzz_kit.TALLIES.values()), None) or fuzz_kit.tally(main or name)
                first.crashes += 1
            errors.append(f"{name}: {type(exc).__name__}: {str(exc)[:400]}")
            break
        t = fuzz_kit.TALLIES.get(main) if main else None
        if t is None or t.inputs >= WANT or t.inputs == before:
            break
    return {
        "name": name,
        "main": main,
        "tallies": [vars(t) for t in fuzz_kit.TALLIES.values()],
        "errors": errors,
        "wall": time.monotonic() - wall,
        "cpu": time.process_time() - cpu,
    }


def run_wire(bootstrap: str) -> dict:
    fuzz_kit, suite = _load()
    errors = []
    wall, cpu = time.monotonic(), time.process_time()
    before = set(fuzz_kit.TALLIES)
    try:
        suite.wire_sample(bootstrap)
    except Exception as exc:
        if not isinstance(exc, fuzz_kit.FuzzFailure):
            fuzz_kit.tally("wire: real broker, 6 topics", "records").crashes += 1
        errors.append(f"wire_sample: {type(exc).__name__}: {str(exc)[:400]}")
    tallies = [vars(t) for k, t in fuzz_kit.TALLIES.items() if k not in before]
    return {
        "name": "wire_sample",
        "main": "wire: real broker, 6 topics",
        "tallies": tallies,
        "errors": errors,
        "wall": time.monotonic() - wall,
        "cpu": time.process_time() - cpu,
    }


class Broker:
    """The broker for the wire sample: the one FLEETMEDIC_KAFKA_BOOTSTRAP names, else an embedded one."""

    def __init__(self):
        self.bootstrap = os.environ.get("FLEETMEDIC_KAFKA_BOOTSTRAP")
        self.embedded = None
        self.error: BaseException | None = None

    def start(self) -> None:
        if self.bootstrap:
            return
        import tempfile

        from kafka_helpers import free_port

        from fleetmedic.broker import EmbeddedBroker
        from fleetmedic.config import BrokerSettings

        try:
            self.embedded = EmbeddedBroker(
                BrokerSettings(
                    port=free_port(), controller_port=free_port(), data_dir=tempfile.mkdtemp(prefix="fleetmedic-fuzz-")
                )
            )
            self.embedded.start(progress=lambda m: None)
            self.bootstrap = self.embedded.bootstrap
        except BaseException as exc:  # noqa: BLE001 - reported as the wire row's failure
            self.error = exc

    def stop(self) -> None:
        if self.embedded is not None:
            self.embedded.stop()


def table(results: list[dict]) -> tuple[list[str], dict]:
    head = (
        f"{'target':32s} {'counts':27s} {'inputs':>7s} {'accepted':>8s} {'rejected':>8s} {'dead-lett':>9s} "
        f"{'crashes':>7s} {'stalls':>6s} {'lost':>4s} {'worst ms':>8s} {'wall s':>6s} {'cpu s':>6s}"
    )
    lines = [head]
    total = dict(inputs=0, crashes=0, stalls=0, lost=0, dead=0)
    for r in results:
        tallies = r["tallies"]
        main = next((t for t in tallies if t["name"] == r["main"]), None) or next(
            (t for t in tallies if t["counted"]), None
        )
        if main is None:
            main = dict(name=r["name"], unit="-", inputs=0, accepted=0, rejected=0)
        counted = [t for t in tallies if t["counted"]]
        row = dict(
            inputs=sum(t["inputs"] for t in counted),
            crashes=sum(t["crashes"] for t in tallies),
            stalls=sum(t["stalls"] for t in tallies),
            lost=sum(t["lost"] for t in tallies),
            dead=sum(t["dead_lettered"] for t in tallies),
        )
        worst = max((t["worst_s"] for t in tallies), default=0.0)
        lines.append(
            f"{main['name']:32s} {main['unit']:27s} {row['inputs']:7d} {main['accepted']:8d} "
            f"{main['rejected']:8d} {row['dead']:9d} {row['crashes']:7d} {row['stalls']:6d} "
            f"{row['lost']:4d} {worst * 1000:8.1f} {r['wall']:6.1f} {r['cpu']:6.1f}"
        )
        for k in total:
            total[k] += row[k]
    return lines, total


def main() -> int:
    started = time.monotonic()
    broker = Broker()
    starter = threading.Thread(target=broker.start, daemon=True)
    starter.start()
    workers = int(os.environ.get("FLEETMEDIC_FUZZ_WORKERS", str(os.cpu_count() or 1)))
    results = []
    try:
        # spawn, not fork: the broker starter thread is running (importing, starting a JVM), and a
        # worker forked mid-import inherits a held lock and waits on it for ever (seen: make fuzz
        # without FLEETMEDIC_KAFKA_BOOTSTRAP hung with both workers idle). Spawned workers run this
        # module's top level again, so they get the same warning and logging settings.
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(run_target, name, main) for name, main in TARGETS.items()]
            starter.join()
            if broker.bootstrap:
                futures.append(pool.submit(run_wire, broker.bootstrap))
            for f in futures:
                r = f.result()
                results.append(r)
                print(f"  {r['name']}: {r['wall']:.1f} s wall, {r['cpu']:.1f} s CPU", file=sys.stderr, flush=True)
    finally:
        broker.stop()
    errors = [e for r in results for e in r["errors"]]
    if broker.error is not None or not broker.bootstrap:
        errors.append(f"wire_sample: no broker: {broker.error!r}")
    lines, total = table(results)
    print("\n".join(lines))
    for e in errors:
        print("FAILED", e)
    from fuzz_kit import CPU_BUDGET_S, wall_budget_s

    print(
        f"({time.monotonic() - started:.0f} s wall, {workers} worker processes; stall budget per input "
        f"{CPU_BUDGET_S:g} CPU s, or {wall_budget_s():.1f} s wall now (4x, scaled by the load); worst ms is CPU; "
        f"load average {' '.join(open('/proc/loadavg').read().split()[:3])})"
    )
    print(
        f"fuzz: inputs {total['inputs']}, crashes {total['crashes']}, stalls {total['stalls']}, "
        f"valid records lost {total['lost']}, dead-lettered {total['dead']}"
    )
    return 1 if total["crashes"] or total["stalls"] or total["lost"] or errors else 0


if __name__ == "__main__":
    sys.exit(main())
