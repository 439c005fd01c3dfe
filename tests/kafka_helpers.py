"""Test-side readers of what landed in Kafka (the product's own loop is what is under test)."""

from __future__ import annotations

import time

from kafka import KafkaConsumer, TopicPartition
from kafka.admin import KafkaAdminClient

from fleetmedic.config import Settings
from fleetmedic.schemas import Contract
from fleetmedic.transport import consumer_config
from fleetmedic_demo.testbed import free_port_block


def free_port() -> int:
    """A free loopback port below the kernel's ephemeral range: a port the kernel hands out (bind to 0)
    can be taken as the source port of some client's connection between this check and the server's
    bind (CI saw node_exporter fail with "address already in use" on 55795)."""
    return free_port_block(1)


def read_topic(settings: Settings, topic: str, model: type[Contract] | None = None, timeout_s: float = 20.0):
    """Every record now in `topic` (full name), in partition then offset order: (partition, offset, key, value)."""
    consumer = KafkaConsumer(enable_auto_commit=False, **consumer_config(settings))
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        out = []
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < end[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {topic} to its end")
            for _tp, msgs in consumer.poll(timeout_ms=200).items():
                for m in msgs:
                    value = model.model_validate_json(m.value) if model else m.value
                    out.append((m.partition, m.offset, m.key, value))
        return sorted(out, key=lambda r: (r[0], r[1]))
    finally:
        consumer.close()


def committed(settings: Settings, group: str) -> dict[tuple[str, int], int]:
    admin = KafkaAdminClient(**settings.kafka_kwargs())
    try:
        offsets = admin.list_consumer_group_offsets(group)
        return {(tp.topic, tp.partition): om.offset for tp, om in offsets.items() if om.offset >= 0}
    finally:
        admin.close()


def end_offsets(settings: Settings, topic: str) -> dict[tuple[str, int], int]:
    consumer = KafkaConsumer(**settings.kafka_kwargs())
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        return {(tp.topic, tp.partition): off for tp, off in consumer.end_offsets(tps).items()}
    finally:
        consumer.close()


def caught_up(settings: Settings, group: str, topic: str) -> bool:
    """Has `group` committed everything now in `topic` (empty partitions need no commit)?"""
    ends = {tp: off for tp, off in end_offsets(settings, topic).items() if off > 0}
    done = committed(settings, group)
    return bool(ends) and all(done.get(tp) == off for tp, off in ends.items())


def topic_config(settings: Settings, topic: str) -> dict[str, str]:
    from kafka.admin import ConfigResource, ConfigResourceType

    admin = KafkaAdminClient(**settings.kafka_kwargs())
    try:
        response = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])[0]
        entries = response.resources[0][4]
        return {entry[0]: entry[1] for entry in entries}
    finally:
        admin.close()
