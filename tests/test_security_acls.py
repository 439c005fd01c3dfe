"""Least privilege on the secured broker: each role writes only its own topics, and the refusal
is the broker's authorizer (error 29, TOPIC_AUTHORIZATION_FAILED), not our code."""

from __future__ import annotations

import pytest
from kafka.errors import ClusterAuthorizationFailedError, TopicAuthorizationFailedError

from fleetmedic.producer import Producer
from fleetmedic.topics import topic_name


def _write(settings, topic: str):
    """Send one raw record and wait for the broker's answer (bypasses every check of ours)."""
    with Producer(settings) as producer:
        return producer.send_raw(topic_name(settings, topic), b"{}", b"k").get(timeout=30)


def test_an_exporter_is_refused_by_the_broker_on_incidents_and_approvals(secure_cluster):
    prefix = secure_cluster.new_prefix()
    exporter = secure_cluster.settings("exporter", prefix)
    assert _write(exporter, "metrics.v1").offset == 0  # its own topic: allowed
    for topic in ("incidents.v1", "approvals.v1", "remediations.v1", "state.v1"):
        with pytest.raises(TopicAuthorizationFailedError) as refused:
            _write(exporter, topic)
        assert refused.value.errno == 29 and topic_name(exporter, topic) in str(refused.value)


def test_each_role_writes_only_its_own_topics(secure_cluster):
    prefix = secure_cluster.new_prefix()
    allowed = {
        "detector": {"incidents.v1", "state.v1", "deadletter.v1"},
        "remediator": {"remediations.v1", "deadletter.v1"},
        "approver": {"approvals.v1"},
        "reviewer": set(),
    }
    topics = ("metrics.v1", "logs.v1", "incidents.v1", "remediations.v1", "approvals.v1", "deadletter.v1", "state.v1")
    for role, mine in allowed.items():
        settings = secure_cluster.settings(role, prefix)
        for topic in topics:
            if topic in mine:
                assert _write(settings, topic).offset >= 0, (role, topic)
            else:  # a reviewer may not even start an idempotent producer: no IdempotentWrite for it
                with pytest.raises(TopicAuthorizationFailedError if mine else ClusterAuthorizationFailedError):
                    _write(settings, topic)
