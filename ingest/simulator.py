"""A synthetic GPU fleet: its configuration, its state, and one tick of its records at a time.

N nodes with G GPUs each report the same series as the real host and GPU exporters (see
docs/ingest.md): daily load cycles with per-node phase, AR(1) noise, GPU temperature, power and
clocks that follow GPU load, counters that only grow, and kernel/service log chatter (the lines
go through the same parser as `fleetmedic export logs`). Faults are scheduled up front from the
seed and written as ground truth, one JSON line per fault (`ingest.sim_schedule`).

Everything comes from `numpy.random.default_rng(seed)` and a simulated clock (`start`,
`interval_s`), so a seed and a configuration give the same records byte for byte, whether the
run is paced in real time (`speed` simulated seconds per wall second) or as fast as possible
(`ingest.sim_run.run_simulation` drives a whole run).

Each fault kind is one class in `ingest.sim_faults.REGISTRY` (what it carries, its lead-up, what
it does to a tick); the lead-ups and false alarms are in `ingest.sim_precursors`.

>>> sim = FleetSimulator(SimConfig(nodes=2, gpus=1, seconds=60, interval_s=10, seed=1))
>>> batches, logs = sim.tick(0)
>>> [b.host for b in batches], batches[0].values["gpu0.temperature_c"] > 20
(['sim-node-0000', 'sim-node-0001'], True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np

from fleetmedic.schemas import LogEvent, MetricBatch

from . import series as S
from .logparse import parse_line
from .sim_faults import FAULT_KINDS, MEM_TOTAL, NVLINKS, REGISTRY, SERVICE, TickState, gpu_pci
from .sim_precursors import Precursor, PrecursorEffects, PrecursorShape, schedule_precursors
from .sim_schedule import Fault, schedule_faults

CORES = 64
GPU_MEM_TOTAL = 80 * 2**30
FS_TOTAL = 2 * 10**12

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


@dataclass(frozen=True)
class SimConfig:
    nodes: int = 8
    gpus: int = 4
    seconds: float = 3600.0  # simulated span
    interval_s: float = 10.0  # one metric batch per node per interval
    start: datetime = datetime(2026, 1, 1, tzinfo=UTC)
    seed: int = 0
    faults: int | None = None  # how many faults; default about one per four nodes
    fault_kinds: tuple[str, ...] = FAULT_KINDS
    chatter_per_node_hour: float = 12.0  # benign log lines
    host_prefix: str = "sim-node-"
    host_class: str = ""
    # Precursors (see `schedule_precursors`): the share of GPU faults that show a lead-up, how long
    # before the start it begins (seconds, drawn uniformly), and precursor-like episodes on healthy
    # GPUs that end without a fault, per node and simulated day.
    precursor_fraction: float = 0.7
    precursor_lead_s: tuple[float, float] = (1800.0, 21600.0)
    false_alarms_per_node_day: float = 0.2
    precursor_shape: PrecursorShape = field(default_factory=PrecursorShape)

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


class FleetSimulator:
    """The fleet's state, advanced one tick (one interval) at a time; `tick(k)` must go 0, 1, 2, ..."""

    def __init__(self, cfg: SimConfig):
        self.cfg = cfg
        self.faults_, self.precursors_ = schedule_precursors(cfg, schedule_faults(cfg))
        self.precursor_effects_ = PrecursorEffects(cfg, self.precursors_)
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
        host = [f"cpu.{m}_pct" for m in ("user", "system", "iowait", "idle")] + [
            "cpu.util_pct",
            "load.1",
            "mem.total_bytes",
            "mem.available_bytes",
            "mem.available_pct",
            "swap.used_pct",
            S.fs("/", "free_pct"),
            S.fs("/", "free_bytes"),
            S.fs("/", "readonly"),
            "disk.nvme0n1.io_time_s",
            "net.eth0.rx_errors",
            "net.eth0.tx_errors",
            "net.eth0.rx_drops",
            "net.eth0.tx_drops",
            "temp.coretemp.package_c",
            f"service.{SERVICE}.up",
            "vmstat.oom_kill",
        ]
        counters = [
            "disk.nvme0n1.io_time_s",
            "net.eth0.rx_errors",
            "net.eth0.tx_errors",
            "net.eth0.rx_drops",
            "net.eth0.tx_drops",
            "vmstat.oom_kill",
        ]
        self._host_width = len(host)
        gpu_names: list[str] = []
        for i in range(self.cfg.gpus):
            per = [
                "up",
                "util_pct",
                "mem_util_pct",
                "mem.used_bytes",
                "mem.total_bytes",
                "temperature_c",
                "power_w",
                "power_limit_w",
                "clock.sm_mhz",
                "clock.mem_mhz",
                "throttle.reasons",
                *(f"throttle.{b}" for b in S.THROTTLE_BITS),
                "ecc.volatile.corrected",
                "ecc.volatile.uncorrected",
                "ecc.aggregate.corrected",
                "ecc.aggregate.uncorrected",
                "remap.correctable",
                "remap.uncorrectable",
                "remap.pending",
                "remap.failure",
                "pcie.replay",
                *(f"nvlink{ln}.{c}" for ln in range(NVLINKS) for c, _ in S.NVLINK_COUNTERS),
            ]
            self._gpu_width = len(per)
            gpu_names += [S.gpu(i, p) for p in per]
            counters += [
                S.gpu(i, p)
                for p in per
                if p.startswith(("ecc.", "pcie.", "nvlink")) or p in ("remap.correctable", "remap.uncorrectable")
            ]
        return host + gpu_names, counters

    @property
    def false_alarms_(self) -> list[Precursor]:
        return [w for w in self.precursors_ if w.fault is None]

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

        self.precursor_effects_.apply(k, self, temp, sm_clock, throttle, say)

        state = TickState(
            self, r, dt, load, temp, power, sm_clock, throttle, gpu_up, mem_avail, swap, fs_free, service_up, say
        )
        for f, p, first, last in self.active(k):
            REGISTRY[f.fault].apply(f, p, first, last, state)

        # benign chatter: Poisson lines per node per interval
        for i in np.nonzero(r.poisson(cfg.chatter_per_node_hour * dt / 3600, n))[0].tolist():
            tpl = CHATTER[int(r.integers(len(CHATTER)))]
            say(
                int(i),
                tpl.format(
                    n=int(r.integers(1, 9999)),
                    pid=int(r.integers(300, 60000)),
                    a=int(r.integers(255)),
                    b=int(r.integers(1, 255)),
                    port=int(r.integers(30000, 60000)),
                    up=self.uptime_[i],
                    pci=gpu_pci(int(r.integers(max(g, 1)))),
                ),
                float(r.uniform(0, dt)),
            )

        agg = self.ecc_.copy()
        agg[:, :, 2] = np.maximum(self.ecc_[:, :, 2], self.ecc_[:, :, 0])
        agg[:, :, 3] = np.maximum(self.ecc_[:, :, 3], self.ecc_[:, :, 1])
        self.ecc_[:, :, 2:] = agg[:, :, 2:]

        host_cols = np.column_stack(
            [
                user,
                system,
                iowait,
                idle,
                100 - idle - iowait,
                CORES * load + r.normal(0, 0.5, n),
                np.full(n, MEM_TOTAL),
                np.round(mem_avail, -3),
                100 * mem_avail / MEM_TOTAL,
                swap,
                fs_free,
                np.round(FS_TOTAL * fs_free / 100, -3),
                readonly,
                self.io_time_,
                *self.net_.T,
                cpu_temp,
                service_up,
                self.oom_,
            ]
        )
        cols = [host_cols]
        if g:
            gl = gload.copy()
            gl[gpu_up == 0] = 0
            throttle_bits = [(throttle.astype(int) & bit > 0).astype(float) for bit in S.THROTTLE_BITS.values()]
            gpu_block = np.stack(
                [
                    gpu_up,
                    100 * gl,
                    60 * gl,
                    np.round(GPU_MEM_TOTAL * (0.05 + 0.85 * gl), -3),
                    np.full((n, g), GPU_MEM_TOTAL),
                    temp,
                    power,
                    np.full((n, g), 700.0),
                    sm_clock,
                    np.full((n, g), 2619.0),
                    throttle,
                    *throttle_bits,
                    *np.moveaxis(self.ecc_, 2, 0),
                    *np.moveaxis(self.remap_, 2, 0),
                    self.pcie_replay_,
                    *np.moveaxis(self.nvlink_.reshape(n, g, -1), 2, 0),
                ],
                axis=2,
            )  # (n, g, per-gpu)
            # A GPU off the bus answers nothing but "lost": every value but `up` is null.
            gpu_block[:, :, 1:][gpu_up == 0] = np.nan
            cols.append(gpu_block.reshape(n, -1))
        matrix = np.round(np.concatenate(cols, axis=1), 3)
        names, counters = self._names, self._counters
        batches = []
        for i, host in enumerate(self.hosts_):
            row = matrix[i].tolist()
            values = dict(zip(names, row, strict=True))
            if g and not gpu_up[i].all():
                values = {k: (None if v != v else v) for k, v in values.items()}
            batches.append(
                MetricBatch(host=host, time=now, source="sim", labels=self.labels_, values=values, counters=counters)
            )
        events = []
        for i, at, line in sorted(logs, key=lambda x: (x[0], x[1])):
            when = now + timedelta(seconds=round(at, 3))
            parsed = parse_line(line, now=when)
            events.append(
                LogEvent(
                    host=self.hosts_[i],
                    time=when,
                    source="sim",
                    line=line,
                    kind=parsed.kind,
                    severity=parsed.severity,
                    fields=parsed.fields,
                )
            )
        return batches, events
