"""`fleetmedic tail`: watch a topic through the shared consumer loop, one line per record."""

from __future__ import annotations

import time
import uuid

from .config import Settings
from .producer import Producer
from .schemas import CONTRACTS, Contract
from .transport import ConsumerLoop, LoopStats, Received

BY_TOPIC: dict[str, type[Contract]] = {model.topic: model for model in CONTRACTS.values()}
SHORT = {name.split(".")[0]: name for name in BY_TOPIC}


def resolve_topic(name: str) -> tuple[str, type[Contract]]:
    name = SHORT.get(name, name)
    if name not in BY_TOPIC:
        raise SystemExit(f"unknown topic {name!r}; one of: {', '.join(sorted(BY_TOPIC))}")
    return name, BY_TOPIC[name]


def one_line(item: Received) -> str:
    r = item.record
    head = f"{item.topic}[{item.partition}]@{item.offset}"
    if hasattr(r, "values") and isinstance(r.values, dict):
        values = ", ".join(f"{k}={v:.4g}" if v is not None else f"{k}=null" for k, v in list(r.values.items())[:4])
        more = f" (+{len(r.values) - 4})" if len(r.values) > 4 else ""
        return f"{head} {r.time:%H:%M:%S} {r.host} {values}{more}"
    if hasattr(r, "line"):
        return f"{head} {r.time:%H:%M:%S} {r.host} {r.kind}/{r.severity}: {r.line[:100]}"
    if hasattr(r, "fingerprint") and hasattr(r, "detector"):
        return f"{head} {r.time:%H:%M:%S} {r.host} {r.status} {r.severity} {r.kind}/{r.subject}: {r.summary[:80]}"
    if hasattr(r, "action"):
        why = f" ({r.gate}: {r.reason})" if r.reason else ""
        return f"{head} {r.time:%H:%M:%S} {r.host} {r.action} {r.status}{why}"
    if hasattr(r, "source_topic"):
        return f"{head} {r.kind} from {r.source_topic}[{r.source_partition}]@{r.source_offset}: {r.error[:120]}"
    return f"{head} {r.model_dump_json()[:160]}"


class _Viewer(Producer):
    """The loop's producer for `tail`: a viewer writes nothing (the stage that owns a topic
    dead-letters its bad records), so `tail` runs with a read-only principal (reviewer)."""

    def __init__(self) -> None:  # no Kafka producer behind it: nothing is ever sent
        self.transactional = False  # the loop's plain path: send, flush, commit the offsets

    def send(self, record: Contract, topic: str | None = None) -> None:
        pass

    def send_raw(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        timestamp_ms: int | None = None,
        partition: int | None = None,
    ) -> None:
        pass

    def flush(self, timeout_s: float | None = 60.0) -> int:
        return 0  # nothing was sent


def tail(
    settings: Settings,
    topic: str,
    *,
    from_beginning: bool = False,
    limit: int | None = None,
    idle_s: float | None = None,
) -> int:
    name, model = resolve_topic(topic)
    last = [time.monotonic()]

    def show(batch: list[Received]) -> tuple[()]:
        for item in batch:
            print(one_line(item), flush=True)
        last[0] = time.monotonic()
        return ()

    def done(stats: LoopStats) -> bool:
        if limit is not None and stats.consumed >= limit:
            return True
        return idle_s is not None and time.monotonic() - last[0] > idle_s

    loop = ConsumerLoop(
        settings,
        group_id=f"fleetmedic-tail-{uuid.uuid4().hex[:8]}",
        inputs={name: model},
        handle=show,
        producer=_Viewer(),
        auto_offset_reset="earliest" if from_beginning else "latest",
        max_records=limit or 2000,
    )
    stats = loop.run(until=done)
    print(f"-- {stats.consumed} records, {stats.dead_lettered} dead-lettered")
    return 0
