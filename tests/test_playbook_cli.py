"""`fleetmedic playbook list` / `fleetmedic playbook try` (check mode, the remediator's variables)."""

from __future__ import annotations

from pathlib import Path

from examples import T0
from kafka_helpers import free_port

from fleetmedic.cli import main
from fleetmedic.schemas import Incident
from fleetmedic.transport import wait_until
from fleetmedic_demo.testbed import DemoService

ROOT = Path(__file__).resolve().parent.parent
POLICY = """
inventory: {localhost: 127.0.0.1}
rules:
  - name: service_down
    match: {kinds: [service_down]}
    steps:
      - action: restart_service
        playbook: restart_service.yml
        vars:
          service: {from: subject, pattern: "^[a-z]+$"}
          health_url: {host_url: {port: PORT}}
          supervisor_config: {from: labels.supervisor_config}
"""


def _incident(tmp_path, **labels) -> Path:
    incident = Incident(
        id="inc-1",
        fingerprint="localhost/service_down/demo",
        host="localhost",
        kind="service_down",
        subject="demo",
        status="open",
        severity="critical",
        detector="probe",
        time=T0,
        opened_at=T0,
        labels=labels,
    )
    path = tmp_path / "incident.json"
    path.write_bytes(incident.to_bytes())
    return path


def test_list_names_every_playbook(capsys):
    assert main(["playbook", "list", "--playbooks", str(ROOT / "playbooks")]) == 0
    out = capsys.readouterr().out
    for name in (
        "restart_service.yml",
        "slurm_drain.yml",
        "slurm_resume.yml",
        "gpu_reset.yml",
        "k8s_cordon_drain.yml",
        "k8s_uncordon.yml",
        "collect_diagnostics.yml",
    ):
        assert name in out


def test_try_runs_check_mode_with_the_policy_variables(tmp_path, capsys):
    policy = tmp_path / "policy.yaml"
    port = free_port()
    policy.write_text(POLICY.replace("PORT", str(port)))
    with DemoService(tmp_path / "sv", port=port) as demo:
        wait_until(lambda: demo.answer() is not None, 10, what="demo answering")
        demo.kill9()
        wait_until(lambda: "EXITED" in demo.status(), 10, what="demo exited")
        incident = _incident(tmp_path, supervisor_config=str(demo.config))
        code = main(
            [
                "playbook",
                "try",
                "restart_service.yml",
                "--incident",
                str(incident),
                "--policy",
                str(policy),
                "--playbooks",
                str(ROOT / "playbooks"),
                "--artifacts",
                str(tmp_path / "artifacts"),
            ]
        )
        out = capsys.readouterr().out
        assert code == 0, out
        assert "rule service_down, step 0 (restart_service)" in out
        assert f'"health_url": "{demo.url}"' in out and '"service": "demo"' in out
        assert "succeeded" in out and "changed=1" in out  # it would restart the program ...
        assert "EXITED" in demo.status() and demo.answer() is None  # ... check mode did not


def test_try_says_why_when_the_policy_would_not_run_it(tmp_path, capsys):
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.replace("PORT", "1"))
    incident = _incident(tmp_path, supervisor_config="/x")
    code = main(
        [
            "playbook",
            "try",
            "slurm_drain.yml",
            "--incident",
            str(incident),
            "--policy",
            str(policy),
            "--playbooks",
            str(ROOT / "playbooks"),
            "--artifacts",
            str(tmp_path / "artifacts"),
        ]
    )
    assert code == 1
    assert "does not run slurm_drain.yml" in capsys.readouterr().err
