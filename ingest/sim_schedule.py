"""The faults of a simulated run, scheduled from its seed, and their ground truth.

`schedule_faults` draws which host gets which fault kind when (no two overlap on one host);
`write_ground_truth` and `read_ground_truth` keep them as one JSON line per fault::

    {"host": "sim-node-0003", "fault": "thermal_runaway", "start": "2026-01-01T00:10:00Z",
     "end": "2026-01-01T00:25:00Z", "gpu": 2}
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .sim_faults import FAULT_KINDS, REGISTRY

if TYPE_CHECKING:
    from .simulator import SimConfig


def iso(t: datetime) -> str:
    """`t` in UTC as ISO 8601 with a "Z", the fraction's trailing zeros cut.

    >>> iso(datetime(2026, 1, 1, 0, 10, 0, 500000, tzinfo=UTC))
    '2026-01-01T00:10:00.5Z'
    """
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f").rstrip("0").rstrip(".") + "Z"


@dataclass(frozen=True)
class Fault:
    host: str
    node: int
    fault: str
    start: datetime
    end: datetime
    detail: dict = field(default_factory=dict)
    precursor_start: datetime | None = None  # when the lead-up began (it ends at `start`); None: no lead-up
    precursor: str = ""  # its signal: one of PRECURSOR_SIGNALS

    def truth(self) -> dict:
        out = {"host": self.host, "fault": self.fault, "start": iso(self.start), "end": iso(self.end), **self.detail}
        if self.precursor_start is not None:
            out.update(precursor_start=iso(self.precursor_start), precursor=self.precursor)
        return out

    def describe(self) -> str:
        extra = " ".join(f"{k}={v}" for k, v in self.detail.items())
        return f"{self.host} {self.fault} {extra}".rstrip()


def schedule_faults(cfg: SimConfig) -> list[Fault]:
    """The faults of a run, from the seed: no two overlap on one host."""
    rng = np.random.default_rng([cfg.seed, 1])
    wanted = cfg.faults if cfg.faults is not None else max(1, cfg.nodes // 4)
    span = cfg.ticks * cfg.interval_s
    busy: dict[int, list[tuple[float, float]]] = {}
    out: list[Fault] = []
    kinds = list(cfg.fault_kinds) or list(FAULT_KINDS)
    for i in range(wanted):
        kind = kinds[i % len(kinds)] if i < len(kinds) else kinds[int(rng.integers(len(kinds)))]
        for _ in range(50):
            node = int(rng.integers(cfg.nodes))
            length = float(rng.uniform(0.15, 0.35)) * span
            begin = float(rng.uniform(0.1, 0.9)) * span - length / 2
            begin = max(cfg.interval_s, min(begin, span - length - cfg.interval_s))
            length = max(length, 2 * cfg.interval_s)
            begin = cfg.interval_s * math.floor(begin / cfg.interval_s)
            finish = begin + cfg.interval_s * math.ceil(length / cfg.interval_s)
            if all(finish <= a or begin >= b for a, b in busy.get(node, [])):
                break
        else:
            continue  # the fleet is too small for this many faults
        busy.setdefault(node, []).append((begin, finish))
        detail: dict = {}
        if REGISTRY[kind].on_gpu:
            if cfg.gpus == 0:
                continue
            detail["gpu"] = int(rng.integers(cfg.gpus))
        detail.update(REGISTRY[kind].draw_detail(rng))
        out.append(
            Fault(
                f"{cfg.host_prefix}{node:04d}",
                node,
                kind,
                cfg.start + timedelta(seconds=begin),
                cfg.start + timedelta(seconds=finish),
                detail,
            )
        )
    return sorted(out, key=lambda f: (f.start, f.host))


def write_ground_truth(faults: list[Fault], path: str | Path) -> None:
    """One JSON line per fault: host, fault, start, end (ISO UTC) and its detail fields."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("".join(json.dumps(f.truth(), sort_keys=True) + "\n" for f in faults))


def read_ground_truth(path: str | Path) -> list[dict]:
    """The faults `write_ground_truth` wrote, one dict per line."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
