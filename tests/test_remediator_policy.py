"""The policy file: validation errors name file:line and reason; first match wins; typed, allow-listed vars."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime

import pytest
from examples import examples

from fleetmedic.yamlfile import ConfigFileError
from remediator.policy import load_policy
from remediator.policy_gates import MaintenanceWindow
from remediator.policy_vars import PolicyError

INCIDENT = next(r for r in examples() if type(r).__name__ == "Incident")

GOOD = """\
host_groups:
  gpu: ["gpu-node-*"]
  web: ["web-1", "web-2"]
rules:
  - name: gpu_xid
    match:
      kinds: [xid]
      action_classes: [drain_and_reset]
      host_groups: [gpu]
    steps:
      - action: drain_node
        playbook: slurm_drain.yml
        vars:
          node: {from: host}
          reason: {from: summary, max_length: 100}
          xid: {from: details.xid, type: int}
          requeue: {value: true, type: bool}
      - action: human
  - name: catch_all
    steps:
      - action: collect
        playbook: collect_diagnostics.yml
"""


def write(tmp_path, text: str):
    path = tmp_path / "policy.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_first_matching_rule_in_file_order_wins(tmp_path):
    policy = load_policy(write(tmp_path, GOOD))
    assert policy.rule_for(INCIDENT).name == "gpu_xid"
    other = INCIDENT.model_copy(update={"kind": "oom"})
    assert policy.rule_for(other).name == "catch_all"
    elsewhere = INCIDENT.model_copy(update={"host": "web-1"})
    assert policy.rule_for(elsewhere).name == "catch_all"
    resolved = INCIDENT.model_copy(update={"status": "resolve"})
    assert policy.rule_for(resolved) is None  # resolve records never start an action


def test_vars_are_typed_and_come_only_from_the_incident_fields_named(tmp_path):
    step = load_policy(write(tmp_path, GOOD)).rules[0].steps[0]
    assert step.render_vars(INCIDENT) == {
        "node": "gpu-node-07",
        "reason": "XID 79: GPU has fallen off the bus",
        "xid": 79,
        "requeue": True,
    }
    no_xid = INCIDENT.model_copy(update={"evidence": INCIDENT.evidence.model_copy(update={"details": {}})})
    with pytest.raises(PolicyError, match="variable xid: incident has no details.xid"):
        step.render_vars(no_xid)
    bad_xid = INCIDENT.model_copy(
        update={"evidence": INCIDENT.evidence.model_copy(update={"details": {"xid": "x; rm"}})}
    )
    with pytest.raises(PolicyError, match="variable xid: 'x; rm' is not an int"):
        step.render_vars(bad_xid)


@pytest.mark.parametrize(
    "text, line, reason",
    [
        (
            "rules:\n  - name: r\n    steps:\n      - action: a\n        playbook: p.yml\n        vars:\n"
            "          v: {from: evidence.sources}\n",
            7,
            "`from: evidence.sources` is not an allowed incident field",
        ),
        (
            "rules:\n  - name: r\n    steps:\n      - action: a\n        playbook: ../etc/p.yml\n",
            5,
            "rules.0.steps.0.playbook",
        ),
        ("rules:\n  - name: r\n    steps:\n      - action: restart\n", 4, "action `restart` needs a playbook"),
        (
            "rules:\n  - name: r\n    match:\n      severities: [urgent]\n    steps:\n      - action: human\n",
            4,
            "rules.0.match.severities.0: Input should be 'info', 'warning' or 'critical'",
        ),
        (
            "rules:\n  - name: r\n    match:\n      host_groups: [nope]\n    steps:\n      - action: human\n",
            1,
            "unknown host group 'nope'",
        ),
        ("gates:\n  cooldown_s: -1\n", 2, "gates.cooldown_s: Input should be greater than or equal to 0"),
        ("rules:\n  - name: r\n    stepz: []\n", 3, "rules.0.stepz: Extra inputs are not permitted"),
        (
            "rules:\n  - name: r\n    steps:\n      - action: a\n        playbook: p.yml\n        vars:\n"
            "          svc: {from: subject, extract: 'service[.].+[.]up'}\n",
            7,
            "must have exactly one group",
        ),
        (
            "rules:\n  - name: r\n    steps:\n      - action: a\n        playbook: p.yml\n        vars:\n"
            "          svc: {value: web, extract: '(.+)'}\n",
            7,
            "`extract` applies to a value taken `from`",
        ),
        (
            "rules:\n  - name: r\n    steps:\n      - action: a\n        playbook: p.yml\n        vars:\n"
            "          ansible_connection: {value: ssh}\n",
            4,
            "ansible_* variables are set by the runner only",
        ),
    ],
)
def test_errors_name_the_line_and_the_reason(tmp_path, text, line, reason):
    path = write(tmp_path, text)
    with pytest.raises(ConfigFileError) as err:
        load_policy(path)
    message = str(err.value)
    assert f"{path}:{line}:" in message, message
    assert reason in message, message


def test_extract_takes_a_part_of_an_incident_field(tmp_path):
    step = (
        load_policy(
            write(
                tmp_path,
                """\
        rules:
          - name: down
            steps:
              - action: restart_service
                playbook: restart_service.yml
                vars:
                  service: {from: subject, extract: '^service\\.([A-Za-z0-9_-]+)\\.up$'}
        """,
            )
        )
        .rules[0]
        .steps[0]
    )
    down = INCIDENT.model_copy(update={"kind": "service_down", "subject": "service.web-api.up"})
    assert step.render_vars(down) == {"service": "web-api"}
    with pytest.raises(PolicyError, match=r"variable service: subject 'service.a b.up' does not match extract"):
        step.render_vars(down.model_copy(update={"subject": "service.a b.up"}))


def test_the_demo_policy_loads_and_restarts_the_watched_service(tmp_path):
    from fleetmedic_demo.demo_loop import write_policy

    policy = load_policy(
        write_policy(tmp_path, tmp_path / "supervisord.conf", tmp_path / "slurm.conf", demo_port=19210)
    )
    down = INCIDENT.model_copy(update={"host": "demo-host", "kind": "service_down", "subject": "service.demo.up"})
    rule = policy.rule_for(down)
    assert rule.name == "service_down"
    # the host's supervisord.conf comes from its inventory variables, not from the policy
    assert rule.steps[0].render_vars(down) == {"service": "demo", "health_url": "http://127.0.0.1:19210/"}
    assert policy.rule_named("gpu_lost").return_to_service.playbook == "slurm_resume.yml"


def test_the_example_policy_loads():
    policy = load_policy("deploy/policy.example.yaml")
    assert policy.rules and all(rule.steps for rule in policy.rules)


def test_maintenance_window_crosses_midnight():
    window = MaintenanceWindow(name="w", host_groups=["g"], weekdays=["sat"], start="23:00", duration_min=120)
    # 2026-11-28 is a Saturday
    assert window.active(datetime(2026, 11, 28, 23, 30, tzinfo=UTC))
    assert window.active(datetime(2026, 11, 29, 0, 30, tzinfo=UTC))
    assert not window.active(datetime(2026, 11, 29, 1, 0, tzinfo=UTC))
    assert not window.active(datetime(2026, 11, 27, 23, 30, tzinfo=UTC))
