"""Series names shared by the real exporters and the simulator (documented in docs/ingest.md).

Names are dotted paths, lower case, with the unit as the last word: `cpu.user_pct`,
`mem.available_bytes`, `fs./.free_pct`, `gpu0.temperature_c`, `gpu0.ecc.volatile.uncorrected`.
"""

from __future__ import annotations

import re

CPU_MODES = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")

# (NVML counter index name, series suffix) for NVLink data-link error counters.
NVLINK_COUNTERS = (("replay", 0), ("recovery", 1), ("crc_flit", 2), ("crc_data", 3))

THROTTLE_BITS = {"hw_slowdown": 0x8, "sw_thermal": 0x20, "hw_thermal": 0x40, "power_brake": 0x80}


def gpu(index: int, name: str) -> str:
    """`gpu(0, "temperature_c")` → ``gpu0.temperature_c``."""
    return f"gpu{index}.{name}"


def fs(mount: str, name: str) -> str:
    """`fs("/", "free_pct")` → ``fs./.free_pct``."""
    return f"fs.{mount}.{name}"


_UNSAFE = re.compile(r"[^A-Za-z0-9._:/-]+")


def part(text: str) -> str:
    """A device, interface or sensor name made safe for a series name (spaces etc. → `_`)."""
    return _UNSAFE.sub("_", text.strip()) or "_"


_HOST_UNSAFE = re.compile(r"[^A-Za-z0-9._:-]+")


def host_name(text: str) -> str:
    """A host name that fits the contracts' Host alphabet."""
    cleaned = _HOST_UNSAFE.sub("-", text.strip()).lstrip("._:-")[:253]
    return cleaned or "unknown-host"
