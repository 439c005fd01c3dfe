"""Which optional extra a command needs, and the one-line message when it is not installed.

`pip install fleetmedic` installs the exporters and the read-only commands. The stages that
need heavy packages live behind extras (pyproject.toml's ``[project.optional-dependencies]``):

========== ===================================== ==========================================
extra      brings                                commands
========== ===================================== ==========================================
detect     scikit-learn                          detect, detect csv, eval, model
remediate  ansible-core, ansible-runner, ansible remediate, playbook try
review     scikit-learn, matplotlib              report, replay
all        all of the above                      demo
========== ===================================== ==========================================

A stage command calls `require(extra, command)` first; a missing module raises `MissingExtra`
(a SystemExit, so it prints one line and exits 1, with no traceback):

>>> require("detect", "fleetmedic detect", find=lambda module: None)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
fleetmedic.extras.MissingExtra: fleetmedic detect needs the [detect] extra (...): pip install 'fleetmedic[detect]'
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable

# extra -> (import name, distribution name) that must be importable
EXTRAS: dict[str, tuple[tuple[str, str], ...]] = {
    "detect": (("sklearn", "scikit-learn"),),
    "remediate": (("ansible", "ansible-core"), ("ansible_runner", "ansible-runner")),
    "review": (("sklearn", "scikit-learn"), ("matplotlib", "matplotlib")),
}
EXTRAS["all"] = tuple(dict.fromkeys(m for mods in EXTRAS.values() for m in mods))


class MissingExtra(SystemExit):
    """An extra the command needs is not installed; str() is the one-line message."""

    def __init__(self, extra: str, command: str, distribution: str) -> None:
        self.extra, self.command, self.distribution = extra, command, distribution
        super().__init__(
            f"{command} needs the [{extra}] extra ({distribution} is not installed): pip install 'fleetmedic[{extra}]'"
        )

    def __str__(self) -> str:
        return self.args[0]


def _find(module: str):
    try:
        return importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None


def require(extra: str, command: str, find: Callable[[str], object] = _find) -> None:
    """Raise MissingExtra when a module of `extra` cannot be imported."""
    for module, distribution in EXTRAS[extra]:
        if find(module) is None:
            raise MissingExtra(extra, command, distribution)


def extra_for_module(module: str | None) -> tuple[str, str] | None:
    """(extra, distribution) for a top-level module that an extra brings, e.g. 'sklearn'."""
    top = (module or "").split(".")[0]
    for extra in ("detect", "remediate", "review"):
        for name, distribution in EXTRAS[extra]:
            if name == top:
                return extra, distribution
    return None
