"""`make fuzz`: the hostile-input suite at full size, a table of what happened, and one summary line.

Runs every fuzz test of tests/test_fuzz_hostile.py (random, not derandomised), again and again
until each consumer has seen at least CONSUMER_INPUTS hostile inputs (and each parser at least
PARSER_INPUTS), then prints one row per target and the last line

    fuzz: inputs N, crashes C, stalls S, valid records lost L, dead-lettered D

N counts the hostile inputs (handler rows time the stage's handler on those batches and are not
counted again). The exit status is 1 when anything crashed, stalled or was lost.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

logging.disable(logging.WARNING)  # every dead letter and unreadable state logs a warning: thousands of lines

os.environ.setdefault("FLEETMEDIC_FUZZ", "full")
os.environ.setdefault("FLEETMEDIC_FUZZ_EXAMPLES", "200")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import fuzz_kit  # noqa: E402
import test_fuzz_hostile as suite  # noqa: E402

CONSUMER_INPUTS = int(os.environ.get("FLEETMEDIC_FUZZ_CONSUMER_INPUTS", "10000"))
PARSER_INPUTS = int(os.environ.get("FLEETMEDIC_FUZZ_PARSER_INPUTS", "1000"))
TARGETS = {  # test → (the tally that must reach its count, the count)
    "test_fuzz_metrics_consumer": ("metrics", CONSUMER_INPUTS),
    "test_fuzz_logs_consumer": ("logs", CONSUMER_INPUTS),
    "test_fuzz_incidents_consumer": ("incidents", CONSUMER_INPUTS),
    "test_fuzz_remediations_consumer": ("remediations", CONSUMER_INPUTS),
    "test_fuzz_approvals_consumer": ("approvals", CONSUMER_INPUTS),
    "test_fuzz_state_consumer": ("state", CONSUMER_INPUTS),
    "test_fuzz_log_line_parser": ("parser: log lines", PARSER_INPUTS),
    "test_fuzz_prometheus_text_parser": ("parser: prometheus text", PARSER_INPUTS),
    "test_fuzz_policy_yaml": ("parser: policy YAML", PARSER_INPUTS),
    "test_fuzz_detector_yaml": ("parser: detector YAML", PARSER_INPUTS),
    "test_fuzz_csv_input": ("parser: detect csv", PARSER_INPUTS),
    "test_fuzz_a_million_distinct_series_names_stay_within_the_caps": ("metrics: 10^6 series", 1),
}


def main() -> int:
    started = time.monotonic()
    errors = []
    for name, (tally_name, want) in TARGETS.items():
        test = getattr(suite, name)
        t0 = time.monotonic()
        while fuzz_kit.tally(tally_name).inputs < want:
            before = fuzz_kit.tally(tally_name).inputs
            try:
                test()
            except Exception as exc:  # a FuzzFailure (counted where it happened) or a crash outside `timed`
                if not isinstance(exc, fuzz_kit.FuzzFailure) and "FuzzFailure" not in repr(exc):
                    fuzz_kit.tally(tally_name).crashes += 1
                errors.append(f"{name}: {type(exc).__name__}: {str(exc)[:400]}")
                break
            if fuzz_kit.tally(tally_name).inputs == before:
                break
        print(f"  {name}: {time.monotonic() - t0:.1f} s", file=sys.stderr, flush=True)
    rows = sorted(fuzz_kit.TALLIES.values(), key=lambda t: (t.name.startswith("parser"), t.name))
    print(f"{'target':28s} {'inputs':>9s} {'accepted':>9s} {'rejected':>9s} {'dead-lett':>9s} "
          f"{'crashes':>7s} {'stalls':>6s} {'lost':>5s} {'worst ms':>9s}")
    for t in rows:
        print(f"{t.name:28s} {t.inputs:9d} {t.accepted:9d} {t.rejected:9d} {t.dead_lettered:9d} "
              f"{t.crashes:7d} {t.stalls:6d} {t.lost:5d} {t.worst_s * 1000:9.1f}")
    for e in errors:
        print("FAILED", e)
    # handler rows time the same inputs again; the cardinality row counts names, not records
    counted = [t for t in rows if not t.name.endswith(".handler") and "series" not in t.name]
    crashes = sum(t.crashes for t in rows)
    stalls = sum(t.stalls for t in rows)
    lost = sum(t.lost for t in rows)
    print(f"({time.monotonic() - started:.0f} s, stall budget {fuzz_kit.BUDGET_S:g} s per input, "
          f"load average {open('/proc/loadavg').read().split()[0]})")
    print(f"fuzz: inputs {sum(t.inputs for t in counted)}, crashes {crashes}, stalls {stalls}, "
          f"valid records lost {lost}, dead-lettered {sum(t.dead_lettered for t in counted)}")
    return 1 if crashes or stalls or lost or errors else 0


if __name__ == "__main__":
    sys.exit(main())
