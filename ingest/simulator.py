"""A synthetic GPU fleet with scheduled faults, published through the exporters' publisher.

N nodes with G GPUs each report the same series as the real host and GPU exporters (see
docs/ingest.md): daily load cycles with per-node phase, AR(1) noise, GPU temperature, power and
clocks that follow GPU load, counters that only grow, and kernel/service log chatter (the lines
go through the same parser as `fleetmedic export logs`). Faults are scheduled up front from the
seed and written as ground truth, one JSON line per fault::

    {"host": "sim-node-0003", "fault": "thermal_runaway", "start": "2026-01-01T00:10:00Z",
     "end": "2026-01-01T00:25:00Z", "gpu": 2}

Everything comes from `numpy.random.default_rng(seed)` and a simulated clock (`start`,
`interval_s`), so a seed and a configuration give the same records byte for byte, whether the
run is paced in real time (`speed` simulated seconds per wall second) or as fast as possible.

>>> sim = FleetSimulator(SimConfig(nodes=2, gpus=1, seconds=60, interval_s=10, seed=1))
>>> batches, logs = sim.tick(0)
>>> [b.host for b in batches], batches[0].values["gpu0.temperature_c"] > 20
(['sim-node-0000', 'sim-node-0001'], True)
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from fleetmedic.schemas import LogEvent, MetricBatch

from . import series as S
from .logparse import parse_line

FAULT_KINDS = ("xid_burst", "thermal_runaway", "ecc_growth", "memory_leak", "disk_fill", "service_crash",
               "nvlink_errors")
BURST_XIDS = (79, 48, 94, 74, 13, 31, 62, 64, 95, 119)
NVLINKS = 4            # links simulated per GPU (H100 has 18; four keep batches small)
CORES = 64
MEM_TOTAL = 512 * 2**30
GPU_MEM_TOTAL = 80 * 2**30
FS_TOTAL = 2 * 10**12
SERVICE = "slurmd"
GPU_PCI = ("0000:18:00", "0000:2a:00", "0000:3a:00", "0000:5d:00", "0000:9a:00", "0000:ab:00", "0000:ba:00",
           "0000:db:00")

CHATTER = (
    "systemd[1]: Started Session {n} of user ubuntu.",
    "CRON[{pid}]: (root) CMD (/usr/lib/nvidia/nvidia-persistenced --verbose >/dev/null 2>&1)",
    "sshd[{pid}]: Accepted publickey for slurm from 10.1.{a}.{b} port {port} ssh2",
    "kernel: [{up:.6f}] IPv6: ADDRCONF(NETDEV_CHANGE): ib0: link becomes ready",
    "kernel: [{up:.6f}] pcieport 0000:00:01.0: AER: Corrected error received: 0000:00:01.0",
    "kernel: [{up:.6f}] NVRM: Xid (PCI:{pci}): 43, pid={pid}, name=python3, Ch 00000008",
    "slurmd[{pid}]: launch task StepId={n}.0 request from UID:1000 GID:1000 HOST:10.1.0.1 PORT:{port}",
    "kernel: [{up:.6f}] perf: interrupt took too long (2503 > 2500), lowering kernel.perf_event_max_sample_rate",
)


def iso(t: datetime) -> str:
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f").rstrip("0").rstrip(".") + "Z"


def gpu_pci(g: int) -> str:
    return GPU_PCI[g] if g < len(GPU_PCI) else f"0000:{0x10 + g:02x}:00"


@dataclass(frozen=True)
class SimConfig:
    nodes: int = 8
    gpus: int = 4
    seconds: float = 3600.0                  # simulated span
    interval_s: float = 10.0                 # one metric batch per node per interval
    start: datetime = datetime(2026, 1, 1, tzinfo=timezone.utc)
    seed: int = 0
    faults: int | None = None                # how many faults; default about one per four nodes
    fault_kinds: tuple[str, ...] = FAULT_KINDS
    chatter_per_node_hour: float = 12.0      # benign log lines
    host_prefix: str = "sim-node-"
    host_class: str = ""
    # Precursors (see `schedule_precursors`): the share of GPU faults that show a lead-up, how long
    # before the start it begins (seconds, drawn uniformly), and precursor-like episodes on healthy
    # GPUs that end without a fault, per node and simulated day.
    precursor_fraction: float = 0.7
    precursor_lead_s: tuple[float, float] = (1800.0, 21600.0)
    false_alarms_per_node_day: float = 0.2
    precursor_shape: "PrecursorShape" = None  # None: PrecursorShape()

    def __post_init__(self):
        if self.nodes < 1 or self.gpus < 0 or self.seconds <= 0 or self.interval_s <= 0:
            raise ValueError("nodes ≥ 1, gpus ≥ 0, seconds > 0 and interval_s > 0 are needed")
        bad = set(self.fault_kinds) - set(FAULT_KINDS)
        if bad:
            raise ValueError(f"unknown fault kinds {sorted(bad)}; known: {', '.join(FAULT_KINDS)}")
        if self.start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        lo, hi = self.precursor_lead_s
        if not 0 <= self.precursor_fraction <= 1 or not 0 < lo <= hi or self.false_alarms_per_node_day < 0:
            raise ValueError("precursor_fraction in [0, 1], 0 < lead min ≤ lead max and false alarms ≥ 0 are needed")
        if self.precursor_shape is None:
            object.__setattr__(self, "precursor_shape", PrecursorShape())

    @property
    def ticks(self) -> int:
        return max(1, int(math.floor(self.seconds / self.interval_s)))


@dataclass(frozen=True)
class Fault:
    host: str
    node: int
    fault: str
    start: datetime
    end: datetime
    detail: dict = field(default_factory=dict)
    precursor_start: datetime | None = None   # when the lead-up began (it ends at `start`); None: no lead-up
    precursor: str = ""                       # its signal: one of PRECURSOR_SIGNALS

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
        if kind in ("xid_burst", "thermal_runaway", "ecc_growth", "nvlink_errors"):
            if cfg.gpus == 0:
                continue
            detail["gpu"] = int(rng.integers(cfg.gpus))
        if kind == "xid_burst":
            detail["xid"] = int(BURST_XIDS[int(rng.integers(len(BURST_XIDS)))])
        if kind == "nvlink_errors":
            detail["link"] = int(rng.integers(NVLINKS))
        if kind == "service_crash":
            detail["service"] = SERVICE
        if kind == "disk_fill":
            detail["mount"] = "/"
        out.append(Fault(f"{cfg.host_prefix}{node:04d}", node, kind, cfg.start + timedelta(seconds=begin),
                         cfg.start + timedelta(seconds=finish), detail))
    return sorted(out, key=lambda f: (f.start, f.host))


# What each precursor looks like on the affected GPU. Real parts often warn before they fail:
# corrected ECC errors climb and rows get remapped before an uncorrectable error or a GPU lost
# from the bus; PCIe replays rise before link trouble; NVLink CRC errors before an NVLink fault;
# clocks throttle and temperature creeps before a thermal event; and application-class XIDs
# turn up sporadically ahead of a hard XID.
PRECURSOR_SIGNALS = ("ecc", "pcie", "nvlink", "thermal")
SOFT_XIDS = (13, 31, 94)  # warning-class XIDs (restart_app in detectors/xid_table.yaml)


def precursor_signal(f: "Fault") -> str:
    """The lead-up a fault shows, "" when its kind has none (host faults grow within the fault)."""
    if f.fault == "ecc_growth":
        return "ecc"
    if f.fault == "thermal_runaway":
        return "thermal"
    if f.fault == "nvlink_errors":
        return "nvlink"
    if f.fault == "xid_burst":
        return {48: "ecc", 94: "ecc", 95: "ecc", 64: "ecc", 74: "nvlink"}.get(f.detail.get("xid"), "pcie")
    return ""


@dataclass(frozen=True)
class PrecursorShape:
    """Rates at full strength; strength rises as ((t - precursor start) / lead)², so the signal is
    faint for most of the lead-up and clear only close to the fault. Counts are Poisson, so a
    single batch is noisy. Kept below every default detector rule: no uncorrected ECC, no
    critical XID, temperature at most `thermal_creep_c` above normal (the GPU overheat rule is
    at 85 °C, the clean-fleet tests keep pre-fault temperatures below 82 °C)."""
    ecc_corrected_per_s: float = 0.05     # normal: 0.0002
    remap_per_s: float = 0.0005           # each one also logs XID 63 (benign)
    pcie_replay_per_s: float = 0.05       # normal: flat
    nvlink_crc_per_s: float = 0.1         # normal: flat
    thermal_creep_c: float = 3.0
    throttle_chance: float = 0.4          # per tick: sw_thermal set and the SM clock dips
    soft_xid_per_s: float = 1 / 1800      # xid_burst lead-ups only; never on false alarms


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
    fault: "Fault | None" = None


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
        windows.append(Precursor(f.host, f.node, f.detail["gpu"], signal, begin, f.start, f.detail.get("link", 0),
                                 f.fault == "xid_burst", f))
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
            begin = cfg.start + timedelta(seconds=float(rng.uniform(cfg.interval_s, max(cfg.interval_s, span - length))))
            end = min(begin + timedelta(seconds=length), cfg.start + timedelta(seconds=span))
            if all(end + margin <= a or begin - margin >= b for a, b in taken.get(node, [])):
                break
        else:
            continue  # the fleet is too busy with faults for another
        taken.setdefault(node, []).append((begin, end))
        out.append(Precursor(f"{cfg.host_prefix}{node:04d}", node, gpu, signal, begin, end, link))
    return out


def write_ground_truth(faults: list[Fault], path: str | Path) -> None:
    """One JSON line per fault: host, fault, start, end (ISO UTC) and its detail fields."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("".join(json.dumps(f.truth(), sort_keys=True) + "\n" for f in faults))


def read_ground_truth(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


class FleetSimulator:
    """The fleet's state, advanced one tick (one interval) at a time; `tick(k)` must go 0, 1, 2, ..."""

    def __init__(self, cfg: SimConfig):
        self.cfg = cfg
        self.faults_, self.precursors_ = schedule_precursors(cfg, schedule_faults(cfg))
        self.prng_ = np.random.default_rng([cfg.seed, 4])  # precursor noise: the normal streams stay as they were
        self._pw = self._precursor_arrays()
        self.rng_ = np.random.default_rng([cfg.seed, 2])
        n, g = cfg.nodes, cfg.gpus
        self.hosts_ = [f"{cfg.host_prefix}{i:04d}" for i in range(n)]
        self.labels_ = {"class": cfg.host_class or f"sim-{g}gpu", **{f"gpu{i}.pci": gpu_pci(i) for i in range(g)}}
        r = self.rng_
        self.phase_ = r.uniform(0, 1, n)
        self.load_noise_ = np.zeros(n)
        self.gpu_noise_ = np.zeros((n, g))
        self.temp_noise_ = np.zeros((n, g))
        self.fs_free_ = r.uniform(35, 80, n)
        # counters
        self.io_time_ = r.uniform(1e4, 1e6, n)
        self.net_ = np.floor(r.uniform(0, 50, (n, 4)))  # rx_errors, tx_errors, rx_drops, tx_drops
        self.oom_ = np.zeros(n)
        self.ecc_ = np.floor(r.uniform(0, 20, (n, g, 4)))  # vol.corr, vol.uncorr, agg.corr, agg.uncorr
        self.ecc_[:, :, 1] = 0
        self.ecc_[:, :, 2] += self.ecc_[:, :, 0]
        self.remap_ = np.zeros((n, g, 4))  # correctable, uncorrectable, pending, failure
        self.pcie_replay_ = np.floor(r.uniform(0, 5, (n, g)))
        self.nvlink_ = np.zeros((n, g, NVLINKS, len(S.NVLINK_COUNTERS)))
        self.uptime_ = r.uniform(1e4, 1e6, n)
        self._names, self._counters = self._series_names()

    def _series_names(self) -> tuple[list[str], list[str]]:
        host = ([f"cpu.{m}_pct" for m in ("user", "system", "iowait", "idle")] + ["cpu.util_pct", "load.1",
                "mem.total_bytes", "mem.available_bytes", "mem.available_pct", "swap.used_pct",
                S.fs("/", "free_pct"), S.fs("/", "free_bytes"), S.fs("/", "readonly"), "disk.nvme0n1.io_time_s",
                "net.eth0.rx_errors", "net.eth0.tx_errors", "net.eth0.rx_drops", "net.eth0.tx_drops",
                "temp.coretemp.package_c", f"service.{SERVICE}.up", "vmstat.oom_kill"])
        counters = ["disk.nvme0n1.io_time_s", "net.eth0.rx_errors", "net.eth0.tx_errors", "net.eth0.rx_drops",
                    "net.eth0.tx_drops", "vmstat.oom_kill"]
        self._host_width = len(host)
        gpu_names: list[str] = []
        for i in range(self.cfg.gpus):
            per = ["up", "util_pct", "mem_util_pct", "mem.used_bytes", "mem.total_bytes", "temperature_c", "power_w",
                   "power_limit_w", "clock.sm_mhz", "clock.mem_mhz", "throttle.reasons",
                   *(f"throttle.{b}" for b in S.THROTTLE_BITS),
                   "ecc.volatile.corrected", "ecc.volatile.uncorrected", "ecc.aggregate.corrected",
                   "ecc.aggregate.uncorrected", "remap.correctable", "remap.uncorrectable", "remap.pending",
                   "remap.failure", "pcie.replay",
                   *(f"nvlink{l}.{c}" for l in range(NVLINKS) for c, _ in S.NVLINK_COUNTERS)]
            self._gpu_width = len(per)
            gpu_names += [S.gpu(i, p) for p in per]
            counters += [S.gpu(i, p) for p in per if p.startswith(("ecc.", "pcie.", "nvlink"))
                         or p in ("remap.correctable", "remap.uncorrectable")]
        return host + gpu_names, counters

    @property
    def false_alarms_(self) -> list[Precursor]:
        return [w for w in self.precursors_ if w.fault is None]

    def _precursor_arrays(self) -> dict[str, np.ndarray]:
        """The precursor windows as parallel arrays (tick range, node, GPU, signal), so a tick
        applies all of them with a few vector operations."""
        ws, cfg = self.precursors_, self.cfg

        def tick(t: datetime) -> int:
            return int(math.ceil((t - cfg.start).total_seconds() / cfg.interval_s))

        return {"t0": np.array([tick(w.start) for w in ws], dtype=int),
                "t1": np.array([tick(w.end) for w in ws], dtype=int),
                "node": np.array([w.node for w in ws], dtype=int), "gpu": np.array([w.gpu for w in ws], dtype=int),
                "link": np.array([w.link for w in ws], dtype=int),
                "signal": np.array([PRECURSOR_SIGNALS.index(w.signal) for w in ws], dtype=int),
                "soft_xids": np.array([w.soft_xids for w in ws], dtype=bool)}

    def _apply_precursors(self, k: int, temp, sm_clock, throttle, say) -> None:
        """Add tick k's share of every open precursor window to the GPU state (in place)."""
        pw = self._pw
        on = np.nonzero((pw["t0"] <= k) & (k < pw["t1"]))[0]
        if not len(on):
            return
        r, dt, shape = self.prng_, self.cfg.interval_s, self.cfg.precursor_shape
        node, gpu, signal = pw["node"][on], pw["gpu"][on], pw["signal"][on]
        strength = ((k - pw["t0"][on] + 1) / np.maximum(pw["t1"][on] - pw["t0"][on], 1)) ** 2
        is_ = {name: signal == j for j, name in enumerate(PRECURSOR_SIGNALS)}
        rate = np.select([is_["ecc"], is_["pcie"], is_["nvlink"]],
                         [shape.ecc_corrected_per_s, shape.pcie_replay_per_s, shape.nvlink_crc_per_s], 0.0)
        counts = r.poisson(rate * dt * strength)
        np.add.at(self.ecc_[:, :, 0], (node[is_["ecc"]], gpu[is_["ecc"]]), counts[is_["ecc"]])
        np.add.at(self.pcie_replay_, (node[is_["pcie"]], gpu[is_["pcie"]]), counts[is_["pcie"]])
        nv = is_["nvlink"]
        np.add.at(self.nvlink_[:, :, :, 2], (node[nv], gpu[nv], pw["link"][on][nv]), counts[nv])
        hot = is_["thermal"]
        temp[node[hot], gpu[hot]] += shape.thermal_creep_c * strength[hot] + r.normal(0, 0.3, int(hot.sum()))
        throttled = hot & (r.random(len(on)) < shape.throttle_chance * strength)
        throttle[node[throttled], gpu[throttled]] = S.THROTTLE_BITS["sw_thermal"]
        sm_clock[node[throttled], gpu[throttled]] -= r.uniform(45, 180, int(throttled.sum()))
        # Discrete events are rare: a Python loop over the few that happen this tick.
        remapped = is_["ecc"] & (r.random(len(on)) < shape.remap_per_s * dt * strength)
        for i, g in zip(node[remapped].tolist(), gpu[remapped].tolist()):
            self.remap_[i, g, 0] += 1
            say(i, f"kernel: [{self.uptime_[i]:.6f}] NVRM: Xid (PCI:{gpu_pci(g)}): 63, pid='<unknown>', "
                   f"name=<unknown>, Row Remapper: New row (0x{int(r.integers(1 << 20)):08x}) was marked for remapping")
        soft = pw["soft_xids"][on] & (r.random(len(on)) < shape.soft_xid_per_s * dt * strength)
        for i, g in zip(node[soft].tolist(), gpu[soft].tolist()):
            xid = SOFT_XIDS[int(r.integers(len(SOFT_XIDS)))]
            say(i, f"kernel: [{self.uptime_[i]:.6f}] NVRM: Xid (PCI:{gpu_pci(g)}): {xid}, "
                   f"pid={int(r.integers(2000, 60000))}, name=python3, Graphics Exception: ESR 0x504224=0x80000002",
                float(r.uniform(0, dt)))

    def time_of(self, k: int) -> datetime:
        return self.cfg.start + timedelta(seconds=k * self.cfg.interval_s)

    def active(self, k: int) -> list[tuple[Fault, float, bool, bool]]:
        """Faults active at tick k: (fault, progress 0..1, first tick, last tick)."""
        t = self.time_of(k)
        dt = timedelta(seconds=self.cfg.interval_s)
        out = []
        for f in self.faults_:
            if f.start <= t < f.end:
                p = (t - f.start) / (f.end - f.start)
                out.append((f, p, t - dt < f.start, t + dt >= f.end))
        return out

    def tick(self, k: int) -> tuple[list[MetricBatch], list[LogEvent]]:
        """The records of tick k: one metric batch per node, and the log lines of the interval."""
        cfg, r = self.cfg, self.rng_
        n, g, dt = cfg.nodes, cfg.gpus, cfg.interval_s
        now = self.time_of(k)
        secs = (now - cfg.start.replace(hour=0, minute=0, second=0, microsecond=0)).total_seconds()
        # load: daily cycle + AR(1) noise, per node
        self.load_noise_ = 0.9 * self.load_noise_ + r.normal(0, 0.03, n)
        load = np.clip(0.55 + 0.3 * np.sin(2 * np.pi * (secs / 86400 + self.phase_)) + self.load_noise_, 0.02, 1.0)
        self.uptime_ += dt
        user = 70 * load + r.normal(0, 1.5, n)
        system = 6 * load + np.abs(r.normal(0, 0.5, n))
        iowait = np.abs(r.normal(1.0, 0.5, n))
        user = np.clip(user, 0, 100 - system - iowait)
        idle = 100 - user - system - iowait
        mem_avail = MEM_TOTAL * np.clip(0.75 - 0.45 * load + r.normal(0, 0.01, n), 0.05, 0.95)
        swap = np.abs(r.normal(0.5, 0.1, n))
        self.fs_free_ = np.clip(self.fs_free_ - r.uniform(0, 0.0005, n) * dt / 10, 0.1, 100)
        fs_free = self.fs_free_.copy()
        readonly = np.zeros(n)
        service_up = np.ones(n)
        self.io_time_ += dt * (0.05 + 0.3 * load)
        self.net_ += r.poisson(0.002 * dt, (n, 4))
        cpu_temp = 40 + 35 * load + r.normal(0, 1, n)
        # GPUs: load follows the node's with its own noise; temperature and power follow GPU load
        self.gpu_noise_ = 0.8 * self.gpu_noise_ + r.normal(0, 0.04, (n, g))
        gload = np.clip(load[:, None] * 1.05 + self.gpu_noise_, 0, 1)
        self.temp_noise_ = 0.9 * self.temp_noise_ + r.normal(0, 0.4, (n, g))
        temp = 33 + 42 * gload + self.temp_noise_
        power = 75 + 590 * gload + r.normal(0, 8, (n, g))
        sm_clock = np.where(gload > 0.05, 1980.0, 345.0) - np.floor(r.uniform(0, 30, (n, g)))
        throttle = np.zeros((n, g))
        gpu_up = np.ones((n, g))
        self.ecc_[:, :, 0] += r.poisson(0.0002 * dt, (n, g))
        self.ecc_[:, :, 2] = np.maximum(self.ecc_[:, :, 2], self.ecc_[:, :, 0])
        logs: list[tuple[int, float, str]] = []  # (node, seconds into the interval, line)

        def say(node: int, line: str, at: float = 0.0) -> None:
            logs.append((node, at, line))

        self._apply_precursors(k, temp, sm_clock, throttle, say)

        for f, p, first, last in self.active(k):
            i, gi = f.node, f.detail.get("gpu", 0)
            pci = gpu_pci(gi)
            if f.fault == "thermal_runaway":
                # ramps, then levels off where the GPU's own slowdown holds it (real parts stop near 95 °C)
                temp[i, gi] = min(temp[i, gi] + 52 * p, 91.5 + 5 * p + r.normal(0, 0.3))
                if temp[i, gi] > 83:
                    throttle[i, gi] = S.THROTTLE_BITS["sw_thermal"] | (S.THROTTLE_BITS["hw_thermal"] if temp[i, gi] > 90 else 0)
                    sm_clock[i, gi] = max(600.0, 1980 - 40 * (temp[i, gi] - 83))
                    power[i, gi] *= 0.8
            elif f.fault == "ecc_growth":
                self.ecc_[i, gi, 0] += np.floor(2 ** (10 * p)) + r.poisson(1)
                if r.random() < 0.2 + 0.6 * p:
                    self.remap_[i, gi, 0] += 1
                    say(i, f"kernel: [{self.uptime_[i]:.6f}] NVRM: Xid (PCI:{pci}): 63, pid='<unknown>', name=<unknown>, "
                           f"Row Remapper: New row (0x{int(r.integers(1 << 20)):08x}) was marked for remapping")
                if p > 0.5 and r.random() < p:
                    say(i, f"kernel: [{self.uptime_[i]:.6f}] NVRM: Xid (PCI:{pci}): 92, pid='<unknown>', name=<unknown>, "
                           f"High single-bit ECC error rate")
                if last:
                    self.ecc_[i, gi, 1] += 1
                    self.remap_[i, gi, 1] += 1
                    self.remap_[i, gi, 2] = 1
                    say(i, f"kernel: [{self.uptime_[i]:.6f}] NVRM: Xid (PCI:{pci}): 48, pid={int(r.integers(2000, 60000))}, "
                           f"name=python3, DBE (double bit error) ECC error", dt / 2)
            elif f.fault == "xid_burst":
                xid = f.detail["xid"]
                count = 3 if first else int(r.random() < 0.3)
                for j in range(count):
                    text = {79: "GPU has fallen off the bus.", 48: "DBE (double bit error) ECC error",
                            94: "Contained: SM (0x1). RST: No, D-RST: No", 74: "NVLink: fatal error detected on link 3",
                            }.get(xid, "Graphics Exception: ESR 0x504224=0x80000002")
                    say(i, f"kernel: [{self.uptime_[i] + j:.6f}] NVRM: Xid (PCI:{pci}): {xid}, "
                           f"pid={int(r.integers(2000, 60000))}, name=python3, {text}", j * 0.5)
                if xid == 79:
                    gpu_up[i, gi] = 0
                    if first:
                        say(i, f"kernel: [{self.uptime_[i] + 1:.6f}] NVRM: GPU {pci}.0: GPU has fallen off the bus.", 1.0)
                elif xid == 48 and first:
                    self.ecc_[i, gi, 1] += 1
                elif xid == 74:
                    self.nvlink_[i, gi, 3, 2] += r.poisson(40)
            elif f.fault == "memory_leak":
                mem_avail[i] = MEM_TOTAL * max(0.004, (0.75 - 0.45 * load[i]) * (1 - p) ** 1.5)
                swap[i] = min(100.0, swap[i] + 95 * p ** 2)
                if last:
                    self.oom_[i] += 1
                    say(i, f"kernel: [{self.uptime_[i]:.6f}] Out of memory: Killed process {int(r.integers(2000, 60000))} "
                           f"(python3) total-vm:{int(MEM_TOTAL / 1024 * 0.9)}kB, anon-rss:{int(MEM_TOTAL / 1024 * 0.85)}kB, "
                           f"file-rss:10240kB, shmem-rss:0kB, UID:1000 pgtables:900000kB oom_score_adj:0", dt / 2)
            elif f.fault == "disk_fill":
                fs_free[i] = max(0.2, self.fs_free_[i] * (1 - p) ** 2)
                if last:
                    say(i, f"kernel: [{self.uptime_[i]:.6f}] EXT4-fs warning (device nvme0n1p2): ext4_dx_add_entry:2525: "
                           f"Directory (ino: 2) index full, reach max htree level :2")
            elif f.fault == "service_crash":
                service_up[i] = 0
                if first:
                    say(i, f"systemd[1]: {SERVICE}.service: Main process exited, code=killed, status=9/KILL")
                    say(i, f"systemd[1]: {SERVICE}.service: Failed with result 'signal'.", 0.1)
                else:
                    say(i, f"systemd[1]: {SERVICE}.service: Scheduled restart job, restart counter is at {int(p * 10) + 1}.")
                    say(i, f"systemd[1]: {SERVICE}.service: Main process exited, code=exited, status=1/FAILURE", 0.2)
                if last:
                    say(i, f"systemd[1]: Started {SERVICE}.service - Slurm node daemon.", dt * 0.9)
            elif f.fault == "nvlink_errors":
                link = f.detail["link"]
                self.nvlink_[i, gi, link, 2] += np.floor(5 * 2 ** (6 * p)) + r.poisson(2)  # crc_flit
                self.nvlink_[i, gi, link, 0] += r.poisson(1 + 10 * p)                        # replay
                if p > 0.6 and r.random() < 0.5:
                    self.nvlink_[i, gi, link, 1] += 1                                        # recovery
                    say(i, f"kernel: [{self.uptime_[i]:.6f}] NVRM: Xid (PCI:{pci}): 74, pid='<unknown>', name=<unknown>, "
                           f"NVLink: fatal error detected on link {link}(0x0, 0x0, 0x10000, 0x0, 0x0, 0x0, 0x0)")

        # benign chatter: Poisson lines per node per interval
        for i in np.nonzero(r.poisson(cfg.chatter_per_node_hour * dt / 3600, n))[0]:
            tpl = CHATTER[int(r.integers(len(CHATTER)))]
            say(int(i), tpl.format(n=int(r.integers(1, 9999)), pid=int(r.integers(300, 60000)), a=int(r.integers(255)),
                                   b=int(r.integers(1, 255)), port=int(r.integers(30000, 60000)), up=self.uptime_[i],
                                   pci=gpu_pci(int(r.integers(max(g, 1))))), float(r.uniform(0, dt)))

        agg = self.ecc_.copy()
        agg[:, :, 2] = np.maximum(self.ecc_[:, :, 2], self.ecc_[:, :, 0])
        agg[:, :, 3] = np.maximum(self.ecc_[:, :, 3], self.ecc_[:, :, 1])
        self.ecc_[:, :, 2:] = agg[:, :, 2:]

        host_cols = np.column_stack([
            user, system, iowait, idle, 100 - idle - iowait, CORES * load + r.normal(0, 0.5, n), np.full(n, MEM_TOTAL),
            np.round(mem_avail, -3), 100 * mem_avail / MEM_TOTAL, swap, fs_free, np.round(FS_TOTAL * fs_free / 100, -3),
            readonly, self.io_time_, *self.net_.T, cpu_temp, service_up, self.oom_])
        cols = [host_cols]
        if g:
            gl = gload.copy()
            gl[gpu_up == 0] = 0
            throttle_bits = [(throttle.astype(int) & bit > 0).astype(float) for bit in S.THROTTLE_BITS.values()]
            gpu_block = np.stack([
                gpu_up, 100 * gl, 60 * gl, np.round(GPU_MEM_TOTAL * (0.05 + 0.85 * gl), -3), np.full((n, g), GPU_MEM_TOTAL),
                temp, power, np.full((n, g), 700.0), sm_clock, np.full((n, g), 2619.0), throttle, *throttle_bits,
                *np.moveaxis(self.ecc_, 2, 0), *np.moveaxis(self.remap_, 2, 0), self.pcie_replay_,
                *np.moveaxis(self.nvlink_.reshape(n, g, -1), 2, 0)], axis=2)  # (n, g, per-gpu)
            # A GPU off the bus answers nothing but "lost": every value but `up` is null.
            gpu_block[:, :, 1:][gpu_up == 0] = np.nan
            cols.append(gpu_block.reshape(n, -1))
        matrix = np.round(np.concatenate(cols, axis=1), 3)
        names, counters = self._names, self._counters
        batches = []
        for i, host in enumerate(self.hosts_):
            row = matrix[i].tolist()
            values = dict(zip(names, row))
            if g and not gpu_up[i].all():
                values = {k: (None if v != v else v) for k, v in values.items()}
            batches.append(MetricBatch(host=host, time=now, source="sim", labels=self.labels_, values=values,
                                       counters=counters))
        events = []
        for i, at, line in sorted(logs, key=lambda x: (x[0], x[1])):
            when = now + timedelta(seconds=round(at, 3))
            parsed = parse_line(line, now=when)
            events.append(LogEvent(host=self.hosts_[i], time=when, source="sim", line=line, kind=parsed.kind,
                                   severity=parsed.severity, fields=parsed.fields))
        return batches, events


@dataclass
class SimStats:
    ticks: int = 0
    batches: int = 0
    values: int = 0
    logs: int = 0
    faults_started: int = 0
    wall_s: float = 0.0


# The series that shows each fault best, for the progress line of a demo.
def _fault_signal(f: Fault) -> str:
    g = f"gpu{f.detail.get('gpu', 0)}"
    return {"thermal_runaway": f"{g}.temperature_c", "ecc_growth": f"{g}.ecc.volatile.corrected",
            "memory_leak": "mem.available_pct", "disk_fill": "fs./.free_pct", "service_crash": f"service.{SERVICE}.up",
            "nvlink_errors": f"{g}.nvlink{f.detail.get('link', 0)}.crc_flit", "xid_burst": f"{g}.up"}[f.fault]


def run_simulation(cfg: SimConfig, publish: Callable[[list], object], *, realtime: bool = False, speed: float = 1.0,
                   truth_path: str | Path | None = None, progress: Callable[[str], None] | None = None,
                   flush_every: int = 5000, stop: Callable[[], bool] | None = None) -> SimStats:
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
    say(f"simulating {cfg.nodes} nodes × {cfg.gpus} GPUs, {cfg.ticks} ticks of {cfg.interval_s:g}s from "
        f"{iso(cfg.start)} (seed {cfg.seed}, {len(sim.faults_)} faults"
        + (f", ground truth in {truth_path})" if truth_path else ")"))
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
            say(f"  {iso(sim.time_of(k))} tick {k + 1}/{cfg.ticks}  {stats.batches} batches  {stats.logs} logs  "
                f"{(stats.batches + stats.logs) / max(wall, 1e-9):.0f} rec/s" + ("  | " + "; ".join(shown) if shown else ""))
        for f, _, _, last in active:
            if last:
                say(f"  fault ■ {f.host} {f.fault} over at {iso(f.end)}")
    if pending:
        publish(pending)
    for (host, kind), (_, held) in sorted(log_shown.items()):
        if held:
            say(f"  log     {host} {kind}: {held} more lines like the last one shown")
    stats.wall_s = time.monotonic() - t0
    say(f"done: {stats.ticks} ticks, {stats.batches} metric batches ({stats.values} values), {stats.logs} log "
        f"events, {stats.faults_started} faults in {stats.wall_s:.1f}s "
        f"({(stats.batches + stats.logs) / max(stats.wall_s, 1e-9):.0f} records/s, "
        f"{stats.values / max(stats.wall_s, 1e-9):.0f} values/s)")
    return stats
