"""`fleetmedic export ecs|prom`: the bridges from other tools (log shippers' topics, Prometheus
endpoints), and their arguments."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from fleetmedic.cli import settings_from

from .export_cli import HEALTH_PORTS, add_common_arguments, ensure_topics, finish_exporter, start_exporter

if TYPE_CHECKING:
    from fleetmedic.schemas import MetricBatch


def cmd_export_ecs(args: argparse.Namespace) -> int:
    """Shippers' ECS JSON records on an existing topic → logs.v1, through the shared consumer loop."""
    from fleetmedic import metrics
    from fleetmedic.producer import Producer
    from fleetmedic.transport import ConsumerLoop

    from .shipped import EcsRecord, ecs_events

    settings = settings_from(args)
    if args.create_topics:
        ensure_topics(settings, "export ecs")
    producer = Producer(settings)  # logs.v1 and dead letters under the configured prefix
    # The source topic is the shippers' own, named in full: read it without the prefix.
    loop = ConsumerLoop(
        settings.model_copy(update={"topic_prefix": ""}),
        group_id=args.group,
        inputs={args.topic: EcsRecord},
        producer=producer,
        handle=lambda batch: ecs_events([r.record for r in batch]),
    )
    metrics.watch_loop(loop, "export-ecs")
    server = metrics.serve_for(args, "export ecs")
    if server is not None:
        server.ready_when(metrics.loop_ready(loop))
    print(f"export ecs: {args.topic} (group {args.group}) → {settings.topic_prefix}logs.v1", flush=True)
    try:
        stats = loop.run(until=(lambda s: s.consumed >= args.max) if args.max else None)
    finally:
        producer.close()
        if server is not None:
            server.close()
    print(f"export ecs: read {stats.consumed}, wrote {stats.produced}, dead letters {stats.dead_lettered}", flush=True)
    return 0


def cmd_export_prom(args: argparse.Namespace) -> int:
    from .prom import Target
    from .promsd import FileSD, ScrapeAuth, ScrapePool, SDTarget

    try:
        static = []
        for u in args.urls:
            t = Target.of(u, args.host)
            static.append(SDTarget(t.url, t.host, (), args.interval, min(args.timeout, args.interval), "command line"))
    except ValueError as exc:
        print(f"fleetmedic export prom: {exc}", file=sys.stderr)
        return 2
    if not static and not args.sd_file:
        print("fleetmedic export prom: give target URLs or --sd-file FILE", file=sys.stderr)
        return 2
    sd = (
        FileSD(
            args.sd_file, default_interval_s=args.interval, default_timeout_s=args.timeout, refresh_s=args.sd_refresh
        )
        if args.sd_file
        else None
    )
    auth = ScrapeAuth(
        ca_file=args.ca_file,
        cert_file=args.cert_file,
        key_file=args.key_file,
        insecure_skip_verify=args.insecure_skip_verify,
        bearer_token_file=args.bearer_token_file,
    )
    try:
        pool = ScrapePool(
            workers=args.concurrency, auth=auth, drop_labels=frozenset(args.drop_label), canonical_names=args.canonical
        )
    except (OSError, ValueError) as exc:  # a CA or certificate file that cannot be loaded
        print(f"fleetmedic export prom: TLS: {exc}", file=sys.stderr)
        return 2

    def refresh(force: bool = False) -> None:
        if sd is None:
            if not len(pool):
                pool.set_targets(static)
            return
        if sd.refresh(force):
            pool.set_targets(static + sd.targets())
            print(f"export prom: {len(pool)} targets ({len(sd.files())} target files)", flush=True)

    refresh(force=True)
    exporter = start_exporter("prom", args)
    down: set[str] = set()
    scraped: dict[str, int] = {}

    def collect() -> list[MetricBatch]:
        refresh()
        out = []
        for t, batch, error in pool.poll():
            if args.count is not None and scraped.get(t.url, 0) >= args.count:
                continue  # --count N: N batches of every target, no more
            scraped[t.url] = scraped.get(t.url, 0) + 1
            if error and t.url not in down:
                print(f"export prom: {t.url} is down: {error}", file=sys.stderr, flush=True)
                exporter.health.error(f"{t.url}: {error}")
                down.add(t.url)
            elif not error and t.url in down:
                print(f"export prom: {t.url} is back", flush=True)
                down.discard(t.url)
            out.append(batch)
        down.intersection_update(pool.urls)
        exporter.health.extra.update(
            targets=float(len(pool)), targets_down=float(len(down)), scrapes_skipped=float(pool.stats.skipped)
        )
        return out

    def done() -> bool:  # --count N: every target scraped N times (tests); otherwise until SIGTERM
        return args.count is not None and all(scraped.get(u, 0) >= args.count for u in pool.urls)

    try:
        exporter.run(collect, 0.2, until=done)
    finally:
        pool.close()
        code = finish_exporter(exporter)
    return code


def add_exporters(kinds: argparse._SubParsersAction) -> None:
    """`export ecs` and `export prom`, in the order `fleetmedic export --help` lists them."""
    e = kinds.add_parser(
        "ecs",
        help="bridge a Kafka topic of Filebeat/Fluent Bit/Vector ECS records into logs.v1",
        description="Read JSON records in Elastic Common Schema (@timestamp, host.name, message, "
        "log.file.path) from an existing topic (its full name, no prefix), parse the "
        "messages with the log exporter's rules and write LogEvents to logs.v1. "
        "Records that are not such JSON go to the dead-letter topic with the reason.",
    )
    e.add_argument("topic", metavar="TOPIC")
    e.add_argument("--group", default="fleetmedic-ecs-bridge", help="consumer group id")
    e.add_argument("--max", type=int, default=None, metavar="N", help="stop after N records (tests)")
    e.add_argument("--create-topics", action="store_true", help="create the fleetmedic topics first (idempotent)")
    from fleetmedic.metrics import add_arguments as add_metrics_arguments

    add_metrics_arguments(e)
    e.set_defaults(func=cmd_export_ecs)

    e = kinds.add_parser("prom", help="scrape Prometheus text endpoints (node_exporter, dcgm-exporter, ...)")
    add_common_arguments(e)
    e.add_argument("urls", nargs="*", metavar="URL", help="static targets (with or instead of --sd-file)")
    e.add_argument(
        "--timeout",
        type=float,
        default=5.0,
        metavar="S",
        help="per scrape, unless the target's __scrape_timeout__ label says otherwise",
    )
    e.add_argument(
        "--sd-file",
        action="append",
        default=[],
        metavar="FILE",
        help="Prometheus file_sd target file, JSON or YAML, globs allowed (repeatable); re-read when "
        "it changes. Labels __scheme__, __metrics_path__, __scrape_interval__, "
        "__scrape_timeout__ steer a target; the others become the batch's labels",
    )
    e.add_argument("--sd-refresh", type=float, default=5.0, metavar="S", help="how often to check the files")
    e.add_argument(
        "--concurrency",
        type=int,
        default=64,
        metavar="N",
        help="scrapes in flight at most (threads; they mostly wait on the network)",
    )
    e.add_argument("--ca-file", metavar="FILE", help="CA bundle to verify https targets")
    e.add_argument("--cert-file", metavar="FILE", help="client certificate (mutual TLS)")
    e.add_argument("--key-file", metavar="FILE", help="the client certificate's key")
    e.add_argument("--insecure-skip-verify", action="store_true", help="do not verify https targets' certificates")
    e.add_argument(
        "--bearer-token-file",
        metavar="FILE",
        help="send `Authorization: Bearer <file content>` (re-read at every scrape)",
    )
    e.add_argument(
        "--drop-label",
        action="append",
        default=[],
        metavar="NAME",
        help="leave this label out of series names (repeatable), e.g. DCGM_FI_DRIVER_VERSION",
    )
    e.add_argument(
        "--canonical",
        action="store_true",
        help="also publish known node_exporter/dcgm series under fleetmedic's names (gpu0.temperature_c...)",
    )
    e.add_argument("--health-port", type=int, default=HEALTH_PORTS["prom"], metavar="PORT", help="0: none")
    e.set_defaults(func=cmd_export_prom, interval=15.0)
    # --interval: every target's scrape interval unless its __scrape_interval__ label says otherwise
