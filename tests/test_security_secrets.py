"""Secrets stay secret: a remediator started with its password in the environment and debug
logging, running a playbook that gathers facts (the whole environment) and prints it, leaves the
password in no log, no record and no file of the runner's artifacts; the broker's log holds no
password either. The test greps them all."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import yaml
from kafka_helpers import read_topic
from remediator_kit import TEST_PLAYBOOKS, incident, send, wait_for_status

from fleetmedic.pki import ROLES, client_settings
from fleetmedic.topics import topic_name


def test_secrets_are_absent_from_logs_records_and_runner_artifacts(secure_cluster, tmp_path):
    prefix = secure_cluster.new_prefix()
    detector, reviewer = secure_cluster.settings("detector", prefix), secure_cluster.settings("reviewer", prefix)
    password = secure_cluster.password("remediator")
    config = client_settings(secure_cluster.layout, "remediator", secure_cluster.bootstrap)
    del config["security"]["sasl_plain_password_file"]  # the password comes from the environment
    config.update(topic_prefix=prefix)
    (tmp_path / "remediator.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "policy.yaml").write_text(
        yaml.safe_dump(
            {
                "gates": {"cooldown_s": 0},
                "rules": [
                    {
                        "name": "show_env",
                        "match": {"kinds": ["service_down"]},
                        "steps": [{"action": "show_env", "playbook": "env_facts.yml", "timeout_s": 120}],
                    }
                ],
            }
        )
    )
    artifacts, out = tmp_path / "artifacts", tmp_path / "remediator.out"
    env = {**os.environ, "FLEETMEDIC_SECURITY__SASL_PLAIN_PASSWORD": password}
    with open(out, "wb") as sink:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fleetmedic.cli",
                "-v",
                "--config",
                str(tmp_path / "remediator.yaml"),
                "remediate",
                "--policy",
                str(tmp_path / "policy.yaml"),
                "--playbooks",
                str(TEST_PLAYBOOKS),
                "--artifacts",
                str(artifacts),
                "--group",
                prefix + "rem",
            ],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
        try:
            send(detector, incident("localhost", "inc-env"))
            done = wait_for_status(reviewer, "succeeded", incident_id="inc-env", timeout_s=180)[0]
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
    assert done.rc == 0
    log = out.read_text()
    assert "remediator: group" in log and "DEBUG" in log  # debug logging was on: the grep means something
    files = [p for p in artifacts.rglob("*") if p.is_file()]
    dumped = b"".join(p.read_bytes() for p in files)
    assert b"ansible_env" in dumped and b"FLEETMEDIC_SECURITY__SASL_PLAIN_PASSWORD" in dumped  # env was captured
    assert password.encode() not in dumped, [str(p) for p in files if password.encode() in p.read_bytes()]
    assert password not in log
    records = b"".join(
        r[3]
        for t in ("remediations.v1", "deadletter.v1", "incidents.v1")
        for r in read_topic(reviewer, topic_name(reviewer, t))
    )
    assert b"inc-env" in records and password.encode() not in records
    broker_log = (Path(secure_cluster.data_dir) / "broker.log").read_text(errors="replace")
    for role in ROLES:
        assert secure_cluster.password(role) not in broker_log, role
