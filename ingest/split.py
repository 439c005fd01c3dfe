"""Never make a record that cannot be sent: split metric batches under the record size limit.

A record larger than the producer's `max_request_size` fails every send; spooled, it would sit
at the head of the spool and every later record would queue behind it forever. So before a
batch is sent, `fit(records, max_bytes)` cuts each MetricBatch larger than `max_bytes` (the
consumers' `max_record_bytes`, below the producer's limit) into several batches of the same
host, time, source and labels, each holding a consecutive part of the values (and the counters
among them). Consumers treat them as one batch's values arriving in two records: each series is
its own state, so nothing is lost. A record that cannot be cut to fit (one batch value with huge
labels, a LogEvent over the limit) is returned in `refused` with the reason, never sent.
"""

from __future__ import annotations

from collections.abc import Sequence

from fleetmedic.schemas import Contract, MetricBatch


def fit(records: Sequence[Contract], max_bytes: int) -> tuple[list[tuple[Contract, bytes]], list[tuple[Contract, str]]]:
    """(record, its bytes) of every record, cut under `max_bytes`, in order; and the ones refused, with why."""
    ok: list[tuple[Contract, bytes]] = []
    refused: list[tuple[Contract, str]] = []
    for record in records:
        _fit_one(record, record.to_bytes(), max_bytes, ok, refused)
    return ok, refused


def _fit_one(record: Contract, data: bytes, max_bytes: int, ok: list, refused: list) -> None:
    if len(data) <= max_bytes:
        ok.append((record, data))
        return
    if not isinstance(record, MetricBatch) or len(record.values) < 2:
        refused.append(
            (record, f"{type(record).__name__} of {len(data)} bytes exceeds {max_bytes} and cannot be split")
        )
        return
    names = list(record.values)
    # parts sized from the encoded size (names dominate it), then each checked again
    parts = max(2, -(-len(data) // int(max_bytes * 0.9)))
    step = -(-len(names) // parts)
    counters = set(record.counters)
    for i in range(0, len(names), step):
        chunk = names[i : i + step]
        part = record.model_copy(
            update={"values": {n: record.values[n] for n in chunk}, "counters": [n for n in chunk if n in counters]}
        )
        _fit_one(part, part.to_bytes(), max_bytes, ok, refused)
