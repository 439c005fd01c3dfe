"""The one call into ansible-runner: run an allowed playbook with typed variables, summarise it.

Everything the remediator executes goes through `run_playbook`. It refuses a playbook that does
not resolve to a file inside the allowed directory, passes variables as data (a YAML file that
ansible-playbook reads with `-e @file`), never as text on a command line, honours a timeout and a
cancel event (killing the play's processes, `PlayStopper`), summarises the runner's events into a
`RunSummary` (remediator/run_events.py), and keeps only the newest
artifact directories, without the environment in them.

Where a playbook runs is declared by the playbook, never guessed: every play's `hosts:` is either
`fleetmedic_target` (host-side: it acts on the incident's host, over SSH with the inventory's
connection settings) or `localhost` (controller-side: Slurm, Kubernetes; it drives an API from the
remediator's machine and gets the node as a variable). Anything else is refused. A run's
inventory holds exactly one host (the target, with its inventory variables, in group
`fleetmedic_target`; or the controller's `localhost`) and `--limit` names it, so a playbook can
never touch another host. Every run gets `fleetmedic_host` (the target's inventory name). A host
that cannot be reached (SSH down, authentication refused) ends `unreachable`, not `failed`.

Every string variable is tagged `!unsafe`: Ansible would otherwise template extra vars, and an
incident field such as `{{ lookup('pipe', 'rm -rf /') }}` would run on the controller.

Example (runs a real playbook; the demo service does not need to be running for `--check`)::

    >>> from pathlib import Path
    >>> result = run_playbook(  # doctest: +SKIP
    ...     PlaybookRun("collect_diagnostics.yml", {"target_host": "node1"}, check=True),
    ...     playbooks_dir=Path("playbooks"), artifacts_dir=Path("/tmp/fm-artifacts"))
    >>> result.status, result.summary.failed  # doctest: +SKIP
    ('succeeded', 0)
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from fleetmedic.schemas import RunSummary

from .run_events import EventSummary

if TYPE_CHECKING:
    from .inventory import HostTarget

log = logging.getLogger(__name__)
RunStatus = Literal["succeeded", "failed", "timed_out", "cancelled", "unreachable"]
Side = Literal["host", "controller"]
ExtraVar = str | int | float | bool

# ansible-runner's final states → ours. "error" (the process could not start) is a failure.
_STATUS: dict[str, RunStatus] = {
    "successful": "succeeded",
    "failed": "failed",
    "timeout": "timed_out",
    "canceled": "cancelled",
    "error": "failed",
}
_VAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_PLAYBOOK_SUFFIXES = (".yml", ".yaml")
TARGET_GROUP = "fleetmedic_target"  # `hosts:` of a host-side play
CONTROLLER = "localhost"  # `hosts:` of a controller-side play
TARGET_VAR = "fleetmedic_host"  # every run's variable naming the target's inventory host
# the connection of a target without an inventory (single-machine mode) and of the controller
_LOCAL = {"ansible_connection": "local"}
DEFAULT_KEEP_ARTIFACTS = 50
CANCEL_POLL_S = 0.2  # how often a running play's cancel event is looked at


class PlaybookRefused(ValueError):
    """The run was refused before anything started: bad playbook path or bad variables."""


@dataclass(frozen=True)
class PlaybookRun:
    """What to run: a playbook file name inside the allowed directory, its variables, and the target.

    `target` is the incident's inventory host (`remediator.inventory.HostTarget`: its name and its
    inventory variables, connection settings included). None: single-machine mode, the target is
    this machine (`localhost`, local connection)."""

    playbook: str
    extra_vars: dict[str, ExtraVar] = field(default_factory=dict)
    check: bool = False
    timeout_s: float = 300.0
    target: HostTarget | None = None


@dataclass(frozen=True)
class RunResult:
    """How a run ended. `artifacts` is the run's artifact directory (None once pruned)."""

    status: RunStatus
    rc: int
    started_at: datetime
    finished_at: datetime
    summary: RunSummary
    artifacts: Path | None
    # what the play published with `set_stats` (e.g. collect_diagnostics.yml's diagnostics_file)
    stats: dict = field(default_factory=dict)
    side: Side = "controller"
    target: str = CONTROLLER  # the inventory host the run was limited to
    # why the host could not be reached (Ansible's message), for an `unreachable` run
    unreachable_reason: str | None = None

    @property
    def duration_s(self) -> float:
        return (self.finished_at - self.started_at).total_seconds()


def resolve_playbook(name: str, playbooks_dir: Path) -> Path:
    """The playbook's real path, or PlaybookRefused when it is not a plain file inside the dir.

    Checked on the name (no absolute path, no '..', a .yml/.yaml suffix) and again on the fully
    resolved path, so a symlink that points outside the directory is refused too.
    """
    if not isinstance(name, str) or not name or "\x00" in name:
        raise PlaybookRefused(f"playbook {name!r}: not a file name")
    candidate = Path(name)
    if candidate.is_absolute():
        raise PlaybookRefused(f"playbook {name!r}: absolute paths are not allowed")
    if ".." in candidate.parts:
        raise PlaybookRefused(f"playbook {name!r}: '..' is not allowed")
    if candidate.suffix not in _PLAYBOOK_SUFFIXES:
        raise PlaybookRefused(f"playbook {name!r}: must end in .yml or .yaml")
    root = Path(playbooks_dir).resolve()
    try:
        real = (root / candidate).resolve(strict=True)
    except (FileNotFoundError, RuntimeError) as exc:
        raise PlaybookRefused(f"playbook {name!r}: not found in {root}") from exc
    if not real.is_relative_to(root):
        raise PlaybookRefused(f"playbook {name!r}: resolves to {real}, outside {root}")
    if not real.is_file():
        raise PlaybookRefused(f"playbook {name!r}: not a regular file")
    return real


def playbook_side(path: Path) -> Side:
    """Where the playbook declares it runs: `host` (every play `hosts: fleetmedic_target`) or
    `controller` (every play `hosts: localhost`). PlaybookRefused for anything else (no guessing)."""
    import yaml

    try:
        plays = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise PlaybookRefused(f"playbook {path.name}: not readable as YAML: {exc}") from None
    if not isinstance(plays, list) or not plays:
        raise PlaybookRefused(f"playbook {path.name}: not a list of plays")
    declared = set()
    for i, play in enumerate(plays):
        hosts = play.get("hosts") if isinstance(play, dict) else None
        if hosts not in (TARGET_GROUP, CONTROLLER):
            raise PlaybookRefused(
                f"playbook {path.name}: play {i} has hosts: {hosts!r}; declare `hosts: {TARGET_GROUP}` (runs on the "
                f"incident's host over SSH) or `hosts: {CONTROLLER}` (runs on the controller)"
            )
        declared.add(hosts)
    if len(declared) > 1:
        raise PlaybookRefused(f"playbook {path.name}: mixes host-side and controller-side plays; split it")
    return "host" if declared == {TARGET_GROUP} else "controller"


def where_it_runs(playbook: str, playbooks_dir: Path, target: HostTarget | None) -> str:
    """One line for the record: which side the playbook declares and which host it acts on."""
    try:
        side = playbook_side(resolve_playbook(playbook, playbooks_dir))
    except PlaybookRefused as exc:
        return str(exc)
    if side == "controller":
        node = f" for {target.name}" if target is not None else ""
        return f"controller-side: runs on the controller{node}"
    if target is None:
        return "host-side: no inventory, runs on this machine (local connection)"
    address = target.hostvars.get("ansible_host", target.name)
    return f"host-side: runs on {target.name} ({address}) over SSH, limited to that host"


def run_inventory(side: Side, target: HostTarget | None) -> tuple[str, dict]:
    """(the host the run is limited to, the run's one-host inventory) for `side` and `target`."""
    local = dict(_LOCAL, ansible_python_interpreter=sys.executable)
    if side == "controller":
        return CONTROLLER, {"all": {"hosts": {CONTROLLER: local}}}
    if target is None:  # single-machine mode: the target is this machine
        return CONTROLLER, {"all": {"children": {TARGET_GROUP: {"hosts": {CONTROLLER: local}}}}}
    name = str(target.name)
    if not _HOST_NAME.match(name):
        raise PlaybookRefused(f"target {name!r}: not an inventory host name")
    # the target's own inventory variables (group vars merged in): user, key, port, become, ...
    return name, {"all": {"children": {TARGET_GROUP: {"hosts": {name: dict(target.hostvars)}}}}}


_HOST_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:@-]{0,252}$")


def validate_extra_vars(extra_vars: dict) -> dict[str, ExtraVar]:
    """The variables, checked: identifier names, scalar values, no `ansible_*` overrides.

    Extra vars have the highest precedence in Ansible, so a name such as `ansible_connection`
    would let an incident field change how or where the play runs: refused.
    """
    checked: dict[str, ExtraVar] = {}
    for name, value in extra_vars.items():
        if not isinstance(name, str) or not _VAR_NAME.match(name):
            raise PlaybookRefused(f"extra var {name!r}: names are identifiers ([A-Za-z_][A-Za-z0-9_]*)")
        if name.startswith("ansible_"):
            raise PlaybookRefused(f"extra var {name!r}: ansible_* variables are set by the runner only")
        if not isinstance(value, (str, int, float, bool)):
            raise PlaybookRefused(f"extra var {name!r}: {type(value).__name__} is not a str, int, float or bool")
        if isinstance(value, float) and not math.isfinite(value):
            raise PlaybookRefused(f"extra var {name!r}: not a finite number")
        checked[name] = value
    return checked


def write_extra_vars(extra_vars: dict[str, ExtraVar], path: Path) -> Path:
    """Write the variables as YAML with every string `!unsafe` (never templated by Ansible).

    A JSON string is a valid YAML double-quoted scalar, so json.dumps quotes each value exactly.
    """
    lines = []
    for name, value in extra_vars.items():
        if isinstance(value, str):
            lines.append(f"{name}: !unsafe {json.dumps(value)}")
        else:
            lines.append(f"{name}: {json.dumps(value)}")
    path.write_text("\n".join(lines) + "\n" if lines else "{}\n", encoding="utf-8")
    path.chmod(0o600)
    return path


def ansible_bin_dir() -> Path:
    """The directory holding ansible-playbook: this interpreter's bin first, then PATH."""
    here = Path(sys.executable).parent
    if (here / "ansible-playbook").exists():
        return here
    found = shutil.which("ansible-playbook")
    if found is None:
        raise RuntimeError("ansible-playbook not found next to this Python nor on PATH")
    return Path(found).parent


def prune_artifacts(artifacts_dir: Path, keep: int) -> None:
    """Keep the newest `keep` run directories (by modification time), delete the rest."""
    runs = []
    for path in Path(artifacts_dir).iterdir():
        try:
            if path.is_dir() and not path.is_symlink():
                runs.append((path.stat().st_mtime, path))
        except FileNotFoundError:  # pruned meanwhile by a concurrent run
            continue
    runs.sort(reverse=True)
    for _, old in runs[max(keep, 0) :]:
        shutil.rmtree(old, ignore_errors=True)


def _close_ssh_masters(control_dir: Path) -> None:
    """Stop the run's SSH master connections (ControlPersist would keep them for minutes)."""
    if not control_dir.is_dir():
        return
    for sock in control_dir.iterdir():
        try:
            subprocess.run(
                ["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "fleetmedic-run"], capture_output=True, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired):
            log.warning("could not close the SSH master %s", sock)


def _scrub(artifact: Path) -> None:
    # ansible-runner writes the whole process environment into `command`: keep no copy of it.
    (artifact / "command").unlink(missing_ok=True)
    shutil.rmtree(artifact / "env", ignore_errors=True)


class PlayStopper:
    """ansible-runner's cancel callback for one run: stops it when `cancel` is set ("cancelled") or
    at `deadline` on the monotonic clock (`timed_out` set), killing the play's processes first.

    ansible-runner itself only SIGKILLs ansible-playbook's process group, and the processes that
    do the work are not in it (ansible-playbook's task worker starts a session of its own, and the
    module's processes run in it): a cancelled or
    timed-out `sleep 60` task went on for its 60 s after the run had "stopped". So before saying
    stop, this kills every descendant of this run's ansible-playbook process (found among this
    process's children by `marker`, a path only its command line holds), while the tree is still
    whole. A remote command's own processes are beyond reach: their SSH connection is what ends.
    """

    def __init__(self, cancel: threading.Event, deadline: float, marker: str):
        self.cancel, self.deadline, self.marker = cancel, deadline, marker
        self.timed_out = False

    def __call__(self) -> bool:
        if not self.cancel.is_set():
            if time.monotonic() < self.deadline:
                return False
            self.timed_out = True
        self.kill_play()
        return True

    def kill_play(self) -> int:
        """SIGKILL every descendant of this run's ansible-playbook; returns how many were signalled."""
        import psutil

        killed = 0
        for child in psutil.Process().children():
            try:
                if not any(self.marker in arg for arg in child.cmdline()):
                    continue
                for proc in child.children(recursive=True):
                    proc.kill()
                    killed += 1
            except psutil.Error:  # gone meanwhile: nothing left to stop
                continue
        return killed


def run_playbook(
    run: PlaybookRun,
    *,
    playbooks_dir: Path,
    artifacts_dir: Path,
    cancel: threading.Event | None = None,
    on_start: Callable[[], None] | None = None,
    keep_artifacts: int = DEFAULT_KEEP_ARTIFACTS,
) -> RunResult:
    """Run one playbook on its declared side (see the module docstring) and report how it ended.

    Raises PlaybookRefused (before anything runs, and before `on_start`) for a playbook outside
    `playbooks_dir`, one that does not declare its side, or bad variables. `on_start` is called
    right before the playbook process is started; if it raises, nothing runs. Setting `cancel`
    stops a running play ("cancelled"); passing `timeout_s` stops it as "timed_out"; a target that
    cannot be reached ends "unreachable".
    """
    import ansible_runner  # imported here: it is slow to import and only this module needs it

    playbook = resolve_playbook(run.playbook, playbooks_dir)
    side = playbook_side(playbook)
    extra_vars = validate_extra_vars(dict(run.extra_vars))
    limit, inventory = run_inventory(side, run.target)
    extra_vars[TARGET_VAR] = str(run.target.name) if run.target is not None else CONTROLLER
    if not (run.timeout_s > 0 and math.isfinite(run.timeout_s)):
        raise PlaybookRefused(f"timeout_s {run.timeout_s!r}: must be a positive number of seconds")
    artifacts_dir = Path(artifacts_dir)
    artifacts_dir.mkdir(parents=True, exist_ok=True)
    bin_dir = ansible_bin_dir()
    ident = f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{playbook.stem}-{uuid.uuid4().hex[:8]}"
    events = EventSummary()
    cancel = cancel or threading.Event()

    from fleetmedic.secrets import scrub_environment

    envvars = {
        # no connection secret (FLEETMEDIC_SECURITY__*) reaches the play, its facts or artifacts
        **scrub_environment(),
        # ansible-runner starts "ansible-playbook" by name: the venv's bin goes first on PATH
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_RETRY_FILES_ENABLED": "0",
        "ANSIBLE_HOST_KEY_CHECKING": "0",
        "ANSIBLE_DEPRECATION_WARNINGS": "0",
        # SSH: pipelining, and one master connection per run shared by its tasks; the master's
        # socket lives in the run's private directory and is closed when the run ends (see
        # _close_ssh_masters), so no connection outlives the run
        "ANSIBLE_PIPELINING": "1",
        "ANSIBLE_SSH_ARGS": "-o ControlMaster=auto -o ControlPersist=120s -o ConnectTimeout=10",
        "ANSIBLE_TIMEOUT": "10",
    }

    # ansible-runner's private data dir holds the inventory and the variables file: it lives only
    # for this run; the artifacts (events, stdout, rc, status) go to artifacts_dir/ident.
    with tempfile.TemporaryDirectory(prefix="fm-run-") as private:
        envvars["ANSIBLE_LOCAL_TEMP"] = str(Path(private) / "tmp")
        envvars["ANSIBLE_SSH_CONTROL_PATH_DIR"] = str(Path(private) / "cp")
        # ansible-runner's own `extravars` would be templated: pass our `!unsafe` file instead.
        vars_file = write_extra_vars(extra_vars, Path(private) / "fleetmedic-extra-vars.yml")
        # ansible-runner asks the cancel callback once per pexpect wake-up (default every 5 s of a
        # silent play): wake often, so `fleetmedic pause` stops a run within a second.
        (Path(private) / "env").mkdir()
        (Path(private) / "env" / "settings").write_text(f"pexpect_timeout: {CANCEL_POLL_S}\n")
        cmdline = f"-e @{shlex.quote(str(vars_file))} --limit {shlex.quote(limit)}" + (
            " --check --diff" if run.check else ""
        )
        if on_start is not None:
            on_start()
        started_at = datetime.now(UTC)
        stopper = PlayStopper(cancel, time.monotonic() + run.timeout_s, str(vars_file))
        outcome = ansible_runner.run(
            private_data_dir=private,
            project_dir=str(playbook.parent),
            playbook=str(playbook),
            inventory=inventory,
            envvars=envvars,
            cmdline=cmdline,
            artifact_dir=str(artifacts_dir),
            ident=ident,
            # the stopper ends the run at timeout_s; ansible-runner's own timeout is only a backstop
            timeout=max(1, math.ceil(run.timeout_s)) + 30,
            cancel_callback=stopper,  # also keeps ansible-runner off our signal handlers
            event_handler=events,
            suppress_env_files=True,
            quiet=True,
        )
        finished_at = datetime.now(UTC)
        _close_ssh_masters(Path(private) / "cp")

    artifact = artifacts_dir / ident
    if artifact.is_dir():
        _scrub(artifact)
    prune_artifacts(artifacts_dir, keep_artifacts)
    status = _STATUS.get(outcome.status, "failed")
    if status == "cancelled" and stopper.timed_out:
        status = "timed_out"
    summary = events.summary()
    if summary.unreachable and status == "failed":
        status = "unreachable"
    rc = outcome.rc if isinstance(outcome.rc, int) else -1
    return RunResult(
        status=status,
        rc=rc,
        started_at=started_at,
        finished_at=finished_at,
        summary=summary,
        artifacts=artifact if artifact.is_dir() else None,
        stats=dict((events.stats or {}).get("artifact_data") or {}),
        side=side,
        target=limit,
        unreachable_reason=events.unreachable_msg if status == "unreachable" else None,
    )
