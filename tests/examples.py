"""One realistic record of every contract."""

from datetime import UTC, datetime, timedelta

from fleetmedic.schemas import (
    Approval,
    Control,
    DeadLetter,
    DetectorState,
    Evidence,
    Incident,
    LogEvent,
    Matcher,
    MetricBatch,
    Remediation,
    RunSummary,
    SourceRange,
)

T0 = datetime(2026, 11, 25, 4, 0, 0, tzinfo=UTC)


def metric_batch(host="gpu-node-07", i=0) -> MetricBatch:
    return MetricBatch(
        host=host,
        time=T0 + timedelta(seconds=10 * i),
        source="gpu",
        labels={"class": "h100x8"},
        values={"gpu0.temperature_c": 71.5 + i, "gpu0.ecc.volatile.corrected": 3.0, "gpu1.power_w": None},
        counters=["gpu0.ecc.volatile.corrected"],
    )


def examples() -> list:
    return [
        metric_batch(),
        LogEvent(
            host="gpu-node-07",
            time=T0,
            source="/var/log/kern.log",
            kind="xid",
            severity="critical",
            line="NVRM: Xid (PCI:0000:3b:00): 79, pid=1911, GPU has fallen off the bus.",
            fields={"xid": 79, "pci": "0000:3b:00", "pid": 1911},
        ),
        Incident(
            id="inc-3f2a",
            fingerprint="gpu-node-07/xid/gpu0",
            host="gpu-node-07",
            kind="xid",
            subject="gpu0",
            status="open",
            severity="critical",
            detector="log_rules",
            time=T0,
            opened_at=T0,
            score=1.0,
            action_class="drain_and_reset",
            summary="XID 79: GPU has fallen off the bus",
            evidence=Evidence(
                series=["xid"],
                values=[79.0],
                window_start=T0,
                window_end=T0,
                sources=[SourceRange(topic="fleetmedic.logs.v1", partition=2, first_offset=41, last_offset=41)],
                details={"xid": 79},
            ),
        ),
        Remediation(
            id="rem-1",
            incident_id="inc-3f2a",
            fingerprint="gpu-node-07/xid/gpu0",
            host="gpu-node-07",
            action="drain_node",
            playbook="slurm_drain.yml",
            status="succeeded",
            time=T0,
            started_at=T0,
            finished_at=T0 + timedelta(seconds=4),
            rc=0,
            extra_vars={"node": "gpu-node-07", "reason": "fleetmedic inc-3f2a"},
            run=RunSummary(ok=3, changed=1),
        ),
        DeadLetter.of(
            topic="fleetmedic.metrics.v1",
            partition=1,
            offset=9,
            timestamp_ms=1,
            key=b"gpu-node-07",
            value=b"\x00\x01garbage",
            group="detectors",
            kind="not_json",
            error="not JSON",
            keep_bytes=1024,
        ),
        Approval(
            remediation_id="rem-1",
            host="gpu-node-07",
            decision="approve",
            by="alice",
            time=T0,
            expires_at=T0 + timedelta(hours=1),
        ),
        DetectorState(
            host="gpu-node-07",
            detector="ewma",
            state_version=1,
            time=T0,
            source_offsets={"fleetmedic.metrics.v1:2": 118},
            state_b64="AAEC",
        ),
        Control(
            id="sil-0123456789ab",
            kind="silence",
            active=True,
            by="alice",
            reason="PSU swap",
            time=T0,
            matchers=[Matcher(name="host", op="=~", value="gpu-node-0[1-4]")],
            starts_at=T0,
            ends_at=T0 + timedelta(hours=2),
        ),
    ]
