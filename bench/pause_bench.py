"""`fleetmedic pause` to cancelled run, through the real remediator, broker and ansible-runner.

    PYTHONPATH=. python bench/pause_bench.py [--runs N] [--bootstrap HOST:PORT]

Each round: an incident starts a real playbook whose first task writes a marker file and whose
second sleeps 120 s; once the marker exists (the play is mid-run), the clock starts and the kill
switch record is produced, as `fleetmedic pause` does. Stops: the broker acknowledged it
(acks=all: where `pause` returns), the remediator's control thread has read it (the cancel event
is set), ansible-runner has returned "canceled" (its cancel callback is asked every
`CANCEL_POLL_S`, then the process group is killed), and the `cancelled` record is decided (in the
remediator's ledger; it is flushed to the broker right after). Then `resume`, and the next round.
The first round is a warm-up (ansible-runner import) and is not counted. The machine may be
shared: the load average is printed with the table.
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
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fleetmedic.config import Settings, TopicSettings  # noqa: E402
from fleetmedic.producer import Producer  # noqa: E402
from fleetmedic.schemas import Control, Incident  # noqa: E402
from fleetmedic.topics import create_topics  # noqa: E402
from fleetmedic.transport import wait_until  # noqa: E402
from remediator.control import ControlState  # noqa: E402
from remediator.engine import Remediator, RunnerConfig  # noqa: E402
from remediator.policy import Policy  # noqa: E402
from remediator.runner import CANCEL_POLL_S, run_playbook  # noqa: E402

SLOW = """- hosts: localhost
  gather_facts: false
  tasks:
    - ansible.builtin.copy: {dest: "{{ marker }}", content: "started\\n"}
    - ansible.builtin.wait_for: {timeout: 120}
"""


class TimedEvent(threading.Event):
    """A threading.Event that remembers when it was last set."""

    set_at: float = 0.0

    def set(self) -> None:
        self.set_at = time.perf_counter()
        super().set()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--bootstrap", default=os.environ.get("FLEETMEDIC_KAFKA_BOOTSTRAP", "127.0.0.1:19092"))
    args = parser.parse_args()
    load_before = Path("/proc/loadavg").read_text().split()[:3]

    settings = Settings(
        bootstrap_servers=[args.bootstrap],
        topic_prefix=f"bench{uuid.uuid4().hex[:8]}.",
        client_id="fm-bench",
        topics=TopicSettings(partitions=3),
    )
    create_topics(settings)
    work = Path(tempfile.mkdtemp(prefix="fm-pause-bench-"))
    (work / "playbooks").mkdir()
    (work / "playbooks" / "slow.yml").write_text(SLOW)
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
                            "action": "slow",
                            "playbook": "slow.yml",
                            "timeout_s": 300,
                            "resolve_within_s": 3600,
                            "vars": {"marker": {"from": "labels.marker"}},
                        }
                    ],
                }
            ],
        }
    )
    returned: dict[str, float] = {}

    def timed_run(run, **kwargs):
        result = run_playbook(run, **kwargs)
        returned[run.extra_vars["marker"]] = time.perf_counter()
        return result

    control = ControlState(settings)
    control.cancel = TimedEvent()
    control.start()
    engine = Remediator(
        settings,
        policy,
        RunnerConfig(playbooks_dir=work / "playbooks", artifacts_dir=work / "artifacts", keep_artifacts=5),
        group_id=settings.topic_prefix + "bench",
        run_playbook=timed_run,
        control=control,
    )
    thread = threading.Thread(target=engine.run, kwargs={"install_signals": False}, daemon=True)
    thread.start()
    acked, seen, ran, decided = [], [], [], []
    producer = Producer(settings)
    clock = datetime.now(UTC)
    try:
        for i in range(args.runs + 1):
            marker = str(work / f"marker-{i}")
            now = datetime.now(UTC)
            producer.send(
                Incident(
                    id=f"inc-{i}",
                    fingerprint=f"bench-{i}/bench",
                    host=f"bench-{i:03d}",
                    kind="bench",
                    subject="x",
                    status="open",
                    severity="warning",
                    detector="bench",
                    time=now,
                    opened_at=now,
                    labels={"marker": marker},
                )
            )
            producer.flush()
            wait_until(lambda marker=marker: Path(marker).exists(), 120, interval_s=0.01, what=f"round {i} mid-run")
            clock = max(clock + timedelta(milliseconds=1), datetime.now(UTC))
            t0 = time.perf_counter()
            producer.send(Control(id="kill_switch", kind="kill_switch", active=True, by="bench", time=clock))
            producer.flush()
            t_ack = time.perf_counter()
            wait_until(lambda marker=marker: marker in returned, 60, interval_s=0.002, what="the run cancelled")
            rem = next(e for e in list(engine.ledger.entries.values()) if e.first.incident_id == f"inc-{i}")
            wait_until(
                lambda rem=rem: rem.latest.status == "cancelled", 30, interval_s=0.002, what="the cancelled record"
            )
            t3 = time.perf_counter()
            if i > 0:
                acked.append(t_ack - t0)
                seen.append(control.cancel.set_at - t0)
                ran.append(returned[marker] - t0)
                decided.append(t3 - t0)
            clock = clock + timedelta(milliseconds=1)
            producer.send(Control(id="kill_switch", kind="kill_switch", active=False, by="bench", time=clock))
            producer.flush()
            wait_until(lambda: not control.cancel.is_set(), 30, interval_s=0.01, what="resume seen")
    finally:
        producer.close()
        engine.stop()
        thread.join(timeout=60)
        control.close()
    load_after = Path("/proc/loadavg").read_text().split()[:3]

    print(
        f"pause bench: {len(seen)} rounds (+1 warm-up), broker {args.bootstrap}, {os.cpu_count()} CPUs, "
        f"cancel poll {CANCEL_POLL_S:g}s; load average before {' '.join(load_before)}, after {' '.join(load_after)}"
    )
    print(f"{'from the pause record sent to':48s} {'n':>3s} {'min ms':>8s} {'p50 ms':>8s} {'max ms':>8s}")
    for what, xs in (
        ("broker acknowledged it (acks=all)", acked),
        ("remediator saw it (cancel event set)", seen),
        ("ansible-runner returned 'canceled'", ran),
        ("cancelled record decided", decided),
    ):
        ms = [x * 1000 for x in xs]
        print(f"{what:48s} {len(ms):3d} {min(ms):8.1f} {statistics.median(ms):8.1f} {max(ms):8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
