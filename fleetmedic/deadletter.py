"""The consumer loop's refusals: a record that does not decode, or that the stage's handler keeps
failing on, becomes a dead letter (its reason and original bytes), and the loop goes on.

A handler that raises never stops the loop: the batch is handed over again one record at a
time, each record up to `handler_retries` more times, and a record that still fails goes to the
dead-letter topic (kind `handler`) with the exception as its reason. A stateful handler sees the
records of a failed batch again, one at a time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from kafka import TopicPartition
from kafka.structs import OffsetAndMetadata
from pydantic import BaseModel, ValidationError

from .schemas import Contract, DeadLetter, DeadLetterKind

if TYPE_CHECKING:
    from .producer import Outgoing
    from .transport import LoopStats, Received

log = logging.getLogger("fleetmedic.transport")  # the loop's logger: its refusals are part of it
# Any pydantic model: fleetmedic's contracts, and foreign records a bridge reads (ECS from shippers).
C = TypeVar("C", bound=BaseModel)

# Bytes of an undecodable record kept inline in its dead letter; the full record stays in its
# source topic at the recorded offset, and its size and sha256 are in the dead letter.
DEAD_LETTER_KEEP_BYTES = 256 * 1024


class DecodeError(ValueError):
    def __init__(self, kind: DeadLetterKind, message: str):
        super().__init__(message)
        self.kind = kind


def decode(model: type[C], value: bytes | None, max_bytes: int) -> C:
    """Bytes → validated contract, or DecodeError saying which rule failed and why."""
    if value is None or len(value) == 0:
        raise DecodeError("not_json", "empty record (no value)")
    if len(value) > max_bytes:
        raise DecodeError("oversized", f"record of {len(value)} bytes exceeds max_record_bytes={max_bytes}")
    try:
        return model.model_validate_json(value)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        for err in errors:
            if err["type"] == "json_invalid":
                raise DecodeError("not_json", f"not valid UTF-8 JSON: {err['msg']}") from None
            if tuple(err["loc"]) == ("schema_version",):
                raise DecodeError(
                    "schema_version",
                    f"schema_version {err.get('input')!r} is not supported by {model.__name__} "
                    f"(this consumer reads {model.model_fields['schema_version'].default})",
                ) from None
        detail = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(record)'}: {e['msg']}" for e in errors[:20])
        raise DecodeError("validation", f"{model.__name__}: {detail}") from None


def dead_letter(msg: Any, group: str, kind: DeadLetterKind, error: str) -> DeadLetter:
    """The dead letter of `msg` (a kafka ConsumerRecord: kafka-python has no types) refused by `group`."""
    return DeadLetter.of(
        topic=msg.topic,
        partition=msg.partition,
        offset=msg.offset,
        timestamp_ms=msg.timestamp,
        key=msg.key,
        value=msg.value,
        group=group,
        kind=kind,
        error=error,
        keep_bytes=DEAD_LETTER_KEEP_BYTES,
    )


def decode_batch(
    polled: dict[TopicPartition, list[Any]],
    models: dict[str, type[BaseModel]],
    max_bytes: int,
    group: str,
    stats: LoopStats,
) -> tuple[list[tuple[BaseModel, Any]], dict[TopicPartition, OffsetAndMetadata], list[DeadLetter]]:
    """A poll's records (ConsumerRecords by partition) decoded with their topic's model.

    Returns the (record, ConsumerRecord) pairs that decoded, in offset order per partition; the
    offsets to commit (past each partition's last record, decoded or not); and the dead letters
    of the records that did not decode.
    """
    decoded: list[tuple[BaseModel, Any]] = []
    offsets: dict[TopicPartition, OffsetAndMetadata] = {}
    letters: list[DeadLetter] = []
    for tp, messages in polled.items():
        model = models[tp.topic]
        for msg in messages:
            try:
                record = decode(model, msg.value, max_bytes)
            except DecodeError as exc:
                log.warning("dead letter %s[%d]@%d: %s: %s", msg.topic, msg.partition, msg.offset, exc.kind, exc)
                letters.append(dead_letter(msg, group, exc.kind, str(exc)))
                stats.dead_letters_by_kind[exc.kind] = stats.dead_letters_by_kind.get(exc.kind, 0) + 1
                continue
            decoded.append((record, msg))
        offsets[tp] = OffsetAndMetadata(messages[-1].offset + 1, "", -1)
    return decoded, offsets, letters


def handle_isolated(
    handle: Callable[[list[Received]], Iterable[Contract | Outgoing]],
    valid: list[Received],
    raw: dict,
    *,
    retries: int,
    group: str,
    stats: LoopStats,
) -> tuple[list, list[DeadLetter]]:
    """The handler's results for `valid`; records it keeps failing on become dead letters.

    `raw` maps (topic, partition, offset) to each record's ConsumerRecord (for its bytes). An
    empty `valid` is not handed over.
    """
    if not valid:
        return [], []
    try:
        return list(handle(valid)), []
    except Exception as exc:  # noqa: BLE001 - any handler bug: isolate the record, never crash-loop
        first = exc
        stats.handler_errors += 1
        log.warning(
            "handler raised on a batch of %d records (%s: %s); handing them over one at a time",
            len(valid),
            type(exc).__name__,
            exc,
        )
    # A lone record's first try was the call above; in a batch each record gets all its tries.
    tries = retries + 1 if len(valid) > 1 else retries
    out: list = []
    dead: list[DeadLetter] = []
    for item in valid:
        error = first
        for _ in range(tries):
            try:
                out.extend(handle([item]))
                break
            except Exception as exc:  # noqa: BLE001
                stats.handler_errors += 1
                error = exc
        else:
            dead.append(_handler_dead_letter(item, raw, error, retries=retries, group=group, stats=stats))
    return out, dead


def _handler_dead_letter(
    item: Received, raw: dict, exc: BaseException, *, retries: int, group: str, stats: LoopStats
) -> DeadLetter:
    msg = raw[(item.topic, item.partition, item.offset)]
    reason = f"handler raised {type(exc).__name__} (tried {retries + 1} times): {exc}"
    log.error("dead letter %s[%d]@%d: %s", item.topic, item.partition, item.offset, reason)
    stats.dead_letters_by_kind["handler"] = stats.dead_letters_by_kind.get("handler", 0) + 1
    return dead_letter(msg, group, "handler", reason)
