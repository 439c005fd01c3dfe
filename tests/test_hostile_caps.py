"""Hostile cardinality and hostile state never grow a detector without bound or stop it (issue 13)."""

from __future__ import annotations

import base64
import zlib

from detector_scenarios import T0, fleet, received

from detectors.config import DetectorConfig
from detectors.engine import Engine
from fleetmedic.schemas import DetectorState, MetricBatch


def _batches(host: str, names: int, per_record: int = 1000):
    return [
        MetricBatch(
            host=host,
            time=T0,
            source="sim",
            values={f"s{k}": 1.0 for k in range(first, min(first + per_record, names))},
        )
        for first in range(0, names, per_record)
    ]


def test_a_host_with_too_many_series_keeps_the_first_ones_and_counts_the_rest():
    engine = Engine(DetectorConfig(max_series_per_host=2500))
    engine.process(received(_batches("h", 10_000)))
    assert len(engine.hosts["h"].names) == 2500  # before the fix: 10,000 slots for one host
    assert len(engine.slot_name) == 2500
    assert engine.stats.series_over_cap == 7500
    assert engine.stats.values == 2500


def test_hosts_beyond_the_cap_are_counted_not_kept():
    engine = Engine(DetectorConfig(max_hosts=50))
    engine.process(received([MetricBatch(host=f"h{i}", time=T0, source="sim", values={"a": 1.0}) for i in range(300)]))
    assert len(engine.hosts) == 50 and engine.stats.hosts_over_cap == 250


def test_ever_new_layouts_do_not_grow_the_layout_cache_without_bound():
    from detectors.series_table import MAX_LAYOUTS_PER_HOST

    engine = Engine(DetectorConfig())
    names = [f"s{k}" for k in range(12)]
    records = [
        MetricBatch(host="h", time=T0, source="sim", values={n: 1.0 for j, n in enumerate(names) if mask >> j & 1})
        for mask in range(1, 4096)
    ]
    engine.process(received(records))
    assert len(engine.hosts["h"].layouts) <= MAX_LAYOUTS_PER_HOST


def test_an_unreadable_snapshot_is_counted_and_the_host_starts_fresh():
    engine = Engine(DetectorConfig())
    good = Engine(DetectorConfig())
    good.process(received(fleet(n_hosts=1, steps=5)))
    snap = good.snapshot("node00")
    bomb = base64.b64encode(zlib.compress(b"\0" * (300 * 1024 * 1024), 9)).decode()
    for payload in (
        "",
        "AAAA",
        base64.b64encode(b"garbage").decode(),
        base64.b64encode(zlib.compress(b"x" * 99)).decode(),
        bomb,
        snap.state_b64[: len(snap.state_b64) // 2],
    ):
        engine.restore(snap.model_copy(update={"state_b64": payload}))
    assert engine.stats.unreadable_states == 6
    assert "node00" not in engine.hosts
    engine.restore(snap)  # the good one still loads
    assert engine.hosts["node00"].max_time == good.hosts["node00"].max_time


def test_a_snapshot_at_the_series_cap_fits_the_state_record_limit():
    """The default cap keeps a host's snapshot under the default max_record_bytes (1,000,000)."""
    cfg = DetectorConfig(
        ewma=[{"name": "e", "match": ["*"], "alpha": 0.1, "sigmas": 4.0}],
        static=[{"name": "s", "match": ["*"], "op": ">", "threshold": 1e9}],
    )
    engine = Engine(cfg)
    cap = cfg.max_series_per_host
    # distinct long names and noisy values: the worst case for compression
    recs = [
        MetricBatch(
            host="h",
            time=T0,
            source="sim",
            values={
                f'node_some_long_metric_name{{device="nvme{k}",mode="x{k * 7919}"}}': k * 1.000123
                for k in range(first, first + 1000)
            },
        )
        for first in range(0, cap + 2000, 1000)
    ]
    engine.process(received(recs))
    size = len(DetectorState.model_validate(engine.snapshot("h").model_dump()).to_bytes())
    print(f"snapshot of {cap} series: {size} bytes")
    assert size < 1_000_000, size


def test_a_snapshot_over_the_record_limit_is_counted_and_left_out_not_sent():
    from types import SimpleNamespace

    from detectors.service import DetectService
    from fleetmedic.config import Settings

    engine = Engine(DetectorConfig(ewma=[{"name": "e", "match": ["*"]}]))
    engine.process(received(_batches("big", 9000) + _batches("small", 3)))
    service = SimpleNamespace(
        engine=engine, settings=Settings(max_record_bytes=20_000), state_topic="t.state.v1", group_id="g"
    )
    service._state_record = lambda s: DetectService._state_record(service, s)
    service._partition_of = lambda s: DetectService._partition_of(service, s)
    service._state_partition = lambda p: None  # by key, as with a state topic of another partition count
    out = DetectService._state_records(service, engine.take_dirty())
    assert [o.key for o in out] == [b"g/small"]  # before: the big one was sent and failed the whole checkpoint
    assert engine.stats.snapshots_too_large == 1
