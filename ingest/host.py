"""This machine's metrics, one `MetricBatch` per interval (psutil and /proc).

CPU time by mode (percent of the interval), load, memory and swap, free space and read-only
state per mounted filesystem, disk busy time, network errors and drops, temperatures the kernel
exposes, the kernel's OOM-kill count, and whether named services or processes are up. Series
names are in docs/ingest.md. The first collection has no CPU percentages (they need two
readings); counters are sent as raw totals and listed in `counters`.

>>> c = HostCollector(watch=["definitely-not-running-xyz", "web=no-such-process.py"])
>>> v, counters = c.collect()
>>> v["service.definitely-not-running-xyz.up"], v["service.web.up"], "mem.available_bytes" in v
(0.0, 0.0, True)
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import psutil

from . import series as S

# Filesystems that say nothing about a node's health.
_SKIP_FS = {
    "squashfs",
    "tmpfs",
    "devtmpfs",
    "overlay",
    "proc",
    "sysfs",
    "cgroup",
    "cgroup2",
    "nsfs",
    "autofs",
    "fuse.snapfuse",
    "fuse.lxcfs",
    "tracefs",
    "debugfs",
    "securityfs",
    "configfs",
    "ramfs",
}


SYSTEMD_RUNTIME = Path("/run/systemd/system")  # exists only when systemd is the running init


def _systemd_active(name: str) -> bool | None:
    """True/False from systemctl when it knows the unit; None when there is no systemd here."""
    systemctl = shutil.which("systemctl")
    if not systemctl or not SYSTEMD_RUNTIME.is_dir():
        return None
    unit = name if "." in name else name + ".service"
    try:
        out = subprocess.run(
            [systemctl, "show", "--property=LoadState,ActiveState", unit], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    props = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)
    if out.returncode != 0 or props.get("LoadState") in (None, "not-found"):
        return None  # systemd does not know it: look for a process instead
    return props.get("ActiveState") == "active"


def _process_running(name: str) -> bool:
    for proc in psutil.process_iter(["name", "cmdline"]):
        try:
            info = proc.info
            if info["name"] == name:
                return True
            cmd = info["cmdline"] or []
            if cmd and (os.path.basename(cmd[0]) == name or (len(cmd) > 1 and os.path.basename(cmd[1]) == name)):
                return True
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return False


def _vmstat(path: str = "/proc/vmstat") -> dict[str, int]:
    try:
        return {k: int(v) for k, v in (line.split() for line in Path(path).read_text().splitlines())}
    except (OSError, ValueError):
        return {}


class HostCollector:
    """Reads this host's metrics; keeps the previous CPU times to turn them into percentages."""

    def __init__(self, watch: list[str] | tuple[str, ...] = (), mounts: list[str] | None = None) -> None:
        # "NAME" watches the unit or process NAME; "NAME=PROCESS" reports process PROCESS as
        # service NAME (a supervised program whose process is `python demo_http.py` is still `demo`).
        self.watch = [tuple(w.split("=", 1)) if "=" in w else (w, w) for w in watch]
        self.mounts = mounts  # None: every real mounted filesystem
        self.cpu_times_ = psutil.cpu_times()

    def collect(self) -> tuple[dict[str, float | None], list[str]]:
        """(values, counter names) for one interval."""
        v: dict[str, float | None] = {}
        counters: list[str] = []
        now = psutil.cpu_times()
        prev, self.cpu_times_ = self.cpu_times_, now
        total = sum(now) - sum(prev)
        if total > 0:
            pct: dict[str, float] = {}
            for mode in S.CPU_MODES:
                if hasattr(now, mode):
                    pct[f"cpu.{mode}_pct"] = round(100 * max(0.0, getattr(now, mode) - getattr(prev, mode)) / total, 3)
            pct["cpu.util_pct"] = round(100 - pct.get("cpu.idle_pct", 0) - pct.get("cpu.iowait_pct", 0), 3)
            v.update(pct)
        load1, load5, load15 = os.getloadavg()
        v.update({"load.1": load1, "load.5": load5, "load.15": load15, "cpu.count": float(psutil.cpu_count() or 0)})
        mem = psutil.virtual_memory()
        v.update(
            {
                "mem.total_bytes": float(mem.total),
                "mem.available_bytes": float(mem.available),
                "mem.available_pct": round(100 * mem.available / mem.total, 3),
            }
        )
        swap = psutil.swap_memory()
        v.update(
            {
                "swap.total_bytes": float(swap.total),
                "swap.used_bytes": float(swap.used),
                "swap.used_pct": float(swap.percent),
            }
        )
        for part in psutil.disk_partitions(all=False):
            if part.fstype in _SKIP_FS or (self.mounts is not None and part.mountpoint not in self.mounts):
                continue
            mount = S.part(part.mountpoint)
            try:
                usage = psutil.disk_usage(part.mountpoint)
            except OSError:
                v[S.fs(mount, "free_pct")] = None  # unreadable right now: say so, do not invent
                continue
            v[S.fs(mount, "free_bytes")] = float(usage.free)
            v[S.fs(mount, "size_bytes")] = float(usage.total)
            v[S.fs(mount, "free_pct")] = round(100 * usage.free / usage.total, 3) if usage.total else None
            v[S.fs(mount, "readonly")] = 1.0 if "ro" in part.opts.split(",") else 0.0
        for dev, io in (psutil.disk_io_counters(perdisk=True) or {}).items():
            if dev.startswith(("loop", "ram")):
                continue
            busy = getattr(io, "busy_time", None)
            if busy is not None:
                name = f"disk.{S.part(dev)}.io_time_s"
                v[name] = busy / 1000.0
                counters.append(name)
        for nic, nio in (psutil.net_io_counters(pernic=True) or {}).items():
            if nic == "lo":
                continue
            for attr, suffix in (
                ("errin", "rx_errors"),
                ("errout", "tx_errors"),
                ("dropin", "rx_drops"),
                ("dropout", "tx_drops"),
            ):
                name = f"net.{S.part(nic)}.{suffix}"
                v[name] = float(getattr(nio, attr))
                counters.append(name)
        try:
            temps = psutil.sensors_temperatures()
        except (AttributeError, OSError):  # not exposed on this kernel / platform
            temps = {}
        for chip, readings in temps.items():
            for i, t in enumerate(readings):
                label = S.part(t.label or f"temp{i + 1}").lower()
                v[f"temp.{S.part(chip)}.{label}_c"] = float(t.current)
        oom = _vmstat().get("oom_kill")
        if oom is not None:
            v["vmstat.oom_kill"] = float(oom)
            counters.append("vmstat.oom_kill")
        for name, target in self.watch:
            up = _systemd_active(target)
            if up is None:
                up = _process_running(target)
            v[f"service.{S.part(name)}.up"] = 1.0 if up else 0.0
        return v, counters
