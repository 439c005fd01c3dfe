"""`fleetmedic doctor` and `topics create --check` against a real broker, on a deployment
misconfigured on purpose: topics with the wrong partitions and retention, one topic missing, a
consumer group far behind, a policy naming a playbook that is not there, an inventory host that
does not answer. Each problem must be reported with a fix; a sound deployment reports none."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_settings
from kafka import KafkaConsumer, TopicPartition
from kafka.admin import KafkaAdminClient
from kafka.structs import OffsetAndMetadata
from kafka_helpers import free_port

from fleetmedic.cli import main
from fleetmedic.producer import Producer
from fleetmedic.schemas import MetricBatch
from fleetmedic.topics import create_topics, topic_name
from review.doctor.runner import Doctor

ROOT = Path(__file__).resolve().parent.parent


def _settings_env(settings) -> dict[str, str]:
    """The environment that points the CLI at `settings`' broker, prefix and topic layout."""
    return {
        "FLEETMEDIC_BOOTSTRAP_SERVERS": ",".join(settings.bootstrap_servers),
        "FLEETMEDIC_TOPIC_PREFIX": settings.topic_prefix,
        "FLEETMEDIC_TOPICS__PARTITIONS": str(settings.topics.partitions),
        "FLEETMEDIC_TOPICS__RETENTION_HOURS": str(settings.topics.retention_hours),
    }


def _cli(settings, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {"PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin", "HOME": str(Path.home())}
    env.update(_settings_env(settings))
    return subprocess.run(
        [sys.executable, "-m", "fleetmedic.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=ROOT,
    )


def _cli_in_process(settings, monkeypatch, capsys, *args: str) -> tuple[int, str]:
    """(exit status, stdout) of `fleetmedic ARGS` run by cli.main in this process: the same command
    as _cli without a fresh interpreter's imports (about a second each, several under load)."""
    for name, value in _settings_env(settings).items():
        monkeypatch.setenv(name, value)
    capsys.readouterr()  # start from an empty capture
    rc = main(list(args))
    return rc, capsys.readouterr().out


@pytest.fixture
def broken(kafka_bootstrap, tmp_path):
    """Topics made with 2 partitions and 1 h retention; the deployment's settings say 3 and 168 h."""
    made = make_settings(kafka_bootstrap)
    made = made.model_copy(update={"topics": made.topics.model_copy(update={"partitions": 2, "retention_hours": 1.0})})
    create_topics(made)
    admin = KafkaAdminClient(**made.kafka_kwargs())
    admin.delete_topics([topic_name(made, "approvals.v1")])
    admin.close()
    # a detector group that read nothing of 30 records
    producer = Producer(made)
    for i in range(30):
        producer.send(MetricBatch(host=f"h{i % 3}", time="2026-01-01T00:00:00Z", source="host", values={"x": 1.0}))
    producer.flush()
    producer.close()
    metrics = topic_name(made, "metrics.v1")
    consumer = KafkaConsumer(group_id=made.topic_prefix + "detectors", enable_auto_commit=False, **made.kafka_kwargs())
    consumer.commit({TopicPartition(metrics, p): OffsetAndMetadata(0, "", -1) for p in range(2)})
    consumer.close()
    books = tmp_path / "playbooks"
    books.mkdir()
    (books / "restart_service.yml").write_text((ROOT / "playbooks" / "restart_service.yml").read_text())
    inventory = tmp_path / "hosts.yaml"
    inventory.write_text(
        "all:\n  hosts:\n"
        f"    here: {{ansible_connection: local, ansible_python_interpreter: {sys.executable}}}\n"
        f"    ghost: {{ansible_host: 127.0.0.1, ansible_port: {free_port()}, ansible_user: nobody}}\n"
    )
    deployed = make_settings(kafka_bootstrap, topic_prefix=made.topic_prefix)  # partitions 3, 168 h
    return deployed, books, inventory


def test_doctor_finds_every_problem_of_a_misconfigured_deployment(broken):
    settings, books, inventory = broken
    findings = Doctor(
        settings,
        groups=(settings.topic_prefix + "detectors",),
        max_lag=10,
        policy=ROOT / "deploy" / "policy.example.yaml",
        playbooks=books,
        inventory=inventory,
        timeout_s=5,
    ).run()
    fails = {(f.check, f.message) for f in findings if f.level == "fail"}
    by_check = {}
    for check, message in fails:
        by_check.setdefault(check, []).append(message)
    prefix = settings.topic_prefix
    topics = by_check["topics"]
    assert f"{prefix}approvals.v1: missing" in topics
    assert f"{prefix}metrics.v1: partitions is 2, the configuration wants 3" in topics
    assert f"{prefix}metrics.v1: retention.ms is 3600000, the configuration wants 604800000" in topics
    assert any("30 record(s) behind" in m and "more than --max-lag 10" in m for m in by_check["lag"])
    missing_books = sorted(m.split(" names ")[1].split(",")[0] for m in by_check["playbooks"])
    assert missing_books == ["collect_diagnostics.yml", "gpu_reset.yml", "slurm_drain.yml"]
    assert by_check["inventory"] == ["1 of 2 host(s) do not answer: ghost (unreachable)"]
    assert "broker" not in by_check and "ansible" not in by_check
    assert all(f.fix for f in findings if f.level == "fail")
    acls = [f for f in findings if f.check == "acls"]
    assert [f.level for f in acls] == ["warn"] and "no authorizer" in acls[0].message


def test_doctor_on_a_sound_deployment_reports_no_problem(settings, tmp_path):
    inventory = tmp_path / "hosts.ini"
    inventory.write_text(f"here ansible_connection=local ansible_python_interpreter={sys.executable}\n")
    findings = Doctor(
        settings, groups=(), policy=ROOT / "deploy" / "policy.example.yaml", inventory=inventory, timeout_s=5
    ).run()
    assert [f for f in findings if f.level == "fail"] == []
    assert {f.check for f in findings if f.level == "ok"} >= {"broker", "topics", "ansible", "playbooks", "inventory"}


def test_doctor_command_says_what_is_wrong_and_exits_1(broken):
    settings, books, _ = broken
    done = _cli(
        settings,
        "doctor",
        "--role",
        "detect",
        "--group",
        settings.topic_prefix + "detectors",
        "--max-lag",
        "10",
        "--timeout",
        "5",
    )
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    assert any(line.startswith("FAIL  topics") and "approvals.v1: missing" in line for line in lines)
    assert any("fix: fleetmedic topics create" in line for line in lines)
    assert any(line.startswith("skip  ansible") for line in lines)  # a detector host needs no ansible
    assert lines[-1].startswith("doctor: ") and "problem(s)" in lines[-1]


def test_doctor_when_the_broker_is_not_there():
    settings = make_settings(f"127.0.0.1:{free_port()}")
    findings = Doctor(settings, role="exporter", timeout_s=2).run()
    assert findings[0].check == "broker" and findings[0].level == "fail" and "does not answer" in findings[0].message
    assert [f.level for f in findings if f.check in ("topics", "acls", "lag")] == ["skip"] * 3


def test_topics_check_reports_drift_and_changes_nothing(broken, monkeypatch, capsys):
    settings, _, _ = broken
    # the first run goes through the real `fleetmedic` process (the command end to end); the
    # runs after it only ask the broker what changed, so they call the same main in-process
    done = _cli(settings, "topics", "create", "--check")
    assert done.returncode == 1, done.stderr
    assert f"drift    {settings.topic_prefix}approvals.v1: missing" in done.stdout
    assert "nothing was changed" in done.stdout
    rc, again = _cli_in_process(settings, monkeypatch, capsys, "topics", "create", "--check")
    assert rc == 1 and again == done.stdout  # --check created nothing, altered nothing
    assert _cli_in_process(settings, monkeypatch, capsys, "topics", "create")[0] == 0
    _, after = _cli_in_process(settings, monkeypatch, capsys, "topics", "create", "--check")
    assert "approvals.v1: missing" not in after and "partitions is 2" in after
