"""`fleetmedic demo`'s closed loop, the way `make demo` runs it, on the real broker.

Real processes (`detect`, `remediate`, the host and log exporters), a real supervised service and,
where Slurm is installed and we are root, a real two-node cluster. The fleet scene (simulator →
detectors) is covered by test_replay and test_report; here it is left out to keep the suite short.
"""

from __future__ import annotations

import uuid

import pytest

from fleetmedic.ranges import RangeSpec, read_range
from fleetmedic.schemas import Incident, Remediation
from fleetmedic.topics import topic_name
from fleetmedic_demo.demo import FLEET_HOST, run_demo
from fleetmedic_demo.testbed import fleet_missing_reason, slurm_missing_reason


def _records(settings, model):
    spec = RangeSpec(topic=topic_name(settings, model.topic))
    return [item.record for batch in read_range(settings, spec, model) for item in batch]


def _statuses(remediations, host):
    return [(r.status, r.gate) for r in sorted((r for r in remediations if r.host == host), key=lambda r: r.time)]


# two live scenes and a 3-host SSH testbed: about two minutes on a quiet machine, over five on the
# shared one under load (the suite's default limit is 300 s)
@pytest.mark.timeout(900)
def test_demo_heals_the_service_and_moves_the_job(settings, tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    prefix = f"demo{uuid.uuid4().hex[:8]}."
    assert run_demo(settings, scenes=("service", "slurm"), prefix=prefix) == 0
    out = capfd.readouterr().out
    demo_settings = settings.model_copy(update={"topic_prefix": prefix})
    incidents, remediations = _records(demo_settings, Incident), _records(demo_settings, Remediation)

    # service: down → incident → claim → run → healed → resolved → ladder closed; on host 2 of the
    # SSH testbed where it can run (root, sshd), else on the local supervisord
    on_fleet = fleet_missing_reason() is None
    host = FLEET_HOST if on_fleet else "demo-host"
    service_incidents = [(i.status, i.kind, i.subject) for i in incidents if i.host == host]
    assert service_incidents == [
        ("open", "service_down", "service.demo.up"),
        ("resolve", "service_down", "service.demo.up"),
    ]
    assert _statuses(remediations, host) == [
        ("claimed", None),
        ("running", None),
        ("succeeded", None),
        ("cancelled", "closed_loop"),
    ]
    restart = next(r for r in remediations if r.host == host and r.status == "succeeded")
    assert restart.playbook == "restart_service.yml" and restart.extra_vars["service"] == "demo"
    assert "healed: demo" in out and "fault→healed" in out
    if on_fleet:
        running = next(r for r in remediations if r.host == host and r.status == "running")
        assert running.reason.startswith(f"host-side: runs on {host} ") and "over SSH" in running.reason
        assert f"healed: demo on {host} answers again inside {host}'s namespace" in out
        assert "other hosts untouched" in out and "CHANGED" not in out
    # the other hosts' services never went down
    assert {i.host for i in incidents if i.kind == "service_down"} == {host}
    # Alertmanager out: where the alerts are, and the kill switch as an alert (fleetmedic_demo/demo_alertmanager.py)
    assert "alertmanager: fleetmedic pause → FleetmedicKillSwitch" in out
    assert "alertmanager: fleetmedic resume → resolved" in out and "/#/alerts" in out

    why_not = slurm_missing_reason()
    if why_not:
        assert f"slurm scene skipped: {why_not}" in out
        return
    assert [(i.status, i.kind) for i in incidents if i.host == "node1"] == [("open", "xid")]
    assert _statuses(remediations, "node1") == [("claimed", None), ("running", None), ("succeeded", None)]
    drain = next(r for r in remediations if r.host == "node1" and r.status == "succeeded")
    assert drain.playbook == "slurm_drain.yml" and drain.extra_vars["node"] == "node1"
    assert "running on node2; node1" in out and "fleetmedic: XID 79" in out
