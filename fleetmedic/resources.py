"""Where fleetmedic finds its own files and keeps a service's files, wherever it is started from.

Two questions, answered once for every stage:

- `bundled(name)`: the folder of a data tree that ships with the code (``playbooks``,
  ``deploy``, ``schemas``). In an installed wheel they live in ``fleetmedic/_bundled/NAME``
  (setup.py copies them there); in a source checkout they are the repo's own top-level folders.
- `default_state_dir()`: where a service keeps what must survive a restart (exporter spools,
  log positions, ansible-runner artifacts) when no flag names a place. Never the working
  directory: ``$STATE_DIRECTORY`` when systemd's ``StateDirectory=`` set it, else
  ``$XDG_STATE_HOME/fleetmedic`` when that is set, else ``/var/lib/fleetmedic`` for root, else
  ``~/.local/state/fleetmedic``. ``Settings.state_dir`` (``FLEETMEDIC_STATE_DIR``) overrides it.

>>> bundled("playbooks").joinpath("restart_service.yml").is_file()
True
>>> default_state_dir({"STATE_DIRECTORY": "/var/lib/fleetmedic"}, uid=1000)
PosixPath('/var/lib/fleetmedic')
>>> default_state_dir({"HOME": "/home/sre"}, uid=1000)
PosixPath('/home/sre/.local/state/fleetmedic')
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
BUNDLED = ("playbooks", "deploy", "schemas")


def bundled(name: str) -> Path:
    """The shipped data folder `name` (one of BUNDLED), installed or in a checkout."""
    if name not in BUNDLED:
        raise ValueError(f"{name!r} is not a bundled folder ({', '.join(BUNDLED)})")
    installed = _PACKAGE / "_bundled" / name
    return installed if installed.is_dir() else _PACKAGE.parent / name


def default_state_dir(environ: Mapping[str, str] | None = None, uid: int | None = None) -> Path:
    """A service's state folder when nothing names one (see the module docstring for the order)."""
    environ = os.environ if environ is None else environ
    uid = os.geteuid() if uid is None else uid
    # systemd may list several (StateDirectory=a b): the first is ours
    if environ.get("STATE_DIRECTORY"):
        return Path(environ["STATE_DIRECTORY"].split(":")[0])
    xdg = environ.get("XDG_STATE_HOME")
    if xdg and Path(xdg).is_absolute():  # the XDG spec ignores relative values
        return Path(xdg) / "fleetmedic"
    if uid == 0:
        return Path("/var/lib/fleetmedic")
    return Path(environ.get("HOME") or os.path.expanduser("~")) / ".local" / "state" / "fleetmedic"
