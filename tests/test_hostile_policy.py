"""A policy `extract` never runs on an unbounded incident field (issue 13)."""

from __future__ import annotations

import pytest
from examples import T0

from fleetmedic.schemas import Incident
from remediator.policy_vars import EXTRACT_MAX_CHARS, PolicyError, VarSpec


def _incident(job: str) -> Incident:
    return Incident(
        id="i",
        fingerprint="f",
        host="h",
        kind="k",
        subject="s",
        status="open",
        severity="warning",
        detector="d",
        time=T0,
        opened_at=T0,
        labels={"job": job},
    )


def test_a_long_field_is_refused_before_the_authors_pattern_runs_on_it():
    spec = VarSpec(**{"from": "labels.job", "extract": r"^((?:a|a)*)$"})  # exponential on "aaa…b"
    with pytest.raises(PolicyError, match=f"more than extract reads \\({EXTRACT_MAX_CHARS}\\)"):
        spec.render(_incident("a" * 5000 + "b"))  # before: the pattern ran on it (exponential)
    assert spec.render(_incident("aaaa")) == "aaaa"
