"""One typed settings object for every stage: a YAML file plus FLEETMEDIC_* environment variables.

Precedence, lowest first: defaults, the file (``--config`` or ``FLEETMEDIC_CONFIG``), then the
environment. Nested settings use a double underscore in the environment, e.g.
``FLEETMEDIC_SECURITY__SASL_MECHANISM=PLAIN``; lists are comma separated
(``FLEETMEDIC_BOOTSTRAP_SERVERS=a:9092,b:9092``). An invalid setting fails at start with its
name (or file and line) and the reason.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from .resources import default_state_dir
from .yamlfile import ConfigFileError, load_model

ENV_PREFIX = "FLEETMEDIC_"
_HOSTPORT = re.compile(r"^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.\-_]+):([0-9]{1,5})$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SecuritySettings(_Strict):
    """Passed through to kafka-python as-is (its option names)."""

    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER", "GSSAPI"] | None = None
    sasl_plain_username: str | None = None
    sasl_plain_password: SecretStr | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_password: SecretStr | None = None
    ssl_check_hostname: bool = True
    # Secrets from files (fleetmedic.secrets): the file's content, stripped, is the secret.
    sasl_plain_password_file: Path | None = None
    ssl_password_file: Path | None = None

    @model_validator(mode="before")
    @classmethod
    def _secret_files(cls, data):
        from .secrets import read_secret_files

        return read_secret_files(data)

    @model_validator(mode="after")
    def _consistent(self) -> SecuritySettings:
        if self.sasl_mechanism in ("OAUTHBEARER", "GSSAPI"):
            raise ValueError(
                f"sasl_mechanism {self.sasl_mechanism} is not supported: fleetmedic has no token "
                "provider or Kerberos set-up (docs/security.md); use SCRAM-SHA-512 or mTLS (SSL)"
            )
        if self.security_protocol.startswith("SASL") and self.sasl_mechanism is None:
            raise ValueError(f"security_protocol {self.security_protocol} needs sasl_mechanism")
        if self.sasl_mechanism in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512") and not (
            self.sasl_plain_username and self.sasl_plain_password
        ):
            raise ValueError(f"sasl_mechanism {self.sasl_mechanism} needs sasl_plain_username and sasl_plain_password")
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            value = getattr(self, name)
            if value and not Path(value).is_file():
                raise ValueError(f"{name}: no such file: {value}")
        return self

    def kafka_kwargs(self) -> dict:
        out: dict = {"security_protocol": self.security_protocol}
        for name in ("sasl_mechanism", "sasl_plain_username", "ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        for name in ("sasl_plain_password", "ssl_password"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name).get_secret_value()
        if self.security_protocol in ("SSL", "SASL_SSL"):
            out["ssl_check_hostname"] = self.ssl_check_hostname
        return out


class BrokerSettings(_Strict):
    """The embedded single-node broker (`fleetmedic broker start`)."""

    port: int = Field(19092, ge=1, le=65535)
    controller_port: int = Field(19093, ge=1, le=65535)
    # Absolute, so `broker status|stop` find the broker from any directory.
    data_dir: Path = Path(os.path.expanduser("~/.local/share/fleetmedic/kafka"))
    jar_cache: Path = Path(os.path.expanduser("~/.cache/fleetmedic/kafka-jars"))
    heap: str = Field("512m", pattern=r"^[0-9]+[kmgKMG]$")
    # `broker start --nodes N`: N KRaft nodes (broker and controller each) on port + 2k and
    # controller_port + 2k (k = 0..N-1), data in data_dir/node<k+1> (fleetmedic/cluster.py).
    nodes: int = Field(1, ge=1, le=9)
    start_timeout_s: float = Field(90.0, gt=0)

    @model_validator(mode="after")
    def _distinct_ports(self) -> BrokerSettings:
        if self.port == self.controller_port:
            raise ValueError("port and controller_port must differ")
        return self


class TopicSettings(_Strict):
    partitions: int = Field(6, ge=1, le=10_000)
    # None: min(3, brokers in the cluster). min_insync_replicas None: 2 when the factor is 3 or
    # more, else the broker's default (1). Set both for an existing cluster with other needs.
    replication_factor: int | None = Field(None, ge=1, le=32)
    min_insync_replicas: int | None = Field(None, ge=1, le=32)
    retention_hours: float = Field(168.0, gt=0)
    deadletter_retention_hours: float = Field(720.0, gt=0)
    remediation_retention_hours: float = Field(24 * 90, gt=0)


Role = Literal["exporter", "detector", "remediator", "approver", "reviewer", "admin"]
ROLE_NAMES: tuple[Role, ...] = get_args(Role)


def _default_principals() -> dict[Role, str]:
    return {r: f"User:{r}" for r in ROLE_NAMES if r != "admin"}


def _default_groups() -> dict[Role, list[str]]:
    return {
        "detector": ["detectors", "demo-detectors"],
        "remediator": ["fleetmedic-remediator", "demo-remediator"],
        "reviewer": ["fleetmedic-tail-"],
    }


class AclSettings(_Strict):
    """Least-privilege ACLs that `fleetmedic topics create` applies (fleetmedic.acls)."""

    # None: apply them when the connection uses SASL (a secured cluster); false: never.
    apply: bool | None = None
    # role → Kafka principal; the secured embedded broker's SCRAM users are named after the roles.
    principals: dict[Role, str] = Field(default_factory=_default_principals)
    # role → consumer group id prefixes it may join (PREFIXED group ACLs).
    groups: dict[Role, list[str]] = Field(default_factory=_default_groups)
    # role → transactional id prefixes (default: the role's client id, fleetmedic-ROLE).
    transactional_ids: dict[Role, list[str]] = Field(default_factory=dict)


class AlertsSettings(_Strict):
    """Alertmanager in (`alerts receive`), out (`alerts notify`) and its silences in the silence gate."""

    # where `alerts notify` pushes alerts and where the remediator's silence gate reads silences
    alertmanager_url: str | None = Field(None, pattern=r"^https?://[^\s/]+(/[^\s]*)?$")
    # the first of these alert labels that is present names the incident's host (":port" dropped)
    host_labels: list[str] = ["host", "instance", "nodename"]
    kind_label: str = "alertname"
    subject_label: str | None = Field(None, description="default: the kind")
    # alert label → incident label; labels not named here are carried as they are unless drop_unmapped
    label_map: dict[str, str] = Field(default_factory=dict)
    drop_unmapped: bool = False
    # alerts carrying this label=value are fleetmedic's own (from `alerts notify`): never turned into incidents
    own_label: str = "fleetmedic"
    resend_s: float = Field(30.0, gt=0, description="`alerts notify` re-sends active alerts this often")
    silence_refresh_s: float = Field(5.0, gt=0, description="the silence gate re-reads Alertmanager's silences")
    timeout_s: float = Field(5.0, gt=0)


class Settings(_Strict):
    bootstrap_servers: list[str] = ["127.0.0.1:19092"]
    topic_prefix: str = Field("fleetmedic.", pattern=r"^[A-Za-z0-9._-]*$", max_length=100)
    client_id: str = Field("fleetmedic", pattern=r"^[A-Za-z0-9._-]+$")
    # Records larger than this are not decoded: they go to the dead-letter topic instead.
    max_record_bytes: int = Field(1_000_000, ge=1024)
    security: SecuritySettings = SecuritySettings()
    broker: BrokerSettings = BrokerSettings()
    topics: TopicSettings = TopicSettings()
    acls: AclSettings = AclSettings()
    alerts: AlertsSettings = AlertsSettings()
    # Where services keep spools, log positions and artifacts when no flag names a place: never
    # the working directory (fleetmedic.resources.default_state_dir says how it is chosen).
    state_dir: Path = Field(default_factory=default_state_dir)
    # The address the exporters' health endpoints bind (0.0.0.0 where a kubelet or Prometheus
    # on another host must reach them); --health-bind overrides it per process.
    health_bind: str = Field("127.0.0.1", min_length=1, max_length=255)

    @field_validator("bootstrap_servers", mode="before")
    @classmethod
    def _split(cls, value):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        return value

    @field_validator("bootstrap_servers")
    @classmethod
    def _hostports(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one host:port is needed")
        for item in value:
            m = _HOSTPORT.match(item)
            if not m or not 0 < int(m.group(2)) < 65536:
                raise ValueError(f"{item!r} is not host:port")
        return value

    @field_validator("state_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        value = value.expanduser()
        if not value.is_absolute():
            raise ValueError(f"{str(value)!r} must be an absolute path (a service's files never depend on its cwd)")
        return value

    def kafka_kwargs(self) -> dict:
        """Connection options shared by every kafka-python client."""
        return {"bootstrap_servers": list(self.bootstrap_servers), **self.security.kafka_kwargs()}


class SettingsError(ValueError):
    """A setting that cannot be used; the message names it and says why."""


# FLEETMEDIC_CONFIG names the file; FLEETMEDIC_KAFKA_BOOTSTRAP points the test suite at a broker.
# FLEETMEDIC_SUPERVISOR_CONF is read by restart_service.yml on the controller (docs/playbooks.md),
# not a setting: a remediator started with it set must not fail its settings.
_NOT_SETTINGS = {ENV_PREFIX + "CONFIG", ENV_PREFIX + "KAFKA_BOOTSTRAP", ENV_PREFIX + "SUPERVISOR_CONF"}


def env_overrides(environ: Mapping[str, str] | None = None) -> dict:
    """FLEETMEDIC_A__B=v  →  {"a": {"b": "v"}}."""
    environ = os.environ if environ is None else environ
    out: dict = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name in _NOT_SETTINGS:
            continue
        path = name[len(ENV_PREFIX) :].lower().split("__")
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise SettingsError(f"{name}: conflicts with another FLEETMEDIC_ variable")
        node[path[-1]] = value
    return out


def _env_name(loc: tuple) -> str:
    return ENV_PREFIX + "__".join(str(p).upper() for p in loc)


def load_settings(path: str | Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Build the settings; raises SettingsError naming the bad setting (env var or file:line)."""
    environ = os.environ if environ is None else environ
    path = path or environ.get(ENV_PREFIX + "CONFIG")
    overrides = env_overrides(environ)
    if path:
        try:
            return load_model(path, Settings, overrides)
        except ConfigFileError as exc:
            raise SettingsError(str(exc)) from exc
    try:
        return Settings.model_validate(overrides)
    except ValidationError as exc:
        lines = []
        for err in exc.errors(include_url=False):
            loc = tuple(err["loc"])
            lines.append(f"{_env_name(loc) if loc else 'settings'}: {err['msg']}")
        raise SettingsError("\n".join(lines)) from exc
