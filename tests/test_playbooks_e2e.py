"""End to end on the real broker: an incident record → the remediator → a real playbook → the real effect.

The service test kills a real HTTP service under supervisord and sees it answer again; the Slurm
test sees a running job move from the drained node1 to node2 (skipped, with the reason, without
Slurm). Both check the remediation records in order.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from kafka_helpers import free_port
from remediator_kit import incident, send, statuses, wait_for_status

from fleetmedic.transport import wait_until
from fleetmedic_demo.testbed import DemoService, SlurmCluster, slurm_missing_reason
from remediator.engine import Remediator, RunnerConfig
from remediator.policy import Policy

PLAYBOOKS = Path(__file__).resolve().parent.parent / "playbooks"
RELAXED = {"cooldown_s": 0, "blast_radius": {"max_percent": 100}, "flapping": {"max_runs": 100, "within_s": 60}}


class _Remediator:
    """The real engine with the real playbooks directory, in a thread of the test process."""

    def __init__(self, settings, policy: Policy, tmp_path: Path, group_id: str):
        self.engine = Remediator(
            settings,
            policy,
            RunnerConfig(playbooks_dir=PLAYBOOKS, artifacts_dir=tmp_path / "artifacts"),
            group_id=group_id,
        )
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.engine.run(install_signals=False)
        except BaseException as exc:
            self.error = exc

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.engine.stop()
        self.thread.join(timeout=60)
        if self.error:
            raise self.error


def test_killed_service_answers_again(settings, tmp_path):
    port = free_port()
    # the health check goes to the host's own address (the inventory), never to a URL an exporter names
    policy = Policy.model_validate(
        {
            "host_groups": {"local": ["localhost"]},
            "gates": RELAXED,
            "inventory": {"localhost": "127.0.0.1"},
            "rules": [
                {
                    "name": "service_down",
                    "match": {"kinds": ["service_down"]},
                    "steps": [
                        {
                            "action": "restart_service",
                            "playbook": "restart_service.yml",
                            "timeout_s": 120,
                            "vars": {
                                "service": {"from": "subject", "pattern": "^[a-z]+$"},
                                "health_url": {"host_url": {"port": port, "path": "/"}},
                            },
                        }
                    ],
                }
            ],
        }
    )
    with DemoService(tmp_path / "sv", port=port) as demo, pytest.MonkeyPatch.context() as env:
        # the policy passes the program and URL; where supervisord listens is the remediator's setup
        env.setenv("FLEETMEDIC_SUPERVISOR_CONF", str(demo.config))
        wait_until(lambda: demo.answer() is not None, 10, what="demo answering")
        with _Remediator(settings, policy, tmp_path, "e2e-restart"):
            old_pid = demo.kill9()
            t_fault = time.monotonic()
            wait_until(lambda: demo.answer() is None, 10, what="demo down")
            sent_at = datetime.now(UTC)
            send(settings, incident("localhost", "inc-svc", labels={"health_url": "http://169.254.169.254/"}))
            wait_until(lambda: demo.answer() is not None, 90, what="demo answering again")
            t_healed = time.monotonic()
            done = wait_for_status(settings, "succeeded", incident_id="inc-svc", timeout_s=30)
        assert demo.answer()["pid"] != old_pid
    assert statuses(settings, "inc-svc") == [
        ("claimed", "restart_service", 0),
        ("running", "restart_service", 0),
        ("succeeded", "restart_service", 0),
    ]
    record = done[0]
    assert record.rc == 0 and record.run.changed >= 1 and record.run.failed == 0
    assert record.extra_vars == {"service": "demo", "health_url": demo.url}
    print(
        f"incident sent → playbook started {(record.started_at - sent_at).total_seconds():.2f} s; "
        f"fault → healed {t_healed - t_fault:.2f} s"
    )


@pytest.mark.skipif(slurm_missing_reason() is not None, reason=slurm_missing_reason() or "")
def test_job_moves_from_drained_node1_to_node2(settings, tmp_path):
    policy = Policy.model_validate(
        {
            "host_groups": {"slurm": ["node1", "node2"]},
            "gates": RELAXED,
            "rules": [
                {
                    "name": "gpu_fell_off_bus",
                    "match": {"kinds": ["xid"], "host_groups": ["slurm"]},
                    "steps": [
                        {
                            "action": "drain_node",
                            "playbook": "slurm_drain.yml",
                            "timeout_s": 120,
                            "vars": {"node": {"from": "host"}, "reason": {"from": "summary", "max_length": 200}},
                        }
                    ],
                }
            ],
        }
    )
    with SlurmCluster(tmp_path / "slurm") as slurm, pytest.MonkeyPatch.context() as env:
        env.setenv("SLURM_CONF", str(slurm.conf))
        job = slurm.submit("node1")
        wait_until(
            lambda: slurm.job(job).get("NodeList") == "node1" and slurm.job(job)["JobState"] == "RUNNING",
            30,
            what="job running on node1",
        )
        with _Remediator(settings, policy, tmp_path, "e2e-slurm"):
            send(settings, incident("node1", "inc-xid", kind="xid"))
            wait_for_status(settings, "succeeded", incident_id="inc-xid", timeout_s=90)
            wait_until(
                lambda: slurm.job(job).get("NodeList") == "node2" and slurm.job(job)["JobState"] == "RUNNING",
                30,
                what="job running on node2",
            )
        node1 = slurm.node("node1")
        assert "DRAIN" in node1["State"] and node1["Reason"] == "fleetmedic: xid on node1"
        assert slurm.job(job)["Restarts"] == "1"
    assert statuses(settings, "inc-xid") == [
        ("claimed", "drain_node", 0),
        ("running", "drain_node", 0),
        ("succeeded", "drain_node", 0),
    ]
