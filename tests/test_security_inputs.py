"""Checked inputs: no incident field (which an exporter can influence) chooses a URL the
controller fetches; health checks go to the host's own address from the inventory, or from a
plugged-in address source, within the policy's allow-list."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from remediator_kit import incident

from remediator.hostaddr import use_address_source
from remediator.policy import Policy
from remediator.policy_vars import PolicyError


def _policy(var: dict, **extra) -> Policy:
    return Policy.model_validate(
        {
            **extra,
            "rules": [
                {
                    "name": "svc",
                    "match": {"kinds": ["service_down"]},
                    "steps": [
                        {"action": "restart_service", "playbook": "restart_service.yml", "vars": {"health_url": var}}
                    ],
                }
            ],
        }
    )


def test_a_url_variable_cannot_come_from_an_incident_field():
    for source in ("labels.health_url", "details.url", "summary"):
        with pytest.raises(ValidationError, match="a URL the controller fetches cannot come from an incident field"):
            _policy({"from": source})


def test_host_url_uses_the_inventory_address_not_the_incident():
    policy = _policy({"host_url": {"port": 8080, "path": "/healthz"}}, inventory={"node1": "10.0.0.7"})
    step = policy.rules[0].steps[0]
    attack = incident("node1", labels={"health_url": "http://169.254.169.254/latest/meta-data/"})
    assert policy.render_vars(step, attack) == {"health_url": "http://10.0.0.7:8080/healthz"}
    with pytest.raises(PolicyError, match="no address for host node2"):
        policy.render_vars(step, incident("node2"))


def test_the_allow_list_and_the_address_check_hold():
    with pytest.raises(ValidationError, match="inventory.node1: 'user@evil:80' is not an IP address or DNS name"):
        _policy({"host_url": {"port": 80}}, inventory={"node1": "user@evil:80"})
    policy = _policy(
        {"host_url": {"port": 8080}},
        inventory={"node1": "10.0.0.7", "node2": "192.168.1.2"},
        url_allow=["http://10.0.0.*:8080/*"],
    )
    step = policy.rules[0].steps[0]
    assert policy.render_vars(step, incident("node1")) == {"health_url": "http://10.0.0.7:8080/"}
    with pytest.raises(PolicyError, match="http://192.168.1.2:8080/ is not in the policy's url_allow"):
        policy.render_vars(step, incident("node2"))


def test_a_plugged_address_source_comes_first():
    policy = _policy({"host_url": {"port": 9100, "path": "/metrics"}}, inventory={"node1": "10.0.0.7"})
    use_address_source(lambda host: {"node1": "fd00::7"}.get(host))
    try:
        assert policy.render_vars(policy.rules[0].steps[0], incident("node1")) == {
            "health_url": "http://[fd00::7]:9100/metrics"
        }
    finally:
        use_address_source(None)
