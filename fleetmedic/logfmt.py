"""Service logs as text or as one JSON object per line (`--log-format json`).

A JSON line carries ``time`` (UTC ISO 8601), ``level``, ``logger``, ``message`` and every field
passed through ``extra=``. Lines about an incident use `incident_fields(record)` so they always
carry ``incident_id`` and ``host`` (and ``remediation_id`` for a remediation):

>>> import io, json, logging
>>> stream = io.StringIO(); handler = logging.StreamHandler(stream); handler.setFormatter(JsonFormatter())
>>> log = logging.getLogger("doctest.logfmt"); log.addHandler(handler); log.propagate = False
>>> log.warning("incident %s opened", "inc-1", extra={"incident_id": "inc-1", "host": "gpu-7"})
>>> line = json.loads(stream.getvalue()); (line["message"], line["incident_id"], line["host"], line["level"])
('incident inc-1 opened', 'inc-1', 'gpu-7', 'warning')
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .schemas import Incident, Remediation

# Attributes every LogRecord has: anything else on a record came through `extra=`.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "taskName"}
FORMATS = ("text", "json")


class JsonFormatter(logging.Formatter):
    """One JSON object per record; non-JSON values of extra fields are written as strings."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def incident_fields(record: Incident | Remediation) -> dict:
    """`extra=` fields of a line about an incident or remediation record."""
    fields = {"incident_id": getattr(record, "incident_id", None) or record.id, "host": record.host}
    if hasattr(record, "incident_id"):  # a Remediation: its own id too
        fields["remediation_id"] = record.id
    return fields


def configure(fmt: str = "text", verbose: bool = False) -> None:
    """Root logging for a command: text at WARNING (DEBUG with -v), or JSON lines at INFO (DEBUG
    with -v) on stderr: a JSON log is read by a machine, which wants the incident events too."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
        level = logging.DEBUG if verbose else logging.INFO
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        level = logging.DEBUG if verbose else logging.WARNING
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    if not verbose:
        logging.getLogger("kafka").setLevel(logging.CRITICAL)


def add_argument(parser: argparse.ArgumentParser, top: bool = False) -> None:
    """`--log-format text|json`; on a sub-command it overrides the top-level one only when given."""
    parser.add_argument(
        "--log-format",
        choices=FORMATS,
        default="text" if top else argparse.SUPPRESS,
        help="log lines as text (default) or one JSON object per line, at info level",
    )
