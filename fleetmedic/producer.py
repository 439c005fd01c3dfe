"""The one producer every stage writes Kafka with: acks=all, idempotent, compressed, keyed by host.

Keyed by host, so a host's records stay in order on one partition. `Producer(settings,
transactional_id=...)` is transactional: `begin`, `commit` (with the consumed offsets of a
group) and `abort` make the consumer loop exactly-once (fleetmedic/transport.py); `renew`
replaces a producer whose transaction cannot be finished. `Outgoing` is a raw record to send.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaTimeoutError

from .config import Settings
from .schemas import Contract
from .topics import topic_name


@dataclass(frozen=True)
class Outgoing:
    """A record to produce: raw bytes to a full topic name (use `Producer.send` for contracts)."""

    topic: str
    value: bytes | None  # None: a tombstone (compacted topics drop the key)
    key: bytes | None = None
    partition: int | None = None  # None: by key, the producer's partitioner


class Producer:
    """The one producer: acks=all, idempotence, compression, key = host."""

    def __init__(self, settings: Settings, **overrides):
        """`transactional_id=...` in `overrides` makes a transactional producer (see `transaction`)."""
        self.settings = settings
        config = dict(
            client_id=f"{settings.client_id}-producer",
            acks="all",
            enable_idempotence=True,
            compression_type="gzip",
            linger_ms=5,
            batch_size=256 * 1024,
            max_request_size=max(settings.max_record_bytes * 2, 1_048_576),
        )
        config.update(settings.kafka_kwargs())
        config.update(overrides)
        self._config = config
        self._producer = KafkaProducer(**config)
        self._pending: list = []
        self.transactional = config.get("transactional_id") is not None
        if self.transactional:
            # Fences an earlier producer with the same id and aborts what it left open.
            self._producer.init_transactions()

    def renew(self) -> None:
        """Replace a transactional producer that cannot finish its transaction by a new one with
        the same id: its `init_transactions` fences the old one and waits until the broker has
        completed (committed or aborted) what the old one left open, so the committed offsets
        read afterwards say which it was."""
        old, self._producer, self._pending = self._producer, None, []
        sender = old._sender
        if sender is not None:
            sender.force_close()
            sender.join(5.0)
        old._closed = True
        self._producer = KafkaProducer(**self._config)
        self._producer.init_transactions()

    def begin(self) -> None:
        """Start a transaction (transactional producers only)."""
        self._producer.begin_transaction()

    def commit(self, offsets: dict | None = None, group_id: str | None = None, timeout_s: float | None = 60.0) -> int:
        """Flush, add `offsets` of `group_id` to the transaction, commit it; returns records sent.

        A delivery error raises before the commit; the caller then calls `abort`.
        """
        sent = self.flush(timeout_s)
        if offsets:
            self._wait(
                self._producer._transaction_manager.send_offsets_to_transaction(offsets, group_id),
                timeout_s,
                "adding the offsets to the transaction",
            )
        # kafka-python 2.3.3's commit_transaction() waits without a limit, and after the broker
        # coordinating the transaction died (make chaos) its EndTxn could stay unanswered for
        # good: the member hung inside the batch and its whole group stalled in the rebalance.
        # Waited for up to `timeout_s` here; past it the caller renews the producer (`renew`).
        self._wait(self._producer._transaction_manager.begin_commit(), timeout_s, "the transaction's commit")
        return sent

    def _wait(self, result, timeout_s: float | None, what: str) -> None:
        """Wait for a transaction request's result (raising its error), at most `timeout_s`."""
        self._producer._sender.wakeup()
        if not result.wait(timeout_ms=None if timeout_s is None else timeout_s * 1000):
            raise KafkaTimeoutError(f"{what} was not answered within {timeout_s:g}s")

    def abort(self, timeout_s: float | None = 60.0) -> None:
        """Abort the open transaction: nothing sent in it becomes visible to read_committed readers."""
        self._pending = []
        self._wait(self._producer._transaction_manager.begin_abort(), timeout_s, "the transaction's abort")

    def produce_atomically(self, outgoing: Iterable[Outgoing]) -> int:
        """Send `outgoing` and make it durable: one transaction when transactional, else a flush."""
        if self.transactional:
            self.begin()
        try:
            for out in outgoing:
                self.send_raw(out.topic, out.value, out.key, partition=out.partition)
            return self.commit() if self.transactional else self.flush()
        except BaseException:
            if self.transactional:
                self.abort()
            raise

    def topic(self, name: str) -> str:
        return topic_name(self.settings, name)

    def send(self, record: Contract, topic: str | None = None) -> Any:
        """Send a contract to its topic (or `topic`, a name without the prefix), keyed by host."""
        return self.send_raw(self.topic(topic or record.topic), record.to_bytes(), record.key())

    def send_raw(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        timestamp_ms: int | None = None,
        partition: int | None = None,
    ) -> Any:
        future = self._producer.send(topic, value=value, key=key, timestamp_ms=timestamp_ms, partition=partition)
        self._pending.append(future)
        return future

    def reaches_broker(self, wait_s: float = 1.0) -> bool:
        """True when this producer holds a live connection to a broker, or opens one within `wait_s`.

        A readiness probe, not `KafkaProducer.bootstrap_connected()`: kafka-python drops the
        bootstrap connection once it has the cluster's metadata, and any connection idle for
        `connections_max_idle_ms`, so that said "not ready" of a healthy producer (the Alertmanager
        receiver's /-/ready stayed 503 on a working broker). With no connection open this queues
        one to the least loaded broker, which the producer's own sender thread then opens.
        """
        client = self._producer._sender._client
        deadline = time.monotonic() + wait_s
        while not any(client.connected(node) for node in list(client._conns)):
            if time.monotonic() >= deadline:
                return False
            node = client.least_loaded_node()
            if node is not None:
                client.maybe_connect(node)
            time.sleep(0.05)
        return True

    def flush(self, timeout_s: float | None = 60.0) -> int:
        """Block until everything sent is acknowledged; raises the first delivery error."""
        self._producer.flush(timeout=timeout_s)
        pending, self._pending = self._pending, []
        for future in pending:
            future.get(timeout=0)  # raises the delivery error, if any
        return len(pending)

    def close(self, timeout_s: float = 30.0) -> None:
        """Flush (raising what could not be delivered), then close; the sender thread always stops."""
        try:
            if not self.transactional:  # a transactional producer's open transaction is left to abort
                self.flush(timeout_s)
        finally:
            try:
                self._producer.close(timeout=timeout_s)
            except KafkaTimeoutError:
                # kafka-python 2.3.3's close() flushes first and, with records it cannot deliver
                # (broker gone), raises before it stops its network thread or marks itself closed:
                # an exporter recreating its producer through an outage would leak one thread per
                # retry, and __del__ would raise again later. What was pending is abandoned on
                # purpose here (the caller spools it), so stop the thread without sending.
                sender = self._producer._sender
                if sender is not None:
                    sender.force_close()
                    sender.join(timeout_s)
                self._producer._closed = True

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
