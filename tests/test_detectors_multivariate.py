"""The isolation forest inside the engine (no Kafka): incidents, quiet fleets, determinism, state, config."""

from __future__ import annotations

import zlib
from collections import defaultdict

import numpy as np
import pytest
from detector_scenarios import loaded_fleet, received, write_forest_config

from detectors.config import load_config
from detectors.engine import Engine
from fleetmedic.transport import Received
from fleetmedic.yamlfile import ConfigFileError


@pytest.fixture
def config(tmp_path):
    return load_config(write_forest_config(tmp_path))


def spread(records, partitions=3) -> list[Received]:
    """Records as a keyed producer spreads them: partition by host, offsets per partition, time order."""
    next_offset = defaultdict(int)
    out = []
    for r in records:
        p = zlib.crc32(r.host.encode()) % partitions
        out.append(Received(r, "t.metrics.v1", p, next_offset[p], 0, r.key()))
        next_offset[p] += 1
    return out


def per_partition(incidents) -> dict[int, list[bytes]]:
    out = defaultdict(list)
    for inc in incidents:
        out[inc.evidence.sources[0].partition].append(inc.to_bytes())
    return dict(out)


def test_an_unusual_combination_opens_one_incident_with_the_model_version_then_resolves(config):
    records = loaded_fleet(odd_combination={1: (100, 109)})
    # every value of the odd host stays inside what the fleet reports anyway
    is_odd = lambda r: r.host == "node01" and 1000 <= r.time.timestamp() % 86400 <= 1090  # noqa: E731
    for name in ("gpu0.temperature_c", "gpu0.power_w", "gpu0.util_pct"):
        clean = [r.values[name] for r in records if not is_odd(r)]
        odd = [r.values[name] for r in records if is_odd(r)]
        assert min(clean) < min(odd) and max(odd) < max(clean)
    engine = Engine(config)
    out = engine.process(received(records))
    assert [(i.host, i.kind, i.subject, i.status) for i in out] == [
        ("node01", "multivariate_anomaly", "host", "open"),
        ("node01", "multivariate_anomaly", "host", "resolve"),
    ]
    opened, resolved = out
    assert opened.model_version.startswith("iforest:h100x2:p0:") and opened.score >= opened.threshold == 0.66
    assert opened.evidence.series == ["gpu_temp_max", "gpu_power_max", "gpu_util_mean"]
    src = opened.evidence.sources[0]
    rec = {i: r for i, r in enumerate(records)}
    assert rec[src.last_offset].host == rec[src.first_offset].host == "node01"
    assert opened.evidence.values[1] == max(
        rec[src.last_offset].values["gpu0.power_w"], rec[src.last_offset].values["gpu1.power_w"]
    )
    assert (opened.time - opened.evidence.window_start).total_seconds() >= 20  # for_s
    assert opened.action_class == "drain_and_reset" and opened.labels["class"] == "h100x2"
    assert resolved.id == opened.id and resolved.opened_at == opened.time and resolved.score < 0.66
    assert engine.forests.stats.vectors == len(records) and engine.forests.stats.missing_feature == 0


def test_quiet_on_a_clean_simulated_fleet_with_the_packaged_configuration():
    from ingest.simulator import FleetSimulator, SimConfig

    packaged = load_config()
    assert packaged.iforest is not None and packaged.iforest.enabled  # shipped on
    config = packaged
    sim = FleetSimulator(SimConfig(nodes=12, gpus=4, seconds=3 * 3600, interval_s=10, seed=5, faults=0))
    engine = Engine(config)
    out = []
    for k in range(sim.cfg.ticks):
        batches, _ = sim.tick(k)
        out += engine.process(
            [Received(b, "t.metrics.v1", 0, k * len(batches) + i, 0, None) for i, b in enumerate(batches)]
        )
    assert [i for i in out if i.kind == "multivariate_anomaly"] == []
    (stream,) = engine.forests.streams.values()
    # hourly refits (default.yaml): at 3600 s and 7200 s of the 3 simulated hours
    assert stream.forest.n_fits_ >= 2 and engine.forests.stats.vectors == 12 * sim.cfg.ticks


def test_same_input_gives_identical_bytes_whatever_batching_or_partition_interleaving(config):
    records = spread(loaded_fleet(n_hosts=9, odd_combination={1: (100, 109), 4: (120, 129)}))
    whole = per_partition(Engine(config).process(records))
    assert sum(b'"status":"open"' in v for vs in whole.values() for v in vs) >= 2
    # live-like: small batches in time order
    engine = Engine(config)
    live = [i for lo in range(0, len(records), 17) for i in engine.process(records[lo : lo + 17])]
    # replay-like: one partition after the other, in big batches
    engine = Engine(config)
    by_part = sorted(records, key=lambda r: r.partition)
    replayed = [i for lo in range(0, len(by_part), 500) for i in engine.process(by_part[lo : lo + 500])]
    # a random interleaving of the partitions (each one's order kept), random batch sizes
    rng = np.random.default_rng(1)
    queues = {p: [r for r in records if r.partition == p] for p in range(3)}
    mixed = []
    while any(queues.values()):
        p = int(rng.choice([p for p, q in queues.items() if q]))
        take = int(rng.integers(1, 30))
        mixed += queues[p][:take]
        queues[p] = queues[p][take:]
    engine = Engine(config)
    cuts = np.cumsum(rng.integers(1, 80, len(mixed)))
    shuffled = [
        i for lo, hi in zip(np.r_[0, cuts], cuts, strict=False) if lo < len(mixed) for i in engine.process(mixed[lo:hi])
    ]
    assert per_partition(live) == per_partition(replayed) == per_partition(shuffled) == whole


def test_restore_neither_rewarms_nor_reraises(config):
    records = received(loaded_fleet(odd_combination={1: (100, 109), 3: (125, 132)}))
    straight = Engine(config)
    expected = [i.to_bytes() for i in straight.process(records)]
    cut = 103 * 6  # the node01 incident is open (it opened at step 102); node03's comes later
    first = Engine(config)
    head = first.process(records[:cut])
    assert [i.status for i in head] == ["open"]
    states = first.take_dirty()
    forest_states = [s for s in states if s.detector == first.forest_state_name]
    assert [s.host for s in forest_states] == ["iforest:p0:h100x2"]
    assert forest_states[0].source_offsets == {"t.metrics.v1:0": cut}
    (before,) = first.forests.streams.values()

    second = Engine(config)
    for s in states:
        second.restore(s)
    (after,) = second.forests.streams.values()
    assert after.forest.version_ == before.forest.version_ and after.forest.n_fits_ == before.forest.n_fits_
    # the next vector is scored by the same model as in the uninterrupted run: not re-warmed
    probe = before.forest.train_[:5]
    np.testing.assert_array_equal(after.forest.score(probe), before.forest.score(probe))
    # a restart replays from the oldest covered offset: covered records are skipped, not re-learned
    tail = second.process(records[cut - 60 :])
    assert second.forests.stats.skipped_restored == 60
    assert [i.to_bytes() for i in head + tail] == expected
    assert [i.status for i in tail] == ["resolve", "open", "resolve"]  # node01's open was not raised again
    # ...whereas an engine starting cold on the same records has to re-warm and scores with other models
    cold = Engine(config).process(records[cut:])
    assert [i.model_version for i in cold] != [i.model_version for i in tail[1:]]


def test_a_host_without_a_feature_gives_no_vector_and_a_host_without_class_is_default(config):
    base = loaded_fleet(n_hosts=2, steps=5)
    odd = [
        r.model_copy(update={"labels": {}, "values": {k: v for k, v in r.values.items() if "util" not in k}})
        if r.host == "node01"
        else r.model_copy(update={"labels": {}})
        for r in base
    ]
    engine = Engine(config)
    engine.process(received(odd))
    assert engine.forests.stats.missing_feature == 5 and engine.forests.stats.vectors == 5
    assert list(engine.forests.streams) == [("t.metrics.v1", 0, "default")]
    # a GPU that reports null: the aggregate is over the GPUs that answered
    nulls = [r.model_copy(update={"values": {**r.values, "gpu1.temperature_c": None}}) for r in base]
    engine = Engine(config)
    engine.process(received(nulls))
    assert engine.forests.stats.vectors == 10


def test_disabled_forest_is_not_run(tmp_path):
    config = load_config(write_forest_config(tmp_path, ""))
    off = config.model_copy(update={"iforest": config.iforest.model_copy(update={"enabled": False})})
    assert Engine(off).forests is None


GOOD = "iforest:\n  features:\n    - {name: t, match: ['gpu*.temperature_c']}\n"


@pytest.mark.parametrize(
    "text, expected",
    [
        (GOOD + "  min_train: 4096\n", ":1: iforest: Value error, min_train must not exceed window"),
        (
            "iforest:\n  features:\n    - {name: a, match: ['x*'], agg: median}\n",
            ":3: iforest.features.0.agg: Input should be",
        ),
        (GOOD + "  thresold: 0.5\n", ":4: iforest.thresold: Extra inputs are not permitted"),
        (GOOD + "  threshold: 1.5\n", ":4: iforest.threshold: Input should be less than 1"),
        ("iforest:\n  features: []\n", ":2: iforest.features: List should have at least 1 item"),
    ],
)
def test_config_errors_name_file_line_and_field(tmp_path, text, expected):
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    with pytest.raises(ConfigFileError) as err:
        load_config(bad)
    assert f"{bad}{expected}" in str(err.value)
