"""How an existing cluster's topics differ from the configuration (`fleetmedic topics create --check`).

Read-only: it lists, describes and reads configurations, and changes nothing. Each difference
is a `Drift` that says what the configuration wants, what the cluster has, and how to fix it
(with Kafka's own tools, since some fixes, like more partitions, move hosts between partitions
and deserve a person's decision).

>>> d = Drift("fleetmedic.metrics.v1", "partitions", want="24", have="6")
>>> d.describe()
'fleetmedic.metrics.v1: partitions is 6, the configuration wants 24'
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kafka.admin import ConfigResource, ConfigResourceType

from .config import Settings
from .topics import durability, topic_name, topic_specs

if TYPE_CHECKING:
    from kafka.admin import KafkaAdminClient


@dataclass(frozen=True)
class Drift:
    topic: str
    what: str  # "missing", "partitions", "replication_factor" or a topic config key
    want: str
    have: str

    def describe(self) -> str:
        if self.what == "missing":
            return f"{self.topic}: missing"
        return f"{self.topic}: {self.what} is {self.have}, the configuration wants {self.want}"

    def fix(self, bootstrap: str) -> str:
        """How to remove this drift (nothing here runs it)."""
        if self.what == "missing":
            return "fleetmedic topics create (creates only the missing topics)"
        if self.what == "partitions":
            if int(self.have) < int(self.want):
                return (
                    f"kafka-topics.sh --bootstrap-server {bootstrap} --alter --topic {self.topic} "
                    f"--partitions {self.want} (hosts move to other partitions: detector state follows "
                    f"through the state topic), or set topics.partitions: {self.have}"
                )
            return f"partitions cannot shrink: set topics.partitions: {self.have} in the configuration"
        if self.what == "replication_factor":
            return (
                f"kafka-reassign-partitions.sh --bootstrap-server {bootstrap} with a plan of {self.want} "
                f"replicas per partition, or set topics.replication_factor: {self.have}"
            )
        return (
            f"kafka-configs.sh --bootstrap-server {bootstrap} --alter --entity-type topics "
            f"--entity-name {self.topic} --add-config {self.what}={self.want}"
        )


def _configs(admin, names: list[str]) -> dict[str, dict[str, str]]:
    """topic → {config name: value} as the brokers report them (defaults included)."""
    if not names:
        return {}
    out: dict[str, dict[str, str]] = {}
    responses = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, n) for n in names])
    for response in responses:
        for resource in response.resources:
            error_code, name, entries = resource[0], resource[3], resource[4]
            if error_code == 0:
                out[name] = {entry[0]: entry[1] for entry in entries}
    return out


def topic_drift(settings: Settings, admin: KafkaAdminClient) -> list[Drift]:
    """Every difference between the configured topics and the cluster's, in topic order."""
    existing = set(admin.list_topics())
    specs = [(topic_name(settings, s.name), s) for s in topic_specs(settings)]
    present = [name for name, _ in specs if name in existing]
    described = {t["topic"]: t for t in admin.describe_topics(present)} if present else {}
    configs = _configs(admin, present)
    drift: list[Drift] = []
    # unset, the factor follows the cluster (fleetmedic.topics.durability), as `topics create` does
    want_rf, _ = durability(settings, admin)
    for name, spec in specs:
        if name not in existing:
            drift.append(Drift(name, "missing", want="present", have="absent"))
            continue
        partitions = described.get(name, {}).get("partitions") or []
        if len(partitions) != spec.partitions:
            drift.append(Drift(name, "partitions", want=str(spec.partitions), have=str(len(partitions))))
        factors = sorted({len(p.get("replicas") or []) for p in partitions})
        if factors and factors != [want_rf]:
            drift.append(Drift(name, "replication_factor", want=str(want_rf), have="/".join(map(str, factors))))
        have = configs.get(name, {})
        for key, value in sorted(spec.configs.items()):
            if have.get(key) != value:
                drift.append(Drift(name, key, want=value, have=str(have.get(key, "unset"))))
    return drift


def print_drift(settings: Settings, drift: list[Drift], out: Callable[[str], object] = print) -> int:
    """The `topics create --check` report; returns its exit code (0: no drift, 1: drift)."""
    bootstrap = settings.bootstrap_servers[0]
    if not drift:
        out(
            f"no drift: {len(topic_specs(settings))} topics under prefix {settings.topic_prefix!r} "
            "match the configuration"
        )
        return 0
    for d in drift:
        out(f"drift    {d.describe()}")
        out(f"  fix:   {d.fix(bootstrap)}")
    out(f"{len(drift)} difference(s); nothing was changed")
    return 1
