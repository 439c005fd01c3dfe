"""Which incidents a rule or silence covers (`Match`), and the policy's `gates` and `approvals`
sections: silences, maintenance windows, the per-host and fleet-wide limits, approver keys.

Example::

    >>> from remediator.policy_gates import Gates
    >>> Gates.model_validate({"cooldown_s": 60}).max_concurrent
    4
"""

from __future__ import annotations

import fnmatch
from datetime import datetime, time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import AwareDatetime, Field, StringConstraints, model_validator

from fleetmedic.schemas import ActionClass, Incident

from .policy_vars import Ident, _Strict

if TYPE_CHECKING:
    from .policy import Policy


class Match(_Strict):
    """All given conditions must hold (an empty match holds for every incident)."""

    kinds: list[str] | None = None
    severities: list[Literal["info", "warning", "critical"]] | None = None
    action_classes: list[ActionClass] | None = None
    labels: dict[str, str] = Field(default_factory=dict, description="label → glob")
    host_groups: list[str] | None = Field(None, description="the host is in at least one of these groups")
    statuses: list[Literal["open", "update"]] = ["open", "update"]

    def holds(self, incident: Incident, policy: Policy) -> bool:
        if incident.status not in self.statuses:
            return False
        if self.kinds is not None and incident.kind not in self.kinds:
            return False
        if self.severities is not None and incident.severity not in self.severities:
            return False
        if self.action_classes is not None and incident.action_class not in self.action_classes:
            return False
        for name, glob in self.labels.items():
            if name not in incident.labels or not fnmatch.fnmatchcase(incident.labels[name], glob):
                return False
        if self.host_groups is not None and not any(policy.in_group(incident.host, g) for g in self.host_groups):
            return False
        return True


class Silence(_Strict):
    """No remediation for matching incidents between `starts_at` and `ends_at`."""

    match: Match = Match()
    hosts: list[str] = Field(default_factory=list, description="host globs (empty: any host)")
    starts_at: AwareDatetime
    ends_at: AwareDatetime
    comment: str = ""

    @model_validator(mode="after")
    def _ordered(self) -> Silence:
        if self.ends_at <= self.starts_at:
            raise ValueError("ends_at must be after starts_at")
        return self


class MaintenanceWindow(_Strict):
    """A recurring UTC window (e.g. Sundays 02:00 for 120 minutes) during which a group is left alone."""

    name: Ident
    host_groups: list[str] = Field(min_length=1)
    weekdays: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] = [
        "mon",
        "tue",
        "wed",
        "thu",
        "fri",
        "sat",
        "sun",
    ]
    start: time = Field(description="UTC time of day, HH:MM")
    duration_min: int = Field(gt=0, le=7 * 24 * 60)

    def active(self, now: datetime) -> bool:
        days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
        for back in range(0, 8):  # a window may have started on an earlier day
            day = now.date().toordinal() - back
            start_day = datetime.fromordinal(day).replace(tzinfo=now.tzinfo)
            if days[start_day.weekday()] not in self.weekdays:
                continue
            begin = start_day.replace(hour=self.start.hour, minute=self.start.minute)
            if 0 <= (now - begin).total_seconds() < self.duration_min * 60:
                return True
        return False


class RateLimit(_Strict):
    max_runs: int = Field(10, ge=1)
    per_s: float = Field(600.0, gt=0)


class BlastRadius(_Strict):
    max_percent: float = Field(25.0, gt=0, le=100, description="of a host group under remediation at once")
    job_label: str = Field("slurm_job", description="incident label naming the job a host runs")
    max_nodes_per_job: int = Field(1, ge=1)
    active_s: float = Field(
        1800.0,
        gt=0,
        description="ignored (kept so older policy files load): "
        "a host counts from its claim until it is back in service",
    )


class Flapping(_Strict):
    max_runs: int = Field(3, ge=1, description="runs of one host allowed within `within_s`")
    within_s: float = Field(3600.0, gt=0)


class Gates(_Strict):
    kill_switch: bool = False
    kill_switch_file: Path | None = Field(None, description="when this file exists, nothing runs")
    silences: list[Silence] = Field(default_factory=list)
    maintenance: list[MaintenanceWindow] = Field(default_factory=list)
    cooldown_s: float = Field(600.0, ge=0, description="per (host, action)")
    rate_limit: RateLimit = RateLimit()
    max_concurrent: int = Field(4, ge=1)
    blast_radius: BlastRadius = BlastRadius()
    flapping: Flapping = Flapping()


class Approvals(_Strict):
    expire_s: float = Field(3600.0, gt=0, description="an unanswered request is denied after this long")
    approvers: dict[Annotated[str, StringConstraints(min_length=1, max_length=512)], str] = Field(
        default_factory=dict, description="approver name → Ed25519 public key (base64, `fleetmedic approver-key`)"
    )

    @model_validator(mode="after")
    def _keys(self) -> Approvals:
        from .approvals import parse_public_key

        for name, text in self.approvers.items():
            try:
                parse_public_key(text)
            except ValueError as exc:
                raise ValueError(f"approvers.{name}: not an Ed25519 public key: {exc}") from None
        return self
