"""Replay: record a live detector run with faults, replay it unchanged (empty diff) and with a
changed threshold (exactly the expected diff)."""

from __future__ import annotations

import uuid

from detector_scenarios import fleet, write_config, xid
from detectors.config import load_config
from detectors.engine import DetectService, Engine
from fleetmedic.schemas import Incident
from fleetmedic.transport import Producer
from review.replay import diff, plan, recorded_incidents, replay


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


def test_replay_with_a_changed_threshold_shows_exactly_what_it_changes(settings, tmp_path):
    config = load_config(write_config(tmp_path))
    _record_live_run(settings, config)
    recorded = recorded_incidents(settings)
    # Raise the overheat threshold above the fault (62 °C + 30): that incident would not have been raised.
    rules = [r.model_copy(update={"threshold": 95.0, "clear_threshold": 90.0}) if r.name == "gpu_overheat" else r
             for r in config.static]
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
        "rules:\n"
        "  - name: hot_gpu\n"
        "    match: {kinds: [gpu_overheat]}\n"
        "    steps:\n"
        "      - action: drain\n"
        "        playbook: slurm_drain.yml\n"
        "        vars:\n"
        "          node: {from: host}\n")
    config = load_config(write_config(tmp_path))
    _record_live_run(settings, config)
    opened = [r for r in recorded_incidents(settings) if r.status == "open"]
    planned = dict((r.kind, action) for r, action in plan(opened, load_policy(policy_file)))
    assert planned["gpu_overheat"] == "rule hot_gpu: drain via slurm_drain.yml {'node': 'node01'}"
    assert planned["xid"] == "no rule matches: no action"
