"""The wire contracts: one pydantic v2 model per record kind, each with a schema version.

Every record on every topic is UTF-8 JSON validated by one of these models. Floats are finite:
NaN and infinity are not JSON and are rejected; a metric value that could not be read is
`null`. Timestamps are event time, timezone-aware, UTC. `fleetmedic schemas export DIR` writes
the JSON Schemas (committed under `schemas/`) for producers in other languages.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime
from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

SCHEMA_VERSION: Literal[1] = 1


def _utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:  # 9999-12-31T23:59:59-14:00 is past datetime.max in UTC: a validation error, not a crash
        raise ValueError("time out of range in UTC") from None


# An aware datetime, normalised to UTC so equal instants serialise to equal bytes.
EventTime = Annotated[AwareDatetime, AfterValidator(_utc), Field(description="timezone-aware, UTC")]
# Host names travel into playbook variables: keep them to a safe alphabet.
Host = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,252}$")]
Name = Annotated[str, StringConstraints(min_length=1, max_length=512)]
Scalar = str | int | float | bool | None


class Contract(BaseModel):
    """Base of every record on the wire."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    topic: ClassVar[str]  # topic name without the configured prefix

    schema_version: Literal[1] = SCHEMA_VERSION

    def key(self) -> bytes:
        """The partitioning key: the host, so one host's records stay in order."""
        return self.host.encode()  # type: ignore[attr-defined]

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()


class MetricBatch(Contract):
    """One scrape of one host: many named values at one event time."""

    topic: ClassVar[str] = "metrics.v1"
    host: Host
    time: EventTime
    source: Name = Field(description="exporter that produced it: host, gpu, prom, sim, ...")
    labels: dict[Name, str] = Field(default_factory=dict, description="host-level labels, e.g. host class")
    values: dict[Name, float | None] = Field(description="series name → value; null when it could not be read")
    counters: list[Name] = Field(default_factory=list, description="names in `values` that are monotonic counters")


class LogEvent(Contract):
    """One log line with its parsed fields (`kind` = "raw" when no parser knew it)."""

    topic: ClassVar[str] = "logs.v1"
    host: Host
    time: EventTime
    source: Name = Field(description="file path, nvml, journal, sim, ...")
    line: Annotated[str, StringConstraints(max_length=65536)]
    kind: Name = "raw"
    severity: Literal["debug", "info", "warning", "error", "critical"] = "info"
    fields: dict[Name, Scalar] = Field(default_factory=dict)


class SourceRange(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    topic: Name
    partition: int = Field(ge=0)
    first_offset: int = Field(ge=0)
    last_offset: int = Field(ge=0)


class Evidence(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    series: list[Name] = Field(default_factory=list)
    values: list[float | None] = Field(default_factory=list)
    window_start: EventTime | None = None
    window_end: EventTime | None = None
    sources: list[SourceRange] = Field(default_factory=list)
    details: dict[Name, Scalar] = Field(default_factory=dict)


ActionClass = Literal["none", "restart_app", "reset_gpu", "drain_and_reset", "reboot", "rma", "contact_support"]


class Incident(Contract):
    """One lifecycle step of an incident; open, update and resolve are separate records."""

    topic: ClassVar[str] = "incidents.v1"
    id: Name = Field(description="derived from the fingerprint and the opening event time")
    fingerprint: Name = Field(description="host + kind + subject: one fault is one incident")
    host: Host
    kind: Name
    subject: Name
    status: Literal["open", "update", "resolve"]
    severity: Literal["info", "warning", "critical"]
    detector: Name
    time: EventTime
    opened_at: EventTime
    score: float | None = None
    threshold: float | None = None
    model_version: Name | None = None
    action_class: ActionClass | None = None
    summary: Annotated[str, StringConstraints(max_length=4096)] = ""
    labels: dict[Name, str] = Field(default_factory=dict)
    evidence: Evidence = Field(default_factory=Evidence)


MAX_OUTPUT_CHARS = 8192


class RunSummary(BaseModel):
    """What ansible-runner reported for one playbook run."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    ok: int = 0
    changed: int = 0
    failed: int = 0
    skipped: int = 0
    unreachable: int = 0
    failed_tasks: list[str] = Field(default_factory=list)
    outputs: dict[
        Annotated[str, StringConstraints(max_length=128)],
        Annotated[str, StringConstraints(max_length=MAX_OUTPUT_CHARS)],
    ] = Field(
        default_factory=dict,
        max_length=32,
        description="what the play published with set_stats (e.g. collect_diagnostics.yml's probes), as JSON text",
    )


RemediationStatus = Literal[
    "planned",
    "claimed",
    "skipped",
    "awaiting_approval",
    "running",
    "succeeded",
    "failed",
    "dry_run",
    "cancelled",
    "timed_out",
    "escalated",
    "unreachable",  # the target host could not be reached (SSH down, auth refused): Ansible's "unreachable"
]


class Remediation(Contract):
    """One decision or outcome of the remediator: the audit trail."""

    topic: ClassVar[str] = "remediations.v1"
    id: Name
    incident_id: Name
    fingerprint: Name
    host: Host
    action: Name
    playbook: Name | None = None
    status: RemediationStatus
    reason: Annotated[str, StringConstraints(max_length=4096)] | None = None
    gate: Name | None = None
    step: int = Field(0, ge=0, description="escalation step (0 = first action)")
    time: EventTime
    started_at: EventTime | None = None
    finished_at: EventTime | None = None
    rc: int | None = None
    extra_vars: dict[Name, Scalar] = Field(default_factory=dict)
    run: RunSummary | None = None


# handler: the stage's handler kept raising on a valid record (the error says why).
# event_time: decoded, but its event time is too far ahead of its broker timestamp (detectors/eventtime.py)
DeadLetterKind = Literal[
    "oversized", "not_json", "schema_version", "validation", "handler", "approval_refused", "event_time"
]
# Bytes of a source key kept in a dead letter (and used as its key): a huge key must not make
# the dead letter itself too big to send.
DEAD_LETTER_KEY_BYTES = 1024


class DeadLetter(Contract):
    """A record that could not be decoded or validated, kept with its reason and original bytes."""

    topic: ClassVar[str] = "deadletter.v1"
    source_topic: Name
    source_partition: int = Field(ge=0)
    source_offset: int = Field(ge=0)
    source_timestamp_ms: int | None = None
    source_key_b64: str | None = Field(
        None, description="the source key, base64; its first DEAD_LETTER_KEY_BYTES bytes when `source_key_truncated`"
    )
    source_key_truncated: bool = False
    consumer_group: Name
    kind: DeadLetterKind
    error: Annotated[str, StringConstraints(max_length=8192)]
    original_b64: str = Field(description="the original value, base64; cut to a bounded size when `truncated`")
    original_size: int = Field(ge=0)
    original_sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
    truncated: bool
    time: EventTime = Field(description="when it was dead-lettered (wall clock)")

    def key(self) -> bytes | None:  # type: ignore[override]
        return base64.b64decode(self.source_key_b64) if self.source_key_b64 is not None else None

    @classmethod
    def of(
        cls,
        *,
        topic: str,
        partition: int,
        offset: int,
        timestamp_ms: int | None,
        key: bytes | None,
        value: bytes,
        group: str,
        kind: DeadLetterKind,
        error: str,
        keep_bytes: int,
    ) -> DeadLetter:
        value = value or b""
        return cls(
            source_topic=topic,
            source_partition=partition,
            source_offset=offset,
            source_timestamp_ms=timestamp_ms,
            source_key_b64=base64.b64encode(key[:DEAD_LETTER_KEY_BYTES]).decode() if key is not None else None,
            source_key_truncated=key is not None and len(key) > DEAD_LETTER_KEY_BYTES,
            consumer_group=group,
            kind=kind,
            error=error[:8192],
            original_b64=base64.b64encode(value[:keep_bytes]).decode(),
            original_size=len(value),
            original_sha256=hashlib.sha256(value).hexdigest(),
            truncated=len(value) > keep_bytes,
            time=datetime.now(UTC),
        )


class Approval(Contract):
    """A human's answer to an action that needs approval (`fleetmedic approve ID`)."""

    topic: ClassVar[str] = "approvals.v1"
    remediation_id: Name = Field(description="the id of the awaiting_approval remediation record")
    host: Host
    decision: Literal["approve", "deny"]
    by: Name
    comment: Annotated[str, StringConstraints(max_length=4096)] = ""
    time: EventTime
    expires_at: EventTime | None = None
    # Signed approvals (remediator/approvals.py): the request's identity, a nonce, and an Ed25519
    # signature by the key the policy lists under `by`. Unsigned approvals are refused.
    incident_id: Name | None = None
    action: Name | None = None
    step: int | None = Field(None, ge=0)
    nonce: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")] | None = None
    signature: Annotated[str, StringConstraints(max_length=200)] | None = Field(
        None, description="Ed25519 over the canonical signed fields, base64"
    )


class DetectorState(Contract):
    """A snapshot of detector state for one key, on the compacted state topic (newest wins)."""

    topic: ClassVar[str] = "state.v1"
    host: Host = Field(description="the host (or partition owner) whose state this is")
    detector: Name
    state_version: int = Field(ge=1, description="format of `state`, owned by the detector")
    time: EventTime = Field(description="event time the state reflects")
    source_offsets: dict[Name, int] = Field(default_factory=dict, description="'topic:partition' → next offset")
    state_b64: str = Field(description="the detector's serialised state, base64")


MatchOp = Literal["=", "!=", "=~", "!~"]


class Matcher(BaseModel):
    """One label matcher, as Alertmanager writes them: `name=value`, `!=`, `=~` regex, `!~`.

    Regexes are anchored (the whole value must match), as in Alertmanager. A label the incident
    does not have has the value "" (so `name=""` matches its absence)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_.]{0,127}$")]
    op: MatchOp = "="
    value: Annotated[str, StringConstraints(max_length=1024)]


class Control(Contract):
    """A runtime control decision on the compacted control topic, newest per `id` wins.

    `kill_switch` (id "kill_switch": `fleetmedic pause` / `resume`) stops every remediation and
    cancels running playbooks while `active`; a `silence` or `maintenance` record stops
    remediations of incidents whose labels (host, kind, subject, severity, detector and the
    incident's own labels) satisfy all its matchers between `starts_at` and `ends_at`; `active:
    false` expires it early."""

    topic: ClassVar[str] = "control.v1"
    id: Annotated[str, StringConstraints(pattern=r"^(kill_switch|sil-[0-9a-f]{8,32}|mw-[0-9a-f]{8,32})$")]
    kind: Literal["kill_switch", "silence", "maintenance"]
    active: bool
    matchers: list[Matcher] = Field(default_factory=list, max_length=64)
    starts_at: EventTime | None = None
    ends_at: EventTime | None = None
    by: Name
    reason: Annotated[str, StringConstraints(max_length=4096)] = ""
    time: EventTime

    def key(self) -> bytes:
        return self.id.encode()


CONTRACTS: dict[str, type[Contract]] = {
    "metric_batch": MetricBatch,
    "log_event": LogEvent,
    "incident": Incident,
    "remediation": Remediation,
    "dead_letter": DeadLetter,
    "approval": Approval,
    "detector_state": DetectorState,
    "control": Control,
}
