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
from hypothesis import given, strategies as st

from fleetmedic.schemas import Approval, DetectorState, Incident, LogEvent, MetricBatch, Remediation
from fleetmedic.transport import DecodeError, Received, decode
from fleetmedic.yamlfile import ConfigFileError

from detectors.config import DetectorConfig, load_config
from detectors.engine import Engine
from remediator.approvals import public_key_text

from fuzz_kit import (BROKER_MS, FUZZ, _dumps, LOG_LINES, RAW_BYTES, T0, JSON_ANY, TEXT, hostile_records, lost, tally,
                      timed)

MAX_BYTES = 1_000_000
REPO = Path(__file__).resolve().parent.parent
DETECTOR_CONFIG = DetectorConfig(
    static=[{"name": "hot", "match": ["*temperature*"], "op": ">", "threshold": 85}],
    ewma=[{"name": "e", "match": ["*"]}],
    univariate=[{"name": "u", "match": ["*power*"]}])


@dataclass
class Consumed:
    valid: list[Received]
    dead: int


def consume(name: str, model, hostile: list[bytes], good: list, topic: str) -> Consumed:
    """Interleave the hostile records among the good ones and decode them all as the loop does."""
    t = tally(name)
    values = [g.to_bytes() for g in good]
    order = []
    for i, raw in enumerate(hostile):
        order.append((True, raw))
        if i < len(values):
            order.append((False, values[i]))
    order += [(False, v) for v in values[len(hostile):]]
    out, dead = [], 0
    for offset, (is_hostile, raw) in enumerate(order):
        ok, rec = timed(t, decode, model, raw, MAX_BYTES, expected=(DecodeError,)) if is_hostile else \
            (True, decode(model, raw, MAX_BYTES))
        if not ok:
            dead += 1
            t.dead_lettered += 1
            if not isinstance(rec, DecodeError) or not str(rec):
                raise AssertionError("a dead letter without a reason")
            continue
        out.append(Received(rec, topic, 0, offset, BROKER_MS + offset * 10_000, rec.key()))
    return Consumed(out, dead)


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
    return MetricBatch(host=host, time=T0 + timedelta(seconds=10 * i), source="sim", labels={"class": "h100"},
                       values={"gpu0.temperature_c": 60.0 + i % 3, "gpu0.power_w": 300.0 + i % 5, "c": float(i)},
                       counters=["c"])


def _stamp_good(items: list[Received]) -> list[Received]:
    # a good record's broker time is its own event time (as produced)
    return [Received(it.record, it.topic, it.partition, it.offset, int(it.record.time.timestamp() * 1000), it.key)
            if it.record.host.startswith("good-") else it for it in items]


def _check_hosts(name: str, engine: Engine, good: list, attr: str) -> None:
    for host in {g.host for g in good}:
        newest = max(g.time.timestamp() for g in good if g.host == host)
        hs = engine.hosts.get(host)
        got = getattr(hs, attr) if hs else None
        if got != newest:
            lost(tally(name), 1, f"{host}: newest event time {got} != {newest}")


METRIC_BASE = _metric("h", 0).model_dump(mode="json")
LOG_BASE = LogEvent(host="h", time=T0, source="kern", line="NVRM: Xid (PCI:0000:3b:00): 79, pid=1", kind="xid",
                    severity="critical", fields={"xid": 79}).model_dump(mode="json")


@FUZZ
@given(st.lists(hostile_records(METRIC_BASE), min_size=1, max_size=20), st.integers(1, 8))
def test_fuzz_metrics_consumer(hostile, n_good):
    prefix = _good_prefix()
    good = [_metric(f"{prefix}{i % 2}", i) for i in range(n_good)]
    got = consume("metrics", MetricBatch, hostile, good, "t.metrics.v1")
    engine = _engine("metrics")
    before = engine.stats.future_dead_lettered
    timed(tally("metrics.handler"), engine.process, _stamp_good(got.valid))
    tally("metrics").dead_lettered += engine.stats.future_dead_lettered - before
    _check_hosts("metrics", engine, [g for g in good], "max_time")


@FUZZ
@given(st.lists(hostile_records(LOG_BASE), min_size=1, max_size=20), st.integers(1, 8))
def test_fuzz_logs_consumer(hostile, n_good):
    prefix = _good_prefix()
    good = [LogEvent(host=f"{prefix}{i % 2}", time=T0 + timedelta(seconds=10 * i), source="kern", kind="xid",
                     severity="critical", line="NVRM: Xid (PCI:0000:3b:00): 79, pid=1", fields={"xid": 79})
            for i in range(n_good)]
    got = consume("logs", LogEvent, hostile, good, "t.logs.v1")
    engine = _engine("logs")
    before = engine.stats.future_dead_lettered
    timed(tally("logs.handler"), engine.process, _stamp_good(got.valid))
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
    return Incident(id=f"inc-{i}", fingerprint=f"gpu-node-{i}/service_down/service.slurmd.up", host=f"gpu-node-{i}",
                    kind="service_down", subject="service.slurmd.up", status="open", severity="critical",
                    detector="static:svc", time=T0, opened_at=T0, labels={"health_url": ""})


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
@given(st.lists(hostile_records(INCIDENT_BASE), min_size=1, max_size=20), st.integers(1, 4))
def test_fuzz_incidents_consumer(hostile, n_good):
    good = [_incident(i) for i in range(n_good)]
    baseline = [_decide(g) for g in good]
    got = consume("incidents", Incident, hostile, good, "t.incidents.v1")
    t = tally("incidents.handler")
    decided = {}
    for item in got.valid:
        _, out = timed(t, _decide, item.record)
        decided.setdefault(item.record.id, out)
    for g, want in zip(good, baseline):
        if decided.get(g.id) != want:
            lost(tally("incidents"), 1, f"{g.id}: {decided.get(g.id)} != {want}")


def _remediation(i: int, status: str = "awaiting_approval") -> Remediation:
    return Remediation(id=f"rem-{i:020x}", incident_id=f"inc-{i}", fingerprint="f", host=f"gpu-node-{i}",
                       action="restart_service", playbook="restart_service.yml", status=status, time=T0)


REMEDIATION_BASE = _remediation(0).model_dump(mode="json")
# Good approvals are signed as `fleetmedic approve` signs them; hostile ones derive from an unsigned base.
APPROVER_PRIVATE = Ed25519PrivateKey.generate()
APPROVER_PUBLIC = public_key_text(APPROVER_PRIVATE.public_key())
APPROVAL_BASE = Approval(remediation_id=f"rem-{0:020x}", host="gpu-node-0", decision="approve", by="sre",
                         time=T0 + timedelta(seconds=5)).model_dump(mode="json")


@FUZZ
@given(st.lists(hostile_records(REMEDIATION_BASE), min_size=1, max_size=20), st.integers(1, 6))
def test_fuzz_remediations_consumer(hostile, n_good):
    from remediator.claims import Ledger

    good = [_remediation(1000 + i) for i in range(n_good)]
    got = consume("remediations", Remediation, hostile, good, "t.remediations.v1")
    ledger = Ledger()
    t = tally("remediations.handler")
    for item in got.valid:
        timed(t, ledger.apply, item.record)
    missing = [g.id for g in good if ledger.get(g.id) is None]
    lost(tally("remediations"), len(missing), f"not in the ledger: {missing}")


@FUZZ
@given(st.lists(hostile_records(APPROVAL_BASE), min_size=1, max_size=20), st.integers(1, 6))
def test_fuzz_approvals_consumer(hostile, n_good):
    from remediator import approvals
    from remediator.claims import Ledger

    ledger = Ledger()
    for i in range(n_good):
        ledger.apply(_remediation(2000 + i))
    desk = approvals.ApprovalDesk({"sre": APPROVER_PUBLIC}, expire_s=3600.0)
    good = []
    for i in range(n_good):
        request = _remediation(2000 + i)
        good.append(approvals.sign(Approval(
            remediation_id=request.id, incident_id=request.incident_id, action=request.action, step=request.step,
            host=request.host, decision="approve", by="sre", time=T0 + timedelta(seconds=5),
            expires_at=T0 + timedelta(seconds=600), nonce=f"{i:032x}"), APPROVER_PRIVATE))
    got = consume("approvals", Approval, hostile, good, "t.approvals.v1")
    t = tally("approvals.handler")
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
        st.tuples(st.integers(0, 10 ** 6), st.integers(0, 7)).map(flip),
        TEXT,
    )


@FUZZ
@given(st.lists(st.one_of(hostile_records(_good_state("h").model_dump(mode="json")),
                          _payloads().map(lambda p: _dumps({**_state_base().model_dump(mode="json"),
                                                             "host": "hostile", "state_b64": p}))),
                min_size=1, max_size=12))
def test_fuzz_state_consumer(hostile):
    good = _state_base()
    got = consume("state", DetectorState, hostile, [good], "t.state.v1")
    engine = _engine("state")
    engine.forget("good-0")
    before = engine.stats.unreadable_states
    t = tally("state.handler")
    for item in got.valid:
        timed(t, engine.restore, item.record)
    tally("state").dead_lettered += engine.stats.unreadable_states - before
    if engine.hosts.get("good-0") is None or engine.hosts["good-0"].max_time != (T0 + timedelta(seconds=40)).timestamp():
        lost(tally("state"), 1, "the good snapshot did not restore")


# -- parsers ----------------------------------------------------------------------------------------
@FUZZ
@given(st.lists(LOG_LINES, min_size=1, max_size=10))
def test_fuzz_log_line_parser(lines):
    from ingest.cli import log_events
    from ingest.logparse import parse_line

    t = tally("parser: log lines")
    for line in lines:
        timed(t, parse_line, line)
    xid = "NVRM: Xid (PCI:0000:3b:00): 79, pid=1911, GPU has fallen off the bus."
    batch = [("/var/log/kern.log", xid)] + [("/var/log/kern.log", line) for line in lines] + [("/var/log/kern.log", xid)]
    _, events = timed(tally("parser: log events"), log_events, batch, "n1")
    if [e.kind for e in (events[0], events[-1])] != ["xid", "xid"] or len(events) != len(batch):
        lost(t, 1, "an XID line next to hostile ones")


PROM_FRAGMENTS = st.sampled_from(["# TYPE x counter\n", "# HELP x h\n", "x", "_total", "{", "}", 'a="', '\\"', '"',
                                  ",", " ", "1", "NaN", "+Inf", "-Inf", "1e400", "\n", "\t", "=", "# TYPE", "é", "\x00",
                                  "9" * 30, "x{a=\"b\"} 1 1700000000000\n"])


@FUZZ
@given(st.one_of(st.lists(PROM_FRAGMENTS, max_size=60).map("".join),
                 st.tuples(st.lists(PROM_FRAGMENTS, min_size=1, max_size=8), st.integers(1, 3000)).map(
                     lambda a: "".join(a[0]) * a[1]),
                 TEXT, st.binary(max_size=300).map(lambda b: b.decode("utf-8", "replace"))))
def test_fuzz_prometheus_text_parser(text):
    from ingest.promtext import PromParseError, parse

    timed(tally("parser: prometheus text"), lambda s: list(parse(s)), text, expected=(PromParseError,))


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
        TEXT, st.sampled_from(["a: &a [*a]", "[" * 5000, "!!python/object:os.system {}", "a: !!binary ZZZ", "\t- x",
                               "x: " + "y" * 100_000, "a: 1\na: 2", "- 1\n- 2", "~", ": :"]),
        st.binary(max_size=200).map(lambda b: b.decode("utf-8", "replace")))


def _load_file(loader, text: str):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "f.yaml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        return loader(path)


@FUZZ
@given(_yaml_docs((REPO / "deploy" / "policy.example.yaml").read_text()))
def test_fuzz_policy_yaml(text):
    from remediator.policy import load_policy

    timed(tally("parser: policy YAML"), _load_file, load_policy, text, expected=(ConfigFileError, ValueError))


@FUZZ
@given(_yaml_docs((REPO / "detectors" / "default.yaml").read_text()))
def test_fuzz_detector_yaml(text):
    timed(tally("parser: detector YAML"), _load_file, load_config, text, expected=(ConfigFileError, ValueError))


CSV_ROWS = st.one_of(
    st.tuples(st.integers(0, 10 ** 6), st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.just(None))).map(
        lambda a: f"{np.datetime64('2014-04-01T00:00:00', 's') + np.timedelta64(a[0], 's')},{'' if a[1] is None else a[1]}"),
    TEXT.map(lambda s: s.replace("\x00", "")),
    st.sampled_from(["9999-12-31 23:59:59,1", "0001-01-01 00:00:00,1", ",", "a,b,c", "2014-04-01 00:00:00,1e400",
                     '"2014-04-01 00:00:00","1"', "2014-04-01 00:00:00,nan"]))


@FUZZ
@given(st.lists(CSV_ROWS, max_size=40), st.booleans())
def test_fuzz_csv_input(rows, header):
    from detectors import nab

    text = ("timestamp,value\n" if header else "") + "\n".join(rows) + "\n"

    def read(path):
        series = nab.read_series(path)
        assert series.late_rows == int(nab.late_rows(series.times).sum())
        return series

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "x.csv"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        timed(tally("parser: detect csv"), read, path, expected=(ValueError, UnicodeDecodeError))


# -- cardinality ------------------------------------------------------------------------------------
def test_fuzz_a_million_distinct_series_names_stay_within_the_caps():
    """10^6 distinct series names (10^5 in `make test`) over 100 hosts: state bounded by the caps."""
    from fuzz_kit import FULL

    names_per_host = 10_000 if FULL else 1_000
    cfg = DetectorConfig(ewma=[{"name": "e", "match": ["*"]}], max_series_per_host=names_per_host // 2)
    engine = Engine(cfg)
    t = tally("metrics: 10^6 series" if FULL else "metrics: 10^5 series")
    offset = 0
    for h in range(100):
        chunk = min(2000, names_per_host)
        for first in range(0, names_per_host, chunk):
            rec = MetricBatch(host=f"card-{h}", time=T0, source="sim",
                              values={f"s{h}.{k}\x01$</script>": 1.0 for k in range(first, first + chunk)})
            timed(t, engine.process, [Received(rec, "t.metrics.v1", 0, offset, BROKER_MS, None)])
            t.inputs += chunk - 1  # one record carries `chunk` new names: each is one hostile input here
            offset += 1
    assert len(engine.slot_name) == 100 * (names_per_host // 2)
    assert engine.stats.series_over_cap == 100 * (names_per_host // 2)
