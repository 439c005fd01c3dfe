"""The fleet model: a real Ansible inventory, read through `ansible-inventory --list`, refreshed.

Anything `ansible-inventory -i SOURCE --list` accepts is a source: an INI or YAML file, a
directory of them, a dynamic inventory script or an inventory plugin's config. The remediator
never parses inventory formats itself; it reads Ansible's own JSON answer:

- hosts and their variables (`_meta.hostvars`, group variables already merged in), which carry the
  connection settings (`ansible_host`, `ansible_user`, `ansible_port`, `ansible_ssh_private_key_file`,
  `ansible_ssh_common_args`, `ansible_become`, ...) that a host-side playbook run uses;
- groups and their members (children included), which are the policy's host groups and give the
  blast radius its real group sizes.

An incident names its host as the exporter saw it. It maps to the inventory host of that name, or
to the host whose variable `name_var` (default `fleetmedic_host`) holds that name, for fleets
where exporter names and inventory names differ. A host that maps to nothing is not ours.

`Inventory.refresh()` re-reads the source; `maybe_refresh()` does so when `refresh_s` have passed.
A failed refresh keeps the last good view (and says why in `last_error`); a failed first read
raises `InventoryError`.

    >>> inv = Inventory.from_listing({"_meta": {"hostvars": {"gpu-0412": {"fleetmedic_host": "n412"}}},
    ...     "all": {"children": ["gpu"]}, "gpu": {"hosts": ["gpu-0412"]}})
    >>> inv.resolve("n412"), inv.resolve("gpu-0412"), inv.resolve("elsewhere")
    ('gpu-0412', 'gpu-0412', None)
    >>> inv.members("gpu"), inv.group_names("n412")
    (frozenset({'gpu-0412'}), ['all', 'gpu'])
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_NAME_VAR = "fleetmedic_host"
DEFAULT_REFRESH_S = 300.0
# host variables a health check may use as the host's address, first found wins
ADDRESS_VARS = ("ansible_host", "ansible_ssh_host")


class InventoryError(RuntimeError):
    """The inventory could not be read (the message says which source and why)."""


@dataclass(frozen=True)
class HostTarget:
    """One inventory host as a playbook target: its inventory name and its variables."""

    name: str
    hostvars: dict = field(default_factory=dict)

    @property
    def address(self) -> str:
        """Where the host is reached: `ansible_host` (or `ansible_ssh_host`), else its name."""
        for var in ADDRESS_VARS:
            value = self.hostvars.get(var)
            if isinstance(value, str) and value:
                return value
        return self.name


def _ansible_inventory() -> str:
    here = Path(sys.executable).parent / "ansible-inventory"
    if here.exists():
        return str(here)
    found = shutil.which("ansible-inventory")
    if found is None:
        raise InventoryError("ansible-inventory not found next to this Python nor on PATH")
    return found


def list_inventory(source: str | Path, timeout_s: float = 120.0) -> dict:
    """`ansible-inventory -i SOURCE --list` as a dict (InventoryError when it fails or says nothing)."""
    env = dict(
        os.environ,
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_DEPRECATION_WARNINGS="0",
        # an unparsable source is an error, not an empty fleet
        ANSIBLE_INVENTORY_UNPARSED_FAILED="1",
    )
    try:
        done = subprocess.run(
            [_ansible_inventory(), "-i", str(source), "--list"],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=env,
        )
    except subprocess.TimeoutExpired:
        raise InventoryError(f"inventory {source}: ansible-inventory did not answer within {timeout_s:g}s") from None
    if done.returncode != 0:
        raise InventoryError(
            f"inventory {source}: ansible-inventory failed (rc {done.returncode}): {done.stderr.strip()[-2000:]}"
        )
    try:
        listing = json.loads(done.stdout)
    except json.JSONDecodeError as exc:
        raise InventoryError(f"inventory {source}: ansible-inventory printed no JSON: {exc}") from None
    if not isinstance(listing, dict):
        raise InventoryError(f"inventory {source}: ansible-inventory printed {type(listing).__name__}, not an object")
    return listing


class Inventory:
    """Hosts, host variables and group members from an Ansible inventory (see the module docstring)."""

    def __init__(
        self,
        source: str | Path | None = None,
        *,
        refresh_s: float = DEFAULT_REFRESH_S,
        name_var: str = DEFAULT_NAME_VAR,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self.refresh_s = refresh_s
        self.name_var = name_var
        self.clock = clock
        self.last_error: str | None = None
        self._lock = threading.Lock()
        self._refreshing: threading.Thread | None = None
        self.hostvars_: dict[str, dict] = {}
        self.groups_: dict[str, frozenset[str]] = {}
        self.aliases_: dict[str, str] = {}
        self.loaded_at_: float | None = None
        if source is not None:
            self.refresh(raise_errors=True)

    @classmethod
    def from_listing(cls, listing: dict, *, name_var: str = DEFAULT_NAME_VAR) -> Inventory:
        """An inventory from an `ansible-inventory --list` answer (no source: never refreshed)."""
        inv = cls(None, name_var=name_var)
        inv._load(listing)
        return inv

    # --- reading --------------------------------------------------------------------------
    def refresh(self, *, raise_errors: bool = False) -> bool:
        """Re-read the source. True when the view changed to the new answer; on failure the last
        good view stays (InventoryError when `raise_errors` or nothing was ever read)."""
        if self.source is None:
            return False
        try:
            listing = list_inventory(self.source)
        except InventoryError as exc:
            self.last_error = str(exc)
            self.loaded_at_ = self.clock()  # retried after refresh_s, not on every lookup
            if raise_errors or not self.hostvars_ and not self.groups_:
                raise
            log.warning("%s; keeping the inventory read before", exc)
            return False
        self._load(listing)
        self.last_error = None
        return True

    def maybe_refresh(self, *, wait: bool = False) -> None:
        """Refresh when `refresh_s` have passed since the last read, in a background thread (the
        lookups keep answering from the current view meanwhile); `wait` reads in this thread.
        Errors are logged and kept in `last_error`, never raised."""
        if self.source is None or self.loaded_at_ is None or self.clock() - self.loaded_at_ < self.refresh_s:
            return
        if self._refreshing is not None and self._refreshing.is_alive():
            return

        def run() -> None:
            try:
                self.refresh()
            except InventoryError as exc:
                log.warning("%s", exc)

        if wait:
            run()
            return
        self._refreshing = threading.Thread(target=run, name="inventory-refresh", daemon=True)
        self._refreshing.start()

    def _load(self, listing: dict) -> None:
        meta = listing.get("_meta") or {}
        hostvars = {str(h): dict(v or {}) for h, v in (meta.get("hostvars") or {}).items()}
        direct: dict[str, set[str]] = {}
        children: dict[str, list[str]] = {}
        for name, body in listing.items():
            if name == "_meta" or not isinstance(body, dict):
                continue
            direct[name] = {str(h) for h in body.get("hosts") or ()}
            children[name] = [str(c) for c in body.get("children") or ()]
            for h in direct[name]:
                hostvars.setdefault(h, {})

        def members(group: str, seen: frozenset = frozenset()) -> set[str]:
            out = set(direct.get(group, ()))
            for child in children.get(group, ()):
                if child not in seen:
                    out |= members(child, seen | {group})
            return out

        groups = {g: frozenset(members(g)) for g in direct}
        groups["all"] = frozenset(hostvars)
        aliases: dict[str, str] = {}
        for host, hv in hostvars.items():
            alias = hv.get(self.name_var)
            if isinstance(alias, str) and alias and alias != host:
                if alias in aliases and aliases[alias] != host:
                    log.warning(
                        "inventory: %s=%s on both %s and %s; %s wins",
                        self.name_var,
                        alias,
                        aliases[alias],
                        host,
                        min(aliases[alias], host),
                    )
                    host = min(aliases[alias], host)
                aliases[alias] = host
        with self._lock:
            self.hostvars_, self.groups_, self.aliases_ = hostvars, groups, aliases
            self.loaded_at_ = self.clock()

    # --- lookups --------------------------------------------------------------------------
    @property
    def hosts(self) -> frozenset[str]:
        return frozenset(self.hostvars_)

    def resolve(self, host: str) -> str | None:
        """The inventory name of the incident's `host` (by name, else by `name_var`), or None."""
        if host in self.hostvars_:
            return host
        return self.aliases_.get(host)

    def names(self, host: str) -> set[str]:
        """Every name of `host`: as given, its inventory name and its `name_var` value."""
        out = {host}
        name = self.resolve(host)
        if name is not None:
            out.add(name)
            alias = self.hostvars_[name].get(self.name_var)
            if isinstance(alias, str) and alias:
                out.add(alias)
        return out

    def target(self, host: str) -> HostTarget | None:
        """The playbook target for the incident's `host`, or None when it is not in the inventory."""
        name = self.resolve(host)
        return None if name is None else HostTarget(name, dict(self.hostvars_[name]))

    def address(self, host: str) -> str | None:
        """The address the inventory gives the incident's `host` (`ansible_host`, else its inventory
        name), or None when the host is not in the inventory: what a health check should connect to."""
        target = self.target(host)
        return None if target is None else target.address

    def members(self, group: str) -> frozenset[str]:
        """The inventory hosts of `group` (children included); empty for an unknown group."""
        return self.groups_.get(group, frozenset())

    def has_group(self, group: str) -> bool:
        return group in self.groups_

    def group_names(self, host: str) -> list[str]:
        """The groups (sorted) the incident's `host` belongs to."""
        name = self.resolve(host)
        if name is None:
            return []
        return sorted(g for g, m in self.groups_.items() if name in m)


def host_address(inventory: Inventory | None, host: str) -> str | None:
    """The inventory address of `host` (None without an inventory or for a host outside it)."""
    return None if inventory is None else inventory.address(host)


__all__ = ["HostTarget", "Inventory", "InventoryError", "host_address", "list_inventory"]
