"""GPU metrics and XID events through NVML (pynvml), one `MetricBatch` per interval.

Per GPU: utilisation, memory, temperature, power and energy, clocks and clock-event (throttle)
reasons, ECC corrected/uncorrected (volatile and aggregate), remapped rows, retired pages, PCIe
replays and link state, NVLink error counters. A field the GPU does not support is left out,
never zero-filled. A GPU that answers NVML_ERROR_GPU_IS_LOST reports `gpu<i>.up` = 0, null for
the series it reported before, and one `gpu_fell_off_bus` log event. XID and double-bit-ECC
events come from an NVML event set and are published as `LogEvent`s (kind "xid" / "ecc_dbe") as
they happen.

The NVML module is a parameter so tests can hand in a fake (there is no GPU on CI).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from fleetmedic.schemas import LogEvent

from . import series as S
from .logparse import XID_SEVERITY

log = logging.getLogger(__name__)


class GpuUnavailable(RuntimeError):
    """No NVIDIA driver or GPU here; the message says which."""


class _Lost(Exception):
    pass


class GpuCollector:
    def __init__(self, nvml: Any = None) -> None:
        if nvml is None:
            with warnings.catch_warnings():  # pynvml 12+ warns that it now wraps nvidia-ml-py: same API
                warnings.simplefilter("ignore", FutureWarning)
                import pynvml
            nvml = pynvml
        self.nvml = nvml
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as exc:
            raise GpuUnavailable(f"NVML could not start ({exc}): no NVIDIA driver or GPU on this machine") from None
        except OSError as exc:
            raise GpuUnavailable(f"NVML library not loadable ({exc}): no NVIDIA driver on this machine") from None
        count = nvml.nvmlDeviceGetCount()
        if count == 0:
            nvml.nvmlShutdown()
            raise GpuUnavailable("the NVIDIA driver is loaded but reports no GPU")
        self.handles_ = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        self.labels_: dict[str, str] = {}
        for i, h in enumerate(self.handles_):
            for key, fn in (
                ("uuid", nvml.nvmlDeviceGetUUID),
                ("pci", lambda handle: nvml.nvmlDeviceGetPciInfo(handle).busId),
                ("name", nvml.nvmlDeviceGetName),
            ):
                try:
                    value = fn(h)
                    self.labels_[S.gpu(i, key)] = value.decode() if isinstance(value, bytes) else str(value)
                except nvml.NVMLError:
                    pass
        self.lost_: set[int] = set()
        self.known_: dict[int, list[str]] = {}  # per GPU, the series it answered last time
        self.event_set_ = None
        self._register_events()

    def _register_events(self) -> None:
        nvml = self.nvml
        wanted = nvml.nvmlEventTypeXidCriticalError | nvml.nvmlEventTypeDoubleBitEccError
        try:
            event_set = nvml.nvmlEventSetCreate()
        except nvml.NVMLError as exc:
            log.warning("NVML events unavailable (%s): XIDs will not be reported by this exporter", exc)
            return
        registered = 0
        for i, h in enumerate(self.handles_):
            try:
                mask = nvml.nvmlDeviceGetSupportedEventTypes(h) & wanted
                if mask:
                    nvml.nvmlDeviceRegisterEvents(h, mask, event_set)
                    registered += 1
            except nvml.NVMLError as exc:
                log.warning("gpu%d: cannot register XID events: %s", i, exc)
        self.event_set_ = event_set if registered else None

    # -- one reading, tolerant of what the GPU does not support
    def _read(self, i: int, fn: Callable[..., Any], *args: Any) -> Any:
        nvml = self.nvml
        try:
            return fn(self.handles_[i], *args)
        except nvml.NVMLError as exc:
            if exc.value == nvml.NVML_ERROR_GPU_IS_LOST:
                raise _Lost() from None
            if exc.value not in (
                nvml.NVML_ERROR_NOT_SUPPORTED,
                nvml.NVML_ERROR_INVALID_ARGUMENT,
                nvml.NVML_ERROR_NO_PERMISSION,
                nvml.NVML_ERROR_FUNCTION_NOT_FOUND,
            ):
                log.debug("gpu%d: %s: %s", i, getattr(fn, "__name__", fn), exc)
            return None
        except AttributeError:  # an older pynvml without this call
            return None

    def _gpu_values(self, i: int) -> tuple[dict[str, float], list[str]]:
        nvml, g = self.nvml, (lambda name: S.gpu(i, name))
        v: dict[str, float] = {}
        counters: list[str] = []

        def put(name: str, value: Any, scale: float = 1.0, counter: bool = False) -> None:
            if value is not None:
                v[g(name)] = float(value) * scale
                if counter:
                    counters.append(g(name))

        util = self._read(i, nvml.nvmlDeviceGetUtilizationRates)
        if util is not None:
            put("util_pct", util.gpu)
            put("mem_util_pct", util.memory)
        mem = self._read(i, nvml.nvmlDeviceGetMemoryInfo)
        if mem is not None:
            put("mem.used_bytes", mem.used)
            put("mem.total_bytes", mem.total)
        put("temperature_c", self._read(i, nvml.nvmlDeviceGetTemperature, nvml.NVML_TEMPERATURE_GPU))
        put("power_w", self._read(i, nvml.nvmlDeviceGetPowerUsage), 1e-3)
        put("power_limit_w", self._read(i, nvml.nvmlDeviceGetEnforcedPowerLimit), 1e-3)
        put("energy_j", self._read(i, nvml.nvmlDeviceGetTotalEnergyConsumption), 1e-3, counter=True)
        put("clock.sm_mhz", self._read(i, nvml.nvmlDeviceGetClockInfo, nvml.NVML_CLOCK_SM))
        put("clock.mem_mhz", self._read(i, nvml.nvmlDeviceGetClockInfo, nvml.NVML_CLOCK_MEM))
        reasons = self._read(
            i,
            getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None)
            or nvml.nvmlDeviceGetCurrentClocksThrottleReasons,
        )
        if reasons is None and hasattr(nvml, "nvmlDeviceGetCurrentClocksThrottleReasons"):
            reasons = self._read(i, nvml.nvmlDeviceGetCurrentClocksThrottleReasons)
        if reasons is not None:
            put("throttle.reasons", reasons)
            for name, bit in S.THROTTLE_BITS.items():
                put(f"throttle.{name}", 1.0 if reasons & bit else 0.0)
        for kind, kname in (
            (nvml.NVML_MEMORY_ERROR_TYPE_CORRECTED, "corrected"),
            (nvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, "uncorrected"),
        ):
            for where, wname in ((nvml.NVML_VOLATILE_ECC, "volatile"), (nvml.NVML_AGGREGATE_ECC, "aggregate")):
                put(f"ecc.{wname}.{kname}", self._read(i, nvml.nvmlDeviceGetTotalEccErrors, kind, where), counter=True)
        rows = self._read(i, nvml.nvmlDeviceGetRemappedRows)
        if rows is not None:
            for name, value in zip(("correctable", "uncorrectable", "pending", "failure"), rows, strict=True):
                put(f"remap.{name}", value, counter=name in ("correctable", "uncorrectable"))
        for cause, name in (
            (nvml.NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS, "sbe"),
            (nvml.NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR, "dbe"),
        ):
            pages = self._read(i, nvml.nvmlDeviceGetRetiredPages, cause)
            if pages is not None:
                put(f"retired_pages.{name}", len(pages), counter=True)
        pending = self._read(i, nvml.nvmlDeviceGetRetiredPagesPendingStatus)
        if pending is not None:
            put("retired_pages.pending", 1.0 if pending else 0.0)
        put("pcie.replay", self._read(i, nvml.nvmlDeviceGetPcieReplayCounter), counter=True)
        put("pcie.link_gen", self._read(i, nvml.nvmlDeviceGetCurrPcieLinkGeneration))
        put("pcie.max_link_gen", self._read(i, nvml.nvmlDeviceGetMaxPcieLinkGeneration))
        put("pcie.link_width", self._read(i, nvml.nvmlDeviceGetCurrPcieLinkWidth))
        put("pcie.max_link_width", self._read(i, nvml.nvmlDeviceGetMaxPcieLinkWidth))
        for link in range(nvml.NVML_NVLINK_MAX_LINKS):
            state = self._read(i, nvml.nvmlDeviceGetNvLinkState, link)
            if state is None:
                break  # links are numbered from 0: the first unsupported one ends the list
            put(f"nvlink{link}.up", 1.0 if state else 0.0)
            if state:
                for name, counter in S.NVLINK_COUNTERS:
                    put(
                        f"nvlink{link}.{name}",
                        self._read(i, nvml.nvmlDeviceGetNvLinkErrorCounter, link, counter),
                        counter=True,
                    )
        return v, counters

    def collect(
        self, host: str, now: datetime | None = None
    ) -> tuple[dict[str, float | None], list[str], list[LogEvent]]:
        """(values, counters, log events for GPUs lost since the last call)."""
        now = now or datetime.now(UTC)
        values: dict[str, float | None] = {}
        counters: list[str] = []
        events: list[LogEvent] = []
        for i in range(len(self.handles_)):
            try:
                v, c = self._gpu_values(i)
            except _Lost:
                # What it reported before could not be read now: null, as the contract says (not absent,
                # which would mean "not supported", and never 0).
                values.update(dict.fromkeys(self.known_.get(i, ()), None))
                values[S.gpu(i, "up")] = 0.0
                if i not in self.lost_:
                    self.lost_.add(i)
                    pci = self.labels_.get(S.gpu(i, "pci"), "")
                    events.append(
                        LogEvent(
                            host=host,
                            time=now,
                            source="nvml",
                            kind="gpu_fell_off_bus",
                            severity="critical",
                            line=f"NVML: GPU {i} ({pci}) is lost (NVML_ERROR_GPU_IS_LOST)",
                            fields={"gpu": i, "pci": pci},
                        )
                    )
                continue
            self.lost_.discard(i)
            self.known_[i] = list(v)
            values[S.gpu(i, "up")] = 1.0
            values.update(v)
            counters += c
        return values, counters, events

    def wait_events(self, host: str, timeout_s: float) -> list[LogEvent]:
        """XID / double-bit ECC events that arrive within `timeout_s` (the first one ends the wait)."""
        nvml = self.nvml
        if self.event_set_ is None:
            return []
        out: list[LogEvent] = []
        timeout_ms = max(0, int(timeout_s * 1000))
        while True:
            try:
                data = nvml.nvmlEventSetWait_v2(self.event_set_, timeout_ms)
            except nvml.NVMLError as exc:
                if exc.value != nvml.NVML_ERROR_TIMEOUT:
                    log.warning("NVML event wait failed: %s", exc)
                return out
            now = datetime.now(UTC)
            try:
                index = nvml.nvmlDeviceGetIndex(data.device)
            except nvml.NVMLError:
                index = -1
            pci = self.labels_.get(S.gpu(index, "pci"), "")
            fields = {"gpu": index, "pci": pci, "uuid": self.labels_.get(S.gpu(index, "uuid"), "")}
            if data.eventType & nvml.nvmlEventTypeXidCriticalError:
                xid = int(data.eventData)
                out.append(
                    LogEvent(
                        host=host,
                        time=now,
                        source="nvml",
                        kind="xid",
                        severity=XID_SEVERITY.get(xid, "error"),
                        line=f"NVML: Xid (PCI:{pci}): {xid} on GPU {index}",
                        fields={**fields, "xid": xid},
                    )
                )
            else:
                out.append(
                    LogEvent(
                        host=host,
                        time=now,
                        source="nvml",
                        kind="ecc_dbe",
                        severity="critical",
                        line=f"NVML: double-bit ECC error on GPU {index} (PCI:{pci})",
                        fields=fields,
                    )
                )
            timeout_ms = 0  # take what else is queued, without waiting again

    def close(self) -> None:
        nvml = self.nvml
        try:
            if self.event_set_ is not None:
                nvml.nvmlEventSetFree(self.event_set_)
            nvml.nvmlShutdown()
        except nvml.NVMLError:
            pass
