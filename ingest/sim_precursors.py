"""Precursors of the simulated faults: lead-up windows on the affected GPU, and false alarms.

Real parts often warn before they fail. `schedule_precursors` gives a share of the GPU faults a
lead-up (its signal from the fault kind, `sim_faults.FaultKind.precursor`) and adds lead-up-like
episodes on healthy GPUs that end in nothing; `PrecursorEffects` applies the open windows of a
tick to the GPU state. Both draw from their own streams ([seed, 3] and [seed, 4]), so the faults
and the fleet's normal signals are the same with or without precursors.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import numpy as np

from . import series as S
from .sim_faults import NVLINKS, REGISTRY, gpu_pci

if TYPE_CHECKING:
    from .sim_schedule import Fault
    from .simulator import FleetSimulator, SimConfig

# What each precursor looks like on the affected GPU. Real parts often warn before they fail:
# corrected ECC errors climb and rows get remapped before an uncorrectable error or a GPU lost
# from the bus; PCIe replays rise before link trouble; NVLink CRC errors before an NVLink fault;
# clocks throttle and temperature creeps before a thermal event; and application-class XIDs
# turn up sporadically ahead of a hard XID.
PRECURSOR_SIGNALS = ("ecc", "pcie", "nvlink", "thermal")
SOFT_XIDS = (13, 31, 94)  # warning-class XIDs (restart_app in detectors/xid_table.yaml)


def precursor_signal(f: Fault) -> str:
    """The lead-up a fault shows, "" when its kind has none (host faults grow within the fault)."""
    return REGISTRY[f.fault].precursor(f)


@dataclass(frozen=True)
class PrecursorShape:
    """Rates at full strength; strength rises as ((t - precursor start) / lead)², so the signal is
    faint for most of the lead-up and clear only close to the fault. Counts are Poisson, so a
    single batch is noisy. Kept below every default detector rule: no uncorrected ECC, no
    critical XID, temperature at most `thermal_creep_c` above normal (the GPU overheat rule is
    at 85 °C, the clean-fleet tests keep pre-fault temperatures below 82 °C)."""

    ecc_corrected_per_s: float = 0.05  # normal: 0.0002
    remap_per_s: float = 0.0005  # each one also logs XID 63 (benign)
    pcie_replay_per_s: float = 0.05  # normal: flat
    nvlink_crc_per_s: float = 0.1  # normal: flat
    thermal_creep_c: float = 3.0
    throttle_chance: float = 0.4  # per tick: sw_thermal set and the SM clock dips
    soft_xid_per_s: float = 1 / 1800  # xid_burst lead-ups only; never on false alarms


@dataclass(frozen=True)
class Precursor:
    """A lead-up window on one GPU: before `fault` when there is one, else a false alarm."""

    host: str
    node: int
    gpu: int
    signal: str
    start: datetime
    end: datetime
    link: int = 0
    soft_xids: bool = False
    fault: Fault | None = None


def _lead_window(cfg: SimConfig, f: Fault, lead: float, busy_until: datetime) -> datetime | None:
    """Where a lead-up of `lead` seconds before `f` may start: not before the first tick, nor
    before the host's previous fault ended; None when nothing is left."""
    first = cfg.start + timedelta(seconds=cfg.interval_s)
    begin = max(f.start - timedelta(seconds=lead), first, busy_until)
    return begin if begin < f.start else None


def schedule_precursors(cfg: SimConfig, faults: list[Fault]) -> tuple[list[Fault], list[Precursor]]:
    """The faults with their lead-ups filled in, and every precursor window (lead-ups and false alarms).

    Drawn from their own stream ([seed, 3]), so the faults and the fleet's normal signals are
    the same as without precursors. False alarms fall on GPUs with no fault and no lead-up within
    `precursor_lead_s` max of the window on that host, so they end in nothing."""
    rng = np.random.default_rng([cfg.seed, 3])
    lo, hi = cfg.precursor_lead_s
    out_faults, windows = [], []
    ends: dict[int, datetime] = {}
    for f in faults:  # sorted by start
        signal = precursor_signal(f)
        draw, lead = rng.random(), rng.uniform(lo, hi)
        begin = _lead_window(cfg, f, lead, ends.get(f.node, cfg.start))
        ends[f.node] = max(ends.get(f.node, cfg.start), f.end)
        if not signal or draw >= cfg.precursor_fraction or begin is None:
            out_faults.append(f)
            continue
        f = replace(f, precursor_start=begin, precursor=signal)
        out_faults.append(f)
        windows.append(
            Precursor(
                f.host,
                f.node,
                f.detail["gpu"],
                signal,
                begin,
                f.start,
                f.detail.get("link", 0),
                f.fault == "xid_burst",
                f,
            )
        )
    windows += _false_alarms(cfg, out_faults, rng)
    return out_faults, windows


def _false_alarms(cfg: SimConfig, faults: list[Fault], rng: np.random.Generator) -> list[Precursor]:
    if cfg.gpus == 0:
        return []
    span = cfg.ticks * cfg.interval_s
    wanted = int(round(cfg.false_alarms_per_node_day * cfg.nodes * span / 86400))
    lo, hi = cfg.precursor_lead_s
    margin = timedelta(seconds=hi)
    taken: dict[int, list[tuple[datetime, datetime]]] = {}
    for f in faults:
        taken.setdefault(f.node, []).append((f.precursor_start or f.start, f.end))
    out = []
    for _ in range(wanted):
        for _ in range(20):
            node, gpu = int(rng.integers(cfg.nodes)), int(rng.integers(cfg.gpus))
            length = float(rng.uniform(lo, hi))
            signal = PRECURSOR_SIGNALS[int(rng.integers(len(PRECURSOR_SIGNALS)))]
            link = int(rng.integers(NVLINKS))
            begin = cfg.start + timedelta(
                seconds=float(rng.uniform(cfg.interval_s, max(cfg.interval_s, span - length)))
            )
            end = min(begin + timedelta(seconds=length), cfg.start + timedelta(seconds=span))
            if all(end + margin <= a or begin - margin >= b for a, b in taken.get(node, [])):
                break
        else:
            continue  # the fleet is too busy with faults for another
        taken.setdefault(node, []).append((begin, end))
        out.append(Precursor(f"{cfg.host_prefix}{node:04d}", node, gpu, signal, begin, end, link))
    return out


class PrecursorEffects:
    """What the open precursor windows do to each tick of a `FleetSimulator`, with their own noise."""

    def __init__(self, cfg: SimConfig, windows: list[Precursor]):
        self.cfg = cfg
        self.rng_ = np.random.default_rng([cfg.seed, 4])  # precursor noise: the normal streams stay as they were
        self.windows_ = self._arrays(windows)

    def _arrays(self, ws: list[Precursor]) -> dict[str, np.ndarray]:
        """The precursor windows as parallel arrays (tick range, node, GPU, signal), so a tick
        applies all of them with a few vector operations."""
        cfg = self.cfg

        def tick(t: datetime) -> int:
            return int(math.ceil((t - cfg.start).total_seconds() / cfg.interval_s))

        return {
            "t0": np.array([tick(w.start) for w in ws], dtype=int),
            "t1": np.array([tick(w.end) for w in ws], dtype=int),
            "node": np.array([w.node for w in ws], dtype=int),
            "gpu": np.array([w.gpu for w in ws], dtype=int),
            "link": np.array([w.link for w in ws], dtype=int),
            "signal": np.array([PRECURSOR_SIGNALS.index(w.signal) for w in ws], dtype=int),
            "soft_xids": np.array([w.soft_xids for w in ws], dtype=bool),
        }

    def apply(
        self,
        k: int,
        sim: FleetSimulator,
        temp: np.ndarray,
        sm_clock: np.ndarray,
        throttle: np.ndarray,
        say: Callable[..., None],
    ) -> None:
        """Add tick k's share of every open precursor window to the GPU state: `sim`'s counters and
        this tick's temperature, SM clock and throttle arrays (in place); `say(node, line, at)` logs."""
        pw = self.windows_
        on = np.nonzero((pw["t0"] <= k) & (k < pw["t1"]))[0]
        if not len(on):
            return
        r, dt, shape = self.rng_, self.cfg.interval_s, self.cfg.precursor_shape
        node, gpu, signal = pw["node"][on], pw["gpu"][on], pw["signal"][on]
        strength = ((k - pw["t0"][on] + 1) / np.maximum(pw["t1"][on] - pw["t0"][on], 1)) ** 2
        is_ = {name: signal == j for j, name in enumerate(PRECURSOR_SIGNALS)}
        rate = np.select(
            [is_["ecc"], is_["pcie"], is_["nvlink"]],
            [shape.ecc_corrected_per_s, shape.pcie_replay_per_s, shape.nvlink_crc_per_s],
            0.0,
        )
        counts = r.poisson(rate * dt * strength)
        np.add.at(sim.ecc_[:, :, 0], (node[is_["ecc"]], gpu[is_["ecc"]]), counts[is_["ecc"]])
        np.add.at(sim.pcie_replay_, (node[is_["pcie"]], gpu[is_["pcie"]]), counts[is_["pcie"]])
        nv = is_["nvlink"]
        np.add.at(sim.nvlink_[:, :, :, 2], (node[nv], gpu[nv], pw["link"][on][nv]), counts[nv])
        hot = is_["thermal"]
        temp[node[hot], gpu[hot]] += shape.thermal_creep_c * strength[hot] + r.normal(0, 0.3, int(hot.sum()))
        throttled = hot & (r.random(len(on)) < shape.throttle_chance * strength)
        throttle[node[throttled], gpu[throttled]] = S.THROTTLE_BITS["sw_thermal"]
        sm_clock[node[throttled], gpu[throttled]] -= r.uniform(45, 180, int(throttled.sum()))
        # Discrete events are rare: a Python loop over the few that happen this tick.
        remapped = is_["ecc"] & (r.random(len(on)) < shape.remap_per_s * dt * strength)
        for i, g in zip(node[remapped].tolist(), gpu[remapped].tolist(), strict=True):
            sim.remap_[i, g, 0] += 1
            say(
                i,
                f"kernel: [{sim.uptime_[i]:.6f}] NVRM: Xid (PCI:{gpu_pci(g)}): 63, pid='<unknown>', "
                f"name=<unknown>, Row Remapper: New row (0x{int(r.integers(1 << 20)):08x}) was marked for remapping",
            )
        soft = pw["soft_xids"][on] & (r.random(len(on)) < shape.soft_xid_per_s * dt * strength)
        for i, g in zip(node[soft].tolist(), gpu[soft].tolist(), strict=True):
            xid = SOFT_XIDS[int(r.integers(len(SOFT_XIDS)))]
            say(
                i,
                f"kernel: [{sim.uptime_[i]:.6f}] NVRM: Xid (PCI:{gpu_pci(g)}): {xid}, "
                f"pid={int(r.integers(2000, 60000))}, name=python3, Graphics Exception: ESR 0x504224=0x80000002",
                float(r.uniform(0, dt)),
            )
