"""A real stage run as its own process by the crash tests: metric batch in → log event out.

    python tests/stage_echo.py BOOTSTRAP PREFIX GROUP [--pause-after-flush FILE]

With --pause-after-flush, the first batch's results are produced and acknowledged, FILE is
written, and the process then hangs before committing, so a test can SIGKILL it there.
"""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path

from fleetmedic.config import Settings, TopicSettings
from fleetmedic.schemas import LogEvent, MetricBatch
from fleetmedic.transport import ConsumerLoop, LoopStats, Received


def echo(batch: list[Received]):
    for item in batch:
        yield LogEvent(
            host=item.record.host,
            time=item.record.time,
            source="echo",
            kind="echo",
            line=f"echo {item.partition}:{item.offset}",
            fields={"src_partition": item.partition, "src_offset": item.offset},
        )


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("bootstrap")
    ap.add_argument("prefix")
    ap.add_argument("group")
    ap.add_argument("--pause-after-flush", type=Path)
    ap.add_argument("--ready-file", type=Path)
    args = ap.parse_args()
    settings = Settings(
        bootstrap_servers=[args.bootstrap],
        topic_prefix=args.prefix,
        client_id="echo",
        topics=TopicSettings(partitions=3),
    )

    def pause(stats: LoopStats) -> None:
        if args.pause_after_flush:
            args.pause_after_flush.write_text(f"{stats.consumed}\n")
            threading.Event().wait()  # hang here, uncommitted, until killed

    def assigned(parts) -> None:
        if args.ready_file and parts:
            args.ready_file.write_text("assigned\n")

    loop = ConsumerLoop(
        settings,
        group_id=args.group,
        inputs={"metrics.v1": MetricBatch},
        handle=echo,
        after_flush=pause,
        on_assign=assigned,
        max_records=20,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
    )
    stats = loop.run()
    print(f"stopped after {stats.consumed} records", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
