"""The doctor's checks of the bus: the broker answers, the topics match the configuration, the
configured principal holds the ACLs its role needs, and the consumer groups keep up."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fleetmedic.config import Settings
from fleetmedic.topics import topic_name, topic_specs

from .findings import Finding

# What each role does on the bus: (operation, topic without prefix). Groups need READ too.
ROLE_NEEDS: dict[str, tuple[tuple[str, str], ...]] = {
    "exporter": (("WRITE", "metrics.v1"), ("WRITE", "logs.v1")),
    "detect": (
        ("READ", "metrics.v1"),
        ("READ", "logs.v1"),
        ("READ", "state.v1"),
        ("WRITE", "incidents.v1"),
        ("WRITE", "state.v1"),
        ("WRITE", "deadletter.v1"),
    ),
    "remediate": (
        ("READ", "incidents.v1"),
        ("READ", "approvals.v1"),
        ("READ", "remediations.v1"),
        ("WRITE", "remediations.v1"),
        ("WRITE", "deadletter.v1"),
    ),
    "approve": (("READ", "remediations.v1"), ("WRITE", "approvals.v1")),
    "review": tuple(
        ("READ", t)
        for t in (
            "metrics.v1",
            "logs.v1",
            "incidents.v1",
            "remediations.v1",
            "approvals.v1",
            "deadletter.v1",
            "state.v1",
        )
    ),
}
ROLE_NEEDS["all"] = tuple(dict.fromkeys(n for needs in ROLE_NEEDS.values() for n in needs))


def principal_of(settings: Settings) -> str:
    """The principal the brokers see for these settings (Kafka's default principal builder)."""
    sec = settings.security
    if sec.security_protocol.startswith("SASL") and sec.sasl_plain_username:
        return f"User:{sec.sasl_plain_username}"
    if sec.security_protocol == "SSL" and sec.ssl_certfile:
        from cryptography import x509

        cert = x509.load_pem_x509_certificate(Path(sec.ssl_certfile).read_bytes())
        return f"User:{cert.subject.rfc4514_string()}"
    return "User:ANONYMOUS"


def check_broker(settings: Settings, timeout_s: float, findings: list[Finding]) -> Any:
    """Append the broker's findings; returns an admin client when the broker answers, else None."""
    from kafka.errors import KafkaError

    from fleetmedic.topics import admin_client

    where = ",".join(settings.bootstrap_servers)
    try:
        admin = admin_client(
            settings,
            api_version_auto_timeout_ms=int(timeout_s * 1000),
            request_timeout_ms=int(timeout_s * 1000),
        )
        cluster = admin.describe_cluster()
    except (KafkaError, OSError) as exc:
        findings.append(
            Finding(
                "broker",
                "fail",
                f"{where} does not answer ({type(exc).__name__}: {exc})",
                "check bootstrap_servers (FLEETMEDIC_BOOTSTRAP_SERVERS), that this host reaches the listener, "
                "and the security settings (a TLS listener answers nothing to PLAINTEXT)",
            )
        )
        return None
    version = ".".join(map(str, admin.config.get("api_version") or ())) or "unknown"
    brokers = cluster.get("brokers") or []
    findings.append(
        Finding(
            "broker",
            "ok",
            f"{where} answers: {len(brokers)} broker(s), controller "
            f"{cluster.get('controller_id')}, protocol of Kafka {version} or newer "
            f"(kafka-python's probe tells no newer version apart)",
        )
    )
    rf = settings.topics.replication_factor  # None: follows the cluster, min(3, brokers)
    if rf is None:
        pass
    elif brokers and rf > len(brokers):
        findings.append(
            Finding(
                "broker",
                "fail",
                f"topics.replication_factor {rf} > {len(brokers)} broker(s)",
                f"set topics.replication_factor: {len(brokers)} or add brokers",
            )
        )
    elif brokers and len(brokers) >= 3 and rf < 3:
        findings.append(
            Finding(
                "broker",
                "warn",
                f"topics.replication_factor {rf} on {len(brokers)} brokers: losing one broker loses data",
                "set topics.replication_factor: 3 before creating the topics",
            )
        )
    return admin


def check_topics(settings: Settings, admin: Any) -> list[Finding]:
    """Every configured topic exists with the configured partitions, replication and settings."""
    from fleetmedic.topiccheck import topic_drift

    drift = topic_drift(settings, admin)
    if not drift:
        return [
            Finding(
                "topics",
                "ok",
                f"{len(topic_specs(settings))} topics under {settings.topic_prefix!r} match the configuration",
            )
        ]
    bootstrap = settings.bootstrap_servers[0]
    return [Finding("topics", "fail", d.describe(), d.fix(bootstrap)) for d in drift]


def check_acls(settings: Settings, role: str, admin: Any) -> list[Finding]:
    """The configured principal's ACLs against what `role` needs on the bus."""
    from kafka.admin import (
        ACLFilter,
        ACLOperation,
        ACLPermissionType,
        ACLResourcePatternType,
        ResourcePatternFilter,
    )
    from kafka.admin.acl_resource import ResourceType
    from kafka.errors import KafkaError, SecurityDisabledError

    principal = principal_of(settings)
    acls = []
    try:
        for who in (principal, "User:*"):
            found, _ = admin.describe_acls(
                ACLFilter(
                    principal=who,
                    host=None,
                    operation=ACLOperation.ANY,
                    permission_type=ACLPermissionType.ANY,
                    resource_pattern=ResourcePatternFilter(ResourceType.ANY, None, ACLResourcePatternType.ANY),
                )
            )
            acls += found
    except SecurityDisabledError:
        return [
            Finding(
                "acls",
                "warn",
                f"no authorizer answers: the cluster enforces no ACLs, so any client "
                f"that reaches it may write incidents and approvals (principal "
                f"{principal})",
                "enable an authorizer and per-role principals (docs/deploy.md, 'Security')",
            )
        ]
    except KafkaError as exc:
        return [
            Finding(
                "acls",
                "fail",
                f"cannot describe the ACLs of {principal} ({type(exc).__name__}: {exc})",
                f"grant {principal} DESCRIBE on the cluster, or run doctor as an admin principal",
            )
        ]
    missing = [(op, topic) for op, topic in ROLE_NEEDS[role] if not _allowed(acls, op, topic_name(settings, topic))]
    if not missing:
        return [
            Finding(
                "acls",
                "ok",
                f"{principal} holds what role {role} needs "
                f"({len(ROLE_NEEDS[role])} topic operations, {len(acls)} ACL(s))",
            )
        ]
    bootstrap = settings.bootstrap_servers[0]
    return [
        Finding(
            "acls",
            "fail",
            f"{principal} may not {op} {topic_name(settings, topic)} (role {role})",
            f"kafka-acls.sh --bootstrap-server {bootstrap} --add --allow-principal {principal} "
            f"--operation {op.capitalize()} --topic {topic_name(settings, topic)}",
        )
        for op, topic in missing
    ]


def _allowed(acls, operation: str, topic: str) -> bool:
    """Do these ACLs allow `operation` on `topic` (no DENY matching, some ALLOW matching)?"""
    from kafka.admin import ACLOperation, ACLPermissionType, ACLResourcePatternType
    from kafka.admin.acl_resource import ResourceType

    def matches(acl: Any) -> bool:  # a kafka ACL (untyped)
        pattern = acl.resource_pattern
        if pattern.resource_type != ResourceType.TOPIC:
            return False
        if acl.operation not in (ACLOperation[operation], ACLOperation.ALL):
            return False
        if pattern.pattern_type == ACLResourcePatternType.PREFIXED:
            return topic.startswith(pattern.resource_name)
        return pattern.resource_name in (topic, "*")

    relevant = [a for a in acls if matches(a)]
    if any(a.permission_type == ACLPermissionType.DENY for a in relevant):
        return False
    return any(a.permission_type == ACLPermissionType.ALLOW for a in relevant)


def _committed(admin: Any, group: str, timeout_s: float) -> dict:
    """The group's committed offsets; the coordinator may need a moment on a fresh cluster."""
    import time

    from kafka.errors import CoordinatorNotAvailableError

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return admin.list_consumer_group_offsets(group)
        except CoordinatorNotAvailableError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)  # Kafka creates __consumer_offsets on the first request


def check_lag(settings: Settings, groups: tuple[str, ...], max_lag: int, timeout_s: float, admin: Any) -> list[Finding]:
    """Each consumer group's committed offsets against the end of its partitions."""
    from kafka import KafkaConsumer
    from kafka.errors import KafkaError

    out = []
    consumer = None
    try:
        for group in groups:
            try:
                committed = _committed(admin, group, timeout_s)
            except KafkaError as exc:
                out.append(
                    Finding(
                        "lag",
                        "warn",
                        f"group {group}: no coordinator answers ({type(exc).__name__}); "
                        "no group has committed on this cluster yet?",
                        "start the consumers; kafka-consumer-groups.sh --list shows the groups",
                    )
                )
                continue
            committed = {tp: meta.offset for tp, meta in committed.items() if meta.offset >= 0}
            if not committed:
                out.append(
                    Finding(
                        "lag",
                        "warn",
                        f"group {group} has committed nothing (not started yet, "
                        f"or its members run with another --group)",
                        "start its members, or pass --group with the id they use",
                    )
                )
                continue
            if consumer is None:
                consumer = KafkaConsumer(client_id=f"{settings.client_id}-doctor", **settings.kafka_kwargs())
            ends = consumer.end_offsets(list(committed))
            lag = {tp: max(0, ends[tp] - off) for tp, off in committed.items()}
            total = sum(lag.values())
            worst = max(lag, key=lambda tp: lag[tp])
            text = (
                f"group {group}: {total} record(s) behind over {len(lag)} partition(s) "
                f"(most: {worst.topic}[{worst.partition}] {lag[worst]})"
            )
            if total > max_lag:
                out.append(
                    Finding(
                        "lag",
                        "fail",
                        text + f", more than --max-lag {max_lag}",
                        f"check its members run (kafka-consumer-groups.sh --describe --group {group}); "
                        f"detectors scale out up to topics.partitions "
                        f"({settings.topics.partitions}) members",
                    )
                )
            else:
                out.append(Finding("lag", "ok", text))
    finally:
        if consumer is not None:
            consumer.close()
    return out
