"""Secrets in settings come from files or the environment, never from a command line.

`read_secret_files` turns ``NAME_file: PATH`` into ``NAME: <the file's content, stripped>`` when
the security settings are validated (before pydantic wraps the value in a `SecretStr`, whose
repr and str are ``'**********'``, so a logged settings object shows no secret). A missing or
unreadable file is an error naming the setting and the path, never the content.

`scrub_environment` gives child processes (ansible-playbook) an environment in which every
connection-security setting (FLEETMEDIC_SECURITY__*) and every FLEETMEDIC_* variable whose name
says PASSWORD, SECRET or TOKEN is blank: facts gathering would otherwise copy them into the
runner's artifacts. Other FLEETMEDIC_* variables stay (playbooks read e.g. FLEETMEDIC_SUPERVISOR_CONF).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import Settings

SECRET_FIELDS = ("sasl_plain_password", "ssl_password")


def read_secret_files(data: Any) -> Any:
    if not isinstance(data, dict):
        return data
    data = dict(data)
    for name in SECRET_FIELDS:
        path = data.get(f"{name}_file")
        if path in (None, ""):
            continue
        given = data.get(name)
        if hasattr(given, "get_secret_value"):
            given = given.get_secret_value()
        try:
            text = Path(path).expanduser().read_text()
        except OSError as exc:
            raise ValueError(f"{name}_file: cannot read {path}: {exc.strerror or exc}") from None
        secret = text.strip()
        if not secret:
            raise ValueError(f"{name}_file: {path} is empty")
        if given not in (None, "") and given != secret:
            raise ValueError(f"give {name} or {name}_file, not both")
        data[name] = secret
    return data


def scrub_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Overrides that blank the secret-bearing FLEETMEDIC_* variables for a child process."""
    environ = os.environ if environ is None else environ
    return {
        name: ""
        for name in environ
        if name.startswith("FLEETMEDIC_SECURITY__")
        or (name.startswith("FLEETMEDIC_") and any(w in name for w in ("PASSWORD", "SECRET", "TOKEN")))
    }


def connection_env(settings: Settings) -> dict[str, str]:
    """FLEETMEDIC_* variables that make a child process connect as `settings` do.

    A password travels as the name of its file when it came from one, else in the child's
    environment (FLEETMEDIC_SECURITY__SASL_PLAIN_PASSWORD); never in an argument list.
    """
    sec = settings.security
    env = {
        "FLEETMEDIC_BOOTSTRAP_SERVERS": ",".join(settings.bootstrap_servers),
        "FLEETMEDIC_CLIENT_ID": settings.client_id,
        "FLEETMEDIC_SECURITY__SECURITY_PROTOCOL": sec.security_protocol,
        "FLEETMEDIC_SECURITY__SSL_CHECK_HOSTNAME": str(sec.ssl_check_hostname).lower(),
    }
    for name in ("sasl_mechanism", "sasl_plain_username", "ssl_cafile", "ssl_certfile", "ssl_keyfile"):
        if getattr(sec, name) is not None:
            env[f"FLEETMEDIC_SECURITY__{name.upper()}"] = str(getattr(sec, name))
    for name in SECRET_FIELDS:
        path, value = getattr(sec, f"{name}_file"), getattr(sec, name)
        if path is not None:
            env[f"FLEETMEDIC_SECURITY__{name.upper()}_FILE"] = str(path)
        elif value is not None:
            env[f"FLEETMEDIC_SECURITY__{name.upper()}"] = value.get_secret_value()
    return env
