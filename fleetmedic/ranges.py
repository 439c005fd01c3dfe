"""Bounded reads of a topic range: by offsets or by time (Kafka's offsets-for-times).

Replay and reports read a closed range of a topic, not a live stream, so they do not join a
consumer group or commit: a `fleetmedic.lifecycle.TopicReader` seeks to the range's start and
reads to its end. Records are decoded with the same `deadletter.decode` as the live loop; an
undecodable record in a range is counted and skipped (the live loop already dead-lettered it).

Times select by the Kafka record timestamp, which is the time the record was produced.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

from kafka import KafkaConsumer, TopicPartition

from .config import Settings
from .lifecycle import TopicReader
from .schemas import Contract
from .transport import Received


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


def read_range(
    settings: Settings,
    spec: RangeSpec,
    model: type[Contract],
    *,
    keep: Callable[[Contract], bool] | None = None,
    stats: RangeStats | None = None,
    max_records: int = 5000,
) -> Iterator[list[Received]]:
    """Yield batches of decoded records of the range, in offset order within each partition."""
    stats = stats if stats is not None else RangeStats()
    with TopicReader(
        settings,
        [spec.topic],
        partitions=spec.partitions,
        require=False,
        name="range",
        max_poll_records=max_records,
        fetch_max_bytes=64 * 1024 * 1024,
        max_partition_fetch_bytes=max(settings.max_record_bytes * 2, 1_048_576),
    ) as reader:
        bounds = resolve_bounds(reader.consumer, spec)
        stats.bounds = {tp.partition: b for tp, b in bounds.items() if b[0] < b[1]}
        reader.seek({tp: start for tp, (start, _) in bounds.items()})
        for messages in reader.read_to_end(
            timeout_s=None, ends={tp: end for tp, (_, end) in bounds.items()}, max_records=max_records
        ):
            stats.read += len(messages)
            decoded = reader.records(messages, model, on_error=lambda msg, exc: None)
            stats.undecodable += len(messages) - len(decoded)
            batch = []
            for item in decoded:
                if keep is not None and not keep(item.record):
                    stats.filtered += 1
                    continue
                batch.append(item)
            if batch:
                yield batch
