"""Bounded reads of a topic range: by offsets or by time (Kafka's offsets-for-times).

Replay and reports read a closed range of a topic, not a live stream, so they do not join a
consumer group or commit: they assign partitions, seek to the range's start and stop at its
end. Records are decoded with the same `transport.decode` as the live loop; an undecodable
record in a range is counted and skipped (the live loop already dead-lettered it).

Times select by the Kafka record timestamp, which is the time the record was produced.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

from kafka import KafkaConsumer, TopicPartition

from .config import Settings
from .schemas import Contract
from .transport import DecodeError, Received, consumer_config, decode


@dataclass(frozen=True)
class RangeSpec:
    """What to read from one topic. Offsets win over times where both are given for a partition."""

    topic: str  # full name
    partitions: tuple[int, ...] | None = None  # None = all
    start_offsets: dict[int, int] = field(default_factory=dict)
    end_offsets: dict[int, int] = field(default_factory=dict)  # exclusive
    start_time: datetime | None = None
    end_time: datetime | None = None  # exclusive


@dataclass
class RangeStats:
    read: int = 0
    undecodable: int = 0
    filtered: int = 0
    bounds: dict[int, tuple[int, int]] = field(default_factory=dict)  # partition → [start, end)


def _ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


def resolve_bounds(consumer: KafkaConsumer, spec: RangeSpec) -> dict[TopicPartition, tuple[int, int]]:
    """Partition → [start, end) offsets for the spec."""
    parts = consumer.partitions_for_topic(spec.topic)
    if parts is None:
        raise ValueError(f"no such topic: {spec.topic}")
    tps = [TopicPartition(spec.topic, p) for p in sorted(parts) if spec.partitions is None or p in spec.partitions]
    first = consumer.beginning_offsets(tps)
    last = consumer.end_offsets(tps)
    starts = dict(first)
    ends = dict(last)
    if spec.start_time is not None:
        found = consumer.offsets_for_times({tp: _ms(spec.start_time) for tp in tps})
        for tp in tps:
            starts[tp] = found[tp].offset if found.get(tp) is not None else last[tp]
    if spec.end_time is not None:
        found = consumer.offsets_for_times({tp: _ms(spec.end_time) for tp in tps})
        for tp in tps:
            ends[tp] = found[tp].offset if found.get(tp) is not None else last[tp]
    for tp in tps:
        if tp.partition in spec.start_offsets:
            starts[tp] = spec.start_offsets[tp.partition]
        if tp.partition in spec.end_offsets:
            ends[tp] = spec.end_offsets[tp.partition]
        starts[tp] = min(max(starts[tp], first[tp]), last[tp])
        ends[tp] = min(max(ends[tp], starts[tp]), last[tp])
    return {tp: (starts[tp], ends[tp]) for tp in tps}


def read_range(settings: Settings, spec: RangeSpec, model: type[Contract], *,
               keep: Callable[[Contract], bool] | None = None, stats: RangeStats | None = None,
               max_records: int = 5000) -> Iterator[list[Received]]:
    """Yield batches of decoded records of the range, in offset order within each partition."""
    stats = stats if stats is not None else RangeStats()
    consumer = KafkaConsumer(enable_auto_commit=False, client_id=f"{settings.client_id}-range",
                             max_poll_records=max_records, fetch_max_bytes=64 * 1024 * 1024,
                             max_partition_fetch_bytes=max(settings.max_record_bytes * 2, 1_048_576),
                             **consumer_config(settings))
    try:
        bounds = {tp: b for tp, b in resolve_bounds(consumer, spec).items() if b[0] < b[1]}
        stats.bounds = {tp.partition: b for tp, b in bounds.items()}
        if not bounds:
            return
        consumer.assign(list(bounds))
        for tp, (start, _) in bounds.items():
            consumer.seek(tp, start)
        open_parts = set(bounds)
        while open_parts:
            polled = consumer.poll(timeout_ms=500, max_records=max_records)
            batch: list[Received] = []
            for tp, messages in polled.items():
                end = bounds[tp][1]
                for msg in messages:
                    if msg.offset >= end:
                        break
                    stats.read += 1
                    try:
                        record = decode(model, msg.value, settings.max_record_bytes)
                    except DecodeError:
                        stats.undecodable += 1
                        continue
                    if keep is not None and not keep(record):
                        stats.filtered += 1
                        continue
                    batch.append(Received(record, msg.topic, msg.partition, msg.offset, msg.timestamp, msg.key))
            for tp in list(open_parts):
                if consumer.position(tp) >= bounds[tp][1]:
                    open_parts.discard(tp)
                    consumer.pause(tp)
            if batch:
                yield batch
    finally:
        consumer.close(autocommit=False)
