"""Replay: record a live detector run with faults, replay it unchanged (empty diff) and with a
changed threshold (exactly the expected diff)."""

from __future__ import annotations

from datetime import timedelta

from detector_scenarios import fleet, loaded_fleet, write_config, write_forest_config, xid

from detectors.config import load_config
from detectors.engine import Engine
from detectors.service import DetectService
from fleetmedic.producer import Producer
from review.collect import collect, incident_window
from review.replay import diff, plan, recorded_incidents, replay
from review.report import render


def _record_live_run(settings, config):
    metrics = fleet(n_hosts=4, steps=120, overheat={1: (40, 59)}, power_spike={2: (60, 70)})
    logs = [xid("node03", 30, 48), xid("node03", 31, 79), xid("node03", 80, 13)]
    with Producer(settings) as producer:
        for r in metrics + logs:
            producer.send(r)
    service = DetectService(settings, Engine(config), group_id=settings.topic_prefix + "live")
    n = len(metrics) + len(logs)
    service.run(until=lambda s: s.loop.stats.consumed >= n, install_signals=False)
    return n


def test_replay_with_the_recorded_configuration_gives_an_empty_diff(settings, tmp_path):
    config = load_config(write_config(tmp_path))
    n = _record_live_run(settings, config)
    recorded = recorded_incidents(settings)
    assert {r.kind for r in recorded} == {"gpu_overheat", "gpu_power_anomaly", "xid"}
    result = replay(settings, config)
    assert result.records == n and result.values == 120 * 4 * 5
    d = diff(recorded, result.incidents)
    assert d.empty, d
    assert sorted(r.to_bytes() for r in result.incidents) == sorted(r.to_bytes() for r in recorded)
    # ... and the report of one of the recorded incidents, with its plots.
    lifecycle = [r for r in recorded if r.kind == "gpu_overheat"]
    start, end = incident_window(lifecycle, timedelta(minutes=5))
    page = render(collect(settings, "node01", start, end), "overheat on node01")
    assert page.count("data:image/png;base64,") >= 2
    assert "gpu0.temperature_c" in page and "<td>resolve</td>" in page


def test_replay_gives_the_live_isolation_forest_incidents_byte_for_byte(settings, tmp_path):
    """Live, the partitions interleave as they arrive; the replay reads them in its own order. Each
    forest follows one partition, so the incidents, model versions included, are the same."""
    config = load_config(write_forest_config(tmp_path))
    metrics = loaded_fleet(n_hosts=9, odd_combination={1: (100, 109), 3: (120, 129)})
    with Producer(settings) as producer:
        for r in metrics:
            producer.send(r)
    service = DetectService(settings, Engine(config), group_id=settings.topic_prefix + "live")
    service.run(until=lambda s: s.loop.stats.consumed >= len(metrics), install_signals=False)
    recorded = recorded_incidents(settings)
    assert sorted((r.host, r.status) for r in recorded) == [
        ("node01", "open"),
        ("node01", "resolve"),
        ("node03", "open"),
        ("node03", "resolve"),
    ]
    result = replay(settings, config)
    assert diff(recorded, result.incidents).empty
    assert sorted(r.to_bytes() for r in result.incidents) == sorted(r.to_bytes() for r in recorded)


def test_replay_with_a_changed_threshold_shows_exactly_what_it_changes(settings, tmp_path):
    config = load_config(write_config(tmp_path))
    _record_live_run(settings, config)
    recorded = recorded_incidents(settings)
    # Raise the overheat threshold above the fault (62 °C + 30): that incident would not have been raised.
    rules = [
        r.model_copy(update={"threshold": 95.0, "clear_threshold": 90.0}) if r.name == "gpu_overheat" else r
        for r in config.static
    ]
    changed = config.model_copy(update={"static": rules})
    d = diff(recorded, replay(settings, changed).incidents)
    assert not d.added and not d.changed
    assert list(d.removed) == [r.id for r in recorded if r.kind == "gpu_overheat"][:1]
    (records,) = d.removed.values()
    assert [r.status for r in records] == ["open", "resolve"] and records[0].host == "node01"
    # A replay limited to one host only sees that host.
    only = replay(settings, config, hosts={"node02"})
    assert {r.host for r in only.incidents} == {"node02"}


def test_plan_names_the_policy_action_for_added_or_removed_incidents(settings, tmp_path):
    from remediator.policy import load_policy

    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(
        "gates:\n"
        "  cooldown_s: 3600\n"
        "rules:\n"
        "  - name: hot_gpu\n"
        "    match: {kinds: [gpu_overheat]}\n"
        "    steps:\n"
        "      - action: drain\n"
        "        playbook: slurm_drain.yml\n"
        "        vars:\n"
        "          node: {from: host}\n"
    )
    config = load_config(write_config(tmp_path))
    _record_live_run(settings, config)
    recorded = recorded_incidents(settings)
    overheat = next(r for r in recorded if r.kind == "gpu_overheat" and r.status == "open")
    # The same fault again 20 minutes later: the cooldown gate would have stopped the second drain.
    again = overheat.model_copy(update={"id": "inc-again", "time": overheat.time + timedelta(minutes=20)})
    planned = [(r.id, r.kind, action) for r, action in plan(recorded + [again], load_policy(policy_file))]
    assert (overheat.id, "gpu_overheat", "rule hot_gpu: drain via slurm_drain.yml {'node': 'node01'}") in planned
    assert (
        "inc-again",
        "gpu_overheat",
        "rule hot_gpu: drain skipped by cooldown: drain ran on node01 at "
        f"{overheat.time.isoformat()}; cooldown 3600s lasts until "
        f"{(overheat.time + timedelta(hours=1)).isoformat()}",
    ) in planned
    assert [a for _, k, a in planned if k == "xid"] == ["no rule matches: no action"] * 2  # two XID bursts
