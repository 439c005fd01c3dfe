"""A record stamped far ahead of its broker time must not blind its host (issue 13)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from detector_scenarios import T0, fleet, received, write_config, xid

from detectors.config import load_config
from detectors.engine import Engine
from fleetmedic.schemas import DeadLetter

DAY_S = 86400


def _stamped(items, broker_s: float):
    """The records as the broker gives them: each with its broker timestamp (its event time here)."""
    return [replace(it, timestamp_ms=int(it.record.time.timestamp() * 1000)) for it in items]


def test_a_metric_batch_a_day_ahead_is_dead_lettered_and_its_host_keeps_working(tmp_path):
    engine = Engine(load_config(write_config(tmp_path)))
    records = fleet(n_hosts=1, steps=40)
    items = _stamped(received(records), 0)
    # record 10 claims to be a day ahead of when the broker received it
    bad = items[10]
    items[10] = replace(bad, record=bad.record.model_copy(update={"time": bad.record.time + timedelta(days=1)}))
    engine.process(items)
    assert engine.stats.dropped_late == 0  # before the fix: the 29 honest records after it were "late"
    assert engine.stats.future_dead_lettered == 1
    assert engine.stats.records == 39
    assert engine.hosts["node00"].max_time == records[-1].time.timestamp()
    assert [it.offset for it, _ in engine.out_of_skew] == [10]


def test_a_log_event_a_day_ahead_is_dead_lettered_and_later_xids_still_count(tmp_path):
    engine = Engine(load_config(write_config(tmp_path)))
    events = [xid("node00", 0, 79), xid("node00", 5, 48), xid("node00", 10, 79)]
    events[0] = events[0].model_copy(update={"time": events[0].time + timedelta(days=1)})
    items = _stamped(received(events, topic="logs"), 0)
    items[0] = replace(items[0], timestamp_ms=int(T0.timestamp() * 1000))  # received now, stamped a day ahead
    engine.process(items)
    assert engine.stats.dropped_late == 0
    assert engine.stats.future_dead_lettered == 1
    assert engine.hosts["node00"].log_max_time < T0.timestamp() + DAY_S / 2


def test_within_the_skew_and_without_a_broker_time_records_are_used(tmp_path):
    from detectors import eventtime

    cfg = load_config(write_config(tmp_path))
    item = received(fleet(n_hosts=1, steps=1))[0]
    t = item.record.time.timestamp()
    assert not eventtime.out_of_skew(item, t, cfg.max_future_skew_s)  # timestamp 0: unknown
    at = replace(item, timestamp_ms=int((t - cfg.max_future_skew_s + 1) * 1000))
    assert not eventtime.out_of_skew(at, t, cfg.max_future_skew_s)
    ahead = replace(item, timestamp_ms=int((t - cfg.max_future_skew_s - 1) * 1000))
    assert eventtime.out_of_skew(ahead, t, cfg.max_future_skew_s)
    # far behind its broker time (a spooled record resent later) is not bounded here: late data rules apply
    assert not eventtime.out_of_skew(replace(item, timestamp_ms=int((t + DAY_S) * 1000)), t, cfg.max_future_skew_s)


def test_the_dead_letter_names_the_reason_and_keeps_the_record(tmp_path):
    from detectors import eventtime

    item = received(fleet(n_hosts=1, steps=1))[0]
    t = item.record.time.timestamp()
    item = replace(item, timestamp_ms=int((t - DAY_S) * 1000))
    dl = eventtime.dead_letter(item, t, 600.0, "detectors")
    assert isinstance(dl, DeadLetter) and dl.kind == "event_time"
    assert "86400 s ahead" in dl.error and dl.source_offset == item.offset
    assert DeadLetter.model_validate_json(dl.to_bytes()).original_size == len(item.record.to_bytes())


def test_a_time_past_the_end_of_the_calendar_in_utc_is_a_validation_error_not_a_crash():
    """Found by the fuzz suite: 9999-12-31T23:59:59-14:00 overflowed in astimezone and escaped decode."""
    from fleetmedic.deadletter import DecodeError, decode
    from fleetmedic.schemas import MetricBatch

    raw = b'{"host":"h","time":"9999-12-31T23:59:59-14:00","source":"s","values":{"a":1}}'
    try:
        decode(MetricBatch, raw, 10_000)
    except DecodeError as exc:
        assert exc.kind == "validation" and "out of range" in str(exc)
    else:
        raise AssertionError("accepted a time that does not exist in UTC")
