"""The GPU exporter. There is no GPU on the test machines, so NVML is FAKED here: `FakeNvml`
answers pynvml's calls from a table and raises pynvml's own error classes. What is real: the
collector's handling of supported / unsupported / lost GPUs and XID events, publishing to the
real broker, and the CLI on this GPU-less machine (real pynvml: it must say so and exit 3)."""

import warnings
from types import SimpleNamespace

import pytest

with warnings.catch_warnings():  # pynvml 12+ says it wraps nvidia-ml-py now; the API is the same
    warnings.simplefilter("ignore", FutureWarning)
    import pynvml

from datetime import UTC

from kafka_helpers import read_topic

from fleetmedic.cli import main
from fleetmedic.schemas import LogEvent, MetricBatch
from fleetmedic.topics import topic_name
from ingest.gpu import GpuCollector, GpuUnavailable
from ingest.publisher import ExporterHealth, Publisher

NOT_SUPPORTED = pynvml.NVML_ERROR_NOT_SUPPORTED


class FakeNvml:
    """A fake of the pynvml module: two GPUs; gpu1 lacks ECC, remapping and NVLink (like a consumer card)."""

    def __init__(self, gpus=2, init_error=None):
        self.init_error = init_error
        self.count = gpus
        self.lost: set[int] = set()
        self.events: list = []
        self.shutdown = False

    def __getattr__(self, name):  # constants and error classes come from the real module
        return getattr(pynvml, name)

    def _h(self, h, feature=None):
        if h in self.lost:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
        if feature and h == 1:
            raise pynvml.NVMLError(NOT_SUPPORTED)
        return h

    def nvmlInit(self):
        if self.init_error is not None:
            raise pynvml.NVMLError(self.init_error)

    def nvmlShutdown(self):
        self.shutdown = True

    def nvmlDeviceGetCount(self):
        return self.count

    def nvmlDeviceGetHandleByIndex(self, i):
        return i

    def nvmlDeviceGetIndex(self, h):
        return h

    def nvmlDeviceGetUUID(self, h):
        return f"GPU-0000000{h}-aaaa-bbbb-cccc-dddddddddddd"

    def nvmlDeviceGetPciInfo(self, h):
        return SimpleNamespace(busId=f"00000000:{0x18 + 0x12 * h:02X}:00.0".encode())

    def nvmlDeviceGetName(self, h):
        return "NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetUtilizationRates(self, h):
        self._h(h)
        return SimpleNamespace(gpu=87, memory=41)

    def nvmlDeviceGetMemoryInfo(self, h):
        self._h(h)
        return SimpleNamespace(used=60 * 2**30, total=80 * 2**30, free=20 * 2**30)

    def nvmlDeviceGetTemperature(self, h, sensor):
        assert sensor == pynvml.NVML_TEMPERATURE_GPU
        return 64 + self._h(h)

    def nvmlDeviceGetPowerUsage(self, h):
        self._h(h)
        return 412_337  # mW

    def nvmlDeviceGetEnforcedPowerLimit(self, h):
        self._h(h)
        return 700_000

    def nvmlDeviceGetTotalEnergyConsumption(self, h):
        self._h(h)
        return 915_847_204  # mJ

    def nvmlDeviceGetClockInfo(self, h, clock):
        self._h(h)
        return {pynvml.NVML_CLOCK_SM: 1980, pynvml.NVML_CLOCK_MEM: 2619}[clock]

    def nvmlDeviceGetCurrentClocksEventReasons(self, h):
        self._h(h)
        return 0x20 | 0x40 if h == 0 else 0

    def nvmlDeviceGetTotalEccErrors(self, h, kind, where):
        self._h(h, feature="ecc")
        return {(0, 0): 12, (1, 0): 0, (0, 1): 340, (1, 1): 2}[(kind, where)]

    def nvmlDeviceGetRemappedRows(self, h):
        self._h(h, feature="remap")
        return (3, 1, 0, 0)

    def nvmlDeviceGetRetiredPages(self, h, cause):
        self._h(h)
        raise pynvml.NVMLError(NOT_SUPPORTED)  # Ampere and newer remap rows instead

    def nvmlDeviceGetRetiredPagesPendingStatus(self, h):
        self._h(h)
        raise pynvml.NVMLError(NOT_SUPPORTED)

    def nvmlDeviceGetPcieReplayCounter(self, h):
        self._h(h)
        return 14

    def nvmlDeviceGetCurrPcieLinkGeneration(self, h):
        return 5 - self._h(h)  # gpu1 trained down to gen 4

    def nvmlDeviceGetMaxPcieLinkGeneration(self, h):
        self._h(h)
        return 5

    def nvmlDeviceGetCurrPcieLinkWidth(self, h):
        self._h(h)
        return 16

    def nvmlDeviceGetMaxPcieLinkWidth(self, h):
        self._h(h)
        return 16

    def nvmlDeviceGetNvLinkState(self, h, link):
        self._h(h, feature="nvlink")
        if link >= 2:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return 1 if link == 0 else 0

    def nvmlDeviceGetNvLinkErrorCounter(self, h, link, counter):
        self._h(h)
        return 100 * link + counter + 7

    def nvmlEventSetCreate(self):
        return "event-set"

    def nvmlDeviceGetSupportedEventTypes(self, h):
        return pynvml.nvmlEventTypeXidCriticalError | pynvml.nvmlEventTypeDoubleBitEccError | 0x1

    def nvmlDeviceRegisterEvents(self, h, mask, event_set):
        assert mask == pynvml.nvmlEventTypeXidCriticalError | pynvml.nvmlEventTypeDoubleBitEccError

    def nvmlEventSetWait_v2(self, event_set, timeout_ms):
        if not self.events:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_TIMEOUT)
        return self.events.pop(0)

    def nvmlEventSetFree(self, event_set):
        pass


def test_supported_fields_are_read_and_unsupported_ones_left_out():
    nvml = FakeNvml()
    c = GpuCollector(nvml)
    values, counters, events = c.collect("gpu-node-07")
    assert events == []
    assert values["gpu0.up"] == 1.0 and values["gpu0.util_pct"] == 87 and values["gpu0.temperature_c"] == 64
    assert values["gpu0.power_w"] == pytest.approx(412.337) and values["gpu0.energy_j"] == pytest.approx(915847.204)
    assert values["gpu0.mem.used_bytes"] == 60 * 2**30 and values["gpu0.clock.sm_mhz"] == 1980
    assert values["gpu0.throttle.reasons"] == 0x60
    assert (
        values["gpu0.throttle.sw_thermal"],
        values["gpu0.throttle.hw_thermal"],
        values["gpu0.throttle.hw_slowdown"],
    ) == (1.0, 1.0, 0.0)
    assert values["gpu0.ecc.volatile.corrected"] == 12 and values["gpu0.ecc.aggregate.uncorrected"] == 2
    assert (
        values["gpu0.remap.correctable"],
        values["gpu0.remap.uncorrectable"],
        values["gpu0.remap.pending"],
        values["gpu0.remap.failure"],
    ) == (3, 1, 0, 0)
    assert values["gpu0.pcie.replay"] == 14 and values["gpu1.pcie.link_gen"] == 4
    assert values["gpu0.nvlink0.up"] == 1.0 and values["gpu0.nvlink1.up"] == 0.0
    assert values["gpu0.nvlink0.crc_flit"] == 9 and "gpu0.nvlink1.crc_flit" not in values  # inactive link: no counters
    assert "gpu0.nvlink2.up" not in values
    # unsupported: absent, never zero-filled
    assert not [k for k in values if k.startswith(("gpu1.ecc", "gpu1.remap", "gpu1.nvlink"))]
    assert not [k for k in values if "retired_pages" in k]
    assert values["gpu1.temperature_c"] == 65
    assert "gpu0.ecc.volatile.corrected" in counters and "gpu0.temperature_c" not in counters
    assert set(counters) <= set(values)
    assert c.labels_["gpu1.pci"] == "00000000:2A:00.0" and c.labels_["gpu0.uuid"].startswith("GPU-")


def test_a_lost_gpu_reports_up_zero_and_one_event_until_it_returns():
    nvml = FakeNvml()
    c = GpuCollector(nvml)
    c.collect("gpu-node-07")
    nvml.lost.add(1)
    values, _, events = c.collect("gpu-node-07")
    assert values["gpu1.up"] == 0.0 and values["gpu0.up"] == 1.0
    assert values["gpu1.temperature_c"] is None and values["gpu1.pcie.replay"] is None  # could not be read: null
    assert "gpu1.ecc.volatile.corrected" not in values  # never supported: still absent
    assert [(e.kind, e.severity, e.fields["gpu"]) for e in events] == [("gpu_fell_off_bus", "critical", 1)]
    assert c.collect("gpu-node-07")[2] == []  # said once, not every interval
    nvml.lost.clear()
    assert c.collect("gpu-node-07")[0]["gpu1.up"] == 1.0


def test_xid_and_double_bit_events_become_log_events():
    nvml = FakeNvml()
    c = GpuCollector(nvml)
    nvml.events = [
        SimpleNamespace(device=1, eventType=pynvml.nvmlEventTypeXidCriticalError, eventData=79),
        SimpleNamespace(device=0, eventType=pynvml.nvmlEventTypeDoubleBitEccError, eventData=0),
    ]
    events = c.wait_events("gpu-node-07", 0.1)
    assert [(e.kind, e.severity, e.source) for e in events] == [
        ("xid", "critical", "nvml"),
        ("ecc_dbe", "critical", "nvml"),
    ]
    assert events[0].fields == {
        "gpu": 1,
        "pci": "00000000:2A:00.0",
        "uuid": "GPU-00000001-aaaa-bbbb-cccc-dddddddddddd",
        "xid": 79,
    }
    assert c.wait_events("gpu-node-07", 0.01) == []  # nothing more: the timeout is not an error
    c.close()
    assert nvml.shutdown


def test_no_driver_or_no_gpu_is_a_clear_error():
    with pytest.raises(GpuUnavailable, match="no NVIDIA driver or GPU"):
        GpuCollector(FakeNvml(init_error=pynvml.NVML_ERROR_DRIVER_NOT_LOADED))
    with pytest.raises(GpuUnavailable, match="reports no GPU"):
        GpuCollector(FakeNvml(gpus=0))


def test_gpu_batch_and_xid_reach_kafka(settings):
    nvml = FakeNvml()
    c = GpuCollector(nvml)
    values, counters, _ = c.collect("gpu-node-07")
    from datetime import datetime

    batch = MetricBatch(
        host="gpu-node-07", time=datetime.now(UTC), source="gpu", labels=c.labels_, values=values, counters=counters
    )
    nvml.events = [SimpleNamespace(device=0, eventType=pynvml.nvmlEventTypeXidCriticalError, eventData=48)]
    pub = Publisher(settings, ExporterHealth("gpu"))
    pub.publish([batch, *c.wait_events("gpu-node-07", 0.1)])
    pub.close()
    got = [r for *_, r in read_topic(settings, topic_name(settings, "metrics.v1"), MetricBatch)]
    assert got == [batch]
    logs = [r for *_, r in read_topic(settings, topic_name(settings, "logs.v1"), LogEvent)]
    assert [(e.kind, e.fields["xid"]) for e in logs] == [("xid", 48)]


def test_export_gpu_on_a_machine_without_gpu_says_so_and_exits_3(capsys):
    try:  # the real pynvml: only meaningful where no NVIDIA driver is installed
        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
        pytest.skip("this machine has an NVIDIA driver")
    except pynvml.NVMLError:
        pass
    assert main(["export", "gpu", "--count", "1", "--health-port", "0"]) == 3
    assert "no NVIDIA driver" in capsys.readouterr().err
