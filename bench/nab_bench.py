"""Speed and memory of the surprise-record detector, printed as a table.

    PYTHONPATH=. python bench/nab_bench.py [--series 100000] [--steps 50] [--likelihood]

- bank: one numpy update per round over many series (the live engine's hot path), values/s;
- single series: the River-like one-value-at-a-time path (`SurpriseRecord.update`), values/s;
- live rule: `SeriesRule.run_series` (scorer + alert lifecycle, what `detect csv` and `eval nab`
  run), values/s;
- state: bytes per series, with and without the season model, and the resulting RSS growth;
- `--likelihood`: the likelihood detector's bank too (detectors/likelihood.py), values/s wall
  and per CPU-second of this process (the machine is shared: wall time moves with other load).
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np

from detectors.univariate import SurpriseRecord, SurpriseRecordBank

T0 = 1_700_000_000
STEP = 300


def rss_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_bank(
    n_series: int, steps: int, season_buckets: int, bank_class=SurpriseRecordBank
) -> tuple[float, int, float, float]:
    rng = np.random.default_rng(0)
    before = rss_mib()
    bank = bank_class(capacity=n_series, season_buckets=season_buckets)
    rows = bank.add_series(n_series)
    values = 50 + rng.normal(0, 1, (steps, n_series))
    times = np.zeros(n_series)
    started, cpu = time.perf_counter(), time.process_time()
    for i in range(steps):
        times[:] = T0 + STEP * i
        bank.update(rows, values[i], times)
    took, cpu = time.perf_counter() - started, time.process_time() - cpu
    return n_series * steps / took, bank.nbytes_per_slot, rss_mib() - before, n_series * steps / cpu


def bench_single(n: int) -> float:
    det = SurpriseRecord()
    values = 50 + np.random.default_rng(1).normal(0, 1, n)
    started = time.perf_counter()
    for i, v in enumerate(values):
        det.update(T0 + STEP * i, float(v))
    return n / (time.perf_counter() - started)


def bench_rule(n: int) -> float:
    from detectors.eval_cli import build_rule

    values = 50 + np.random.default_rng(2).normal(0, 1, n)
    times = T0 + STEP * np.arange(n, dtype=np.float64)
    rule = build_rule(None)()
    started = time.perf_counter()
    rule.run_series(times, values)
    return n / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=100_000)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument(
        "--likelihood",
        action="store_true",
        help="also the likelihood detector's bank (detectors/likelihood.py), with CPU time",
    )
    args = parser.parse_args()
    rows = []
    if args.likelihood:
        from detectors.likelihood import LikelihoodBank

        for buckets in (0, 288):
            rate, nbytes, grew, cpu_rate = bench_bank(args.series, args.steps, buckets, LikelihoodBank)
            label = f"likelihood bank, {args.series:,} series x {args.steps} rounds, season_buckets={buckets}"
            rows.append(
                (
                    label,
                    f"{rate:,.0f} values/s ({cpu_rate:,.0f} per CPU-s)",
                    f"{nbytes:,} B/series",
                    f"+{grew:,.0f} MiB RSS",
                )
            )
    for buckets in (288, 0):
        rate, nbytes, grew, _ = bench_bank(args.series, args.steps, buckets)
        label = f"bank, {args.series:,} series x {args.steps} rounds, season_buckets={buckets}"
        rows.append((label, f"{rate:,.0f} values/s", f"{nbytes:,} B/series", f"+{grew:,.0f} MiB RSS"))
    rows.append(("single series, SurpriseRecord.update", f"{bench_single(5000):,.0f} values/s", "", ""))
    rows.append(("live rule, SeriesRule.run_series (detect csv)", f"{bench_rule(5000):,.0f} values/s", "", ""))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    head = ("what", "speed", "state", "memory")
    widths = [max(w, len(h)) for w, h in zip(widths, head, strict=True)]
    print("  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))


if __name__ == "__main__":
    main()
