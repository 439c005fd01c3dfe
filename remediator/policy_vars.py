"""A step's playbook variables: typed, and taken only from an allow-list of incident fields,
constants written in the policy, or a URL on the incident host's own address.

Also the field types and the strict base model every policy section shares.

Example::

    >>> from remediator.policy_vars import VarSpec
    >>> VarSpec.model_validate({"value": "8", "type": "int"}).convert("8")
    8
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from fleetmedic.schemas import Incident

if TYPE_CHECKING:
    from .runner import ExtraVar

# Incident fields a policy may copy into a playbook variable.
ALLOWED_SOURCES = (
    "id",
    "fingerprint",
    "host",
    "kind",
    "subject",
    "severity",
    "detector",
    "action_class",
    "score",
    "summary",
)
_SOURCE = re.compile(
    r"^(id|fingerprint|host|kind|subject|severity|detector|action_class|score|summary"
    r"|labels\.[A-Za-z0-9_.-]{1,128}|details\.[A-Za-z0-9_.-]{1,128})$"
)
_IDENT = r"^[a-z][a-z0-9_]{0,63}$"

Ident = Annotated[str, StringConstraints(pattern=_IDENT)]
VarName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]


class PolicyError(ValueError):
    """A variable could not be rendered from an incident (missing field, wrong type)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HostUrl(_Strict):
    """A URL on the incident host's own address (remediator/hostaddr.py), never one from the incident."""

    scheme: Literal["http", "https"] = "http"
    port: int = Field(ge=1, le=65535)
    path: str = Field("/", pattern=r"^/[A-Za-z0-9._~/%-]{0,200}$")


# `extract` runs on an incident field (labels and details are unbounded strings): longer ones are refused.
EXTRACT_MAX_CHARS = 4096


def _regex(field: str, pattern: str) -> re.Pattern:
    """`pattern` compiled, or a ValueError naming the field (re.error is no ValueError: pydantic would
    let it escape the policy loader as a crash; found by make fuzz)."""
    try:
        return re.compile(pattern)
    except (re.error, RecursionError, OverflowError) as exc:
        raise ValueError(f"`{field}: {pattern[:200]}` is not a valid regular expression: {exc}") from None


class VarSpec(_Strict):
    """One playbook variable: `from` an allowed incident field, a constant `value`, or a `host_url`; typed."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    source: str | None = Field(None, alias="from", description="allowed incident field, labels.X or details.X")
    value: str | int | float | bool | None = None
    type: Literal["str", "int", "float", "bool"] = "str"
    default: str | int | float | bool | None = None
    extract: str | None = Field(
        None,
        description="regex with one group: the value is what the group captured "
        "(e.g. `^service\\.(.+)\\.up$` on a subject)",
    )
    pattern: str | None = Field(None, description="a str value must fully match this regex")
    max_length: int = Field(256, ge=1, le=4096)
    host_url: HostUrl | None = Field(None, description="a URL on the incident host's own address")

    @model_validator(mode="after")
    def _one_source(self) -> VarSpec:
        if sum(x is not None for x in (self.source, self.value, self.host_url)) != 1:
            raise ValueError("give exactly one of `from` (an incident field), `value` (a constant) or `host_url`")
        if self.host_url is not None:
            return self
        if self.source is not None and not _SOURCE.match(self.source):
            raise ValueError(
                f"`from: {self.source}` is not an allowed incident field; allowed: "
                f"{', '.join(ALLOWED_SOURCES)}, labels.<name>, details.<name>"
            )
        if self.pattern is not None:
            _regex("pattern", self.pattern)
        if self.extract is not None:
            if self.source is None:
                raise ValueError("`extract` applies to a value taken `from` an incident field")
            if _regex("extract", self.extract).groups != 1:
                raise ValueError(f"`extract: {self.extract}` must have exactly one group")
        if self.value is not None:
            self.convert(self.value)
        return self

    def convert(self, raw: Any) -> ExtraVar:
        if self.type == "str":
            if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
                raise PolicyError(f"{raw!r} is not a string")
            out = str(raw)
            if len(out) > self.max_length:
                raise PolicyError(f"{len(out)} characters exceeds max_length {self.max_length}")
            if self.pattern is not None and not re.fullmatch(self.pattern, out):
                raise PolicyError(f"{out!r} does not match {self.pattern!r}")
            return out
        if self.type == "bool":
            if isinstance(raw, bool):
                return raw
            if isinstance(raw, str) and raw.lower() in ("true", "false"):
                return raw.lower() == "true"
            raise PolicyError(f"{raw!r} is not a bool")
        try:
            if isinstance(raw, bool):
                raise ValueError
            number = int(raw) if self.type == "int" else float(raw)
        except (TypeError, ValueError):
            raise PolicyError(f"{raw!r} is not {'an int' if self.type == 'int' else 'a float'}") from None
        if self.type == "int" and isinstance(raw, float) and raw != number:
            raise PolicyError(f"{raw!r} is not an int")
        if isinstance(number, float) and not math.isfinite(number):
            raise PolicyError(f"{raw!r} is not finite")
        return number

    def render(
        self, incident: Incident, address_of: Callable[[str], str | None] | None = None, url_allow: tuple[str, ...] = ()
    ) -> ExtraVar:
        if self.value is not None:
            return self.convert(self.value)
        if self.host_url is not None:
            from .hostaddr import checked

            address = address_of(incident.host) if address_of else None
            if not address:
                raise PolicyError(f"no address for host {incident.host} (policy inventory or address source)")
            try:
                url = f"{self.host_url.scheme}://{checked(address)}:{self.host_url.port}{self.host_url.path}"
            except ValueError as exc:
                raise PolicyError(f"host {incident.host}: {exc}") from None
            if url_allow and not any(fnmatch.fnmatchcase(url, glob) for glob in url_allow):
                raise PolicyError(f"{url} is not in the policy's url_allow")
            return url
        assert self.source is not None  # _one_source: exactly one of `from`, `value`, `host_url`
        raw = _lookup(incident, self.source)
        if raw is None:
            if self.default is None:
                raise PolicyError(f"incident has no {self.source}")
            raw = self.default
        elif self.extract is not None:
            if len(str(raw)) > EXTRACT_MAX_CHARS:  # the pattern is the author's, the field is not: bound its input
                raise PolicyError(
                    f"{self.source}: {len(str(raw))} characters is more than extract reads ({EXTRACT_MAX_CHARS})"
                )
            found = re.search(self.extract, str(raw))
            if found is None or found.group(1) is None:
                raise PolicyError(f"{self.source} {raw!r} does not match extract {self.extract!r}")
            raw = found.group(1)
        return self.convert(raw)


def _lookup(incident: Incident, source: str):
    if source.startswith("labels."):
        return incident.labels.get(source[len("labels.") :])
    if source.startswith("details."):
        return incident.evidence.details.get(source[len("details.") :])
    return getattr(incident, source)
