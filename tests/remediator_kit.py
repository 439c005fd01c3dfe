"""Shared pieces of the remediator tests: incidents, a policy around the marker playbook, an engine thread."""

from __future__ import annotations

import tempfile
import threading
from datetime import UTC, datetime
from pathlib import Path

from kafka_helpers import read_topic

from fleetmedic.config import Settings
from fleetmedic.producer import Producer
from fleetmedic.schemas import Evidence, Incident, Remediation
from fleetmedic.topics import topic_name
from fleetmedic.transport import wait_until
from remediator.approvals import generate_key
from remediator.engine import Remediator, RunnerConfig
from remediator.policy import Policy

TEST_PLAYBOOKS = Path(__file__).parent / "data" / "playbooks"
# Approvers' Ed25519 keys for the tests: private keys in a temporary folder, public keys in make_policy.
APPROVER_KEYS = Path(tempfile.mkdtemp(prefix="fm-approver-keys-"))
APPROVERS = {name: generate_key(APPROVER_KEYS / f"{name}.key") for name in ("alice", "bob")}


def approver_key(name: str) -> Path:
    """The private key file of a test approver listed in make_policy's policy."""
    return APPROVER_KEYS / f"{name}.key"


def incident(
    host: str = "node1",
    id: str = "inc-1",
    *,
    kind: str = "service_down",
    status: str = "open",
    labels: dict | None = None,
    severity: str = "critical",
    time: datetime | None = None,
) -> Incident:
    now = time or datetime.now(UTC)
    return Incident(
        id=id,
        fingerprint=f"{host}/{kind}/demo",
        host=host,
        kind=kind,
        subject="demo",
        status=status,
        severity=severity,
        detector="test",
        time=now,
        opened_at=now,
        summary=f"{kind} on {host}",
        labels=labels or {},
        evidence=Evidence(details={"exit_code": 137}),
    )


def marker_step(marker: Path, **extra) -> dict:
    step = {
        "action": "restart_service",
        "playbook": "marker.yml",
        "vars": {"target_host": {"from": "host"}, "marker_id": {"from": "id"}, "marker_file": {"value": str(marker)}},
    }
    step.update(extra)
    return step


def make_policy(
    marker: Path, *, gates: dict | None = None, steps: list | None = None, extra_rules: list | None = None, **rule
) -> Policy:
    relaxed = {
        "cooldown_s": 0,
        "flapping": {"max_runs": 100, "within_s": 60},
        "blast_radius": {"max_percent": 100},
        "rate_limit": {"max_runs": 100, "per_s": 60},
    }
    relaxed.update(gates or {})
    return Policy.model_validate(
        {
            "host_groups": {"all": ["node1", "node2", "node3", "node4"]},
            "gates": relaxed,
            "approvals": {"expire_s": 60, "approvers": dict(APPROVERS)},
            "rules": [
                {
                    "name": "service_down",
                    "match": {"kinds": ["service_down"]},
                    "steps": steps or [marker_step(marker)],
                    **rule,
                }
            ]
            + (extra_rules or []),
        }
    )


def send(settings: Settings, *records) -> None:
    with Producer(settings) as producer:
        for record in records:
            producer.send(record)
        producer.flush()


def remediations(settings: Settings) -> list[Remediation]:
    """Every remediation record in the order it was decided: claims sit on their own partition
    (remediator/agreement.py), so the topic's partition order is not the story's order."""
    records = [r[3] for r in read_topic(settings, topic_name(settings, Remediation.topic), Remediation)]
    return sorted(records, key=lambda r: r.time)


def statuses(settings: Settings, incident_id: str | None = None) -> list[tuple]:
    return [
        (r.status, r.action, r.step)
        for r in remediations(settings)
        if incident_id is None or r.incident_id == incident_id
    ]


def marker_lines(marker: Path) -> list[str]:
    return marker.read_text().splitlines() if marker.exists() else []


class EngineThread:
    """A Remediator running in a thread of the test process, stopped cleanly at the end."""

    def __init__(
        self, settings: Settings, policy: Policy, tmp_path: Path, *, playbooks_dir: Path = TEST_PLAYBOOKS, **kwargs
    ):
        self.engine = Remediator(
            settings, policy, RunnerConfig(playbooks_dir=playbooks_dir, artifacts_dir=tmp_path / "artifacts"), **kwargs
        )
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.engine.run(install_signals=False)
        except BaseException as exc:  # surfaced by stop()
            self.error = exc

    def stop(self) -> None:
        self.engine.stop()
        self.thread.join(timeout=60)
        if self.error:
            raise self.error

    def __enter__(self) -> EngineThread:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def wait_for_status(
    settings: Settings, status: str, *, incident_id: str | None = None, count: int = 1, timeout_s: float = 30.0
) -> list[Remediation]:
    def found():
        return [
            r
            for r in remediations(settings)
            if r.status == status and (incident_id is None or r.incident_id == incident_id)
        ]

    wait_until(lambda: len(found()) >= count, timeout_s, interval_s=0.2, what=f"{count} {status} record(s)")
    return found()


__all__ = [
    "incident",
    "make_policy",
    "marker_step",
    "send",
    "remediations",
    "statuses",
    "marker_lines",
    "EngineThread",
    "wait_for_status",
    "TEST_PLAYBOOKS",
    "APPROVERS",
    "approver_key",
]
