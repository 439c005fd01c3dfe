"""The whole loop on the secured broker: exporter → detectors → incident → remediator → playbook
→ healed → resolved, every stage a separate process connected as its own principal (TLS +
SCRAM-SHA-512, least-privilege ACLs), the demo itself reading as the reviewer."""

from __future__ import annotations

import uuid

from fleetmedic.ranges import RangeSpec, read_range
from fleetmedic.schemas import Incident, Remediation
from fleetmedic.topics import topic_name
from fleetmedic_demo.demo import FLEET_HOST, run_demo
from fleetmedic_demo.testbed import fleet_missing_reason


def _records(settings, model):
    spec = RangeSpec(topic=topic_name(settings, model.topic))
    return [item.record for batch in read_range(settings, spec, model) for item in batch]


def test_the_whole_loop_heals_the_service_on_the_secured_broker(secure_cluster, tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    prefix = f"sdemo{uuid.uuid4().hex[:8]}."
    groups = {"acls": {"groups": {"detector": ["demo-detectors"], "remediator": ["demo-remediator"]}}}
    roles = {
        r: secure_cluster.settings(r, prefix, **groups) for r in ("exporter", "detector", "remediator", "reviewer")
    }
    admin = secure_cluster.settings("admin", prefix, **groups)
    assert run_demo(admin, scenes=("service",), prefix=prefix, roles=roles) == 0
    out = capfd.readouterr().out
    reviewer = roles["reviewer"]
    incidents, remediations = _records(reviewer, Incident), _records(reviewer, Remediation)
    # on host 2 of the SSH testbed where it can run (root, sshd), else on the local supervisord
    host = FLEET_HOST if fleet_missing_reason() is None else "demo-host"
    assert [(i.status, i.kind, i.subject) for i in incidents if i.host == host] == [
        ("open", "service_down", "service.demo.up"),
        ("resolve", "service_down", "service.demo.up"),
    ]
    assert [(r.status, r.gate) for r in sorted((r for r in remediations if r.host == host), key=lambda r: r.time)] == [
        ("claimed", None),
        ("running", None),
        ("succeeded", None),
        ("cancelled", "closed_loop"),
    ]
    assert "healed: demo" in out and "answers again" in out
    for role in ("exporter", "detector", "remediator", "reviewer", "admin"):
        assert secure_cluster.password(role) not in out
