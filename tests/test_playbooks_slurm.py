"""slurm_drain.yml / slurm_resume.yml against a real two-node Slurm cluster on this machine.

Skips, with the reason, where Slurm is not installed or cannot run (deploy/testbed/slurm.sh).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetmedic.transport import wait_until
from fleetmedic_demo.testbed import SlurmCluster, slurm_missing_reason
from remediator.runner import PlaybookRun, run_playbook

PLAYBOOKS = Path(__file__).resolve().parent.parent / "playbooks"

_missing = slurm_missing_reason()
pytestmark = pytest.mark.skipif(_missing is not None, reason=_missing or "")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with SlurmCluster(tmp_path_factory.mktemp("slurm")) as slurm:
        yield slurm


@pytest.fixture
def slurm(cluster, monkeypatch):
    """The cluster with both nodes back in service and no jobs, before and after each test."""

    def reset():
        cluster.run("scancel", "--full", "--signal=KILL", "--user=root")
        for node in ("node1", "node2"):
            if "DRAIN" in cluster.node(node)["State"]:
                cluster.run("scontrol", "update", f"NodeName={node}", "State=RESUME")
        wait_until(lambda: not cluster.run("squeue", "-h").strip(), 20, what="no jobs left")
        wait_until(
            lambda: all(cluster.node(n)["State"] == "IDLE" for n in ("node1", "node2")), 20, what="both nodes idle"
        )

    reset()
    monkeypatch.setenv("SLURM_CONF", str(cluster.conf))
    yield cluster
    reset()


def _play(name, extra_vars, tmp_path, check=False):
    return run_playbook(
        PlaybookRun(name, extra_vars, check=check, timeout_s=120),
        playbooks_dir=PLAYBOOKS,
        artifacts_dir=tmp_path / "artifacts",
    )


def _running_on(slurm, job_id, node):
    job = slurm.job(job_id)
    return job.get("JobState") == "RUNNING" and job.get("NodeList") == node


def test_drain_moves_the_running_job_to_node2_and_resume_returns_node1(slurm, tmp_path):
    job = slurm.submit("node1")
    wait_until(lambda: _running_on(slurm, job, "node1"), 30, what=f"job {job} running on node1")

    result = _play("slurm_drain.yml", {"node": "node1", "reason": "xid 79 on gpu0"}, tmp_path)
    assert result.status == "succeeded", result
    node1 = slurm.node("node1")
    assert "DRAIN" in node1["State"]
    assert node1["Reason"] == "fleetmedic: xid 79 on gpu0"
    wait_until(lambda: _running_on(slurm, job, "node2"), 30, what=f"job {job} running on node2")
    assert slurm.job(job)["Restarts"] == "1"

    again = _play("slurm_drain.yml", {"node": "node1", "reason": "xid 79 on gpu0"}, tmp_path)
    assert again.status == "succeeded" and again.summary.changed == 0  # idempotent
    assert _running_on(slurm, job, "node2")

    resumed = _play("slurm_resume.yml", {"node": "node1"}, tmp_path)
    assert resumed.status == "succeeded" and resumed.summary.changed == 1
    wait_until(lambda: "DRAIN" not in slurm.node("node1")["State"], 10, what="node1 back in service")


def test_a_reason_a_human_set_is_never_overwritten(slurm, tmp_path):
    slurm.run("scontrol", "update", "NodeName=node1", "State=DRAIN", "Reason=human: fan noise")
    result = _play("slurm_drain.yml", {"node": "node1", "reason": "xid 79"}, tmp_path)
    assert result.status == "succeeded"
    assert slurm.node("node1")["Reason"] == "human: fan noise"

    # nor is a node a human drained resumed, unless forced
    refused = _play("slurm_resume.yml", {"node": "node1"}, tmp_path)
    assert refused.status == "failed"
    assert refused.summary.failed_tasks == ["Refuse to resume a node a human drained"]
    assert "DRAIN" in slurm.node("node1")["State"]


def test_check_mode_drains_nothing(slurm, tmp_path):
    job = slurm.submit("node1")
    wait_until(lambda: _running_on(slurm, job, "node1"), 30, what=f"job {job} running on node1")
    result = _play("slurm_drain.yml", {"node": "node1", "reason": "xid 79"}, tmp_path, check=True)
    assert result.status == "succeeded" and result.summary.changed == 0
    said = (result.artifacts / "stdout").read_text()
    assert "would drain node1 with reason" in said and "fleetmedic: xid 79" in said
    assert f"'{job}'" in said  # the job it would requeue
    assert "DRAIN" not in slurm.node("node1")["State"]
    assert _running_on(slurm, job, "node1") and slurm.job(job)["Restarts"] == "0"
