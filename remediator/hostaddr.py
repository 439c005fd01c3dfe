"""Where the controller finds a host's own address: health checks go there, never to a URL that
an exporter (or anything else on the bus) names.

A policy variable ``{host_url: {port: 8080, path: /healthz}}`` renders to
``http://ADDRESS:8080/healthz`` where ADDRESS is the incident host's address from the address
source: the policy's ``inventory`` map (host → address) by default. The source is one small
pluggable function (`use_address_source`): an Ansible inventory lookup can replace it without
touching the policy code. An address must be an IP address or a DNS name; anything else (a
user, a path, a port) is refused. The policy's ``url_allow`` globs, when given, must also match.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable

AddressSource = Callable[[str], "str | None"]
_DNS = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}"
    r"[A-Za-z0-9])?)*$"
)
_plugged: AddressSource | None = None


def use_address_source(source: AddressSource | None) -> None:
    """Plug in another lookup (e.g. an Ansible inventory's host address); None restores the policy map."""
    global _plugged
    _plugged = source


def checked(address: str) -> str:
    """`address` as it goes into a URL (IPv6 in brackets); ValueError when it is not an address."""
    try:
        ip = ipaddress.ip_address(address)
        return f"[{ip}]" if ip.version == 6 else str(ip)
    except ValueError:
        pass
    if not _DNS.match(address):
        raise ValueError(f"{address!r} is not an IP address or DNS name")
    return address


def address_source(inventory: dict[str, str]) -> AddressSource:
    """The lookup the remediator uses: the plugged-in source first, then the policy's inventory."""

    def lookup(host: str) -> str | None:
        if _plugged is not None:
            found = _plugged(host)
            if found:
                return found
        return inventory.get(host)

    return lookup
