"""A parser for the Prometheus text exposition format (0.0.4), and the bridge's series naming.

`parse(text)` yields `Sample`s with the family's TYPE, so counters can be marked. A series is
named ``metric{label="value",...}`` with labels sorted, so the same series always has the same
name. dcgm-exporter writes huge sentinel values for fields a GPU does not support; `is_sentinel`
spots them so the bridge can drop them.

>>> text = '# TYPE node_load1 gauge\\nnode_load1 0.5\\n# TYPE c counter\\nc_total{a="x\\\\"y"} 3 1700000000000\\n'
>>> [(s.series, s.value, s.type) for s in parse(text)]
[('node_load1', 0.5, 'gauge'), ('c_total{a="x\\\\"y"}', 3.0, 'counter')]
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


class PromParseError(ValueError):
    def __init__(self, line_no: int, message: str):
        super().__init__(f"line {line_no}: {message}")
        self.line_no = line_no


@dataclass(frozen=True)
class Sample:
    name: str
    labels: tuple[tuple[str, str], ...]
    value: float
    type: str                 # counter, gauge, histogram, summary, untyped
    timestamp_ms: int | None

    @property
    def series(self) -> str:
        if not self.labels:
            return self.name
        inner = ",".join(f'{k}="{escape(v)}"' for k, v in self.labels)
        return f"{self.name}{{{inner}}}"

    @property
    def is_counter(self) -> bool:
        if self.type == "counter":
            return True
        # histogram buckets, counts and sums only grow
        return self.type in ("histogram", "summary") and self.name.endswith(("_bucket", "_count", "_sum"))


def escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _value(text: str) -> float:
    low = text.lower()
    if low in ("+inf", "inf"):
        return math.inf
    if low == "-inf":
        return -math.inf
    if low == "nan":
        return math.nan
    return float(text)


def _labels(text: str, pos: int, line_no: int) -> tuple[tuple[tuple[str, str], ...], int]:
    """Parse `{a="b",...}` starting at text[pos] == '{'; returns (labels, position after '}')."""
    out = []
    i = pos + 1
    while True:
        while i < len(text) and text[i] in " \t,":
            i += 1
        if i < len(text) and text[i] == "}":
            return tuple(sorted(out)), i + 1
        m = _LABEL_NAME.match(text, i)
        if not m:
            raise PromParseError(line_no, f"bad label name at column {i + 1}")
        name = m.group(0)
        i = m.end()
        while i < len(text) and text[i] in " \t":
            i += 1
        if text[i:i + 2] != '="':
            raise PromParseError(line_no, f'expected =" after label {name}')
        i += 2
        chars = []
        while True:
            if i >= len(text):
                raise PromParseError(line_no, f"unterminated value of label {name}")
            c = text[i]
            if c == "\\" and i + 1 < len(text):
                nxt = text[i + 1]
                chars.append({"n": "\n", "\\": "\\", '"': '"'}.get(nxt, "\\" + nxt))
                i += 2
                continue
            if c == '"':
                i += 1
                break
            chars.append(c)
            i += 1
        out.append((name, "".join(chars)))


def _family(name: str, types: dict[str, str]) -> str:
    if name in types:
        return types[name]
    for suffix in ("_total", "_bucket", "_count", "_sum", "_created", "_info"):
        if name.endswith(suffix) and name[: -len(suffix)] in types:
            return types[name[: -len(suffix)]]
    return "untyped"


def parse(text: str) -> list[Sample]:
    """Every sample of an exposition; raises PromParseError naming the line for malformed input."""
    types: dict[str, str] = {}
    out: list[Sample] = []
    for line_no, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 4 and parts[1] == "TYPE":
                types[parts[2]] = parts[3].strip().lower()
            continue
        m = _NAME.match(line)
        if not m:
            raise PromParseError(line_no, f"expected a metric name: {line[:80]!r}")
        name, pos = m.group(0), m.end()
        labels: tuple = ()
        if pos < len(line) and line[pos] == "{":
            labels, pos = _labels(line, pos, line_no)
        rest = line[pos:].split()
        if not rest or len(rest) > 2:
            raise PromParseError(line_no, f"expected a value (and optional timestamp) after {name}")
        try:
            value = _value(rest[0])
            ts = int(rest[1]) if len(rest) == 2 else None
        except ValueError:
            raise PromParseError(line_no, f"bad value or timestamp {' '.join(rest)!r} for {name}") from None
        out.append(Sample(name, labels, value, _family(name, types), ts))
    return out


# dcgm "blank" values for fields that are not supported or not found (dcgm_structs.h):
# int32 0x7ffffff0.., int64 0x7ffffffffffffff0.. (≈ 9.22e18 as a float), fp64 140737488355328.0 (2^47) and up.
def is_sentinel(name: str, value: float) -> bool:
    if not name.startswith("DCGM_"):
        return False
    return (2147483632 <= value <= 2147483647) or value >= 9.2e18 or (140737488355328.0 <= value <= 140737488355344.0)
