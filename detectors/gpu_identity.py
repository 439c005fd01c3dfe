"""Which GPU an incident is about: its index and, where known, its PCI bus id.

GPU incidents carry them in `evidence.details` (`gpu_index`, `pci_bus_id`) so that a policy can
pass them to `gpu_reset.yml` (which refuses to run without one of them) instead of guessing GPU 0:

- a per-GPU series is named `gpuN.<metric>` (ingest/series.py): N is the index, and the host's
  batch label `gpuN.pci` (set by the GPU exporter and the simulator) is the bus id;
- an XID log event has `fields.gpu` / `fields.pci` (the NVML exporter) or the kernel line's
  `NVRM: Xid (PCI:0000:3b:00): 79, ...` (the bus id; the kernel line names no index).

    >>> series_gpu("gpu2.temperature_c", {"gpu2.pci": "0000:3b:00.0"})
    {'gpu_index': 2, 'pci_bus_id': '0000:3b:00.0'}
    >>> series_gpu("cpu.util_pct", {})
    {}
"""

from __future__ import annotations

import re

from fleetmedic.schemas import LogEvent

_GPU_SERIES = re.compile(r"^gpu(\d{1,3})\.")
_XID_PCI = re.compile(r"NVRM: Xid \((?:PCI:)?(?P<pci>[0-9a-fA-F]{4,8}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}(?:\.[0-7])?)\)")
_PCI = re.compile(r"^[0-9a-fA-F]{4,8}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}(\.[0-7])?$")


def series_gpu(name: str, labels: dict | None) -> dict:
    """{'gpu_index', 'pci_bus_id' when labelled} for a per-GPU series name, else {}."""
    m = _GPU_SERIES.match(name)
    if m is None:
        return {}
    index = int(m.group(1))
    out: dict = {"gpu_index": index}
    pci = (labels or {}).get(f"gpu{index}.pci")
    if isinstance(pci, str) and _PCI.match(pci):
        out["pci_bus_id"] = pci
    return out


def event_gpu(event: LogEvent) -> dict:
    """{'gpu_index' and/or 'pci_bus_id' where the event names them} for a log event, else {}."""
    out: dict = {}
    index = event.fields.get("gpu")
    if isinstance(index, int) and not isinstance(index, bool) and 0 <= index < 1000:
        out["gpu_index"] = index
    elif isinstance(index, str) and index.isdigit() and len(index) <= 3:
        out["gpu_index"] = int(index)
    pci = event.fields.get("pci")
    if isinstance(pci, str) and _PCI.match(pci):
        out["pci_bus_id"] = pci
    else:
        m = _XID_PCI.search(event.line or "")
        if m is not None:
            out["pci_bus_id"] = m.group("pci")
    return out
