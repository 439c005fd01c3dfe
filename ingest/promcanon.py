"""Known node_exporter and dcgm-exporter series under fleetmedic's own names (docs/ingest.md).

With `fleetmedic export prom --canonical`, a scrape also carries, next to the exposition's own
series, the names the host and GPU exporters use (`gpu0.temperature_c`, `fs./.free_pct`,
`load.1`...), so detectors see one naming whatever collects the node. Rates (CPU percent from
`node_cpu_seconds_total`) are not derived: they need two scrapes.

>>> from ingest.promtext import parse
>>> canonical(parse('DCGM_FI_DEV_GPU_TEMP{gpu="1",UUID="x"} 71\\nnode_load1 3.5\\n'))
({'gpu1.temperature_c': 71.0, 'load.1': 3.5}, [])
"""

from __future__ import annotations

from .promtext import Sample
from .series import fs, gpu, part

MIB = 2**20

# dcgm field → (fleetmedic name under gpu<i>., scale, counter)
DCGM = {
    "DCGM_FI_DEV_GPU_TEMP": ("temperature_c", 1.0, False),
    "DCGM_FI_DEV_POWER_USAGE": ("power_w", 1.0, False),
    "DCGM_FI_DEV_GPU_UTIL": ("util_pct", 1.0, False),
    "DCGM_FI_DEV_MEM_COPY_UTIL": ("mem_util_pct", 1.0, False),
    "DCGM_FI_DEV_SM_CLOCK": ("clock.sm_mhz", 1.0, False),
    "DCGM_FI_DEV_MEM_CLOCK": ("clock.mem_mhz", 1.0, False),
    "DCGM_FI_DEV_FB_USED": ("mem.used_bytes", MIB, False),
    "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION": ("energy_j", 1e-3, True),
    "DCGM_FI_DEV_PCIE_REPLAY_COUNTER": ("pcie.replay", 1.0, True),
    "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL": ("ecc.volatile.corrected", 1.0, True),
    "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL": ("ecc.volatile.uncorrected", 1.0, True),
    "DCGM_FI_DEV_ECC_SBE_AGG_TOTAL": ("ecc.aggregate.corrected", 1.0, True),
    "DCGM_FI_DEV_ECC_DBE_AGG_TOTAL": ("ecc.aggregate.uncorrected", 1.0, True),
    "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS": ("remap.correctable", 1.0, True),
    "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS": ("remap.uncorrectable", 1.0, True),
    "DCGM_FI_DEV_ROW_REMAP_PENDING": ("remap.pending", 1.0, False),
    "DCGM_FI_DEV_ROW_REMAP_FAILURE": ("remap.failure", 1.0, False),
    "DCGM_FI_DEV_RETIRED_SBE": ("retired_pages.sbe", 1.0, True),
    "DCGM_FI_DEV_RETIRED_DBE": ("retired_pages.dbe", 1.0, True),
    "DCGM_FI_DEV_RETIRED_PENDING": ("retired_pages.pending", 1.0, False),
}

# node_exporter metric → (name, label giving the device part or None, counter)
NODE = {
    "node_load1": ("load.1", None, False),
    "node_load5": ("load.5", None, False),
    "node_load15": ("load.15", None, False),
    "node_memory_MemAvailable_bytes": ("mem.available_bytes", None, False),
    "node_memory_MemTotal_bytes": ("mem.total_bytes", None, False),
    "node_vmstat_oom_kill": ("vmstat.oom_kill", None, True),
    "node_disk_io_time_seconds_total": ("disk.{}.io_time_s", "device", True),
    "node_network_receive_errs_total": ("net.{}.rx_errors", "device", True),
    "node_network_transmit_errs_total": ("net.{}.tx_errors", "device", True),
    "node_network_receive_drop_total": ("net.{}.rx_drops", "device", True),
    "node_network_transmit_drop_total": ("net.{}.tx_drops", "device", True),
}


def canonical(samples: list[Sample]) -> tuple[dict[str, float], list[str]]:
    """fleetmedic-named values (and counters) for the samples it knows; others are ignored."""
    values: dict[str, float] = {}
    counters: list[str] = []
    fs_avail: dict[str, float] = {}
    fs_size: dict[str, float] = {}
    for s in samples:
        labels = dict(s.labels)
        if s.name in DCGM and labels.get("gpu", "").isdigit():
            name, scale, counter = DCGM[s.name]
            key = gpu(int(labels["gpu"]), name)
            values[key] = s.value * scale
            if counter:
                counters.append(key)
        elif s.name in NODE:
            name, label, counter = NODE[s.name]
            if label:
                if label not in labels:
                    continue
                name = name.format(part(labels[label]))
            values[name] = s.value
            if counter:
                counters.append(name)
        elif s.name == "node_hwmon_temp_celsius" and "chip" in labels and "sensor" in labels:
            values[f"temp.{part(labels['chip'])}.{part(labels['sensor']).lower()}_c"] = s.value
        elif s.name.startswith("node_filesystem_") and "mountpoint" in labels:
            mount = part(labels["mountpoint"])
            if s.name == "node_filesystem_avail_bytes":
                fs_avail[mount] = values[fs(mount, "free_bytes")] = s.value
            elif s.name == "node_filesystem_size_bytes":
                fs_size[mount] = values[fs(mount, "size_bytes")] = s.value
            elif s.name == "node_filesystem_readonly":
                values[fs(mount, "readonly")] = s.value
    for mount, size in fs_size.items():
        if mount in fs_avail and size > 0:
            values[fs(mount, "free_pct")] = round(100 * fs_avail[mount] / size, 3)
    return values, counters
