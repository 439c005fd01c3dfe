"""No record is ever made that cannot be sent: big metric batches are split first (issue 13)."""

from __future__ import annotations

from datetime import UTC, datetime

from kafka_helpers import read_topic

from fleetmedic.schemas import LogEvent, MetricBatch
from fleetmedic.topics import topic_name
from ingest.publisher import ExporterHealth, Publisher
from ingest.split import fit
from ingest.spool import Spool

T0 = datetime(2026, 11, 30, tzinfo=UTC)


def _big(host: str, n: int) -> MetricBatch:
    names = [
        f'node_filesystem_avail_bytes{{device="/dev/nvme{k}",mountpoint="/mnt/scratch/{k:08d}"}}' for k in range(n)
    ]
    return MetricBatch(
        host=host,
        time=T0,
        source="prom",
        labels={"target": "http://x/metrics"},
        values={name: float(k) for k, name in enumerate(names)},
        counters=names[::3],
    )


def test_fit_cuts_a_big_batch_into_parts_under_the_limit_that_hold_every_value():
    big = _big("h", 40_000)
    parts, refused = fit([big, MetricBatch(host="h", time=T0, source="x", values={"a": 1.0})], 1_000_000)
    assert not refused and len(parts) >= 4
    assert all(len(data) <= 1_000_000 for _, data in parts)
    merged = {k: v for p, _ in parts[:-1] for k, v in p.values.items()}
    assert merged == big.values
    assert sorted(c for p, _ in parts[:-1] for c in p.counters) == sorted(big.counters)
    assert all(p.host == "h" and p.time == T0 and p.labels == big.labels for p, _ in parts[:-1])
    assert parts[-1][0].values == {"a": 1.0}


def test_what_cannot_be_cut_is_refused_with_a_reason():
    huge_label = MetricBatch(host="h", time=T0, source="x", labels={"l": "v" * 2_000_000}, values={"a": 1.0, "b": 2.0})
    log = LogEvent(host="h", time=T0, source="s", line="x", fields={f"f{k}": "y" * 1000 for k in range(1500)})
    parts, refused = fit([huge_label, log], 1_000_000)
    assert parts == [] and len(refused) >= 2
    assert "cannot be split" in refused[-1][1]


def test_a_batch_bigger_than_the_producer_allows_does_not_wedge_the_exporter(settings, tmp_path):
    """Before the fix: the 3 MB batch failed, was spooled, and the small one queued behind it for ever."""
    spool = Spool(tmp_path / "spool")
    publisher = Publisher(settings, ExporterHealth("prom"), spool, ack_timeout_s=10, retry_s=0.1)
    big = _big("big-host", 30_000)
    assert len(big.to_bytes()) > 2 * settings.max_record_bytes
    small = MetricBatch(host="small-host", time=T0, source="prom", values={"up": 1.0})
    sent = publisher.publish([big]) + publisher.publish([small])
    publisher.close()
    assert len(spool) == 0 and publisher.health.spooled == 0
    got = [r for _, _, _, r in read_topic(settings, topic_name(settings, "metrics.v1"), MetricBatch)]
    assert sent == len(got)
    assert sum(len(r.values) for r in got if r.host == "big-host") == 30_000
    assert [r.values for r in got if r.host == "small-host"] == [{"up": 1.0}]
