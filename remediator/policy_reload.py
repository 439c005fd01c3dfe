"""Reload the policy file on SIGHUP or when its content changes, validated first.

A file that does not validate keeps the policy loaded before, and the reason (file:line: field:
reason, from `fleetmedic.yamlfile`) is logged and kept in `error`: a typo never leaves the
remediator without a policy, nor silently running an old one.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from fleetmedic.yamlfile import ConfigFileError

from .policy import Policy, load_policy

log = logging.getLogger(__name__)


class PolicyWatcher:
    """`check()` returns the new policy when the file changed (or `request()` was called) and it is valid."""

    def __init__(self, path: str | Path, current: Policy) -> None:
        self.path = Path(path)
        self.policy = current
        self.error: str | None = None
        self.reloads = 0
        self._digest = self._read_digest()
        self._requested = False

    def _read_digest(self) -> str | None:
        try:
            return hashlib.sha256(self.path.read_bytes()).hexdigest()
        except OSError:
            return None  # being replaced (or removed): judged when it is back

    def request(self) -> None:
        """Ask for a reload at the next check (safe to call from a signal handler)."""
        self._requested = True

    def check(self) -> Policy | None:
        digest = self._read_digest()
        requested, self._requested = self._requested, False
        if not requested and (digest is None or digest == self._digest):
            return None
        why = "SIGHUP" if requested else "the file changed"
        self._digest = digest
        try:
            new = load_policy(self.path)
        except (ConfigFileError, OSError) as exc:
            self.error = f"policy {self.path} not reloaded ({why}); keeping the policy loaded before: {exc}"
            log.error("%s", self.error)
            return None
        self.error = None
        self.policy = new
        self.reloads += 1
        log.warning("policy %s reloaded (%s): %d rules", self.path, why, len(new.rules))
        return new


__all__ = ["PolicyWatcher"]
