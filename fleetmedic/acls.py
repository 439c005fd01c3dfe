"""Least-privilege ACLs for every role, applied by `fleetmedic topics create` on a secured cluster.

Who may do what (topics are named with the settings' prefix; `ACL_TABLE` is the source):

=========== ========================================= ===========================================
role        writes                                    reads
=========== ========================================= ===========================================
exporter    metrics, logs                             metrics, logs (the spool's read-back)
detector    incidents, state, deadletter              metrics, logs, state
remediator  remediations, deadletter                  incidents, approvals, remediations, control
approver    approvals                                 remediations (what is awaiting approval)
reviewer    nothing                                   every topic
admin       (a super user of the embedded broker: topics, ACLs, and the control topic: pause, silence)
=========== ========================================= ===========================================

Each role may also join the consumer groups whose ids start with its prefixes
(`AclSettings.groups`). Each writing role gets WRITE and DESCRIBE on the transactional ids
prefixed with its client id (``fleetmedic-ROLE``, or `AclSettings.transactional_ids`) and
IdempotentWrite on the cluster, so idempotent and transactional producers work. Nothing else is
allowed: the authorizer denies by default (``allow.everyone.if.no.acl.found=false``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .config import Role, Settings

# role → (topics written, topics read); names without the prefix.
ACL_TABLE: dict[Role, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "exporter": (("metrics.v1", "logs.v1"), ("metrics.v1", "logs.v1")),
    "detector": (("incidents.v1", "state.v1", "deadletter.v1"), ("metrics.v1", "logs.v1", "state.v1")),
    "remediator": (
        ("remediations.v1", "deadletter.v1"),
        ("incidents.v1", "approvals.v1", "remediations.v1", "control.v1"),
    ),
    "approver": (("approvals.v1",), ("remediations.v1",)),
    "reviewer": (
        (),
        (
            "metrics.v1",
            "logs.v1",
            "incidents.v1",
            "remediations.v1",
            "approvals.v1",
            "deadletter.v1",
            "state.v1",
            "control.v1",
        ),
    ),
}


@dataclass(frozen=True)
class Grant:
    """One ALLOW entry: principal may `operation` on `resource` `name` (literal or prefixed)."""

    principal: str
    operation: str  # READ, WRITE, DESCRIBE, IDEMPOTENT_WRITE
    resource: str  # TOPIC, GROUP, TRANSACTIONAL_ID, CLUSTER
    name: str
    prefixed: bool = False


def wanted(settings: Settings) -> bool:
    """Apply ACLs? As configured; by default when the connection authenticates with SASL."""
    if settings.acls.apply is not None:
        return settings.acls.apply
    return settings.security.security_protocol.startswith("SASL")


def grants(settings: Settings) -> list[Grant]:
    """Every ALLOW entry of the least-privilege table for these settings."""
    out: list[Grant] = []
    acl = settings.acls
    for role, (writes, reads) in ACL_TABLE.items():
        principal = acl.principals.get(role)
        if not principal:
            continue
        for name in writes:
            out.append(Grant(principal, "WRITE", "TOPIC", settings.topic_prefix + name))
        for name in reads:
            out.append(Grant(principal, "READ", "TOPIC", settings.topic_prefix + name))
        for prefix in acl.groups.get(role, ()):
            out.append(Grant(principal, "READ", "GROUP", prefix, prefixed=True))
        if writes:
            for prefix in acl.transactional_ids.get(role, [f"fleetmedic-{role}"]):
                out.append(Grant(principal, "WRITE", "TRANSACTIONAL_ID", prefix, prefixed=True))
                out.append(Grant(principal, "DESCRIBE", "TRANSACTIONAL_ID", prefix, prefixed=True))
            out.append(Grant(principal, "IDEMPOTENT_WRITE", "CLUSTER", "kafka-cluster"))
    return list(dict.fromkeys(out))


def _kafka_acl(g: Grant):
    from kafka.admin import ACL, ACLOperation, ACLPermissionType, ACLResourcePatternType, ResourcePattern, ResourceType

    pattern = ResourcePattern(
        ResourceType[g.resource],
        g.name,
        ACLResourcePatternType.PREFIXED if g.prefixed else ACLResourcePatternType.LITERAL,
    )
    return ACL(
        principal=g.principal,
        host="*",
        operation=ACLOperation[g.operation],
        permission_type=ACLPermissionType.ALLOW,
        resource_pattern=pattern,
    )


class AclError(RuntimeError):
    """The broker refused some ACLs; the message lists them with the broker's reasons."""


def apply_acls(settings: Settings, admin: Any) -> int:  # a kafka KafkaAdminClient (untyped)
    """Create every grant (creating an existing ACL is a no-op for Kafka); returns how many."""
    wanted_grants = grants(settings)
    result = admin.create_acls([_kafka_acl(g) for g in wanted_grants])
    failed = result.get("failed") or []
    if failed:
        lines = [
            f"{acl.principal} {acl.operation.name} {acl.resource_pattern.resource_type.name} "
            f"{acl.resource_pattern.resource_name}: {err}"
            for acl, err in failed[:20]
        ]
        raise AclError("the broker refused these ACLs (is this the admin principal?):\n" + "\n".join(lines))
    return len(wanted_grants)
