"""`fleetmedic demo` for the spine: records travel exporter → topics → consumer loop → dead letters.

Until the simulator, detectors and remediator exist, the main job is to show the plumbing: a
tiny synthetic fleet produces metric batches and log lines through the shared producer, one
garbage record is mixed in, and the shared consumer loop reads them back, printing each one,
while the garbage lands in the dead-letter topic with its reason.
"""

from __future__ import annotations

import math
import random
import threading
import time
import uuid
from datetime import datetime, timezone

from .config import Settings
from .schemas import DeadLetter, LogEvent, MetricBatch
from .tail import one_line
from .topics import create_topics, topic_name
from .transport import ConsumerLoop, LoopStats, Producer, Received


def _fleet_records(n_hosts: int, seconds: float, rng: random.Random, stop: threading.Event, producer: Producer):
    t0 = time.time()
    tick = 0
    while not stop.is_set() and time.time() - t0 < seconds:
        now = datetime.now(timezone.utc)
        for h in range(n_hosts):
            host = f"node{h:02d}"
            load = 0.5 + 0.4 * math.sin(tick / 5 + h)
            values = {"cpu.util": round(100 * load + rng.gauss(0, 2), 2), "mem.available_bytes": 6.4e10 * (1 - load / 2)}
            for g in range(2):
                values[f"gpu{g}.temperature_c"] = round(55 + 20 * load + rng.gauss(0, 1), 1)
                values[f"gpu{g}.util_pct"] = round(min(100.0, 100 * load + rng.gauss(0, 3)), 1)
            producer.send(MetricBatch(host=host, time=now, source="demo", labels={"class": "gpu-a"}, values=values))
        if tick == 3:
            producer.send(LogEvent(host="node01", time=now, source="/var/log/kern.log", kind="xid", severity="error",
                                   line="NVRM: Xid (PCI:0000:3b:00): 79, pid=1234, GPU has fallen off the bus.",
                                   fields={"xid": 79, "pci": "0000:3b:00"}))
            producer.send_raw(topic_name(producer.settings, MetricBatch.topic), b"\x00garbage, not JSON", b"node02")
        producer.flush()
        tick += 1
        stop.wait(1.0)


def run_demo(settings: Settings, seconds: float = 10.0, n_hosts: int = 3) -> int:
    create_topics(settings)
    stop = threading.Event()
    group = f"fleetmedic-demo-{uuid.uuid4().hex[:6]}"
    producer = Producer(settings)
    started = time.monotonic()

    def show(batch: list[Received]):
        for item in batch:
            print("  consumed " + one_line(item), flush=True)
        return ()

    loop = ConsumerLoop(settings, group_id=group, inputs={"metrics.v1": MetricBatch, "logs.v1": LogEvent},
                        handle=show, auto_offset_reset="latest")
    # Join the group before producing so the demo sees its own records from the first one.
    while not loop.consumer.assignment() and time.monotonic() - started < 30:
        loop.run_once()
    print(f"demo: {n_hosts} hosts producing for {seconds:.0f}s to {settings.bootstrap_servers[0]} "
          f"(topics {topic_name(settings, 'metrics.v1')}, {topic_name(settings, 'logs.v1')})", flush=True)
    feeder = threading.Thread(target=_fleet_records, args=(n_hosts, seconds, random.Random(7), stop, producer),
                              daemon=True)
    feeder.start()
    seen = [-1]

    def drained(stats: LoopStats) -> bool:
        # Done once the feeder has finished and a poll brought nothing new.
        quiet = stats.consumed == seen[0]
        seen[0] = stats.consumed
        return quiet and not feeder.is_alive()

    try:
        stats = loop.run(until=drained)
    finally:
        stop.set()
        feeder.join()
    producer.close()
    print(f"demo: consumed {stats.consumed} records, {stats.dead_lettered} sent to "
          f"{topic_name(settings, DeadLetter.topic)}", flush=True)
    return 0 if stats.consumed > 0 else 1
