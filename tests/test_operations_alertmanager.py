"""Alertmanager in and out, against the real Prometheus, Alertmanager and node_exporter binaries.

In: a Prometheus rule over a node_exporter textfile metric fires, Alertmanager's webhook reaches
`fleetmedic alerts receive` (the real command), the incident opens, the remediator runs the
marker playbook, and the incident resolves when the alert does. Out: awaiting-approval,
escalated and kill-switch needs appear in Alertmanager's API and resolve when the need ends; a
silence created in Alertmanager stops a remediation with the silence gate's reason.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from conftest import make_settings
from kafka_helpers import free_port, read_topic
from monitoring_stack import NodeExporter, alertmanager, http_json, prometheus
from remediator_kit import (
    EngineThread,
    approver_key,
    incident,
    make_policy,
    marker_lines,
    marker_step,
    send,
    wait_for_status,
)

from fleetmedic.config import AlertsSettings
from fleetmedic.schemas import Control, Incident
from fleetmedic.topics import create_topics, topic_name
from fleetmedic.transport import wait_until
from ingest.alertmanager import AlertReceiver, ReceiverServer
from remediator.approvals import write_approval
from remediator.claims import Ledger
from remediator.notify import Notifier, needs

REPO = Path(__file__).resolve().parent.parent


def incidents(settings) -> list[Incident]:
    return [r[3] for r in read_topic(settings, topic_name(settings, Incident.topic), Incident)]


def _env(settings) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETMEDIC_")}
    env["PYTHONPATH"] = str(REPO)
    return env


def test_prometheus_rule_through_alertmanager_drives_a_remediation_and_resolves(kafka_bootstrap, tmp_path):
    settings = make_settings(kafka_bootstrap, alerts=AlertsSettings(label_map={"job": "prom_job"}))
    create_topics(settings)
    marker = tmp_path / "marker.txt"
    policy = make_policy(
        marker,
        extra_rules=[
            {
                "name": "injected_fault",
                "match": {"kinds": ["FleetmedicTestFault"], "labels": {"prom_job": "node"}},
                "steps": [marker_step(marker, resolve_within_s=600)],
            }
        ],
    )

    port = free_port()
    config = tmp_path / "fleetmedic.yaml"  # the label mapping comes from the settings file
    config.write_text(
        yaml.safe_dump(
            {
                "bootstrap_servers": list(settings.bootstrap_servers),
                "topic_prefix": settings.topic_prefix,
                "alerts": {"label_map": {"job": "prom_job"}},
            }
        )
    )
    receiver = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fleetmedic.cli",
            "--config",
            str(config),
            "alerts",
            "receive",
            "--listen",
            f"127.0.0.1:{port}",
        ],
        env=_env(settings),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    node = NodeExporter(tmp_path / "node")
    node.set("# TYPE fleetmedic_test_fault gauge\nfleetmedic_test_fault 0\n")
    am = alertmanager(tmp_path / "am", webhook_url=f"http://127.0.0.1:{port}/alerts")
    try:
        wait_until(lambda: _ready(f"http://127.0.0.1:{port}/-/ready", receiver), 60, what="alerts receive ready")
        with (
            node,
            am,
            prometheus(
                tmp_path / "prom",
                targets=[(f"127.0.0.1:{node.port}", {"host": "node1"})],
                alertmanager_port=am.port,
                rules=[
                    {
                        "alert": "FleetmedicTestFault",
                        "expr": "fleetmedic_test_fault > 0",
                        "for": "0s",
                        "labels": {"severity": "critical"},
                        "annotations": {"summary": "injected fault on {{ $labels.host }}"},
                    }
                ],
            ),
            EngineThread(settings, policy, tmp_path),
        ):
            node.set("# TYPE fleetmedic_test_fault gauge\nfleetmedic_test_fault 1\n")
            wait_until(
                lambda: any(i.status == "open" for i in incidents(settings)),
                60,
                interval_s=0.5,
                what="an incident opened from the alert",
            )
            [opened] = [i for i in incidents(settings) if i.status == "open"]
            [alert] = http_json(am.url + "/api/v2/alerts")
            assert opened.fingerprint == alert["fingerprint"]
            assert (opened.host, opened.kind, opened.detector, opened.severity) == (
                "node1",
                "FleetmedicTestFault",
                "alertmanager",
                "critical",
            )
            assert opened.labels["prom_job"] == "node" and "job" not in opened.labels  # mapped by the config
            assert opened.labels["alertname"] == "FleetmedicTestFault"
            assert opened.summary == "injected fault on node1"

            [ran] = wait_for_status(settings, "succeeded", incident_id=opened.id, timeout_s=120)
            assert ran.action == "restart_service"
            assert [line.split()[0] for line in marker_lines(marker)] == [opened.id]

            node.set("# TYPE fleetmedic_test_fault gauge\nfleetmedic_test_fault 0\n")
            wait_until(
                lambda: any(i.status == "resolve" and i.id == opened.id for i in incidents(settings)),
                60,
                interval_s=0.5,
                what="the incident resolved with its alert",
            )
            [closed] = wait_for_status(settings, "cancelled", incident_id=opened.id, timeout_s=60)
            assert closed.gate == "closed_loop"
        assert len(marker_lines(marker)) == 1  # one run; the resolve ran nothing
        assert [i.status for i in incidents(settings) if i.id == opened.id] == ["open", "resolve"]
    finally:
        receiver.send_signal(signal.SIGTERM)
        out, _ = receiver.communicate(timeout=30)
    assert receiver.returncode == 0, out
    assert f"webhook url http://127.0.0.1:{port}/alerts" in out


def _ready(url: str, proc: subprocess.Popen) -> bool:
    if proc.poll() is not None:
        raise RuntimeError(f"alerts receive exited: {proc.stdout.read()}")
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return resp.status == 200
    except OSError:
        return False


def _alert(
    status: str,
    *,
    fp: str = "a1b2c3d4e5f60718",
    starts: str = "2026-12-01T10:00:00.123456789Z",
    ends: str = "0001-01-01T00:00:00Z",
    **labels,
) -> dict:
    return {
        "status": status,
        "fingerprint": fp,
        "startsAt": starts,
        "endsAt": ends,
        "labels": {"alertname": "DiskFull", "instance": "gpu-07:9100", "job": "node", **labels},
        "annotations": {"summary": "disk full"},
        "generatorURL": "http://prom/graph",
    }


def _post(url: str, body) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_duplicate_and_out_of_order_notifications_are_idempotent(settings):
    receiver = AlertReceiver(settings)
    server = ReceiverServer(("127.0.0.1", 0), receiver)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        firing = {"version": "4", "status": "firing", "alerts": [_alert("firing")]}
        code, first = _post(server.url, firing)
        assert code == 200 and len(first["opened"]) == 1
        [inc_id] = first["opened"]
        assert inc_id == "am-a1b2c3d4e5f60718-20261201T100000"
        assert _post(server.url, firing)[1]["duplicates"] == [inc_id]  # repeat_interval repeat
        resolved = {"status": "resolved", "alerts": [_alert("resolved", ends="2026-12-01T10:05:00Z")]}
        assert _post(server.url, resolved)[1]["resolved"] == [inc_id]
        assert _post(server.url, resolved)[1]["duplicates"] == [inc_id]
        assert _post(server.url, firing)[1]["duplicates"] == [inc_id]  # an old firing retried after the resolve
        # one body: a new episode of the same alert, one without a host, and fleetmedic's own alert
        code, mixed = _post(
            server.url,
            {
                "alerts": [
                    _alert("firing", starts="2026-12-01T11:00:00Z"),
                    {**_alert("firing", fp="ffff000011112222"), "labels": {"alertname": "NoHost"}},
                    _alert("firing", fp="9999888877776666", fleetmedic="true"),
                ]
            },
        )
        assert code == 200
        assert mixed["opened"] == ["am-a1b2c3d4e5f60718-20261201T110000"]
        assert mixed["rejected"][0]["alert"] == "NoHost" and "no host label" in mixed["rejected"][0]["reason"]
        assert mixed["ignored_own"] == 1
        code, bad = _post(server.url, b"{not json")
        assert code == 400 and "not JSON" in bad["error"]
        code, bad = _post(server.url, {"alerts": "x"})
        assert code == 400 and "no `alerts` list" in bad["error"]
    finally:
        server.shutdown()
        server.server_close()
        receiver.close()

    records = incidents(settings)
    assert [(i.id, i.status) for i in records if i.id == inc_id] == [(inc_id, "open"), (inc_id, "resolve")]
    first_open = next(i for i in records if i.id == inc_id)
    assert (first_open.host, first_open.fingerprint, first_open.labels["job"]) == ("gpu-07", "a1b2c3d4e5f60718", "node")
    assert len(records) == 3
    # a restarted receiver knows what was opened and resolved: nothing reopens
    again = AlertReceiver(settings)
    try:
        assert again.recover() == 2
        out = again.handle({"alerts": [_alert("firing"), _alert("firing", starts="2026-12-01T11:00:00Z")]})
        assert out.opened == [] and len(out.duplicates) == 2
    finally:
        again.close()
    assert len(incidents(settings)) == 3


@pytest.fixture(scope="module")
def am_server(tmp_path_factory):
    with alertmanager(tmp_path_factory.mktemp("am")) as am:
        yield am


def _active(am, alertname: str) -> list[dict]:
    return [
        a
        for a in http_json(am.url + "/api/v2/alerts?active=true&silenced=true&inhibited=true")
        if a["labels"].get("alertname") == alertname and a["status"]["state"] != "resolved"
    ]


def test_needs_for_a_person_become_alertmanager_alerts_and_resolve(kafka_bootstrap, tmp_path, am_server):
    settings = make_settings(kafka_bootstrap, alerts=AlertsSettings(alertmanager_url=am_server.url))
    create_topics(settings)
    marker = tmp_path / "marker.txt"
    policy = make_policy(
        marker,
        needs_approval=True,
        extra_rules=[{"name": "gpu_gone", "match": {"kinds": ["xid_79"]}, "steps": [{"action": "human"}]}],
    )
    notifier = Notifier(settings, resend_s=1.0)
    thread = threading.Thread(target=notifier.run, kwargs={"interval_s": 0.2}, daemon=True)
    thread.start()
    try:
        with EngineThread(settings, policy, tmp_path):
            send(settings, incident("node1", "inc-approve"), incident("node2", "inc-gone", kind="xid_79"))
            [waiting] = wait_for_status(settings, "awaiting_approval", incident_id="inc-approve", timeout_s=60)
            wait_until(
                lambda: _active(am_server, "FleetmedicAwaitingApproval"),
                60,
                interval_s=0.3,
                what="the approval alert in Alertmanager",
            )
            [alert] = _active(am_server, "FleetmedicAwaitingApproval")
            assert alert["labels"]["incident_id"] == "inc-approve" and alert["labels"]["host"] == "node1"
            assert alert["labels"]["fleetmedic"] == "true"
            assert (
                alert["annotations"]["report_command"]
                == "fleetmedic report --incident inc-approve -o report-inc-approve.html"
            )
            assert alert["annotations"]["approve_command"] == f"fleetmedic approve {waiting.id}"
            wait_until(
                lambda: _active(am_server, "FleetmedicEscalated"),
                60,
                interval_s=0.3,
                what="the escalation alert in Alertmanager",
            )
            [esc] = _active(am_server, "FleetmedicEscalated")
            assert (esc["labels"]["incident_id"], esc["labels"]["host"], esc["labels"]["severity"]) == (
                "inc-gone",
                "node2",
                "critical",
            )

            write_approval(
                settings,
                waiting.id,
                key_file=approver_key("alice"),
                deny=True,
                by="alice",
                comment="not now",
                valid_s=60,
            )
            wait_for_status(settings, "cancelled", incident_id="inc-approve", timeout_s=60)
            wait_until(
                lambda: not _active(am_server, "FleetmedicAwaitingApproval"),
                60,
                interval_s=0.3,
                what="the approval alert resolved once denied",
            )
            assert _active(am_server, "FleetmedicEscalated")  # that need has not ended

            send(settings, incident("node2", "inc-gone", kind="xid_79", status="resolve"))
            wait_until(
                lambda: not _active(am_server, "FleetmedicEscalated"),
                60,
                interval_s=0.3,
                what="the escalation alert resolved with its incident",
            )

            now = datetime.now(UTC)
            send(
                settings,
                Control(
                    id="kill_switch",
                    kind="kill_switch",
                    active=True,
                    by="oncall",
                    reason="bad driver rollout",
                    time=now,
                ),
            )
            wait_until(
                lambda: _active(am_server, "FleetmedicKillSwitch"), 60, interval_s=0.3, what="the kill switch alert"
            )
            [ks] = _active(am_server, "FleetmedicKillSwitch")
            assert ks["annotations"]["reason"] == "bad driver rollout"
            send(
                settings,
                Control(
                    id="kill_switch", kind="kill_switch", active=False, by="oncall", time=now + timedelta(seconds=1)
                ),
            )
            wait_until(
                lambda: not _active(am_server, "FleetmedicKillSwitch"),
                60,
                interval_s=0.3,
                what="the kill switch alert resolved on resume",
            )
    finally:
        notifier.stop()
        thread.join(timeout=30)
    assert notifier.errors == 0


def test_failed_and_unreachable_runs_are_needs(tmp_path):
    """The mapping from ledger to needs for the run outcomes (no binaries needed for this part)."""
    from fleetmedic.schemas import Remediation, RunSummary

    now = datetime.now(UTC)
    ledger = Ledger()

    def rec(rid, inc, status, **kw):
        return Remediation(
            id=rid,
            incident_id=inc,
            fingerprint="f",
            host="node9",
            action="reset_gpu",
            playbook="reset_gpu.yml",
            status=status,
            time=now,
            **kw,
        )

    for status in ("claimed", "running"):
        ledger.apply(rec("rem-1", "inc-f", status))
        ledger.apply(rec("rem-2", "inc-u", status))
    ledger.apply(rec("rem-1", "inc-f", "failed", run=RunSummary(failed=1, failed_tasks=["reset"])))
    ledger.apply(rec("rem-2", "inc-u", "failed", run=RunSummary(unreachable=1)))
    names = {(dict(n.labels)["alertname"], dict(n.labels)["incident_id"]) for n in needs(ledger).values()}
    assert names == {("FleetmedicRunFailed", "inc-f"), ("FleetmedicHostUnreachable", "inc-u")}
    ledger.apply(rec("rem-c", "inc-f", "cancelled", gate="closed_loop"))
    names = {dict(n.labels)["alertname"] for n in needs(ledger).values()}
    assert names == {"FleetmedicHostUnreachable"}


def test_an_alertmanager_silence_stops_a_remediation(kafka_bootstrap, tmp_path, am_server):
    settings = make_settings(
        kafka_bootstrap, alerts=AlertsSettings(alertmanager_url=am_server.url, silence_refresh_s=0.5)
    )
    create_topics(settings)
    marker = tmp_path / "marker.txt"
    now = datetime.now(UTC)
    created = http_json(
        am_server.url + "/api/v2/silences",
        {
            "matchers": [{"name": "host", "value": "node3", "isRegex": False, "isEqual": True}],
            "startsAt": now.isoformat(),
            "endsAt": (now + timedelta(hours=1)).isoformat(),
            "createdBy": "oncall",
            "comment": "disk swap in progress",
        },
    )
    silence_id = created["silenceID"]
    try:
        with EngineThread(settings, make_policy(marker), tmp_path) as engine:
            wait_until(
                lambda: any(s.id == silence_id for s in engine.engine.control.am_silences),
                30,
                what="the remediator read the Alertmanager silence",
            )
            send(settings, incident("node3", "inc-silenced"), incident("node4", "inc-free"))
            [skip] = wait_for_status(settings, "skipped", incident_id="inc-silenced", timeout_s=60)
            wait_for_status(settings, "succeeded", incident_id="inc-free", timeout_s=120)
        assert skip.gate == "silence"
        assert f"Alertmanager silence {silence_id}" in skip.reason
        assert 'host="node3"' in skip.reason and "by oncall" in skip.reason and "disk swap in progress" in skip.reason
        assert [line.split()[0] for line in marker_lines(marker)] == ["inc-free"]
    finally:
        req = urllib.request.Request(am_server.url + f"/api/v2/silence/{silence_id}", method="DELETE")
        urllib.request.urlopen(req, timeout=5).read()


def test_an_unreachable_alertmanager_is_survived_and_said(settings):
    """Neither the notifier nor the silence gate's reader fail when Alertmanager does not answer."""
    import logging

    from remediator.control import ActiveStop, ControlState

    said: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: said.append(record.getMessage())
    logging.getLogger("remediator.notify").addHandler(handler)

    dead = f"http://127.0.0.1:{free_port()}"
    settings = settings.model_copy(update={"alerts": AlertsSettings(alertmanager_url=dead, timeout_s=1)})
    notifier = Notifier(settings, resend_s=1.0)
    try:
        send(settings, Control(id="kill_switch", kind="kill_switch", active=True, by="oncall", time=datetime.now(UTC)))
        wait_until(lambda: notifier.control.kill_switch is not None, 30, what="the pause read")
        assert notifier.step() == 0 and notifier.errors == 1
        assert notifier.step() == 0 and notifier.errors == 2
        assert list(notifier.ending) == [] and len(notifier.active) == 1  # still to be delivered
    finally:
        notifier.close()
        logging.getLogger("remediator.notify").removeHandler(handler)
    assert sum("did not take 1 alerts" in m for m in said) == 1  # once per outage

    control = ControlState(settings)
    try:
        kept = ActiveStop(
            id="s1",
            source="alertmanager",
            by="x",
            reason="",
            ends_at=datetime.now(UTC) + timedelta(hours=1),
            matchers=(),
        )
        control.am_silences = [kept]
        control.refresh_alertmanager()
        assert control.am_silences == [kept] and control.am_error  # the last silences read are kept
    finally:
        control.close()
