"""Property-based fuzzing of every consumer and parser with hostile input (issue 13; tests/fuzz_kit.py).

Each consumer test decodes hostile records exactly as `ConsumerLoop.run_once` does (the shared
`decode`; a DecodeError is a dead letter), mixes them with valid records, and runs the stage's
handler path on the batch. It then checks that every valid record had the outcome it has
without the hostile ones around it. Each parser test feeds hostile text or files to the parser,
which must accept or reject with its documented error. `make test` runs a few dozen examples
per test (seconds); `make fuzz` (tests/fuzz_run.py) runs >= 10,000 inputs per consumer.
"""

from __future__ import annotations

import base64
import tempfile
import zlib
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fuzz_kit import (
    BROKER_MS,
    FULL,
    FUZZ,
    JSON_ANY,
    LOG_FRAGMENTS,
    LOG_LINES,
    PER_EXAMPLE,
    SEEDS,
    T0,
    TEXT,
    VALUES,
    Havoc,
    _dumps,
    hostile_records,
    lost,
    tally,
    timed,
)
from hypothesis import given
from hypothesis import strategies as st

from detectors.config import DetectorConfig, load_config
from detectors.engine import Engine
from fleetmedic.deadletter import DecodeError, decode
from fleetmedic.schemas import Approval, DetectorState, Incident, LogEvent, MetricBatch, Remediation
from fleetmedic.transport import Received
from fleetmedic.yamlfile import ConfigFileError
from remediator.approvals import public_key_text

MAX_BYTES = 1_000_000
REPO = Path(__file__).resolve().parent.parent
DETECTOR_CONFIG = DetectorConfig(
    static=[{"name": "hot", "match": ["*temperature*"], "op": ">", "threshold": 85}],
    ewma=[{"name": "e", "match": ["*"]}],
    univariate=[{"name": "u", "match": ["*power*"]}],
)


@dataclass
class Consumed:
    valid: list[Received]
    dead: int
    good: list[Received]  # the decoded good records (also in `valid`), in order


def consume(name: str, model, hostile: list[bytes], good: list, topic: str) -> Consumed:
    """Spread the good records among the hostile ones and decode them all as the loop does (the shared
    `decode`; a DecodeError is a dead letter, and must say why)."""
    t = tally(name, "records")
    values = [g.to_bytes() for g in good]
    order = [(True, raw) for raw in hostile]
    for i, value in enumerate(values):  # evenly spaced, the first one after the first hostile record
        order.insert(1 + i * (len(order) // max(1, len(values))) + i, (False, value))
    out, dead, kept = [], 0, []
    for offset, (is_hostile, raw) in enumerate(order):
        ok, rec = (
            timed(t, decode, model, raw, MAX_BYTES, expected=(DecodeError,))
            if is_hostile
            else (True, decode(model, raw, MAX_BYTES))
        )
        if not ok:
            dead += 1
            t.dead_lettered += 1
            if not isinstance(rec, DecodeError) or not str(rec):
                raise AssertionError("a dead letter without a reason")
            continue
        item = Received(rec, topic, 0, offset, BROKER_MS + offset * 10_000, rec.key())
        out.append(item)
        if not is_hostile:
            kept.append(item)
    return Consumed(out, dead, kept)


def handler_tally(name: str):
    """The stage handler's time on whole batches. A batch under the per-input budget proves every input
    in it was; these rows time the same records again, so they are not part of N."""
    return tally(f"{name}.handler", "batches timed", counted=False)


_ENGINES: dict[str, Engine] = {}
_RUN = [0]


def _engine(name: str) -> Engine:
    """One engine per target for the whole run (building one reads the log-rule table): good hosts
    get names of their own per example, so examples do not see each other's good records."""
    if name not in _ENGINES:
        _ENGINES[name] = Engine(DETECTOR_CONFIG)
    return _ENGINES[name]


def _good_prefix() -> str:
    _RUN[0] += 1
    return f"good-{_RUN[0]}-"


def _metric(host: str, i: int) -> MetricBatch:
    return MetricBatch(
        host=host,
        time=T0 + timedelta(seconds=10 * i),
        source="sim",
        labels={"class": "h100"},
        values={"gpu0.temperature_c": 60.0 + i % 3, "gpu0.power_w": 300.0 + i % 5, "c": float(i)},
        counters=["c"],
    )


def _stamp_good(items: list[Received]) -> list[Received]:
    # a good record's broker time is its own event time (as produced)
    return [
        Received(it.record, it.topic, it.partition, it.offset, int(it.record.time.timestamp() * 1000), it.key)
        if it.record.host.startswith("good-")
        else it
        for it in items
    ]


def _check_hosts(name: str, engine: Engine, good: list, attr: str) -> None:
    for host in {g.host for g in good}:
        newest = max(g.time.timestamp() for g in good if g.host == host)
        hs = engine.hosts.get(host)
        got = getattr(hs, attr) if hs else None
        if got != newest:
            lost(tally(name), 1, f"{host}: newest event time {got} != {newest}")


METRIC_BASE = _metric("h", 0).model_dump(mode="json")
LOG_BASE = LogEvent(
    host="h",
    time=T0,
    source="kern",
    line="NVRM: Xid (PCI:0000:3b:00): 79, pid=1",
    kind="xid",
    severity="critical",
    fields={"xid": 79},
).model_dump(mode="json")


def expand(base: dict, drawn: list[bytes], values: list, seed: int) -> list[bytes]:
    """The drawn hostile records and PER_EXAMPLE havoc mutations of them and of `base`."""
    return drawn + Havoc(seed).records(base, drawn, values, PER_EXAMPLE)


@FUZZ
@given(st.lists(hostile_records(METRIC_BASE), min_size=1, max_size=12), VALUES, SEEDS, st.integers(1, 8))
def test_fuzz_metrics_consumer(drawn, values, seed, n_good):
    prefix = _good_prefix()
    good = [_metric(f"{prefix}{i % 2}", i) for i in range(n_good)]
    got = consume("metrics", MetricBatch, expand(METRIC_BASE, drawn, values, seed), good, "t.metrics.v1")
    engine = _engine("metrics")
    before = engine.stats.future_dead_lettered
    timed(handler_tally("metrics"), engine.process, _stamp_good(got.valid))
    tally("metrics").dead_lettered += engine.stats.future_dead_lettered - before
    _check_hosts("metrics", engine, [g for g in good], "max_time")


@FUZZ
@given(st.lists(hostile_records(LOG_BASE), min_size=1, max_size=12), VALUES, SEEDS, st.integers(1, 8))
def test_fuzz_logs_consumer(drawn, values, seed, n_good):
    prefix = _good_prefix()
    good = [
        LogEvent(
            host=f"{prefix}{i % 2}",
            time=T0 + timedelta(seconds=10 * i),
            source="kern",
            kind="xid",
            severity="critical",
            line="NVRM: Xid (PCI:0000:3b:00): 79, pid=1",
            fields={"xid": 79},
        )
        for i in range(n_good)
    ]
    got = consume("logs", LogEvent, expand(LOG_BASE, drawn, values, seed), good, "t.logs.v1")
    engine = _engine("logs")
    before = engine.stats.future_dead_lettered
    timed(handler_tally("logs"), engine.process, _stamp_good(got.valid))
    tally("logs").dead_lettered += engine.stats.future_dead_lettered - before
    _check_hosts("logs", engine, good, "log_max_time")


_POLICY = None


def _policy():
    global _POLICY
    if _POLICY is None:
        from remediator.policy import load_policy

        _POLICY = load_policy(REPO / "deploy" / "policy.example.yaml")
    return _POLICY


def _incident(i: int) -> Incident:
    return Incident(
        id=f"inc-{i}",
        fingerprint=f"gpu-node-{i}/service_down/service.slurmd.up",
        host=f"gpu-node-{i}",
        kind="service_down",
        subject="service.slurmd.up",
        status="open",
        severity="critical",
        detector="static:svc",
        time=T0,
        opened_at=T0,
        labels={"health_url": ""},
    )


def _decide(incident: Incident):
    from remediator.claims import Ledger
    from remediator.gates import Proposal, default_pipeline, propose

    policy = _policy()
    p = propose(policy, incident, 0, T0 + timedelta(minutes=1))
    if isinstance(p, Proposal):
        out = default_pipeline(policy).run(p, Ledger(), T0 + timedelta(minutes=1))
        return (type(out).__name__, getattr(out, "extra_vars", None), getattr(out, "reason", None))
    return None if p is None else (p.status, p.reason)


INCIDENT_BASE = _incident(0).model_dump(mode="json")


@FUZZ
@given(st.lists(hostile_records(INCIDENT_BASE), min_size=1, max_size=12), VALUES, SEEDS, st.integers(1, 4))
def test_fuzz_incidents_consumer(drawn, values, seed, n_good):
    good = [_incident(i) for i in range(n_good)]
    baseline = [_decide(g) for g in good]
    got = consume("incidents", Incident, expand(INCIDENT_BASE, drawn, values, seed), good, "t.incidents.v1")
    t = tally("incidents.handler", "records decided", counted=False)
    decided = {}
    for item in got.valid:
        _, out = timed(t, _decide, item.record)
        decided[id(item)] = out
    for g, item, want in zip(good, got.good, baseline, strict=True):  # consume() decodes every good record
        if decided.get(id(item)) != want:
            lost(tally("incidents"), 1, f"{g.id}: {decided.get(id(item))} != {want}")


def _remediation(i: int, status: str = "awaiting_approval") -> Remediation:
    return Remediation(
        id=f"rem-{i:020x}",
        incident_id=f"inc-{i}",
        fingerprint="f",
        host=f"gpu-node-{i}",
        action="restart_service",
        playbook="restart_service.yml",
        status=status,
        time=T0,
    )


REMEDIATION_BASE = _remediation(0).model_dump(mode="json")
# Good approvals are signed as `fleetmedic approve` signs them; hostile ones derive from an unsigned base.
APPROVER_PRIVATE = Ed25519PrivateKey.generate()
APPROVER_PUBLIC = public_key_text(APPROVER_PRIVATE.public_key())
APPROVAL_BASE = Approval(
    remediation_id=f"rem-{0:020x}", host="gpu-node-0", decision="approve", by="sre", time=T0 + timedelta(seconds=5)
).model_dump(mode="json")


@FUZZ
@given(st.lists(hostile_records(REMEDIATION_BASE), min_size=1, max_size=12), VALUES, SEEDS, st.integers(1, 6))
def test_fuzz_remediations_consumer(drawn, values, seed, n_good):
    from remediator.claims import Ledger

    good = [_remediation(1000 + i) for i in range(n_good)]
    got = consume("remediations", Remediation, expand(REMEDIATION_BASE, drawn, values, seed), good, "t.remediations.v1")
    ledger = Ledger()
    t = tally("remediations.handler", "records applied", counted=False)
    for item in got.valid:
        timed(t, ledger.apply, item.record)
    missing = [g.id for g in good if ledger.get(g.id) is None]
    lost(tally("remediations"), len(missing), f"not in the ledger: {missing}")


@FUZZ
@given(st.lists(hostile_records(APPROVAL_BASE), min_size=1, max_size=12), VALUES, SEEDS, st.integers(1, 6))
def test_fuzz_approvals_consumer(drawn, values, seed, n_good):
    from remediator import approvals
    from remediator.claims import Ledger

    ledger = Ledger()
    for i in range(n_good):
        ledger.apply(_remediation(2000 + i))
    desk = approvals.ApprovalDesk({"sre": APPROVER_PUBLIC}, expire_s=3600.0)
    good = []
    for i in range(n_good):
        request = _remediation(2000 + i)
        good.append(
            approvals.sign(
                Approval(
                    remediation_id=request.id,
                    incident_id=request.incident_id,
                    action=request.action,
                    step=request.step,
                    host=request.host,
                    decision="approve",
                    by="sre",
                    time=T0 + timedelta(seconds=5),
                    expires_at=T0 + timedelta(seconds=600),
                    nonce=f"{i:032x}",
                ),
                APPROVER_PRIVATE,
            )
        )
    got = consume("approvals", Approval, expand(APPROVAL_BASE, drawn, values, seed), good, "t.approvals.v1")
    t = tally("approvals.handler", "records considered", counted=False)
    honoured = set()
    for item in got.valid:
        entry = ledger.get(item.record.remediation_id)
        _, v = timed(t, desk.consider, item.record, entry, T0 + timedelta(seconds=10))
        if isinstance(v, approvals.Verdict) and v.run:
            honoured.add(item.record.remediation_id)
    bad = [g.remediation_id for g in good if g.remediation_id not in honoured]
    lost(tally("approvals"), len(bad), f"approvals not honoured: {bad}")


def _good_state(host: str) -> DetectorState:
    engine = Engine(DETECTOR_CONFIG)
    engine.process([Received(_metric(host, i), "t.metrics.v1", 0, i, 0, None) for i in range(5)])
    return engine.snapshot(host)


_STATE = None


def _state_base() -> DetectorState:
    global _STATE
    if _STATE is None:
        _STATE = _good_state("good-0")
    return _STATE


def _payloads():
    """Hostile `state_b64` values: random, truncated, bit-flipped, zlib of garbage."""
    good = base64.b64decode(_state_base().state_b64)

    def flip(args):
        at, bit = args
        raw = bytearray(zlib.decompress(good))
        raw[at % len(raw)] ^= 1 << bit
        return base64.b64encode(zlib.compress(bytes(raw))).decode()

    return st.one_of(
        st.binary(max_size=200).map(lambda b: base64.b64encode(b).decode()),
        st.binary(max_size=200).map(lambda b: base64.b64encode(zlib.compress(b)).decode()),
        st.integers(0, len(good)).map(lambda n: base64.b64encode(good[:n]).decode()),
        st.tuples(st.integers(0, 10**6), st.integers(0, 7)).map(flip),
        TEXT,
    )


def _state_payload_havoc(rng_seed: int, n: int) -> list[bytes]:
    """`n` state records for host "hostile" whose payload is a havoc mutation of a good snapshot's
    bytes, compressed (so it passes zlib) or not."""
    havoc = Havoc(rng_seed)
    raw = zlib.decompress(base64.b64decode(_state_base().state_b64))
    base = _state_base().model_dump(mode="json")
    out = []
    for blob in havoc.bytes([raw], n):
        blob = zlib.compress(blob, 1) if havoc.rng.random() < 0.8 else blob
        out.append(_dumps({**base, "host": "hostile", "state_b64": base64.b64encode(blob).decode()}))
    return out


STATE_BASE = _good_state("h").model_dump(mode="json")  # hostile snapshots derive from host h's, never good-0's


@FUZZ
@given(
    st.lists(
        st.one_of(
            hostile_records(STATE_BASE),
            _payloads().map(
                lambda p: _dumps({**_state_base().model_dump(mode="json"), "host": "hostile", "state_b64": p})
            ),
        ),
        min_size=1,
        max_size=12,
    ),
    VALUES,
    SEEDS,
)
def test_fuzz_state_consumer(drawn, values, seed):
    hostile = (
        drawn
        + Havoc(seed).records(STATE_BASE, drawn, values, PER_EXAMPLE // 2)
        + _state_payload_havoc(seed, PER_EXAMPLE - PER_EXAMPLE // 2)
    )
    good = _state_base()
    got = consume("state", DetectorState, hostile, [good], "t.state.v1")
    engine = _engine("state")
    engine.forget("good-0")
    before = engine.stats.unreadable_states
    t = tally("state.handler", "snapshots restored", counted=False)
    for item in got.valid:
        timed(t, engine.restore, item.record)
    tally("state").dead_lettered += engine.stats.unreadable_states - before
    if (
        engine.hosts.get("good-0") is None
        or engine.hosts["good-0"].max_time != (T0 + timedelta(seconds=40)).timestamp()
    ):
        lost(tally("state"), 1, "the good snapshot did not restore")


# -- parsers ----------------------------------------------------------------------------------------
XID = "NVRM: Xid (PCI:0000:3b:00): 79, pid=1911, GPU has fallen off the bus."


@FUZZ
@given(st.lists(LOG_LINES, min_size=1, max_size=10), SEEDS)
def test_fuzz_log_line_parser(drawn, seed):
    from ingest.logparse import parse_line
    from ingest.node_cli import log_events

    lines = drawn + Havoc(seed).texts(drawn + LOG_FRAGMENTS, LOG_FRAGMENTS, PER_EXAMPLE)
    t = tally("parser: log lines", "lines")
    for line in lines:
        timed(t, parse_line, line)
    # the exporter's batch path: an XID line on each side of every 25 hostile ones must come through
    batches = tally("parser: log lines.events", "batches timed", counted=False)
    for first in range(0, len(lines), 25):
        batch = [("/var/log/kern.log", line) for line in [XID, *lines[first : first + 25], XID]]
        _, events = timed(batches, log_events, batch, "n1")
        if [e.kind for e in (events[0], events[-1])] != ["xid", "xid"] or len(events) != len(batch):
            lost(t, 1, "an XID line next to hostile ones")


PROM_PIECES = [
    "# TYPE x counter\n",
    "# HELP x h\n",
    "x",
    "_total",
    "{",
    "}",
    'a="',
    '\\"',
    '"',
    ",",
    " ",
    "1",
    "NaN",
    "+Inf",
    "-Inf",
    "1e400",
    "\n",
    "\t",
    "=",
    "# TYPE",
    "é",
    "\x00",
    "9" * 30,
    'x{a="b"} 1 1700000000000\n',
]
PROM_FRAGMENTS = st.sampled_from(PROM_PIECES)
PROM_TEXTS = st.one_of(
    st.lists(PROM_FRAGMENTS, max_size=60).map("".join),
    st.tuples(st.lists(PROM_FRAGMENTS, min_size=1, max_size=8), st.integers(1, 3000)).map(
        lambda a: "".join(a[0]) * a[1]
    ),
    TEXT,
    st.binary(max_size=300).map(lambda b: b.decode("utf-8", "replace")),
)


@FUZZ
@given(st.lists(PROM_TEXTS, min_size=1, max_size=5), SEEDS)
def test_fuzz_prometheus_text_parser(drawn, seed):
    from ingest.promtext import PromParseError, parse

    t = tally("parser: prometheus text", "texts")
    for text in drawn + Havoc(seed).texts(drawn + PROM_PIECES, PROM_PIECES, PER_EXAMPLE, cap=20_000):
        timed(t, lambda s: list(parse(s)), text, expected=(PromParseError,))


YAML_PIECES = [
    "&a ",
    "*a",
    "<<: *a",
    "!!binary ",
    "!!python/object:os.system ",
    "? ",
    "- ",
    ": ",
    "{",
    "}",
    "[",
    "]",
    "\t",
    "\n  ",
    "\n",
    "'",
    '"',
    "%YAML 1.1\n",
    "---\n",
    "...\n",
    "#",
    "~",
    "null",
    ".nan",
    "-.inf",
    "0x1F",
    "1e400",
    "2026-13-45",
    "\x00",
    "\ud800",
    "é",
    "(a+)+$",
    "(?P<x>",
    "\\",
    "$",
]


def _trimmed(node):
    """`node` with every list cut to its first item: a small document that still reaches the validators."""
    if isinstance(node, dict):
        return {k: _trimmed(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_trimmed(v) for v in node[:1]]
    return node


def _yaml_text(havoc: Havoc, doc) -> str:
    import json

    import yaml

    if havoc.rng.random() < 0.5:
        return json.dumps(doc, allow_nan=True, default=str)  # JSON is YAML's flow style
    try:
        return yaml.dump(doc, Dumper=yaml.CSafeDumper, allow_unicode=True)
    except (yaml.YAMLError, UnicodeError, ValueError):
        return json.dumps(doc, allow_nan=True, default=str)


class YamlHostile:
    """Hostile YAML for one loader: the drawn documents (full-size mutations among them), and per example
    PER_EXAMPLE havoc ones: small documents (one section, lists cut to one item) with fields anywhere
    dropped, retyped or added, and text havoc of those and of the drawn ones."""

    def __init__(self, base_text: str):
        import yaml

        doc = yaml.safe_load(base_text)
        self.sections = [{k: _trimmed(v)} for k, v in doc.items()] + [_trimmed(doc)]

    def expand(self, drawn: list[str], values: list, seed: int) -> list[str]:
        havoc = Havoc(seed)
        out = list(drawn)
        for _ in range(PER_EXAMPLE if FULL else 5):  # pure-Python PyYAML: ~10 ms a document; `make test` stays short
            text = _yaml_text(havoc, havoc.tree(havoc.rng.choice(self.sections), values))
            if havoc.rng.random() < 0.4:
                text = havoc.texts([text] + drawn, YAML_PIECES, 1, cap=20_000)[0]
            out.append(text)
        return out


def _yaml_docs(base: str):
    import yaml

    doc = yaml.safe_load(base)

    def mutate(ops):
        d = dict(doc)
        for key, value in ops:
            d[key if key in d else f"x_{key}"] = value
        return yaml.safe_dump(d, allow_unicode=True)

    keys = sorted(doc)
    return st.one_of(
        st.lists(st.tuples(st.sampled_from(keys), JSON_ANY), min_size=1, max_size=3).map(mutate),
        TEXT,
        st.sampled_from(
            [
                "a: &a [*a]",
                "[" * 5000,
                "!!python/object:os.system {}",
                "a: !!binary ZZZ",
                "\t- x",
                "x: " + "y" * 100_000,
                "a: 1\na: 2",
                "- 1\n- 2",
                "~",
                ": :",
            ]
        ),
        st.binary(max_size=200).map(lambda b: b.decode("utf-8", "replace")),
    )


def _load_each(t, loader, texts: list[str], expected) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "f.yaml"

        def load(text):
            path.write_text(text, encoding="utf-8", errors="surrogatepass")
            return loader(path)

        for text in texts:
            timed(t, load, text, expected=expected)


POLICY_TEXT = (REPO / "deploy" / "policy.example.yaml").read_text()
DETECTOR_TEXT = (REPO / "detectors" / "default.yaml").read_text()
POLICY_HOSTILE = YamlHostile(POLICY_TEXT)
DETECTOR_HOSTILE = YamlHostile(DETECTOR_TEXT)


@FUZZ
@given(st.lists(_yaml_docs(POLICY_TEXT), min_size=1, max_size=3), VALUES, SEEDS)
def test_fuzz_policy_yaml(drawn, values, seed):
    from remediator.policy import load_policy

    _load_each(
        tally("parser: policy YAML", "documents"),
        load_policy,
        POLICY_HOSTILE.expand(drawn, values, seed),
        (ConfigFileError, ValueError),
    )


@FUZZ
@given(st.lists(_yaml_docs(DETECTOR_TEXT), min_size=1, max_size=3), VALUES, SEEDS)
def test_fuzz_detector_yaml(drawn, values, seed):
    _load_each(
        tally("parser: detector YAML", "documents"),
        load_config,
        DETECTOR_HOSTILE.expand(drawn, values, seed),
        (ConfigFileError, ValueError),
    )


CSV_ROWS = st.one_of(
    st.tuples(st.integers(0, 10**6), st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.just(None))).map(
        lambda a: (
            f"{np.datetime64('2014-04-01T00:00:00', 's') + np.timedelta64(a[0], 's')},{'' if a[1] is None else a[1]}"
        )
    ),
    TEXT.map(lambda s: s.replace("\x00", "")),
    st.sampled_from(
        [
            "9999-12-31 23:59:59,1",
            "0001-01-01 00:00:00,1",
            ",",
            "a,b,c",
            "2014-04-01 00:00:00,1e400",
            '"2014-04-01 00:00:00","1"',
            "2014-04-01 00:00:00,nan",
        ]
    ),
)
CSV_PIECES = [",", "\n", '"', "\r\n", "nan", "inf", "1e400", "-", ":", " ", "\ufeff", "9999-12-31 23:59:59", "\t", "é"]
CSV_START = np.datetime64("2014-04-01T00:00:00", "s")


def _csv_texts(drawn: list[list[str]], header: bool, seed: int) -> list[str]:
    """The drawn files, and PER_EXAMPLE more: drawn rows among generated ones whose clock steps
    forwards, backwards, repeats and jumps by years, with hostile values; some with text havoc."""
    havoc = Havoc(seed)
    rng = havoc.rng
    pool = [row for rows in drawn for row in rows]
    out = [("timestamp,value\n" if header else "") + "\n".join(rows) + "\n" for rows in drawn]
    for _ in range(PER_EXAMPLE):
        step, t, rows = rng.choice([1, 60, 300]), rng.randint(0, 10**6), []
        for _ in range(rng.randint(0, 40)):
            if pool and rng.random() < 0.2:
                rows.append(rng.choice(pool))
                continue
            t += rng.choice([step, step, step, 0, -step, -3600, 10**8, -(10**8)])
            value = rng.choice([repr(rng.gauss(0, 1e3)), "0", "nan", "inf", "-inf", "", "1e400", "x", "1,2", '"3"'])
            rows.append(f"{CSV_START + np.timedelta64(t, 's')},{value}")
        text = ("timestamp,value\n" if rng.random() < 0.8 else "") + "\n".join(rows) + "\n"
        if rng.random() < 0.3:
            text = havoc.texts([text], CSV_PIECES, 1, cap=20_000)[0]
        out.append(text)
    return out


@FUZZ
@given(st.lists(st.lists(CSV_ROWS, max_size=40), min_size=1, max_size=3), st.booleans(), SEEDS)
def test_fuzz_csv_input(drawn, header, seed):
    from detectors import nab

    def read(path):
        series = nab.read_series(path)
        assert series.late_rows == int(nab.late_rows(series.times).sum())
        return series

    t = tally("parser: detect csv", "files")
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "x.csv"
        for text in _csv_texts(drawn, header, seed):
            path.write_text(text, encoding="utf-8", errors="surrogatepass")
            timed(t, read, path, expected=(ValueError, UnicodeDecodeError))


# -- cardinality ------------------------------------------------------------------------------------
def test_fuzz_a_million_distinct_series_names_stay_within_the_caps():
    """10^6 distinct series names (10^5 in `make test`) over 100 hosts: state bounded by the caps."""
    names_per_host = 10_000 if FULL else 1_000
    cfg = DetectorConfig(ewma=[{"name": "e", "match": ["*"]}], max_series_per_host=names_per_host // 2)
    engine = Engine(cfg)
    chunk = min(2000, names_per_host)
    t = tally("metrics: 10^6 series names" if FULL else "metrics: 10^5 series names", f"records of {chunk:,} new names")
    offset = 0
    for h in range(100):
        for first in range(0, names_per_host, chunk):
            rec = MetricBatch(
                host=f"card-{h}",
                time=T0,
                source="sim",
                values={f"s{h}.{k}\x01$</script>": 1.0 for k in range(first, first + chunk)},
            )
            timed(t, engine.process, [Received(rec, "t.metrics.v1", 0, offset, BROKER_MS, None)])
            offset += 1
    assert len(engine.slot_name) == 100 * (names_per_host // 2)
    assert engine.stats.series_over_cap == 100 * (names_per_host // 2)


# -- the wire path ----------------------------------------------------------------------------------
WIRE_MAX_BYTES = 900_000  # under the producer's request limit: bigger ones are refused before they are sent


def _wire_batches(seed: int, per_topic: int) -> dict[str, tuple[type, list[bytes], list]]:
    """topic → (contract, hostile records, good records) for all six consumers' input topics."""
    from remediator import approvals

    havoc = Havoc(seed)
    values = [v for v in __import__("fuzz_kit").NASTY_VALUES if not isinstance(v, str) or len(v) < 100]
    samples = [b"", b"\xff\xfe", b"[" * 100_000, b'{"a":NaN}', b"null", b'"\\ud800"', b"\x00" * 64]
    request = _remediation(3000)
    signed = approvals.sign(
        Approval(
            remediation_id=request.id,
            incident_id=request.incident_id,
            action=request.action,
            step=request.step,
            host=request.host,
            decision="approve",
            by="sre",
            time=T0 + timedelta(seconds=5),
            expires_at=T0 + timedelta(seconds=600),
            nonce=f"{3000:032x}",
        ),
        APPROVER_PRIVATE,
    )
    plan = {
        "metrics.v1": (MetricBatch, METRIC_BASE, [_metric("wire-0", i) for i in range(3)]),
        "logs.v1": (LogEvent, LOG_BASE, [LogEvent.model_validate({**LOG_BASE, "host": "wire-0"})]),
        "incidents.v1": (Incident, INCIDENT_BASE, [_incident(3000 + i) for i in range(2)]),
        "remediations.v1": (Remediation, REMEDIATION_BASE, [request]),
        "approvals.v1": (Approval, APPROVAL_BASE, [signed]),
        "state.v1": (DetectorState, STATE_BASE, [_state_base()]),
    }
    out = {}
    for topic, (model, base, good) in plan.items():
        hostile = [r for r in samples + havoc.records(base, samples, values, per_topic) if len(r) <= WIRE_MAX_BYTES]
        out[topic] = (model, hostile, good)
    return out


def wire_sample(bootstrap: str, seed: int = 13, per_topic: int = 60) -> None:
    """Hostile records next to good ones through a real broker and the shared ConsumerLoop (its decode,
    dead letters and commit): every good record arrives intact, and exactly the records `decode` refuses
    are dead-lettered. The handlers' side of the same records is the in-process targets above."""
    from conftest import make_settings

    from fleetmedic.producer import Producer
    from fleetmedic.topics import create_topics, topic_name
    from fleetmedic.transport import ConsumerLoop

    settings = make_settings(bootstrap)
    create_topics(settings)
    t = tally("wire: real broker, 6 topics", "records")
    plan = _wire_batches(seed, per_topic)
    total = 0
    with Producer(settings) as producer:
        for topic, (_model, hostile, good) in plan.items():
            spaced = [(False, g.to_bytes()) for g in good]
            for i, raw in enumerate(hostile):
                spaced.insert(min(len(spaced), 1 + i * 2), (True, raw))
            for _, raw in spaced:
                producer.send_raw(topic_name(settings, topic), raw, b"fuzz")  # one key: one partition, in order
            total += len(spaced)
            t.inputs += len(hostile)
    got: list[Received] = []
    loop = ConsumerLoop(
        settings,
        group_id=settings.topic_prefix + "fuzz",
        handle=lambda b: got.extend(b) or (),
        inputs={topic: model for topic, (model, _, _) in plan.items()},
    )
    try:
        stats = loop.run(until=lambda s: s.consumed >= total, install_signals=False)
    finally:
        loop.close()
    refused = 0
    for topic, (model, hostile, good) in plan.items():
        for raw in hostile:
            try:
                decode(model, raw, settings.max_record_bytes)
            except DecodeError:
                refused += 1
        arrived = [g.record.to_bytes() for g in got if g.topic == topic_name(settings, topic)]
        missing = [g for g in good if g.to_bytes() not in arrived]
        lost(t, len(missing), f"{topic}: good records that did not arrive: {missing}")
    t.rejected = t.dead_lettered = stats.dead_lettered
    t.accepted = t.inputs - refused
    if stats.dead_lettered != refused:
        lost(t, abs(stats.dead_lettered - refused), f"dead-lettered {stats.dead_lettered}, decode refuses {refused}")


def test_fuzz_wire_path_through_a_real_broker(kafka_bootstrap):
    wire_sample(kafka_bootstrap, per_topic=20)
