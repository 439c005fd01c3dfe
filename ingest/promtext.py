"""The Prometheus text exposition format (0.0.4) as the bridge reads it, and its series naming.

`parse(text)` (prometheus_client's parser underneath) yields `Sample`s with the family's TYPE,
so counters can be marked. A series is named ``metric{label="value",...}`` with labels sorted,
so the same series always has the same name. dcgm-exporter writes huge sentinel values for
fields a GPU does not support; `is_sentinel` spots them so the bridge can drop them.

>>> text = '# TYPE node_load1 gauge\\nnode_load1 0.5\\n# TYPE c counter\\nc_total{a="x\\\\"y"} 3 1700000000000\\n'
>>> [(s.series, s.value, s.type) for s in parse(text)]
[('node_load1', 0.5, 'gauge'), ('c_total{a="x\\\\"y"}', 3.0, 'counter')]
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

_BARE_COUNTER = re.compile(r"^[ \t]*#[ \t]+TYPE[ \t]+([a-zA-Z_:][a-zA-Z0-9_:]*(?<!_total))[ \t]+counter[ \t]*$", re.M)


# Timestamps are milliseconds since 1970; beyond year 9999 (or NaN, infinite) no datetime can hold them.
_MAX_TIMESTAMP_S = 253402300799.0


class PromParseError(ValueError):
    def __init__(self, line_no: int, message: str) -> None:
        super().__init__(f"line {line_no}: {message}")
        self.line_no = line_no


@dataclass(frozen=True)
class Sample:
    name: str
    labels: tuple[tuple[str, str], ...]
    value: float
    type: str  # counter, gauge, histogram, summary, untyped
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


def _family_type(name: str, family_type: str, types: dict[str, str]) -> str:
    """The TYPE of a sample's family. prometheus_client files `c_total` under a family `c_total`
    of type unknown when the exposition declared `# TYPE c counter`: look the base name up."""
    if family_type not in ("unknown", "untyped"):
        return family_type
    for suffix in ("_total", "_bucket", "_count", "_sum", "_created", "_info"):
        if name.endswith(suffix) and name[: -len(suffix)] in types:
            return types[name[: -len(suffix)]]
    return "untyped"


def _bad_line(text: str) -> tuple[int, str]:
    """The first line prometheus_client rejects, parsed alone (only on the error path)."""
    for line_no, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            list(text_string_to_metric_families(line + "\n"))
        except (ValueError, ArithmeticError) as exc:
            return line_no, str(exc)
    return 0, ""


def parse(text: str) -> list[Sample]:
    """Every sample of an exposition; raises PromParseError naming the line for malformed input.

    The parsing is prometheus_client's (`prometheus_client.parser`); this keeps the bridge's
    `Sample` view: labels sorted, timestamps in milliseconds, the family's TYPE per sample."""
    types: dict[str, str] = {}
    out: list[Sample] = []
    # prometheus_client appends `_total` to the samples of a counter declared without it
    # (`# TYPE x counter` / `x 3` becomes x_total): keep the exposition's own name.
    bare_counters = set(_BARE_COUNTER.findall(text))
    try:
        for family in text_string_to_metric_families(text):
            types[family.name] = family.type
            kind = _family_type(family.name, family.type, types)
            unmunge = kind == "counter" and family.name in bare_counters
            for s in family.samples:
                if s.timestamp is not None and not abs(float(s.timestamp)) <= _MAX_TIMESTAMP_S:  # NaN too
                    raise ValueError(
                        f"sample {s.name}: timestamp {s.timestamp} is not a time (finite, and no "
                        f"further from 1970 than the year 9999)"
                    )
                ts = None if s.timestamp is None else int(round(float(s.timestamp) * 1000))
                name = s.name[:-6] if unmunge and s.name == family.name + "_total" else s.name
                out.append(Sample(name, tuple(sorted(s.labels.items())), float(s.value), kind, ts))
    except (ValueError, TypeError, IndexError, ArithmeticError) as exc:  # an overflowing timestamp: ArithmeticError
        line_no, why = _bad_line(text)
        raise PromParseError(line_no, why or str(exc) or "malformed exposition") from None
    return out


# dcgm "blank" values for fields that are not supported or not found (dcgm_structs.h):
# int32 0x7ffffff0.., int64 0x7ffffffffffffff0.. (≈ 9.22e18 as a float), fp64 140737488355328.0 (2^47) and up.
def is_sentinel(name: str, value: float) -> bool:
    if not name.startswith("DCGM_"):
        return False
    return (2147483632 <= value <= 2147483647) or value >= 9.2e18 or (140737488355328.0 <= value <= 140737488355344.0)
