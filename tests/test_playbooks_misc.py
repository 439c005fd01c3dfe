"""The other playbooks: syntax of all, gpu_reset without a GPU, collect_diagnostics for real."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from fleetmedic.schemas import RunSummary
from remediator.runner import PlaybookRun, ansible_bin_dir, run_playbook

PLAYBOOKS = Path(__file__).resolve().parent.parent / "playbooks"


def test_every_playbook_passes_syntax_check():
    books = sorted(PLAYBOOKS.glob("*.yml"))
    assert {b.name for b in books} >= {
        "restart_service.yml",
        "slurm_drain.yml",
        "slurm_resume.yml",
        "gpu_reset.yml",
        "k8s_cordon_drain.yml",
        "k8s_uncordon.yml",
        "collect_diagnostics.yml",
    }
    env = dict(os.environ, PATH=f"{ansible_bin_dir()}{os.pathsep}{os.environ.get('PATH', '')}", ANSIBLE_NOCOLOR="1")
    done = subprocess.run(
        ["ansible-playbook", "--syntax-check", "-i", "localhost,", *map(str, books)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_playbook_is_documented():
    readme = (PLAYBOOKS / "README.md").read_text()
    for book in PLAYBOOKS.glob("*.yml"):
        assert f"`{book.name}`" in readme, f"{book.name} missing from playbooks/README.md"


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="a GPU driver is present: would reset for real")
def test_gpu_reset_without_a_gpu_fails_clearly(tmp_path):
    # No GPU on this machine: the playbook must stop before any reset, naming why.
    result = run_playbook(
        PlaybookRun("gpu_reset.yml", {"gpu_index": 0}), playbooks_dir=PLAYBOOKS, artifacts_dir=tmp_path / "artifacts"
    )
    assert result.status == "failed"
    assert result.summary.failed_tasks == ["Fail clearly without an NVIDIA driver"]
    assert "nvidia-smi not found" in (result.artifacts / "stdout").read_text()


def test_gpu_reset_refuses_a_busy_gpu(tmp_path):
    # Fake nvidia-smi (there is no GPU here) that reports one compute process and records any
    # call; the playbook must refuse and never call `-r`.
    calls = tmp_path / "calls"
    fake = tmp_path / "nvidia-smi"
    fake.write_text(
        f'#!/bin/sh\necho "$@" >> {calls}\ncase "$*" in *query-compute-apps*) echo \'4242, python\';; esac\n'
    )
    fake.chmod(0o755)
    result = run_playbook(
        PlaybookRun("gpu_reset.yml", {"gpu_index": 0, "nvidia_smi": str(fake)}),
        playbooks_dir=PLAYBOOKS,
        artifacts_dir=tmp_path / "artifacts",
    )
    assert result.status == "failed"
    assert result.summary.failed_tasks == ["Refuse while processes use the GPU"]
    assert "-r" not in calls.read_text().split()


def test_collect_diagnostics_writes_a_report(tmp_path, monkeypatch):
    out = tmp_path / "diag"
    result = run_playbook(
        PlaybookRun(
            "collect_diagnostics.yml", {"target_host": "node1", "incident_id": "inc-7", "diagnostics_dir": str(out)}
        ),
        playbooks_dir=PLAYBOOKS,
        artifacts_dir=tmp_path / "artifacts",
    )
    assert result.status == "succeeded", result
    report = json.loads((out / "node1-inc-7.json").read_text())
    assert report["host"] == "node1" and report["incident_id"] == "inc-7"
    assert report["probes"]["uname"]["rc"] == 0 and os.uname().sysname in report["probes"]["uname"]["stdout"]
    assert set(report["probes"]) >= {"uname", "uptime", "disk", "memory", "processes", "gpus"}
    assert result.stats["diagnostics_file"] == str(out / "node1-inc-7.json")
    # the record carries the probes' last lines (bounded), not only the file's path
    outputs = result.summary.outputs
    assert json.loads(outputs["diagnostics_file"]) == str(out / "node1-inc-7.json")
    probes = json.loads(outputs["probes"])
    assert probes["uname"]["rc"] == 0 and os.uname().nodename in probes["uname"]["tail"]
    assert all(len(p["tail"]) <= 400 for p in probes.values())
    assert RunSummary.model_validate_json(result.summary.model_dump_json()) == result.summary


def _k8s_missing() -> str | None:
    try:
        import kubernetes  # noqa: F401
    except ImportError:
        return "the kubernetes package is not installed (pip install '.[k8s]')"
    if not (os.environ.get("FLEETMEDIC_TEST_K8S_NODE") and os.environ.get("K8S_AUTH_KUBECONFIG")):
        return (
            "no Kubernetes cluster here (no Docker for kind, no k3s download): set K8S_AUTH_KUBECONFIG and "
            "FLEETMEDIC_TEST_K8S_NODE to a node this test may cordon, drain and uncordon"
        )
    return None


@pytest.mark.skipif(_k8s_missing() is not None, reason=str(_k8s_missing()))
def test_k8s_cordon_drain_then_uncordon_on_a_real_cluster(tmp_path):
    from kubernetes import client, config

    node = os.environ["FLEETMEDIC_TEST_K8S_NODE"]
    config.load_kube_config(os.environ["K8S_AUTH_KUBECONFIG"])
    api = client.CoreV1Api()
    try:
        drained = run_playbook(
            PlaybookRun("k8s_cordon_drain.yml", {"node": node, "drain_timeout_s": 120}),
            playbooks_dir=PLAYBOOKS,
            artifacts_dir=tmp_path / "artifacts",
        )
        assert drained.status == "succeeded", drained
        assert api.read_node(node).spec.unschedulable is True
    finally:
        back = run_playbook(
            PlaybookRun("k8s_uncordon.yml", {"node": node}),
            playbooks_dir=PLAYBOOKS,
            artifacts_dir=tmp_path / "artifacts",
        )
    assert back.status == "succeeded", back
    assert not api.read_node(node).spec.unschedulable
