"""`fleetmedic export host|gpu|logs|prom` and `fleetmedic simulate`."""

from __future__ import annotations

import argparse
import socket
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

from fleetmedic.cli import settings_from

HEALTH_PORTS = {"host": 9731, "gpu": 9732, "logs": 9733, "prom": 9734}


def _options(args, settings):
    """The exporter's options; paths not given on the command line live under the state dir."""
    from .runner import ExporterOptions

    return ExporterOptions(
        spool_dir=None if args.no_spool else Path(args.spool_dir or settings.state_dir / "spool"),
        spool_max_bytes=int(args.spool_max_mb * 1024 * 1024),
        spool_fsync=args.spool_fsync,
        # --metrics-port (0: any free port) wins over the older --health-port (0: none, -1: any free port)
        health_port=args.health_port if args.metrics_port is None else (args.metrics_port or -1),
        health_bind=args.health_bind or settings.health_bind,
        ack_timeout_s=args.ack_timeout,
    )


def _labels(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--label wants KEY=VALUE, got {pair!r}")
        out[key] = value
    return out


def _this_host(args) -> str:
    from .series import host_name

    return host_name(args.host or socket.gethostname())


def _ensure_topics(settings, what: str) -> None:
    """Create the topics (idempotent), or exit with a clear message when the broker is not there."""
    from kafka.errors import ClusterAuthorizationFailedError, KafkaError, TopicAuthorizationFailedError

    from fleetmedic.topics import admin_client, create_topics

    try:
        admin = admin_client(settings, api_version_auto_timeout_ms=10_000)
        try:
            create_topics(settings, admin)
        finally:
            admin.close()
    except (TopicAuthorizationFailedError, ClusterAuthorizationFailedError) as exc:
        raise SystemExit(
            f"fleetmedic {what}: this principal may not create topics ({type(exc).__name__}): run "
            "`fleetmedic topics create` as the admin (docs/security.md) and drop --create-topics"
        ) from exc
    except KafkaError as exc:
        raise SystemExit(
            f"fleetmedic {what}: broker {','.join(settings.bootstrap_servers)} not reachable ({exc}); "
            f"start one with `fleetmedic broker start` or set FLEETMEDIC_BOOTSTRAP_SERVERS"
        ) from exc


def _start(name: str, args):
    from fleetmedic.lifecycle import stop_on_signals

    from .runner import Exporter

    settings = settings_from(args)
    if args.create_topics:
        _ensure_topics(settings, f"export {name}")
    options = _options(args, settings)
    try:
        exporter = Exporter(name, settings, options)
    except OSError as exc:  # the health port is taken, or the spool folder cannot be written
        raise SystemExit(
            f"fleetmedic export {name}: {exc} (health {options.health_bind}:{args.health_port}, "
            f"spool {options.spool_dir})"
        ) from exc
    stop_on_signals(exporter.stop)
    where = f", metrics on {exporter.server.url}/metrics" if exporter.server else ""
    spool = (
        f", spool {exporter.publisher.spool.directory}"
        if exporter.publisher.spool is not None  # an empty spool is falsy
        else ", no spool"
    )
    print(f"export {name}: host {_this_host(args)} → {settings.bootstrap_servers[0]}{spool}{where}", flush=True)
    return exporter


def _finish(exporter) -> int:
    exporter.close()
    h = exporter.health
    print(
        f"export {exporter.name}: sent {h.sent}, spooled {h.spooled}, resent {h.resent}, dropped {h.dropped}, "
        f"left in spool {h.spool_records}",
        flush=True,
    )
    return 0 if h.dropped == 0 else 4


def cmd_export_host(args) -> int:
    from fleetmedic.schemas import MetricBatch

    from .host import HostCollector

    host, labels = _this_host(args), _labels(args.label)
    collector = HostCollector(watch=args.watch, mounts=args.mount)
    exporter = _start("host", args)

    def collect():
        values, counters = collector.collect()
        return [
            MetricBatch(
                host=host, time=datetime.now(UTC), source="host", labels=labels, values=values, counters=counters
            )
        ]

    try:
        exporter.run(collect, args.interval, count=args.count)
    finally:
        code = _finish(exporter)
    return code


def cmd_export_gpu(args) -> int:
    from fleetmedic.schemas import MetricBatch

    from .gpu import GpuCollector, GpuUnavailable

    try:
        collector = GpuCollector()
    except GpuUnavailable as exc:
        print(f"fleetmedic export gpu: {exc}", file=sys.stderr)
        return 3
    host, labels = _this_host(args), _labels(args.label)
    exporter = _start("gpu", args)

    def collect():
        values, counters, events = collector.collect(host)
        batch = MetricBatch(
            host=host,
            time=datetime.now(UTC),
            source="gpu",
            labels={**collector.labels_, **labels},
            values=values,
            counters=counters,
        )
        return [batch, *events]

    try:
        exporter.run(collect, args.interval, count=args.count, wait=lambda s: collector.wait_events(host, s))
    finally:
        collector.close()
        code = _finish(exporter)
    return code


def log_events(lines, host: str):
    """(path, line) pairs → LogEvents, parsed, stamped with the line's own time when it has one.

    Never raises: a line that cannot make a valid LogEvent as parsed is sent as kind "raw" with
    the reason in its fields (cut to the schema's limits), so its neighbours are never lost.
    """
    from pydantic import ValidationError

    from fleetmedic.schemas import LogEvent

    from .follow import MAX_LINE, TRUNCATED
    from .logparse import parse_line

    now = datetime.now(UTC)
    out = []
    for path, line in lines:
        p = parse_line(line, now=now)
        try:
            out.append(
                LogEvent(
                    host=host,
                    time=p.time or now,
                    source=path[:512] or "?",
                    line=line,
                    kind=p.kind,
                    severity=p.severity,
                    fields=p.fields,
                )
            )
        except ValidationError as exc:
            line = line.encode("utf-8", "replace").decode("utf-8")  # lone surrogates are not UTF-8: "?"
            if len(line) > MAX_LINE:
                line = line[: MAX_LINE - len(TRUNCATED)] + TRUNCATED
            out.append(
                LogEvent(
                    host=host,
                    time=now,
                    source=path[:512] or "?",
                    line=line,
                    kind="raw",
                    severity="info",
                    fields={"invalid": str(exc.errors(include_url=False)[0]["msg"])[:1024]},
                )
            )
    return out


def cmd_export_logs(args) -> int:
    from fleetmedic import metrics

    from .follow import LogFollower
    from .shipped import JournalFollower

    if not args.paths and not args.journal:
        print("fleetmedic export logs: give log file paths, --journal, or both", file=sys.stderr)
        return 2
    host = _this_host(args)
    state_dir = settings_from(args).state_dir
    position_file = args.position_file or state_dir / "log-positions.json"
    follower = LogFollower(args.paths, position_file=position_file, from_end=args.from_end) if args.paths else None
    journal = None
    if args.journal:
        try:
            journal = JournalFollower(
                args.cursor_file or state_dir / "journal-cursor",
                directory=args.journal_directory,
                matches=args.journal_match,
                from_end=args.from_end,
                journalctl=args.journalctl,
            )
        except OSError as exc:
            print(f"fleetmedic export logs: cannot run {args.journalctl}: {exc}", file=sys.stderr)
            return 2
    exporter = _start("logs", args)

    def collect():
        if follower is not None:
            events = log_events(follower.poll(), host)
            exporter.publish(events)  # delivered or spooled: now the position may move past them
            follower.commit()
        if journal is not None:
            exporter.publish(journal.poll(host))
            journal.commit()  # likewise: the cursor moves past delivered (or spooled) entries only
        metrics.checkpoint("export-logs")
        return []

    try:
        exporter.run(collect, args.interval, count=args.count)
    finally:
        if follower is not None:
            follower.close()
        if journal is not None:
            journal.close()
        code = _finish(exporter)
    return code


def cmd_export_ecs(args) -> int:
    """Shippers' ECS JSON records on an existing topic → logs.v1, through the shared consumer loop."""
    from fleetmedic import metrics
    from fleetmedic.transport import ConsumerLoop, Producer

    from .shipped import EcsRecord, ecs_events

    settings = settings_from(args)
    if args.create_topics:
        _ensure_topics(settings, "export ecs")
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


def cmd_export_prom(args) -> int:
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

    def refresh(force=False):
        if sd is None:
            if not len(pool):
                pool.set_targets(static)
            return
        if sd.refresh(force):
            pool.set_targets(static + sd.targets())
            print(f"export prom: {len(pool)} targets ({len(sd.files())} target files)", flush=True)

    refresh(force=True)
    exporter = _start("prom", args)
    down: set[str] = set()
    scraped: dict[str, int] = {}

    def collect():
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
        code = _finish(exporter)
    return code


def cmd_simulate(args) -> int:
    from .publisher import ExporterHealth, Publisher
    from .sim_faults import FAULT_KINDS
    from .sim_run import run_simulation
    from .simulator import SimConfig

    try:
        start = datetime.fromisoformat(args.start.replace("Z", "+00:00")) if args.start else None
        if start is not None and start.tzinfo is None:
            start = start.replace(tzinfo=UTC)
        kinds = tuple(k.strip() for k in args.fault_kinds.split(",") if k.strip()) if args.fault_kinds else FAULT_KINDS
        cfg = SimConfig(
            nodes=args.nodes,
            gpus=args.gpus,
            seconds=args.seconds,
            interval_s=args.interval,
            seed=args.seed,
            faults=args.faults,
            fault_kinds=kinds,
            start=start or (datetime.now(UTC).replace(microsecond=0) if args.realtime else SimConfig.start),
        )
    except ValueError as exc:
        print(f"fleetmedic simulate: {exc}", file=sys.stderr)
        return 2
    settings = settings_from(args)
    truth = Path(args.truth) if args.truth else settings.state_dir / "sim-ground-truth.jsonl"
    health = ExporterHealth("sim")
    publisher = None
    if not args.dry_run:
        _ensure_topics(settings, "simulate")
        publisher = Publisher(settings, health, spool=None, ack_timeout_s=args.ack_timeout)
    stop = threading.Event()
    from fleetmedic.lifecycle import stop_on_signals

    stop_on_signals(stop)
    try:
        run_simulation(
            cfg,
            publisher.publish if publisher else (lambda records: None),
            realtime=args.realtime,
            speed=args.speed,
            truth_path=truth,
            progress=lambda m: print(m, flush=True),
            stop=stop.is_set,
        )
    finally:
        if publisher:
            publisher.close()
    if health.dropped:
        print(
            f"simulate: {health.dropped} records could not be delivered (last error: {health.last_error})",
            file=sys.stderr,
        )
        return 1
    return 0


def _common(p) -> None:
    p.add_argument("--host", help="host name to publish as (default: this machine's name / the target's host)")
    p.add_argument("--interval", type=float, default=10.0, metavar="S", help="seconds between collections")
    p.add_argument("--count", type=int, default=None, metavar="N", help="stop after N collections")
    p.add_argument(
        "--spool-dir",
        default=None,
        metavar="DIR",
        help="where records wait while the broker is unreachable (one folder per exporter; "
        "default: STATE_DIR/spool, see `state_dir` in docs/deploy.md)",
    )
    p.add_argument(
        "--spool-max-mb",
        type=float,
        default=256.0,
        metavar="MB",
        help="spool bound; records beyond it are dropped and counted",
    )
    p.add_argument(
        "--spool-fsync",
        choices=("always", "batch", "never"),
        default="batch",
        help="when spooled records are forced to disk: each record, each batch (default), or never",
    )
    p.add_argument("--no-spool", action="store_true", help="drop (and count) what the broker does not take")
    p.add_argument(
        "--health-bind",
        default=None,
        metavar="ADDR",
        help="address of the health endpoint (default: the health_bind setting, 127.0.0.1)",
    )
    p.add_argument(
        "--ack-timeout", type=float, default=10.0, metavar="S", help="how long to wait for the broker before spooling"
    )
    p.add_argument("--create-topics", action="store_true", help="create the fleetmedic topics first (idempotent)")
    p.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        metavar="PORT",
        help="serve /metrics and /ready on PORT (0: any free port); replaces --health-port",
    )
    from fleetmedic.logfmt import add_argument as add_log_format

    add_log_format(p)


def register(sub) -> None:
    p = sub.add_parser(
        "export",
        help="run a node exporter: host, gpu, logs or prom",
        description="Publish this node's signals to Kafka (metrics.v1 / logs.v1), spooling to disk "
        "while the broker is unreachable. Health: GET :PORT/metrics.",
    )
    kinds = p.add_subparsers(dest="exporter", required=True, metavar="EXPORTER")

    e = kinds.add_parser("host", help="this machine's CPU, memory, filesystems, disks, network, temperatures, services")
    _common(e)
    e.add_argument(
        "--watch",
        action="append",
        default=[],
        metavar="NAME[=PROCESS]",
        help="a systemd unit or process name whose up/down state to report as service.NAME.up; "
        "NAME=PROCESS reports process PROCESS (its name or script) as NAME (repeatable)",
    )
    e.add_argument("--mount", action="append", default=None, metavar="PATH", help="only these mount points")
    e.add_argument("--label", action="append", default=[], metavar="K=V", help="host label, e.g. class=h100x8")
    e.add_argument("--health-port", type=int, default=HEALTH_PORTS["host"], metavar="PORT", help="0: none")
    e.set_defaults(func=cmd_export_host)

    e = kinds.add_parser(
        "gpu",
        help="NVIDIA GPU metrics and XID events through NVML",
        description="Exits 3 when there is no NVIDIA driver or GPU.",
    )
    _common(e)
    e.add_argument("--label", action="append", default=[], metavar="K=V")
    e.add_argument("--health-port", type=int, default=HEALTH_PORTS["gpu"], metavar="PORT", help="0: none")
    e.set_defaults(func=cmd_export_gpu)

    e = kinds.add_parser("logs", help="follow log files (rotation, truncation) and parse known kernel/service lines")
    _common(e)
    e.add_argument("paths", nargs="*", metavar="PATH")
    e.add_argument(
        "--journal",
        action="store_true",
        help="also (or only) follow the systemd journal through `journalctl -o json --follow`",
    )
    e.add_argument(
        "--cursor-file",
        default=None,
        metavar="FILE",
        help="the cursor of the last delivered journal entry (nothing read twice or lost on restart; "
        "default: STATE_DIR/journal-cursor)",
    )
    e.add_argument("--journal-directory", metavar="DIR", help="read journal files from DIR (journalctl --directory)")
    e.add_argument(
        "--journal-match",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="a journalctl match, e.g. _TRANSPORT=kernel or _SYSTEMD_UNIT=slurmd.service (repeatable)",
    )
    e.add_argument("--journalctl", default="journalctl", metavar="PATH", help=argparse.SUPPRESS)
    e.add_argument(
        "--position-file",
        default=None,
        metavar="FILE",
        help="where the offsets of delivered lines are kept across restarts (default: STATE_DIR/log-positions.json)",
    )
    e.add_argument("--from-end", action="store_true", help="a file never seen before starts at its end")
    e.add_argument("--health-port", type=int, default=HEALTH_PORTS["logs"], metavar="PORT", help="0: none")
    e.set_defaults(func=cmd_export_logs, interval=1.0)

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
    _common(e)
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

    p = sub.add_parser(
        "simulate",
        help="a synthetic GPU fleet with injected faults, published to Kafka",
        description="N nodes × G GPUs with daily load cycles, noise and log chatter, and a seeded "
        "schedule of faults (XID bursts, thermal runaway, ECC growth, memory leak, disk "
        "filling, service crash, NVLink errors) whose ground truth goes to --truth.",
    )
    p.add_argument("--nodes", type=int, default=8)
    p.add_argument("--gpus", type=int, default=4, help="GPUs per node")
    p.add_argument("--seconds", type=float, default=600.0, help="simulated span")
    p.add_argument("--interval", type=float, default=10.0, help="simulated seconds between metric batches")
    p.add_argument(
        "--start", default=None, help="simulated start, ISO UTC (default 2026-01-01T00:00:00Z; now with --realtime)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--faults", type=int, default=None, help="how many faults (default: nodes/4, at least 1)")
    p.add_argument("--fault-kinds", default=None, metavar="K1,K2", help="limit to these fault kinds")
    p.add_argument(
        "--truth",
        default=None,
        metavar="FILE",
        help="ground truth, one JSON line per fault (default: STATE_DIR/sim-ground-truth.jsonl)",
    )
    p.add_argument("--realtime", action="store_true", help="pace the simulated clock to the wall clock (demos)")
    p.add_argument("--speed", type=float, default=1.0, help="with --realtime: simulated seconds per wall second")
    p.add_argument("--dry-run", action="store_true", help="generate without publishing (no broker needed)")
    p.add_argument(
        "--ack-timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="how long a batch may wait for the broker's acknowledgement before it is dropped (and "
        "counted): longer rides out a leader election after a broker dies (make chaos)",
    )
    p.set_defaults(func=cmd_simulate)


# The stage's top-level commands, in the order `fleetmedic --help` lists them.
COMMANDS = (register,)
