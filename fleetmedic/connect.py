"""Clear words for the broker's refusals: a wrong password or a missing ACL stops a command
with one line that says which and what to check, never with a traceback (and never a secret)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import Settings


def explain(exc: BaseException) -> str | None:
    """One line for an authentication or authorization failure; None for anything else."""
    from kafka import errors

    auth = tuple(
        getattr(errors, n)
        for n in (
            "SaslAuthenticationFailedError",
            "AuthenticationFailedError",
            "AuthenticationMethodNotSupported",
            "IllegalSaslStateError",
        )
        if hasattr(errors, n)
    )
    if isinstance(exc, auth):
        return (
            f"the broker refused to authenticate this client ({type(exc).__name__}): wrong password or "
            "unknown user; check security.sasl_plain_username and the password (…_file or environment)"
        )
    denied = tuple(
        getattr(errors, n)
        for n in (
            "TopicAuthorizationFailedError",
            "GroupAuthorizationFailedError",
            "ClusterAuthorizationFailedError",
            "TransactionalIdAuthorizationFailedError",
        )
        if hasattr(errors, n)
    )
    if isinstance(exc, denied):
        return (
            f"the broker's authorizer refused this principal ({type(exc).__name__}: {exc}); "
            "see docs/security.md for what each role may do"
        )
    return None


class CredentialsRefused(RuntimeError):
    """The broker refused this client's credentials or certificate at connection time."""


def verify_credentials(settings: Settings, timeout_s: float = 10.0) -> None:
    """Connect once to the first bootstrap server and fail fast on an authentication refusal.

    kafka-python only logs a SASL failure and retries for ever, so a stage started with a wrong
    password would sit idle: this check makes the start fail with `CredentialsRefused` instead.
    A broker that cannot be reached is not an error here (the stages wait and retry as before).
    """
    import socket

    from kafka import errors
    from kafka.conn import BrokerConnection

    if not settings.security.security_protocol.startswith("SASL") and settings.security.security_protocol != "SSL":
        return
    host, _, port = settings.bootstrap_servers[0].rpartition(":")
    options = {k: v for k, v in settings.kafka_kwargs().items() if k != "bootstrap_servers"}
    conn = BrokerConnection(
        host.strip("[]"), int(port), socket.AF_UNSPEC, client_id=f"{settings.client_id}-auth-check", **options
    )
    seen: list[BaseException] = []
    close = conn.close

    # the refusal arrives only as the reason a connection is closed
    def remember(error: BaseException | None = None) -> None:
        if error is not None:
            seen.append(error)
        return close(error=error)

    conn.close = remember
    try:
        conn.connect_blocking(timeout=timeout_s)
    except Exception as exc:  # an authentication error raised from inside the handshake
        seen.append(exc)
    finally:
        close()
    user = settings.security.sasl_plain_username
    for error in seen:
        if isinstance(
            error,
            (
                errors.SaslAuthenticationFailedError,
                getattr(errors, "AuthenticationFailedError", errors.SaslAuthenticationFailedError),
            ),
        ):
            raise CredentialsRefused(
                f"the broker at {settings.bootstrap_servers[0]} refused the credentials of "
                f"user {user!r} ({settings.security.sasl_mechanism}): wrong password or "
                "unknown user; check security.sasl_plain_username and the password "
                "(security.sasl_plain_password_file or FLEETMEDIC_SECURITY__SASL_PLAIN_PASSWORD)"
            )
        text = str(error)
        if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
            raise CredentialsRefused(
                f"TLS to {settings.bootstrap_servers[0]}: the broker's certificate does not "
                f"verify against security.ssl_cafile ({settings.security.ssl_cafile})"
            )
