"""A transaction whose commit is never answered (its coordinator broker died: found by `make chaos`)
times out instead of hanging, and `Producer.renew` settles it: the new producer with the same id
fences the old one, what it left open is aborted, and its own transactions commit."""

from __future__ import annotations

import uuid

import pytest
from kafka.errors import KafkaTimeoutError
from kafka.producer.transaction_manager import TransactionalRequestResult
from kafka_helpers import read_topic

from fleetmedic.producer import Producer
from fleetmedic.topics import topic_name


def test_an_unanswered_commit_times_out_and_a_renewed_producer_settles_it(settings, monkeypatch):
    topic = topic_name(settings, "incidents.v1")
    producer = Producer(settings, transactional_id=f"fm-test-{uuid.uuid4().hex[:8]}")
    try:
        producer.begin()
        producer.send_raw(topic, b'{"lost": true}', b"h1")
        never = TransactionalRequestResult()  # an EndTxn whose answer never comes
        monkeypatch.setattr(producer._producer._transaction_manager, "begin_commit", lambda: never)
        with pytest.raises(KafkaTimeoutError, match="commit was not answered within 0.5s"):
            producer.commit(timeout_s=0.5)
        monkeypatch.undo()
        producer.renew()  # same id: fences the old producer and aborts its open transaction
        producer.begin()
        producer.send_raw(topic, b'{"kept": true}', b"h1")
        assert producer.commit(timeout_s=30) == 1
    finally:
        producer.close()
    values = [v for _, _, _, v in read_topic(settings, topic)]
    assert values == [b'{"kept": true}']
