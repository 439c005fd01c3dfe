"""Hostile inputs, and the tally of what each consumer and parser did with them (issue 13).

Every fuzz target feeds hostile inputs through a real decode and handler path (or a parser),
with valid records next to them, and counts: inputs, accepted, rejected (with a reason),
dead-lettered, crashes (an exception the path does not document), stalls (one input over
`BUDGET_S`) and valid records lost (a valid neighbour whose outcome differs from its outcome
without the hostile records around it). `tests/fuzz_run.py` (`make fuzz`) prints the tallies.

Hostile means: random bytes, invalid UTF-8, deep and huge JSON, NaN and infinity, wrong types,
control characters and lone surrogates, extreme timestamps, many distinct names, and inputs
built from the fragments the log patterns look for (adversarial for backtracking).
"""

from __future__ import annotations

import copy
import json
import os
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st

# One input taking longer than this is a stall. The old cubic log pattern took seconds at 8 KB
# and hours at 64 KB; a linear path takes milliseconds. Generous, because the machine is shared.
# On a shared machine the budget grows with the load per core (at a load of 20 on 2 cores, 20 s):
# a stall is an input that is slow for the code, not for the scheduler.
BUDGET_S = float(os.environ.get("FLEETMEDIC_FUZZ_BUDGET_S", "2.0")) * max(
    1.0, os.getloadavg()[0] / (os.cpu_count() or 1)
)
# The same budget in CPU seconds of the calling thread, not scaled: the scheduler cannot inflate it.
# Wall time catches what CPU time cannot (an input that blocks); it is noisy on a shared machine
# (a 1.3 CPU-s document took 8 s of wall at load 7), so it gets 4x the budget, scaled by the load now.
CPU_BUDGET_S = float(os.environ.get("FLEETMEDIC_FUZZ_BUDGET_S", "2.0"))
FULL = os.environ.get("FLEETMEDIC_FUZZ") == "full"
# examples per target: a few dozen in `make test`, enough for >= 10,000 inputs each in `make fuzz`
EXAMPLES = int(os.environ.get("FLEETMEDIC_FUZZ_EXAMPLES", "1200" if FULL else "15"))
# Hostile inputs each example feeds (Havoc expands the few hypothesis draws): drawing one input with
# hypothesis costs milliseconds, a havoc mutation of it microseconds, so volume comes from here.
PER_EXAMPLE = int(os.environ.get("FLEETMEDIC_FUZZ_PER_EXAMPLE", "250" if FULL else "20"))

# No shrinking: a failure is reported with the input that caused it (shrinking a 64 KB input can
# take longer than the whole run's budget).
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize=not FULL,
    suppress_health_check=list(HealthCheck),
    print_blob=True,
    phases=[Phase.explicit, Phase.generate],
)

T0 = datetime(2026, 11, 30, tzinfo=UTC)
BROKER_MS = int(T0.timestamp() * 1000)


@dataclass
class Tally:
    name: str
    unit: str = "inputs"  # what `inputs` counts (records, lines, documents, batches timed, ...)
    counted: bool = True  # part of the N of the summary line (False: the same inputs timed again)
    inputs: int = 0
    accepted: int = 0
    rejected: int = 0
    dead_lettered: int = 0
    crashes: int = 0
    stalls: int = 0
    lost: int = 0
    worst_s: float = 0.0  # CPU seconds of the slowest input
    worst_input: str = ""  # the start of the slowest input's repr
    failures: list[str] = field(default_factory=list)


TALLIES: dict[str, Tally] = {}


def tally(name: str, unit: str | None = None, counted: bool | None = None) -> Tally:
    """The tally called `name`; `unit` and `counted` set where it is first described."""
    t = TALLIES.setdefault(name, Tally(name))
    if unit is not None:
        t.unit = unit
    if counted is not None:
        t.counted = counted
    return t


class FuzzFailure(AssertionError):
    """A crash, stall or lost record: hypothesis shrinks it and reports the input."""


def wall_budget_s() -> float:
    return 4 * CPU_BUDGET_S * max(1.0, os.getloadavg()[0] / (os.cpu_count() or 1))


def timed(t: Tally, fn, *args, expected: tuple[type[BaseException], ...] = ()):
    """Run one input through `fn`: (True, result) accepted, (False, exc) rejected with a documented
    error; any other exception is a crash, and over the budget a stall (both raise)."""
    t.inputs += 1
    start, cpu = time.perf_counter(), time.thread_time()
    try:
        out = fn(*args)
        ok = True
    except expected as exc:
        out, ok = exc, False
    except Exception as exc:
        failure = f"crash: {type(exc).__name__}: {str(exc)[:200]} on {str(args)[:300]!r}"
        if failure not in t.failures:  # hypothesis runs a failing example again to report it: count it once
            t.crashes += 1
            t.failures.append(failure)
        raise FuzzFailure(f"{t.name}: crash: {type(exc).__name__}: {exc}") from exc
    took, cpu = time.perf_counter() - start, time.thread_time() - cpu
    if cpu > t.worst_s:
        t.worst_s, t.worst_input = cpu, f"{len(str(args))} chars: {str(args)[:160]!r}"
    if cpu > CPU_BUDGET_S or (took > CPU_BUDGET_S and took > wall_budget_s()):
        failure = f"stall: on {str(args)[:300]!r}"
        if failure not in t.failures:
            t.stalls += 1
            t.failures.append(failure)
        raise FuzzFailure(f"{t.name}: stall: {cpu:.2f} CPU s, {took:.2f} s wall")
    if ok:
        t.accepted += 1
    else:
        t.rejected += 1
    return ok, out


def lost(t: Tally, count: int, what: str) -> None:
    if count:
        if f"lost: {what}" not in t.failures:
            t.lost += count
            t.failures.append(f"lost: {what}")
        raise FuzzFailure(f"{t.name}: {count} valid records lost: {what}")


# -- strategies ---------------------------------------------------------------------------------
# Characters that break things: controls, NUL, lone surrogates, bidi overrides, quotes, `$`, markup.
NASTY_CHARS = st.sampled_from(
    [
        "\x00",
        "\x07",
        "\n",
        "\r",
        "\t",
        "\x1b[31m",
        "\u202e",
        "\ud800",
        "\udfff",
        "\ufeff",
        '"',
        "'",
        "\\",
        "$",
        "</script>",
        "{",
        "}",
        "\u00e9",
        "\U0001f525",
        "%s",
        "\x7f",
    ]
)
TEXT = st.one_of(
    st.text(max_size=40), st.lists(NASTY_CHARS, max_size=8).map("".join), st.integers(0, 70000).map(lambda n: "x" * n)
)
EXTREME_TIMES = st.sampled_from(
    [
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59Z",
        "9999-12-31T23:59:59-14:00",
        "0001-01-01T00:00:00+14:00",
        "1970-01-01T00:00:00Z",
        "2026-11-30T00:00:00",
        "2026-13-45T25:61:61Z",
        "not a time",
        "",
        "2100-01-01T00:00:00Z",
        "2026-12-01T00:00:00Z",
        "-1",
        "1e308",
        "2026-11-30T00:00:00.123456789123Z",
    ]
)
NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(2**80), 2**80),
    st.sampled_from([10**400, -(10**400), 1e308, -0.0, 2**63, -(2**63) - 1]),
)
JSON_LEAF = st.one_of(st.none(), st.booleans(), NUMBERS, TEXT, EXTREME_TIMES)
JSON_ANY = st.recursive(
    JSON_LEAF, lambda c: st.one_of(st.lists(c, max_size=6), st.dictionaries(TEXT, c, max_size=6)), max_leaves=30
)


def _dumps(obj) -> bytes:
    """JSON as a careless producer writes it: NaN/Infinity allowed, non-ASCII and surrogates raw."""
    text = json.dumps(obj, allow_nan=True, ensure_ascii=False, default=str)
    return text.encode("utf-8", "surrogatepass")


def _deep(depth: int, kind: str) -> bytes:
    return (b"[" * depth + b"]" * depth) if kind == "list" else (b'{"a":' * depth + b"1" + b"}" * depth)


RAW_BYTES = st.one_of(
    st.binary(max_size=300),
    st.binary(max_size=64).map(lambda b: b"\xff\xfe" + b + b"\xc3\x28"),  # invalid UTF-8
    st.tuples(st.integers(1, 200_000), st.sampled_from(["list", "dict"])).map(lambda a: _deep(*a)),
    st.integers(1_000_001, 1_200_000).map(lambda n: b'{"host":"' + b"a" * n + b'"}'),  # oversized
    JSON_ANY.map(_dumps),
    st.sampled_from([b"", b"null", b"[]", b"{}", b"NaN", b"Infinity", b'{"a":NaN}', b'"\\ud800"', b"\x00" * 64]),
)


def mutated(base: dict) -> st.SearchStrategy[bytes]:
    """A valid record's JSON with fields removed, retyped, made extreme, or extra ones added."""
    keys = sorted(base)

    def build(draw_ops):
        rec = dict(base)
        for op, key, value in draw_ops:
            key = key if op != "add" else f"extra_{key}"
            if op == "drop":
                rec.pop(key, None)
            else:
                rec[key] = value
        return _dumps(rec)

    op = st.tuples(st.sampled_from(["drop", "set", "add"]), st.sampled_from(keys), st.one_of(JSON_ANY, EXTREME_TIMES))
    return st.lists(op, min_size=1, max_size=4).map(build)


def hostile_records(base: dict) -> st.SearchStrategy[bytes]:
    return st.one_of(RAW_BYTES, mutated(base), mutated(base), mutated(base))


# Fragments the log patterns look for: repeated, they are the worst case for a backtracking pattern.
LOG_FRAGMENTS = [
    "NVRM: ",
    "Xid (",
    "PCI:0000:3b:00",
    "): ",
    "79, ",
    "(",
    ")",
    "()",
    "Remounting filesystem read-only",
    "EXT4-fs",
    "XFS (",
    "INFO: task ",
    "a",
    " ",
    ":12",
    " blocked for more than ",
    "120 seconds.",
    "Row Remapper: ",
    "fail",
    "Dynamic Page Retirement: ",
    ".service: Main process exited, code=",
    "abc.def",
    "Killed process 12 (",
    "nvidia-nvswitch0: SXid (PCI:",
    "mce: [Hardware Error]: ",
    "AER: ",
    "kernel: ",
    "[ 12.5] ",
    "2026-11-30T00:00:00Z host prog[1]: ",
    "exited: ",
    "gave up: ",
    "\t",
    "\x00",
    "\ufffd",
    "fallen off the bus",
    "Shutting down filesystem",
    "I/O error, dev ",
]


def adversarial_line(parts: list[str], repeat: int) -> str:
    return ("".join(parts) * repeat)[:70_000]


LOG_LINES = st.one_of(
    st.builds(adversarial_line, st.lists(st.sampled_from(LOG_FRAGMENTS), min_size=1, max_size=5), st.integers(1, 4000)),
    TEXT,
    st.binary(max_size=200).map(lambda b: b.decode("utf-8", "replace")),
    st.builds(lambda ts, rest: f"{ts} host kernel: {rest}", EXTREME_TIMES, TEXT),
)


def t0_plus(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


# -- havoc: many hostile inputs from a few drawn ones ------------------------------------------------
NASTY_BYTES = [
    b"\xff",
    b"\x00",
    b"\xc3\x28",
    b"\xed\xa0\x80",
    b"\xf4\x90\x80\x80",
    b"\xe2\x80\xae",
    b"\x1b[31m",
    b"NaN",
    b"-Infinity",
    b"1e400",
    b"-0",
    b"9" * 400,
    b"null",
    b"true",
    b'"',
    b"\\",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"\\ud800",
    b"\\u0000",
    b'"\\udfff"',
    b'{"a":',
    b"\r\n",
    b"\t",
]
NASTY_VALUES = [
    float("nan"),
    float("inf"),
    -float("inf"),
    10**400,
    -(2**63) - 1,
    2**64,
    1e308,
    -0.0,
    "",
    None,
    [],
    {},
    True,
    "\x00",
    "\ud800",
    "\u202e",
    "$",
    "x" * 70_000,
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59Z",
    "2100-01-01T00:00:00Z",
    "2026-11-30T00:00:00",
    "not a time",
    [[[[[]]]]],
]
MAX_HAVOC_BYTES = 1_300_000  # above the consumers' max_record_bytes, so the oversized path is hit too


class Havoc:
    """Stacked random mutations (AFL's "havoc") of inputs hypothesis drew: truncate, flip bits, insert
    nasty bytes or fragments, splice two inputs, repeat or delete a span, wrap in deep nesting, and for
    records drop, retype or add fields at any depth with drawn values.

    Hypothesis still chooses everything (the seed inputs, the values and `seed`), so a failing example
    is reported and replayed as usual; `Havoc(seed)` makes `n` inputs from them in microseconds each.
    """

    def __init__(self, seed: int):
        self.rng = random.Random(seed)

    # bytes and text share the span operations
    def _havoc(self, data, pool: list, inserts: list, cap: int):
        rng = self.rng
        for _ in range(rng.randint(1, 3)):
            op = rng.randrange(7)
            at = rng.randint(0, len(data))
            if op == 0:
                data = data[:at]
            elif op == 1 and data:
                at = min(at, len(data) - 1)
                if isinstance(data, bytes):
                    data = data[:at] + bytes([data[at] ^ (1 << rng.randrange(8))]) + data[at + 1 :]
                else:
                    data = (
                        data[:at]
                        + chr(rng.choice([0, 7, 0x1B, 0x7F, 0xFFFD, 0x202E, 0xD800, 0x10FFFF]))
                        + data[at + 1 :]
                    )
            elif op == 2:
                data = data[:at] + rng.choice(inserts) * rng.choice([1, 1, 2, 16]) + data[at:]
            elif op == 3:
                other = rng.choice(pool)
                data = data[:at] + other[rng.randint(0, len(other)) :]
            elif op == 4:  # repeat a span: the backtracking bait, and huge inputs
                end = min(len(data), at + rng.randint(1, 64))
                data = data[:at] + data[at:end] * rng.choice([2, 10, 100, 1000, 5000]) + data[end:]
            elif op == 5:
                data = data[:at] + data[min(len(data), at + rng.randint(1, 64)) :]
            else:
                depth = rng.choice([1, 2, 50, 1000, 100_000])
                lb, rb = ("[", "]") if rng.random() < 0.5 else ('{"a":', "}")
                if isinstance(data, bytes):
                    lb, rb = lb.encode(), rb.encode()
                data = lb * depth + data + rb * depth
            data = data[:cap]
        return data

    def bytes(self, pool: list[bytes], n: int) -> list[bytes]:
        return [self._havoc(self.rng.choice(pool), pool, NASTY_BYTES, MAX_HAVOC_BYTES) for _ in range(n)]

    def texts(self, pool: list[str], fragments: list[str], n: int, cap: int = 140_000) -> list[str]:
        return [self._havoc(self.rng.choice(pool), pool, fragments, cap) for _ in range(n)]

    def tree(self, base, values: list):
        """`base` (JSON-like) with 1-4 fields anywhere in it dropped, set to a drawn or nasty value, or added."""
        rng = self.rng
        doc = copy.deepcopy(base)
        for _ in range(rng.randint(1, 4)):
            node = doc
            while isinstance(node, (dict, list)) and node and rng.random() < 0.6:
                key = rng.choice(sorted(node, key=str)) if isinstance(node, dict) else rng.randrange(len(node))
                if not isinstance(node[key], (dict, list)):
                    break
                node = node[key]
            if not isinstance(node, (dict, list)):
                continue
            value = copy.deepcopy(rng.choice(values) if values and rng.random() < 0.7 else rng.choice(NASTY_VALUES))
            op = rng.randrange(3)
            if isinstance(node, list):
                if op == 0 and node:
                    node.pop(rng.randrange(len(node)))
                elif op == 1 and node:
                    node[rng.randrange(len(node))] = value
                else:
                    node.append(value)
            elif op == 0 and node:
                node.pop(rng.choice(sorted(node)))
            elif op == 1 and node:
                node[rng.choice(sorted(node))] = value
            else:
                node[f"extra_{rng.randrange(100)}"] = value
        return doc

    def records(self, base: dict, pool: list[bytes], values: list, n: int) -> list[bytes]:
        """`n` hostile records: half field mutations of `base` at any depth, half byte havoc of `pool`
        (the drawn records and `base` itself)."""
        pool = pool + [_dumps(base)]
        return [
            _dumps(self.tree(base, values))
            if self.rng.random() < 0.5
            else self._havoc(self.rng.choice(pool), pool, NASTY_BYTES, MAX_HAVOC_BYTES)
            for _ in range(n)
        ]


SEEDS = st.integers(0, 2**32 - 1)
VALUES = st.lists(st.one_of(JSON_ANY, EXTREME_TIMES, NUMBERS), min_size=1, max_size=8)
