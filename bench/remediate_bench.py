"""Incident to playbook process started, through the real remediator on a real broker.

    PYTHONPATH=. python bench/remediate_bench.py [--incidents N] [--bootstrap HOST:PORT]

One incident at a time (below saturation): the clock starts just before the incident record is
produced and stops when the remediator calls the runner's `on_start`, i.e. right before
ansible-runner starts the playbook process. In between: the producer's acks=all flush, the
consumer's fetch, policy match, the gate pipeline, the `claimed` record produced and
acknowledged, and the runner's checks. Each playbook is a real run of a one-task playbook; the
next incident is produced once the previous run's outcome is on the topic. The first incident is
a warm-up (it pays the one-off ansible-runner import) and is not counted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fleetmedic.config import Settings, TopicSettings  # noqa: E402
from fleetmedic.producer import Producer  # noqa: E402
from fleetmedic.schemas import Incident  # noqa: E402
from fleetmedic.topics import create_topics  # noqa: E402
from fleetmedic.transport import wait_until  # noqa: E402
from remediator.engine import Remediator, RunnerConfig  # noqa: E402
from remediator.policy import Policy  # noqa: E402
from remediator.runner import run_playbook  # noqa: E402

NOOP = "- hosts: localhost\n  gather_facts: false\n  tasks:\n    - ansible.builtin.debug: {msg: '{{ target_host }}'}\n"


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    k = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))  # nearest rank
    return ordered[k]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--incidents", type=int, default=30)
    parser.add_argument("--bootstrap", default=os.environ.get("FLEETMEDIC_KAFKA_BOOTSTRAP", "127.0.0.1:19092"))
    args = parser.parse_args()

    settings = Settings(
        bootstrap_servers=[args.bootstrap],
        topic_prefix=f"bench{uuid.uuid4().hex[:8]}.",
        client_id="fm-bench",
        topics=TopicSettings(partitions=3),
    )
    create_topics(settings)
    work = Path(tempfile.mkdtemp(prefix="fm-remediate-bench-"))
    (work / "playbooks").mkdir()
    (work / "playbooks" / "noop.yml").write_text(NOOP)
    policy = Policy.model_validate(
        {
            "gates": {
                "cooldown_s": 0,
                "flapping": {"max_runs": 10_000},
                "rate_limit": {"max_runs": 10_000},
                "blast_radius": {"max_percent": 100},
            },
            "rules": [
                {
                    "name": "bench",
                    "match": {"kinds": ["bench"]},
                    "steps": [
                        {
                            "action": "noop",
                            "playbook": "noop.yml",
                            "resolve_within_s": 3600,
                            "vars": {"target_host": {"from": "host"}},
                        }
                    ],
                }
            ],
        }
    )

    started: dict[str, float] = {}

    def timed_run(run, *, on_start=None, **kwargs):
        def mark():
            started[run.extra_vars["target_host"]] = time.perf_counter()
            if on_start:
                on_start()

        return run_playbook(run, on_start=mark, **kwargs)

    engine = Remediator(
        settings,
        policy,
        RunnerConfig(playbooks_dir=work / "playbooks", artifacts_dir=work / "artifacts", keep_artifacts=5),
        group_id=settings.topic_prefix + "bench",
        run_playbook=timed_run,
    )
    thread = threading.Thread(target=engine.run, kwargs={"install_signals": False}, daemon=True)
    thread.start()
    latencies: list[float] = []
    producer = Producer(settings)
    try:
        for i in range(args.incidents + 1):
            host = f"bench-{i:04d}"
            now = datetime.now(UTC)
            record = Incident(
                id=f"inc-{i}",
                fingerprint=f"{host}/bench",
                host=host,
                kind="bench",
                subject="x",
                status="open",
                severity="warning",
                detector="bench",
                time=now,
                opened_at=now,
            )
            t0 = time.perf_counter()
            producer.send(record)
            producer.flush()
            wait_until(lambda host=host: host in started, 60, interval_s=0.005, what=f"playbook start for {host}")
            if i > 0:
                latencies.append(started[host] - t0)
            wait_until(
                lambda i=i: sum(e.final for e in list(engine.ledger.entries.values())) >= i + 1,
                120,
                interval_s=0.01,
                what="the run's outcome",
            )
    finally:
        producer.close()
        engine.stop()
        thread.join(timeout=60)

    ms = [x * 1000 for x in latencies]
    print(
        f"remediate bench: {len(ms)} incidents, one at a time, broker {args.bootstrap}, "
        f"{os.cpu_count()} CPUs, real ansible-runner runs of a one-task playbook"
    )
    print(f"{'what':44s} {'n':>4s} {'p50 ms':>8s} {'p99 ms':>8s} {'max ms':>8s}  target")
    print(
        f"{'incident produced -> playbook process start':44s} {len(ms):4d} {statistics.median(ms):8.1f} "
        f"{percentile(ms, 99):8.1f} {max(ms):8.1f}  p99 <= 1000 ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
