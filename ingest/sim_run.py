"""A whole simulated run: each tick's records to a publisher, paced or as fast as possible.

`run_simulation` writes the ground truth, publishes the ticks of `FleetSimulator`, and says
progress lines for a demo (faults starting and ending, the fault series' values, the error log
lines); `fleetmedic simulate` and the benchmarks run it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .sim_faults import REGISTRY
from .sim_schedule import Fault, iso, write_ground_truth
from .simulator import FleetSimulator, SimConfig


@dataclass
class SimStats:
    """What a run made: ticks, metric batches, their values, log events, faults started, wall seconds."""

    ticks: int = 0
    batches: int = 0
    values: int = 0
    logs: int = 0
    faults_started: int = 0
    wall_s: float = 0.0


def _fault_signal(f: Fault) -> str:
    """The series that shows the fault best, for the progress line of a demo."""
    return REGISTRY[f.fault].signal(f)


def run_simulation(
    cfg: SimConfig,
    publish: Callable[[list], object],
    *,
    realtime: bool = False,
    speed: float = 1.0,
    truth_path: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
    flush_every: int = 5000,
    stop: Callable[[], bool] | None = None,
) -> SimStats:
    """Run the whole span: `publish(records)` gets each tick's records (fast mode: in chunks of
    about `flush_every`). Realtime paces tick k at k·interval/speed wall seconds from the start.
    Progress: a line per second at most, one per fault start and end, and in realtime the error
    and critical log lines (at most one per host and kind per 5 wall seconds, with a count of the rest)."""
    if speed <= 0:
        raise ValueError("speed must be positive")
    sim = FleetSimulator(cfg)
    if truth_path:
        write_ground_truth(sim.faults_, truth_path)
    say = progress or (lambda m: None)
    say(
        f"simulating {cfg.nodes} nodes × {cfg.gpus} GPUs, {cfg.ticks} ticks of {cfg.interval_s:g}s from "
        f"{iso(cfg.start)} (seed {cfg.seed}, {len(sim.faults_)} faults"
        + (f", ground truth in {truth_path})" if truth_path else ")")
    )
    stats = SimStats()
    t0 = time.monotonic()
    last_report = t0
    log_shown: dict[tuple[str, str], tuple[float, int]] = {}  # (host, kind) → (when shown, held back since)
    pending: list = []
    for k in range(cfg.ticks):
        if stop and stop():
            break
        if realtime:
            due = t0 + k * cfg.interval_s / speed
            while (wait := due - time.monotonic()) > 0 and not (stop and stop()):
                time.sleep(min(wait, 0.2))
        active = sim.active(k)
        for f, _, first, _ in active:
            if first:
                stats.faults_started += 1
                say(f"  fault ▶ {f.describe()}  {iso(f.start)} → {iso(f.end)}")
        batches, events = sim.tick(k)
        stats.ticks += 1
        stats.batches += len(batches)
        stats.values += sum(len(b.values) for b in batches)
        stats.logs += len(events)
        if realtime:
            for e in events:
                if e.kind != "raw" and e.severity in ("error", "critical"):
                    # a burst would print hundreds of lines: one per (host, kind) per 5 wall seconds
                    key = (e.host, e.kind)
                    shown_at, held = log_shown.get(key, (-1e9, 0))
                    if time.monotonic() - shown_at < 5.0:
                        log_shown[key] = (shown_at, held + 1)
                        continue
                    more = f"  (+{held} more like it)" if held else ""
                    say(f"  log     {e.host} {e.kind}/{e.severity}: {e.line[:90]}{more}")
                    log_shown[key] = (time.monotonic(), 0)
        pending += batches
        pending += events
        if realtime or len(pending) >= flush_every or k == cfg.ticks - 1:
            publish(pending)
            pending = []
        now = time.monotonic()
        if now - last_report >= 1.0:
            last_report = now
            by_host = {b.host: b for b in batches}
            shown = []
            for f, _, _, _ in active:
                name = _fault_signal(f)
                value = by_host[f.host].values.get(name) if f.host in by_host else None
                shown.append(f"{f.host} {name}={'null' if value is None else f'{value:g}'}")
            wall = now - t0
            say(
                f"  {iso(sim.time_of(k))} tick {k + 1}/{cfg.ticks}  {stats.batches} batches  {stats.logs} logs  "
                f"{(stats.batches + stats.logs) / max(wall, 1e-9):.0f} rec/s"
                + ("  | " + "; ".join(shown) if shown else "")
            )
        for f, _, _, last in active:
            if last:
                say(f"  fault ■ {f.host} {f.fault} over at {iso(f.end)}")
    if pending:
        publish(pending)
    for (host, kind), (_, held) in sorted(log_shown.items()):
        if held:
            say(f"  log     {host} {kind}: {held} more lines like the last one shown")
    stats.wall_s = time.monotonic() - t0
    say(
        f"done: {stats.ticks} ticks, {stats.batches} metric batches ({stats.values} values), {stats.logs} log "
        f"events, {stats.faults_started} faults in {stats.wall_s:.1f}s "
        f"({(stats.batches + stats.logs) / max(stats.wall_s, 1e-9):.0f} records/s, "
        f"{stats.values / max(stats.wall_s, 1e-9):.0f} values/s)"
    )
    return stats
