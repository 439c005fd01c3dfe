"""The event-time bound: a record may not claim a time far ahead of when the broker got it.

A detector keeps each host's newest event time and calls anything older than it by more than
`late_tolerance_s` late. One record stamped a day ahead (a bad clock, a hostile exporter) would
therefore make every honest record of that host "late" for a day. So before a record's time is
used it is compared with the record's broker timestamp (`Received.timestamp_ms`, set when it was
produced): a record more than `max_future_skew_s` ahead of it is not used, it is counted and
dead-lettered with kind `event_time` (docs/decisions.md says why dead-letter, not clamp).

Only the future is bounded: a record far *behind* its broker time is normal (a spooled record
resent after an outage, a backlog file read late) and is handled by the late-data rule.
"""

from __future__ import annotations

from fleetmedic.deadletter import DEAD_LETTER_KEEP_BYTES
from fleetmedic.schemas import DeadLetter
from fleetmedic.transport import Received


def ahead_of_broker_s(item: Received, t: float) -> float:
    """Seconds event time `t` lies ahead of the broker timestamp; 0 when there is none.

    Kafka reports -1 for a record without a timestamp; 0 (the epoch) is never a real broker
    time either and is what Kafka-free callers (tests, `detect csv`) pass: both mean "unknown".
    """
    ts = item.timestamp_ms
    if ts is None or ts <= 0:
        return 0.0
    return t - ts / 1000.0


def out_of_skew(item: Received, t: float, max_future_skew_s: float) -> bool:
    """True when event time `t` is more than `max_future_skew_s` ahead of the broker timestamp."""
    return ahead_of_broker_s(item, t) > max_future_skew_s


def dead_letter(item: Received, t: float, max_future_skew_s: float, group: str) -> DeadLetter:
    """The dead letter of a record refused for its event time (its bytes re-encoded from the record)."""
    return DeadLetter.of(
        topic=item.topic,
        partition=item.partition,
        offset=item.offset,
        timestamp_ms=item.timestamp_ms,
        key=item.key,
        value=item.record.to_bytes(),
        group=group,
        kind="event_time",
        error=f"event time {t:.3f} is {ahead_of_broker_s(item, t):.0f} s ahead of the broker timestamp "
        f"{item.timestamp_ms} ms (max_future_skew_s={max_future_skew_s:g})",
        keep_bytes=DEAD_LETTER_KEEP_BYTES,
    )
