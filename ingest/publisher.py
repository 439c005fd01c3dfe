"""Publish exporter records without loss: the shared producer, and a disk spool while Kafka is away.

`publish(records)` sends and waits for the broker's acknowledgement. Records the broker did not
acknowledge (it is down, unreachable, or timed out) go to the spool in order, and while the
spool holds anything every new record queues behind it, so each host's records reach Kafka in
the order they were read. The spool is retried at most every `retry_s` seconds and on close.

A send that timed out may have been stored by the broker anyway (it went down after writing,
before answering). So the first resend after such a failure reads the topic partitions from the
time of that send and drops from the spool the records already there (same key, same bytes):
each record lands once. The check counts byte-identical records, so two identical records of
one host sent within the uncertain window (same event time, same content) can count as one.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from fleetmedic.config import Settings
from fleetmedic.lifecycle import TopicReader
from fleetmedic.producer import Producer
from fleetmedic.schemas import Contract
from fleetmedic.topics import topic_name

from .split import fit
from .spool import Spool

log = logging.getLogger(__name__)


def _digest(value: bytes) -> bytes:
    """A record value's identity for the spool check (16-byte BLAKE2b)."""
    return hashlib.blake2b(value, digest_size=16).digest()


@dataclass
class ExporterHealth:
    """Counters an exporter exposes on its health endpoint (see `ingest.health`)."""

    exporter: str
    sent: int = 0  # acknowledged by the broker, first try or from the spool
    spooled: int = 0  # written to the spool because the broker did not take them
    resent: int = 0  # delivered later from the spool
    dropped: int = 0  # lost because the spool was full
    already_stored: int = 0  # spooled after a timeout, found in Kafka on resend, not sent again
    errors: int = 0
    last_error: str = ""
    last_error_time: float = 0.0
    last_success_time: float = 0.0
    spool_records: int = 0
    spool_bytes: int = 0
    extra: dict[str, float] = field(default_factory=dict)  # exporter-specific gauges
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def error(self, message: str) -> None:
        with self.lock:
            self.errors += 1
            self.last_error = message[:500]
            self.last_error_time = time.time()


class Publisher:
    """Send contracts to Kafka; spool what the broker does not acknowledge; resend in order."""

    def __init__(
        self,
        settings: Settings,
        health: ExporterHealth,
        spool: Spool | None = None,
        ack_timeout_s: float = 10.0,
        retry_s: float = 5.0,
    ):
        self.settings = settings
        self.health = health
        self.spool = spool
        self.ack_timeout_s = ack_timeout_s
        self.retry_s = retry_s
        self._producer: Producer | None = None
        self._next_retry = 0.0
        self._sync_spool_health()

    # -- the producer, recreated after a failure so no abandoned batch is retried behind our back
    def _producer_or_none(self) -> Producer | None:
        if self._producer is None:
            ms = int(self.ack_timeout_s * 1000)
            try:
                self._producer = Producer(
                    self.settings,
                    delivery_timeout_ms=ms,
                    request_timeout_ms=max(ms - 500, 500),
                    max_block_ms=ms,
                    api_version_auto_timeout_ms=ms,
                    retry_backoff_ms=200,
                    reconnect_backoff_max_ms=1000,
                )
            except Exception as exc:  # NoBrokersAvailable and friends: the broker is not there
                self._failed(f"cannot connect: {type(exc).__name__}: {exc}")
                return None
        return self._producer

    def _drop_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.close(timeout_s=0)
            except Exception:  # closing a broken producer complains about what it abandons: that is spooled
                pass

    def _failed(self, message: str) -> None:
        log.warning("publish failed: %s", message)
        self.health.error(message)
        self._next_retry = time.monotonic() + self.retry_s

    def _sync_spool_health(self) -> None:
        if self.spool is not None:
            with self.health.lock:
                self.health.spool_records = self.spool.records_
                self.health.spool_bytes = self.spool.bytes_
                self.health.dropped = self.spool.dropped_
                self.health.extra["spool_torn_lines"] = float(self.spool.torn_)

    # -- sending
    def _send_all(self, items: list[tuple[str, bytes | None, bytes]]) -> list[tuple[str, bytes | None, bytes]]:
        """Send and wait; returns the items the broker did not acknowledge, in order."""
        producer = self._producer_or_none()
        if producer is None:
            return items
        futures = []
        sent_ms = int(time.time() * 1000)
        try:
            for topic, key, value in items:
                futures.append(producer.send_raw(topic, value, key, timestamp_ms=sent_ms))
            producer.flush(timeout_s=self.ack_timeout_s * 2)
        except Exception as exc:
            self._failed(f"send: {type(exc).__name__}: {exc}")
        # not strict: a send that raised leaves fewer futures than items; the rest are added below
        failed = [item for item, fut in zip(items, futures, strict=False) if not (fut.is_done and fut.succeeded())]
        failed += items[len(futures) :]
        if failed:
            if futures and self.spool is not None:
                # Handed to the producer, not acknowledged: the broker may hold them all the same.
                since = self.spool.uncertain_since_ms
                self.spool.uncertain_since_ms = sent_ms if since is None else min(since, sent_ms)
            first = next((f.exception for f in futures if f.is_done and f.failed()), None)
            if first is not None:
                self._failed(f"{len(failed)} of {len(items)} not acknowledged: {type(first).__name__}: {first}")
            self._drop_producer()
        else:
            with self.health.lock:
                self.health.last_success_time = time.time()
        return failed

    def _drain(self, force: bool = False) -> bool:
        """Resend the spool from its oldest record; True when it is empty afterwards."""
        if self.spool is None or len(self.spool) == 0:
            return True
        if not force and time.monotonic() < self._next_retry:
            return False
        while len(self.spool):
            head = self.spool.head()
            if any(len(v) > self.settings.max_record_bytes for _, _, v in head):
                # spooled before records were split (or under a larger limit): they would block the rest
                fits = [item for item in head if len(item[2]) <= self.settings.max_record_bytes]
                self._refuse(
                    f"{len(head) - len(fits)} spooled records over {self.settings.max_record_bytes} bytes",
                    len(head) - len(fits),
                )
                self.spool.consume_head(fits)
                continue
            if self.spool.uncertain_since_ms is not None:
                try:
                    head = self._drop_already_stored(head, self.spool.uncertain_since_ms)
                except Exception as exc:  # the broker is still away: try again later
                    self._failed(f"checking what the broker already holds: {type(exc).__name__}: {exc}")
                    return False
                self.spool.uncertain_since_ms = None
                if not head:
                    continue
            left = self._send_all(head)
            self.spool.consume_head(left)
            with self.health.lock:
                self.health.resent += len(head) - len(left)
                self.health.sent += len(head) - len(left)
            self._sync_spool_health()
            if left:
                return False
        log.info("spool drained")
        return True

    def _drop_already_stored(self, head, since_ms: int):
        """Remove from the spool's head the records Kafka already holds (sent at or after `since_ms`)."""
        assert self.spool is not None, "called by _drain only, while spooling"
        digest = _digest
        wanted = Counter(digest(v) for _, _, v in head)
        keys = {k for _, k, _ in head}
        found: Counter = Counter()
        ms = int(self.ack_timeout_s * 1000)
        topics = sorted({t for t, _, _ in head})
        with TopicReader(
            self.settings,
            topics,
            require=False,
            name="spool-check",
            api_version_auto_timeout_ms=ms,
            request_timeout_ms=max(ms, 2000),
        ) as reader:
            ends = reader.end_offsets()
            starts = reader.consumer.offsets_for_times({tp: since_ms for tp in reader.tps}) if reader.tps else {}
            reader.seek({tp: starts[tp].offset if starts.get(tp) is not None else ends[tp] for tp in reader.tps})
            for batch in reader.read_to_end(timeout_s=4 * self.ack_timeout_s * len(topics), ends=ends):
                for m in batch:
                    if m.key in keys and (d := digest(m.value)) in wanted:
                        found[d] += 1
        keep = []
        for item in head:
            d = digest(item[2])
            if found[d] > 0:
                found[d] -= 1
            else:
                keep.append(item)
        if len(keep) < len(head):
            log.info("%d spooled records were already stored before the outage: not sent again", len(head) - len(keep))
            self.spool.consume_head(keep)
            with self.health.lock:
                self.health.already_stored += len(head) - len(keep)
                self.health.sent += len(head) - len(keep)
            self._sync_spool_health()
        return keep

    def _refuse(self, reason: str, count: int = 1) -> None:
        """Records that can never be sent (over the size limit, not splittable): dropped, counted, said."""
        log.error("record refused: %s", reason)
        self.health.error(f"refused: {reason}")
        with self.health.lock:
            self.health.extra["refused_oversized"] = self.health.extra.get("refused_oversized", 0.0) + count

    def publish(self, records: Sequence[Contract]) -> int:
        """Deliver or spool `records`; returns how many reached the broker now.

        Metric batches over `max_record_bytes` are split first (ingest/split.py), so no record
        that cannot be sent is ever spooled in front of the others.
        """
        fitted, refused = fit(records, self.settings.max_record_bytes)
        for _, reason in refused:
            self._refuse(reason)
        items: list[tuple[str, bytes | None, bytes]] = [
            (topic_name(self.settings, r.topic), r.key(), data) for r, data in fitted
        ]
        if not items:
            self._drain()
            return 0
        if self.spool is not None and not self._drain():
            self._to_spool(items)
            return 0
        left = self._send_all(items)
        with self.health.lock:
            self.health.sent += len(items) - len(left)
        if left:
            self._to_spool(left)
        return len(items) - len(left)

    def _to_spool(self, items) -> None:
        if self.spool is None:
            with self.health.lock:
                self.health.dropped += len(items)
            log.error("broker unavailable and no spool configured: %d records dropped", len(items))
            return
        for topic, key, value in items:
            if self.spool.append(topic, key, value):
                with self.health.lock:
                    self.health.spooled += 1
        self.spool.sync()  # once per batch under the default fsync policy ("batch")
        self._sync_spool_health()
        if self.spool.dropped_:
            log.warning("spool full (%d bytes): %d records dropped so far", self.spool.max_bytes, self.spool.dropped_)

    def close(self, drain_timeout_s: float = 0.0) -> None:
        """Try the spool once more (up to `drain_timeout_s`), then close the producer; the spool stays on disk."""
        deadline = time.monotonic() + drain_timeout_s
        while self.spool is not None and len(self.spool):
            if self._drain(force=True) or time.monotonic() >= deadline:
                break
            time.sleep(min(1.0, self.retry_s))
        if self._producer is not None:
            try:
                self._producer.close(timeout_s=self.ack_timeout_s)
            except Exception as exc:
                log.warning("closing producer: %s", exc)
            self._producer = None
        if self.spool is not None:
            self.spool.close()
