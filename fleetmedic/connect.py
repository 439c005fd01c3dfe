"""Clear words for the broker's refusals: a wrong password or a missing ACL stops a command
with one line that says which and what to check, never with a traceback (and never a secret)."""

from __future__ import annotations


def explain(exc: BaseException) -> str | None:
    """One line for an authentication or authorization failure; None for anything else."""
    from kafka import errors

    auth = tuple(getattr(errors, n) for n in ("SaslAuthenticationFailedError", "AuthenticationFailedError",
                                               "AuthenticationMethodNotSupported", "IllegalSaslStateError")
                 if hasattr(errors, n))
    if isinstance(exc, auth):
        return (f"the broker refused to authenticate this client ({type(exc).__name__}): wrong password or "
                "unknown user; check security.sasl_plain_username and the password (…_file or environment)")
    denied = tuple(getattr(errors, n) for n in ("TopicAuthorizationFailedError", "GroupAuthorizationFailedError",
                                                 "ClusterAuthorizationFailedError",
                                                 "TransactionalIdAuthorizationFailedError")
                   if hasattr(errors, n))
    if isinstance(exc, denied):
        return (f"the broker's authorizer refused this principal ({type(exc).__name__}: {exc}); "
                "see docs/security.md for what each role may do")
    return None
