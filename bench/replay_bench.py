"""Replay benchmark: values/s re-run through the detectors from a recorded range (target ≥ 1,000,000).

    PYTHONPATH=. .venv/bin/python bench/replay_bench.py [--nodes 200] [--gpus 8] [--hours 1]

Records a simulated fleet (seeded, with faults) into fresh topics on the broker of the settings
(FLEETMEDIC_* / default 127.0.0.1:19092), then times `review.replay.replay` over the whole range
with the packaged detector configuration: read from Kafka, decode, detect. Prints one table.
"""

from __future__ import annotations

import argparse
import uuid
from datetime import UTC, datetime

from detectors.config import load_config
from fleetmedic.config import TopicSettings, load_settings
from fleetmedic.producer import Producer
from fleetmedic.topics import create_topics
from ingest.sim_run import run_simulation
from ingest.simulator import SimConfig
from review.replay import diff, replay


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=200)
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--hours", type=float, default=1.0)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    settings = load_settings().model_copy(
        update={"topic_prefix": f"bench{uuid.uuid4().hex[:8]}.", "topics": TopicSettings(partitions=6)}
    )
    create_topics(settings)
    cfg = SimConfig(
        nodes=args.nodes,
        gpus=args.gpus,
        seconds=args.hours * 3600,
        interval_s=10.0,
        seed=3,
        start=datetime(2026, 1, 1, tzinfo=UTC),
    )
    with Producer(settings) as producer:

        def publish(records):
            for r in records:
                producer.send(r)
            producer.flush()

        stats = run_simulation(cfg, publish)
    print(f"recorded: {stats}")
    config = load_config()
    rows = []
    for _ in range(args.repeats):
        result = replay(settings, config)
        rows.append(result)
    print(f"\n{'run':>4} {'records':>9} {'values':>10} {'seconds':>8} {'values/s':>12} {'incidents':>9}")
    for i, r in enumerate(rows):
        print(
            f"{i + 1:>4} {r.records:>9} {r.values:>10} {r.seconds:>8.2f} {r.values_per_s:>12,.0f} {len(r.incidents):>9}"
        )
    print(
        f"target: ≥ 1,000,000 values/s (docs/architecture.md); diff against run 1 of run {len(rows)}: "
        f"{'empty' if diff(rows[0].incidents, rows[-1].incidents).empty else 'NOT EMPTY'}"
    )


if __name__ == "__main__":
    main()
