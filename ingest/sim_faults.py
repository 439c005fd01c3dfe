"""The simulator's fault kinds: one small class per kind, registered by name in `REGISTRY`.

A kind says what its scheduled fault carries (`draw_detail`, after the GPU for kinds on one
GPU), which lead-up it may show (`precursor`), which series shows it best (`signal`, for a
demo's progress line), and what it does to one tick of its host (`apply`: it changes the tick's
arrays in place and says its log lines). `FleetSimulator.tick` computes the healthy tick, then
calls `apply` of every active fault through the registry.

Each `apply` draws from the tick's generator in a fixed order, so a seed gives the same records
byte for byte (tests/test_ingest_simulator_golden.py holds the records of the code before this
registry existed).

>>> list(REGISTRY) == list(FAULT_KINDS)
True
>>> REGISTRY["nvlink_errors"].on_gpu, REGISTRY["disk_fill"].on_gpu
(True, False)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from . import series as S

if TYPE_CHECKING:
    from .sim_schedule import Fault
    from .simulator import FleetSimulator

BURST_XIDS = (79, 48, 94, 74, 13, 31, 62, 64, 95, 119)
NVLINKS = 4  # links simulated per GPU (H100 has 18; four keep batches small)
MEM_TOTAL = 512 * 2**30
SERVICE = "slurmd"
GPU_PCI = (
    "0000:18:00",
    "0000:2a:00",
    "0000:3a:00",
    "0000:5d:00",
    "0000:9a:00",
    "0000:ab:00",
    "0000:ba:00",
    "0000:db:00",
)
# The kernel's text after "Xid (PCI:...): N, pid=..., name=python3, " for the burst XIDs.
BURST_TEXT = {
    79: "GPU has fallen off the bus.",
    48: "DBE (double bit error) ECC error",
    94: "Contained: SM (0x1). RST: No, D-RST: No",
    74: "NVLink: fatal error detected on link 3",
}
GENERIC_XID_TEXT = "Graphics Exception: ESR 0x504224=0x80000002"


def gpu_pci(g: int) -> str:
    """The PCI address of GPU `g` of a simulated node.

    >>> gpu_pci(0), gpu_pci(9)
    ('0000:18:00', '0000:19:00')
    """
    return GPU_PCI[g] if g < len(GPU_PCI) else f"0000:{0x10 + g:02x}:00"


@dataclass
class TickState:
    """One tick of the fleet, as the fault kinds change it: the healthy values already drawn for
    this tick (arrays of shape (nodes,) or (nodes, gpus), changed in place), the simulator whose
    counters (`ecc_`, `remap_`, `nvlink_`, `oom_`, `fs_free_`, `uptime_`) persist between ticks,
    its generator, and `say(node, line, at=0.0)` for a log line `at` seconds into the interval."""

    sim: FleetSimulator
    rng: np.random.Generator
    dt: float
    load: np.ndarray
    temp: np.ndarray
    power: np.ndarray
    sm_clock: np.ndarray
    throttle: np.ndarray
    gpu_up: np.ndarray
    mem_avail: np.ndarray
    swap: np.ndarray
    fs_free: np.ndarray
    service_up: np.ndarray
    say: Callable[..., None]

    def kernel(self, node: int, text: str, up_offset: float = 0.0) -> str:
        """A kernel log line of `node` stamped with its uptime (plus `up_offset` seconds)."""
        return f"kernel: [{self.sim.uptime_[node] + up_offset:.6f}] {text}"

    def pid(self) -> int:
        return int(self.rng.integers(2000, 60000))


class FaultKind:
    """One kind of fault; subclasses set `name` and override what their kind does."""

    name: ClassVar[str]
    on_gpu: ClassVar[bool] = False  # scheduled on one GPU: the detail carries "gpu"

    def draw_detail(self, rng: np.random.Generator) -> dict:
        """The fault's detail fields beyond "gpu", drawn at scheduling time."""
        return {}

    def precursor(self, fault: Fault) -> str:
        """The lead-up signal this fault shows (one of PRECURSOR_SIGNALS), "" for none."""
        return ""

    def signal(self, fault: Fault) -> str:
        """The series that shows the fault best."""
        raise NotImplementedError

    def apply(self, fault: Fault, progress: float, first: bool, last: bool, s: TickState) -> None:
        """Change tick `s` for the fault, `progress` (0..1) into it; `first`/`last`: its first/last tick."""
        raise NotImplementedError


def _gpu(fault: Fault) -> int:
    return fault.detail.get("gpu", 0)


class ThermalRunaway(FaultKind):
    name = "thermal_runaway"
    on_gpu = True

    def precursor(self, fault: Fault) -> str:
        return "thermal"

    def signal(self, fault: Fault) -> str:
        return f"gpu{_gpu(fault)}.temperature_c"

    def apply(self, fault: Fault, progress: float, first: bool, last: bool, s: TickState) -> None:
        i, gi = fault.node, _gpu(fault)
        # ramps, then levels off where the GPU's own slowdown holds it (real parts stop near 95 °C)
        s.temp[i, gi] = min(s.temp[i, gi] + 52 * progress, 91.5 + 5 * progress + s.rng.normal(0, 0.3))
        if s.temp[i, gi] > 83:
            s.throttle[i, gi] = S.THROTTLE_BITS["sw_thermal"] | (
                S.THROTTLE_BITS["hw_thermal"] if s.temp[i, gi] > 90 else 0
            )
            s.sm_clock[i, gi] = max(600.0, 1980 - 40 * (s.temp[i, gi] - 83))
            s.power[i, gi] *= 0.8


class EccGrowth(FaultKind):
    name = "ecc_growth"
    on_gpu = True

    def precursor(self, fault: Fault) -> str:
        return "ecc"

    def signal(self, fault: Fault) -> str:
        return f"gpu{_gpu(fault)}.ecc.volatile.corrected"

    def apply(self, fault: Fault, progress: float, first: bool, last: bool, s: TickState) -> None:
        i, gi, r, sim = fault.node, _gpu(fault), s.rng, s.sim
        pci = gpu_pci(gi)
        sim.ecc_[i, gi, 0] += np.floor(2 ** (10 * progress)) + r.poisson(1)
        if r.random() < 0.2 + 0.6 * progress:
            sim.remap_[i, gi, 0] += 1
            s.say(
                i,
                s.kernel(
                    i,
                    f"NVRM: Xid (PCI:{pci}): 63, pid='<unknown>', name=<unknown>, Row Remapper: "
                    f"New row (0x{int(r.integers(1 << 20)):08x}) was marked for remapping",
                ),
            )
        if progress > 0.5 and r.random() < progress:
            s.say(
                i,
                s.kernel(
                    i, f"NVRM: Xid (PCI:{pci}): 92, pid='<unknown>', name=<unknown>, High single-bit ECC error rate"
                ),
            )
        if last:
            sim.ecc_[i, gi, 1] += 1
            sim.remap_[i, gi, 1] += 1
            sim.remap_[i, gi, 2] = 1
            s.say(
                i,
                s.kernel(
                    i, f"NVRM: Xid (PCI:{pci}): 48, pid={s.pid()}, name=python3, DBE (double bit error) ECC error"
                ),
                s.dt / 2,
            )


class XidBurst(FaultKind):
    name = "xid_burst"
    on_gpu = True
    # the lead-up by XID: memory-class XIDs show corrected ECC first, NVLink's CRC errors; others PCIe replays
    LEAD_UP: ClassVar[dict[int, str]] = {48: "ecc", 94: "ecc", 95: "ecc", 64: "ecc", 74: "nvlink"}

    def draw_detail(self, rng: np.random.Generator) -> dict:
        return {"xid": int(BURST_XIDS[int(rng.integers(len(BURST_XIDS)))])}

    def precursor(self, fault: Fault) -> str:
        return self.LEAD_UP.get(fault.detail.get("xid", 0), "pcie")  # no XID (0): PCIe replays

    def signal(self, fault: Fault) -> str:
        return f"gpu{_gpu(fault)}.up"

    def apply(self, fault: Fault, progress: float, first: bool, last: bool, s: TickState) -> None:
        i, gi, r, sim = fault.node, _gpu(fault), s.rng, s.sim
        pci, xid = gpu_pci(gi), fault.detail["xid"]
        count = 3 if first else int(r.random() < 0.3)
        for j in range(count):
            text = BURST_TEXT.get(xid, GENERIC_XID_TEXT)
            s.say(i, s.kernel(i, f"NVRM: Xid (PCI:{pci}): {xid}, pid={s.pid()}, name=python3, {text}", j), j * 0.5)
        if xid == 79:
            s.gpu_up[i, gi] = 0
            if first:
                s.say(i, s.kernel(i, f"NVRM: GPU {pci}.0: GPU has fallen off the bus.", 1), 1.0)
        elif xid == 48 and first:
            sim.ecc_[i, gi, 1] += 1
        elif xid == 74:
            sim.nvlink_[i, gi, 3, 2] += r.poisson(40)


class MemoryLeak(FaultKind):
    name = "memory_leak"

    def signal(self, fault: Fault) -> str:
        return "mem.available_pct"

    def apply(self, fault: Fault, progress: float, first: bool, last: bool, s: TickState) -> None:
        i = fault.node
        s.mem_avail[i] = MEM_TOTAL * max(0.004, (0.75 - 0.45 * s.load[i]) * (1 - progress) ** 1.5)
        s.swap[i] = min(100.0, s.swap[i] + 95 * progress**2)
        if last:
            s.sim.oom_[i] += 1
            s.say(
                i,
                s.kernel(
                    i,
                    f"Out of memory: Killed process {s.pid()} (python3) "
                    f"total-vm:{int(MEM_TOTAL / 1024 * 0.9)}kB, anon-rss:{int(MEM_TOTAL / 1024 * 0.85)}kB, "
                    f"file-rss:10240kB, shmem-rss:0kB, UID:1000 pgtables:900000kB oom_score_adj:0",
                ),
                s.dt / 2,
            )


class DiskFill(FaultKind):
    name = "disk_fill"

    def draw_detail(self, rng: np.random.Generator) -> dict:
        return {"mount": "/"}

    def signal(self, fault: Fault) -> str:
        return "fs./.free_pct"

    def apply(self, fault: Fault, progress: float, first: bool, last: bool, s: TickState) -> None:
        i = fault.node
        s.fs_free[i] = max(0.2, s.sim.fs_free_[i] * (1 - progress) ** 2)
        if last:
            s.say(
                i,
                s.kernel(
                    i,
                    "EXT4-fs warning (device nvme0n1p2): ext4_dx_add_entry:2525: "
                    "Directory (ino: 2) index full, reach max htree level :2",
                ),
            )


class ServiceCrash(FaultKind):
    name = "service_crash"

    def draw_detail(self, rng: np.random.Generator) -> dict:
        return {"service": SERVICE}

    def signal(self, fault: Fault) -> str:
        return f"service.{SERVICE}.up"

    def apply(self, fault: Fault, progress: float, first: bool, last: bool, s: TickState) -> None:
        i = fault.node
        s.service_up[i] = 0
        if first:
            s.say(i, f"systemd[1]: {SERVICE}.service: Main process exited, code=killed, status=9/KILL")
            s.say(i, f"systemd[1]: {SERVICE}.service: Failed with result 'signal'.", 0.1)
        else:
            s.say(
                i,
                f"systemd[1]: {SERVICE}.service: Scheduled restart job, "
                f"restart counter is at {int(progress * 10) + 1}.",
            )
            s.say(i, f"systemd[1]: {SERVICE}.service: Main process exited, code=exited, status=1/FAILURE", 0.2)
        if last:
            s.say(i, f"systemd[1]: Started {SERVICE}.service - Slurm node daemon.", s.dt * 0.9)


class NvlinkErrors(FaultKind):
    name = "nvlink_errors"
    on_gpu = True

    def draw_detail(self, rng: np.random.Generator) -> dict:
        return {"link": int(rng.integers(NVLINKS))}

    def precursor(self, fault: Fault) -> str:
        return "nvlink"

    def signal(self, fault: Fault) -> str:
        return f"gpu{_gpu(fault)}.nvlink{fault.detail.get('link', 0)}.crc_flit"

    def apply(self, fault: Fault, progress: float, first: bool, last: bool, s: TickState) -> None:
        i, gi, r, nvlink = fault.node, _gpu(fault), s.rng, s.sim.nvlink_
        link = fault.detail["link"]
        nvlink[i, gi, link, 2] += np.floor(5 * 2 ** (6 * progress)) + r.poisson(2)  # crc_flit
        nvlink[i, gi, link, 0] += r.poisson(1 + 10 * progress)  # replay
        if progress > 0.6 and r.random() < 0.5:
            nvlink[i, gi, link, 1] += 1  # recovery
            s.say(
                i,
                s.kernel(
                    i,
                    f"NVRM: Xid (PCI:{gpu_pci(gi)}): 74, pid='<unknown>', name=<unknown>, "
                    f"NVLink: fatal error detected on link {link}(0x0, 0x0, 0x10000, 0x0, 0x0, 0x0, 0x0)",
                ),
            )


# In the order a run schedules them (the first fault of each kind in turn): keep it.
REGISTRY: dict[str, FaultKind] = {
    k.name: k
    for k in (XidBurst(), ThermalRunaway(), EccGrowth(), MemoryLeak(), DiskFill(), ServiceCrash(), NvlinkErrors())
}
FAULT_KINDS = tuple(REGISTRY)
