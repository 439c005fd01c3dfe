"""Every topic of the design, from one configuration, created idempotently."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import TopicAlreadyExistsError

from .config import Settings

HOUR_MS = 3_600_000


@dataclass(frozen=True)
class TopicSpec:
    name: str  # without the prefix
    partitions: int
    configs: dict[str, str]


def topic_specs(settings: Settings) -> list[TopicSpec]:
    t = settings.topics
    retention = lambda hours: {"retention.ms": str(int(hours * HOUR_MS))}  # noqa: E731
    big = {"max.message.bytes": str(max(settings.max_record_bytes * 2, 1_048_588))}
    return [
        TopicSpec("metrics.v1", t.partitions, {**retention(t.retention_hours), **big}),
        TopicSpec("logs.v1", t.partitions, {**retention(t.retention_hours), **big}),
        TopicSpec("incidents.v1", t.partitions, retention(t.remediation_retention_hours)),
        TopicSpec("remediations.v1", t.partitions, retention(t.remediation_retention_hours)),
        # The broker stamps approvals (LogAppendTime): their expiry is judged on its clock, not the client's.
        TopicSpec(
            "approvals.v1", 1, {**retention(t.remediation_retention_hours), "message.timestamp.type": "LogAppendTime"}
        ),
        TopicSpec("deadletter.v1", t.partitions, {**retention(t.deadletter_retention_hours), **big}),
        # Detector state snapshots: only the newest per key matters.
        TopicSpec(
            "state.v1",
            t.partitions,
            {"cleanup.policy": "compact", "min.compaction.lag.ms": "0", "segment.ms": str(HOUR_MS)},
        ),
        # Runtime control (pause/resume, silences, maintenance): one partition so every
        # remediator sees one order; compacted, since only the newest record per id matters.
        TopicSpec("control.v1", 1, {"cleanup.policy": "compact", "min.compaction.lag.ms": "0"}),
    ]


def topic_name(settings: Settings, name: str) -> str:
    return settings.topic_prefix + name


def admin_client(settings: Settings, **overrides: Any) -> KafkaAdminClient:
    return KafkaAdminClient(client_id=f"{settings.client_id}-admin", **settings.kafka_kwargs(), **overrides)


def _wait_for_leaders(admin: KafkaAdminClient, names: list[str], timeout_s: float = 30.0) -> None:
    """Creation is asynchronous: wait until every partition of every topic has a leader."""
    deadline = time.monotonic() + timeout_s
    while names:
        described = admin.describe_topics(names)
        ready = {
            t["topic"]
            for t in described
            if t["error_code"] == 0 and t["partitions"] and all(p["leader"] >= 0 for p in t["partitions"])
        }
        names = [n for n in names if n not in ready]
        if names and time.monotonic() > deadline:
            raise TimeoutError(f"topics have no leader after {timeout_s:.0f}s: {', '.join(names)}")
        if names:
            time.sleep(0.1)


def durability(settings: Settings, admin: KafkaAdminClient) -> tuple[int, int | None]:
    """(replication factor, min.insync.replicas or None for the broker's default) for new topics.

    Unset, they follow the cluster: factor min(3, brokers), and 2 in sync when the factor is 3 or
    more, so an acknowledged record (acks=all) is on two brokers and one broker may be down.
    """
    t = settings.topics
    replicas = t.replication_factor
    if replicas is None:
        replicas = min(3, max(1, len(admin.describe_cluster().get("brokers", ()))))
    min_isr = t.min_insync_replicas
    if min_isr is None and replicas >= 3:
        min_isr = 2
    if min_isr is not None and min_isr > replicas:
        raise ValueError(f"topics.min_insync_replicas={min_isr} exceeds the replication factor {replicas}")
    return replicas, min_isr


def create_topics(settings: Settings, admin: KafkaAdminClient | None = None) -> dict[str, str]:
    """Create every missing topic; existing ones are left as they are. Returns name → 'created' | 'exists'."""
    own = admin is None
    admin = admin or admin_client(settings)
    try:
        existing = set(admin.list_topics())
        result: dict[str, str] = {}
        wanted = []
        replicas, min_isr = durability(settings, admin)
        for spec in topic_specs(settings):
            name = topic_name(settings, spec.name)
            if name in existing:
                result[name] = "exists"
            else:
                configs = {**spec.configs, **({"min.insync.replicas": str(min_isr)} if min_isr else {})}
                wanted.append(NewTopic(name, spec.partitions, replicas, topic_configs=configs))
        for topic in wanted:
            try:
                admin.create_topics([topic])
            except TopicAlreadyExistsError:
                pass  # created by someone else between list and create: same outcome
            result[topic.name] = "created"
        _wait_for_leaders(admin, [t.name for t in wanted])
        from .acls import apply_acls
        from .acls import wanted as acls_wanted

        if acls_wanted(settings):  # a secured cluster: least-privilege ACLs for every role
            result[f"{apply_acls(settings, admin)} least-privilege ACL grants"] = "applied"
        return result
    finally:
        if own:
            admin.close()
