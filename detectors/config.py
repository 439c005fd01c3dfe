"""The detector configuration: one YAML file, validated, errors naming `file:line: field: reason`.

Rules pick their series by glob patterns on the series name (`gpu*.temperature_c`), so exporters
can rename series without a code change. See docs/detectors.md for every field.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fleetmedic.schemas import ActionClass
from fleetmedic.yamlfile import load_model

DEFAULT_CONFIG = Path(__file__).with_name("default.yaml")

RuleName = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SeriesRuleConfig(_Strict):
    name: str = RuleName
    match: list[str] = Field(min_length=1, description="glob patterns on series names")
    kind: str | None = Field(None, description="incident kind (default: the rule name)")
    severity: Literal["info", "warning", "critical"] = "warning"
    action_class: ActionClass | None = None
    for_s: float = Field(0.0, ge=0, description="breaching this long (event time) before firing")
    resolve_after_s: float = Field(60.0, ge=0, description="clear this long before resolving")

    def matches(self, series: str) -> bool:
        return any(fnmatchcase(series, pattern) for pattern in self.match)

    @property
    def incident_kind(self) -> str:
        return self.kind or self.name


class EwmaRuleConfig(SeriesRuleConfig):
    alpha: float = Field(0.05, gt=0, lt=1)
    sigmas: float = Field(4.0, gt=0)
    clear_sigmas: float | None = Field(None, gt=0, description="hysteresis; default 0.75 × sigmas")
    direction: Literal["up", "down", "both"] = "both"
    warmup: int = Field(30, ge=1, description="values learned before the rule may alert")
    min_std: float = Field(1e-6, ge=0)
    min_rel_std: float = Field(1e-3, ge=0, description="std floor relative to |mean|")
    anomalous_alpha_factor: float = Field(0.1, ge=0, le=1)

    @model_validator(mode="after")
    def _hysteresis(self) -> EwmaRuleConfig:
        if self.clear_sigmas is not None and self.clear_sigmas > self.sigmas:
            raise ValueError("clear_sigmas must not exceed sigmas")
        return self


class StaticRuleConfig(SeriesRuleConfig):
    op: Literal[">=", ">", "<=", "<"] = ">="
    threshold: float
    clear_threshold: float | None = Field(None, description="hysteresis; default = threshold")

    @model_validator(mode="after")
    def _hysteresis(self) -> StaticRuleConfig:
        c = self.clear_threshold
        if c is not None and (
            (self.op in (">=", ">") and c > self.threshold) or (self.op in ("<=", "<") and c < self.threshold)
        ):
            raise ValueError("clear_threshold must lie on the normal side of threshold")
        return self


class UnivariateRuleConfig(SeriesRuleConfig):
    """The surprise-record scorer (detectors/univariate.py) as a live per-series rule."""

    params: dict[str, float | int | list[float]] = Field(
        default_factory=dict, description="the detector's parameter fields, e.g. threshold, warmup"
    )
    detector: Literal["surprise", "likelihood"] = Field(
        "surprise",
        description="surprise: detectors/univariate.py (surprise records); likelihood: "
        "detectors/likelihood.py (calibrated surprise + anomaly likelihood)",
    )

    @model_validator(mode="after")
    def _params(self) -> UnivariateRuleConfig:
        from .likelihood import LikelihoodParams
        from .univariate import SurpriseRecordParams

        params_class: Any = LikelihoodParams if self.detector == "likelihood" else SurpriseRecordParams
        try:
            params_class(**self.params)  # unknown names and bad values fail here, with the line
        # an unknown name: a dataclass says TypeError, pydantic wants ValueError
        except (TypeError, ArithmeticError) as exc:
            raise ValueError(f"{self.detector} detector: {exc}") from None
        return self


class LogRulesConfig(_Strict):
    enabled: bool = True
    burst_window_s: float = Field(180.0, gt=0, description="XIDs on a host closer than this are one burst")
    table: Path | None = Field(None, description="XID table YAML (default: detectors/xid_table.yaml)")


class FaultModelConfig(_Strict):
    """A saved fault model (`fleetmedic model train`) scored live on every metric batch."""

    path: Path = Field(description="fault-model-<version>.json")
    threshold: float | None = Field(None, gt=0, lt=1, description="default: the threshold saved with the model")
    for_s: float = Field(0.0, ge=0)
    resolve_after_s: float = Field(600.0, ge=0)
    severity: Literal["info", "warning", "critical"] = "warning"
    action_class: ActionClass | None = "drain_and_reset"


class ForestFeatureConfig(_Strict):
    """One coordinate of the per-host vector: an aggregate over the batch's series matching `match`."""

    name: str = RuleName
    match: list[str] = Field(min_length=1, description="glob patterns on series names (gauges; counters are skipped)")
    agg: Literal["max", "mean", "min", "sum"] = Field("max", description="across the matched series of one batch")

    def matches(self, series: str) -> bool:
        return any(fnmatchcase(series, pattern) for pattern in self.match)


class IsolationForestConfig(_Strict):
    """Isolation forest per (host class, source partition) over one vector per host per metric batch."""

    enabled: bool = True
    kind: str = Field("multivariate_anomaly", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", description="incident kind")
    class_label: str = Field(
        "class", min_length=1, description="host label naming the host class ('default' when a host has none)"
    )
    features: list[ForestFeatureConfig] = Field(min_length=1)
    window: int = Field(1024, ge=2, description="vectors the forest is fitted on (the newest)")
    window_s: float | None = Field(None, gt=0, description="...and of those only the ones this recent (event time)")
    refit_interval_s: float = Field(600.0, gt=0, description="refit at every multiple of this (event time)")
    min_train: int = Field(256, ge=2, description="no model until this many vectors qualify")
    n_estimators: int = Field(100, ge=1, le=1000)
    max_samples: int = Field(256, ge=2, description="vectors drawn per tree")
    threshold: float = Field(0.7, gt=0, lt=1, description="anomaly score (0..1, ~0.5 ordinary) that breaches")
    clear_threshold: float | None = Field(None, gt=0, lt=1, description="hysteresis; default = threshold")
    seed: int = Field(0, ge=0)
    for_s: float = Field(60.0, ge=0)
    resolve_after_s: float = Field(120.0, ge=0)
    severity: Literal["info", "warning", "critical"] = "warning"
    action_class: ActionClass | None = None

    @model_validator(mode="after")
    def _consistent(self) -> IsolationForestConfig:
        if self.min_train > self.window:
            raise ValueError("min_train must not exceed window")
        names = [f.name for f in self.features]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"feature names must be unique: {', '.join(dupes)}")
        if self.clear_threshold is not None and self.clear_threshold > self.threshold:
            raise ValueError("clear_threshold must not exceed threshold")
        return self


class DetectorConfig(_Strict):
    ewma: list[EwmaRuleConfig] = Field(default_factory=list)
    static: list[StaticRuleConfig] = Field(default_factory=list)
    univariate: list[UnivariateRuleConfig] = Field(default_factory=list)
    log_rules: LogRulesConfig = LogRulesConfig()
    fault_model: FaultModelConfig | None = None
    iforest: IsolationForestConfig | None = None
    late_tolerance_s: float = Field(
        120.0, ge=0, description="records older than the host's newest by more than this are counted and dropped"
    )
    # Below late_tolerance_s: a record just inside the bound then cannot make its host's honest records late.
    max_future_skew_s: float = Field(
        60.0,
        ge=0,
        description="records whose event time is more than this "
        "ahead of their Kafka timestamp are counted and dead-lettered",
    )
    max_series_per_host: int = Field(
        10_000,
        ge=1,
        description="a host's series beyond this many are not "
        "tracked (counted in series_over_cap); keeps its snapshot under the record limit",
    )
    max_hosts: int = Field(
        100_000,
        ge=1,
        description="records of hosts beyond this many per process are counted (hosts_over_cap) and not used",
    )
    max_gap_s: float = Field(300.0, gt=0, description="a gap longer than this restarts a pending `for`")
    checkpoint_interval_s: float = Field(5.0, gt=0, description="wall seconds between state checkpoints")
    forget_host_after_s: float = Field(
        86_400.0,
        gt=0,
        description="a host silent this long (event time, behind "
        "the newest host of its partition) is dropped and its snapshot tombstoned",
    )

    @model_validator(mode="after")
    def _unique_names(self) -> DetectorConfig:
        names = [r.name for r in (*self.ewma, *self.static, *self.univariate)]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"rule names must be unique: {', '.join(dupes)}")
        return self


def load_config(path: str | Path | None = None) -> DetectorConfig:
    """The detector configuration from `path` (default: the packaged detectors/default.yaml)."""
    return load_model(path or DEFAULT_CONFIG, DetectorConfig)
