"""Issue 14 item 3: every long-running command serves /metrics and /ready through prometheus_client,
and the real Prometheus (/usr/bin/prometheus) scrapes them and returns the series from its query API.

The services run as child processes (`python -m fleetmedic.cli ...`) on the session's broker:
`export logs` reads an XID line, `detect` opens the incident, `remediate` runs the marker playbook
for it (real ansible-runner) and skips a second incident of the same host by cooldown, `export
prom` scrapes the real prometheus-node-exporter, `export host` reads this machine. `export gpu`
is left out: it needs an NVIDIA driver and exits 3 without one.
"""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime

import yaml
from kafka_helpers import free_port
from prom_helpers import NODE_EXPORTER, Prometheus, Service, http_get
from remediator_kit import TEST_PLAYBOOKS, marker_lines

from fleetmedic import metrics
from fleetmedic.producer import Producer
from fleetmedic.schemas import Evidence, Incident
from fleetmedic.topics import topic_name
from fleetmedic.transport import wait_until

XID = "Nov 25 04:00:01 node1 kernel: [1234.5678] NVRM: Xid (PCI:0000:3b:00): 79, pid=1911, GPU has fallen off the bus."


def _policy(tmp_path, marker):
    policy = {
        "host_groups": {"all": ["node1", "node2"]},
        "gates": {
            "cooldown_s": 600,
            "flapping": {"max_runs": 100, "within_s": 60},
            "blast_radius": {"max_percent": 100},
            "rate_limit": {"max_runs": 100, "per_s": 60},
        },
        "rules": [
            {
                "name": "gpu_lost",
                "match": {"kinds": ["xid"]},
                "steps": [
                    {
                        "action": "drain_node",
                        "playbook": "marker.yml",
                        "vars": {
                            "target_host": {"from": "host"},
                            "marker_id": {"from": "id"},
                            "marker_file": {"value": str(marker)},
                        },
                    }
                ],
            }
        ],
    }
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(policy))
    return path


def _value(result: list[dict], **labels) -> float:
    for r in result:
        if all(r["metric"].get(k) == v for k, v in labels.items()):
            return float(r["value"][1])
    raise AssertionError(f"no series with {labels} in {result}")


def test_prometheus_scrapes_every_service_and_returns_the_series(settings, tmp_path):
    log_file = tmp_path / "kern.log"
    log_file.write_text("")
    marker = tmp_path / "marker.txt"
    ports = {name: free_port() for name in ("logs", "detect", "remediate", "prom", "host", "node")}
    node = subprocess.Popen(
        [
            NODE_EXPORTER,
            f"--web.listen-address=127.0.0.1:{ports['node']}",
            "--collector.disable-defaults",
            "--collector.loadavg",
            "--collector.meminfo",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    common = ["--spool-dir", str(tmp_path / "spool"), "--log-format", "json"]
    services = {
        "logs": Service(
            settings,
            [
                "export",
                "logs",
                str(log_file),
                "--host",
                "node1",
                "--interval",
                "0.2",
                "--position-file",
                str(tmp_path / "pos.json"),
                "--metrics-port",
                str(ports["logs"]),
                *common,
            ],
            tmp_path / "logs.out",
        ),
        "detect": Service(
            settings,
            ["detect", "--metrics-port", str(ports["detect"]), "--log-format", "json"],
            tmp_path / "detect.out",
        ),
        "remediate": Service(
            settings,
            [
                "remediate",
                "--policy",
                str(_policy(tmp_path, marker)),
                "--playbooks",
                str(TEST_PLAYBOOKS),
                "--artifacts",
                str(tmp_path / "artifacts"),
                "--metrics-port",
                str(ports["remediate"]),
                "--log-format",
                "json",
            ],
            tmp_path / "remediate.out",
        ),
        "prom": Service(
            settings,
            [
                "export",
                "prom",
                f"http://127.0.0.1:{ports['node']}/metrics",
                "--host",
                "node2",
                "--interval",
                "1",
                "--metrics-port",
                str(ports["prom"]),
                *common,
            ],
            tmp_path / "prom.out",
        ),
        "host": Service(
            settings,
            ["export", "host", "--interval", "1", "--metrics-port", str(ports["host"]), *common],
            tmp_path / "host.out",
        ),
    }
    prometheus = None
    try:
        # readiness: 200 once each service does its job (consumers hold partitions, exporters published)
        for name in services:
            url = f"http://127.0.0.1:{ports[name]}/ready"
            wait_until(
                lambda url=url, name=name: http_get(url)[0] == 200 or not services[name].alive(),
                120,
                what=f"{name} ready",
            )
            assert services[name].alive(), services[name].output()
        prometheus = Prometheus(tmp_path, {f"fleetmedic-{n}": [f"127.0.0.1:{ports[n]}"] for n in services})

        with log_file.open("a") as f:
            f.write(XID + "\n")
        wait_until(lambda: len(marker_lines(marker)) == 1, 120, what="the playbook run for the XID incident")
        run_line = marker_lines(marker)[0]
        # a second XID incident on node1 (not a burst of the first): the cooldown gate skips it
        now = datetime.now(UTC)
        with Producer(settings) as producer:
            producer.send(
                Incident(
                    id="inc-second",
                    fingerprint="node1/xid/other",
                    host="node1",
                    kind="xid",
                    subject="gpu1",
                    status="open",
                    severity="critical",
                    detector="test",
                    time=now,
                    opened_at=now,
                    summary="XID 79 again",
                    evidence=Evidence(),
                )
            )
            producer.send_raw(topic_name(settings, "logs.v1"), b"this is not JSON", b"node1")
            producer.flush()

        up = prometheus.wait_for("up", check=lambda r: len(r) == len(services) and all(x["value"][1] == "1" for x in r))
        assert {r["metric"]["job"] for r in up} == {f"fleetmedic-{n}" for n in services}

        got = prometheus.wait_for('fleetmedic_incidents_total{kind="xid",status="open"}')
        assert _value(got, job="fleetmedic-detect") >= 1
        got = prometheus.wait_for('fleetmedic_runs_total{playbook="marker.yml",outcome="succeeded"}')
        assert _value(got, job="fleetmedic-remediate") == 1
        got = prometheus.wait_for('fleetmedic_run_duration_seconds_count{playbook="marker.yml"}')
        assert _value(got, job="fleetmedic-remediate") == 1
        got = prometheus.wait_for('fleetmedic_gate_skips_total{gate="cooldown"}')
        assert _value(got, job="fleetmedic-remediate") == 1
        got = prometheus.wait_for('fleetmedic_dead_letters_total{stage="detect",reason="not_json"}')
        assert _value(got) == 1
        lag = prometheus.wait_for('fleetmedic_consumer_lag{stage="detect"}')
        assert {r["metric"]["topic"] for r in lag} >= {topic_name(settings, "logs.v1")}
        assert all(float(r["value"][1]) >= 0 for r in lag)
        prometheus.wait_for('fleetmedic_consumer_lag{stage="remediate"}')
        got = prometheus.wait_for('fleetmedic_records_total{stage="export-logs"}')
        assert _value(got) >= 1
        got = prometheus.wait_for('fleetmedic_records_total{stage="detect"}')
        assert _value(got) >= 2  # the XID line and the dead letter
        got = prometheus.wait_for('rate(fleetmedic_values_total{stage="export-prom"}[10s]) > 0')
        assert _value(got) > 0
        prometheus.wait_for('fleetmedic_values_total{stage="export-host"} > 0')
        got = prometheus.wait_for('fleetmedic_last_checkpoint_age_seconds{stage="export-logs"}')
        assert 0 <= _value(got) < 60
        got = prometheus.wait_for("fleetmedic_pending_claims")
        assert _value(got, job="fleetmedic-remediate") == 0
        got = prometheus.wait_for("fleetmedic_kill_switch_engaged")
        assert _value(got, job="fleetmedic-remediate") == 0
        got = prometheus.wait_for('fleetmedic_exporter_records_sent_total{exporter="prom"}')
        assert _value(got) >= 1

        # every JSON log line about an incident carries its id and host
        lines = [json.loads(x) for x in services["remediate"].output().splitlines() if x.startswith("{")]
        about = [x for x in lines if x.get("incident_id")]
        assert about and all(x["host"] == "node1" for x in about), lines
        assert any(x["status"] == "succeeded" and x["incident_id"] in run_line for x in about)
        assert any(
            x["status"] == "skipped" and x["gate"] == "cooldown" and x["incident_id"] == "inc-second" for x in about
        )
        detect_lines = [json.loads(x) for x in services["detect"].output().splitlines() if x.startswith("{")]
        opened = [x for x in detect_lines if x.get("status") == "open"]
        assert opened and opened[0]["host"] == "node1" and opened[0]["incident_id"] in run_line
    finally:
        if prometheus:
            prometheus.close()
        for s in services.values():
            s.stop()
        node.terminate()
        node.wait(10)


def test_metrics_server_readiness_and_paths():
    server = metrics.serve(0)
    try:
        assert http_get(server.url + "/ready")[0] == 503
        server.set_ready(True)
        assert http_get(server.url + "/ready") == (200, "ready\n")
        assert http_get(server.url + "/healthz")[0] == 200
        assert http_get(server.url + "/nope")[0] == 404
        metrics.set_kill_switch(True)
        code, body = http_get(server.url + "/metrics")
        assert code == 200 and "fleetmedic_kill_switch_engaged 1.0" in body
    finally:
        metrics.set_kill_switch(False)
        server.close()


def test_grafana_dashboard_queries_only_series_fleetmedic_serves():
    """Every fleetmedic_* name in deploy/grafana/fleetmedic.json is one the services expose."""
    import re
    from pathlib import Path

    from prometheus_client import REGISTRY

    from ingest.health import render
    from ingest.publisher import ExporterHealth

    served = set()
    for family in REGISTRY.collect():
        served.update(s.name for s in family.samples)
        served.add(family.name)
        served.update(f"{family.name}{suffix}" for suffix in ("_total", "_bucket", "_count", "_sum"))
    served.update(
        re.findall(r"^(fleetmedic_\w+?)(?:\{| )", render(ExporterHealth("x", extra={"targets_down": 0})), re.M)
    )
    dashboard = json.loads((Path(__file__).parent.parent / "deploy" / "grafana" / "fleetmedic.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {name for e in exprs for name in re.findall(r"fleetmedic_\w+", e)}
    assert len(exprs) >= 14 and used and used <= served, used - served


def test_module_doctests():
    import doctest

    from fleetmedic import logfmt

    for module in (metrics, logfmt):
        assert doctest.testmod(module).failed == 0
