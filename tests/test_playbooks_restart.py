"""restart_service.yml against a real HTTP service under a real supervisord (deploy/testbed)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from kafka_helpers import free_port

from fleetmedic.transport import wait_until
from fleetmedic_demo.testbed import DemoService
from remediator.runner import PlaybookRun, run_playbook

PLAYBOOKS = Path(__file__).resolve().parent.parent / "playbooks"


@pytest.fixture
def demo(tmp_path):
    with DemoService(tmp_path / "supervisor", port=free_port()) as service:
        wait_until(lambda: service.answer() is not None, 10, what="demo service answering")
        yield service


def _restart(demo, tmp_path, check=False):
    return run_playbook(
        PlaybookRun("restart_service.yml", demo.restart_vars(), check=check, timeout_s=120),
        playbooks_dir=PLAYBOOKS,
        artifacts_dir=tmp_path / "artifacts",
    )


def test_killed_service_is_brought_back(demo, tmp_path):
    old_pid = demo.kill9()
    t_fault = time.monotonic()
    wait_until(lambda: "EXITED" in demo.status(), 10, what="supervisord noticing the kill")
    assert demo.answer() is None

    result = _restart(demo, tmp_path)
    assert result.status == "succeeded", result
    assert result.summary.changed >= 1 and result.summary.failed == 0
    answer = demo.answer()
    assert answer is not None and answer["pid"] != old_pid  # a new process answers HTTP again
    assert "RUNNING" in demo.status()
    print(
        f"fault to healed through restart_service.yml: {time.monotonic() - t_fault:.2f} s "
        f"(playbook {result.duration_s:.2f} s)"
    )

    # idempotent: a healthy service is left alone
    again = _restart(demo, tmp_path)
    assert again.status == "succeeded" and again.summary.changed == 0
    assert demo.answer()["pid"] == answer["pid"]


def test_check_mode_leaves_the_service_down(demo, tmp_path):
    demo.kill9()
    wait_until(lambda: "EXITED" in demo.status(), 10, what="supervisord noticing the kill")
    result = _restart(demo, tmp_path, check=True)
    assert result.status == "succeeded"
    assert result.summary.changed == 1  # it would restart the program ...
    assert "EXITED" in demo.status() and demo.answer() is None  # ... and did not


def test_unknown_program_fails_clearly(demo, tmp_path):
    result = run_playbook(
        PlaybookRun("restart_service.yml", {**demo.restart_vars(), "service": "nosuch"}),
        playbooks_dir=PLAYBOOKS,
        artifacts_dir=tmp_path / "artifacts",
    )
    assert result.status == "failed"
    assert result.summary.failed_tasks == ["Start or restart the supervisor program"]
