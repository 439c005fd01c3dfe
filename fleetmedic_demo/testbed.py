"""The local remediation targets, for tests, benchmarks and the demo.

`DemoService` runs deploy/testbed/demo-service.sh (supervisord with an HTTP service as program
`demo`); `SlurmCluster` runs deploy/testbed/slurm.sh (a real two-node Slurm cluster). Both keep
everything under a directory the caller gives and stop what they started, e.g.::

    with DemoService(Path("/tmp/fm-demo"), port=18080) as demo:
        demo.kill9()
        demo.restart_vars()

The scripts come from the checkout or the installed package's bundled copy:

>>> sorted(p.name for p in TESTBED_DIR.glob("*.sh"))[:2]
['demo-service.sh', 'fleet.sh']
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

from fleetmedic.resources import bundled

TESTBED_DIR = bundled("deploy") / "testbed"


def _script(name: str, *args: str, env: dict | None = None, timeout_s: float = 60.0) -> str:
    full_env = dict(os.environ, PYTHON=sys.executable, **(env or {}))
    done = subprocess.run(
        ["bash", str(TESTBED_DIR / name), *args], capture_output=True, text=True, env=full_env, timeout=timeout_s
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"{name} {' '.join(args)} failed (rc {done.returncode}): {done.stderr.strip() or done.stdout.strip()}"
        )
    return done.stdout


class DemoService:
    """supervisord + program `demo` (an HTTP service on 127.0.0.1:port) under `directory`."""

    program = "demo"

    def __init__(self, directory: Path, port: int):
        self.directory = Path(directory).resolve()
        self.port = port

    @property
    def config(self) -> Path:
        return self.directory / "supervisord.conf"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self) -> DemoService:
        _script("demo-service.sh", "start", str(self.directory), str(self.port))
        return self

    def stop(self) -> None:
        _script("demo-service.sh", "stop", str(self.directory))

    def __enter__(self) -> DemoService:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def answer(self, timeout_s: float = 1.0) -> dict | None:
        """The service's JSON answer ({"service", "pid"}), or None when it does not answer."""
        try:
            with urllib.request.urlopen(self.url, timeout=timeout_s) as response:
                return json.loads(response.read()) if response.status == 200 else None
        except OSError:
            return None

    def status(self) -> str:
        """supervisorctl's status line for the program (RUNNING, EXITED, ...)."""
        ctl = Path(sys.executable).parent / "supervisorctl"
        done = subprocess.run(
            [str(ctl), "-c", str(self.config), "status", self.program], capture_output=True, text=True, timeout=10
        )
        return done.stdout.strip()

    def kill9(self) -> int:
        """The fault: SIGKILL the service's process. Returns the pid killed."""
        answer = self.answer()
        if answer is None:
            raise RuntimeError("demo does not answer: nothing to kill")
        os.kill(int(answer["pid"]), signal.SIGKILL)
        return int(answer["pid"])

    def restart_vars(self) -> dict[str, str]:
        """The restart_service.yml variables for this service."""
        return {"service": self.program, "supervisor_config": str(self.config), "health_url": self.url}


def slurm_missing_reason() -> str | None:
    """Why a Slurm cluster cannot run here, or None when it can."""
    for tool in ("slurmctld", "slurmd", "munged", "scontrol", "sbatch"):
        if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists():
            return f"{tool} not installed (deploy/testbed/slurm.sh install: apt-get install slurm-wlm munge)"
    if os.geteuid() != 0:
        return "the Slurm testbed runs its daemons as root (SlurmUser=root): not root"
    return None


def free_port_block(count: int, low: int = 20000, high: int = 32000) -> int:
    """The first of `count` consecutive free ports, below the kernel's ephemeral range (32768+), where
    the client sockets of Kafka and friends would otherwise take one of them between check and bind."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(low, high - count)
        try:
            for port in range(base, base + count):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError(f"no {count} consecutive free ports in {low}-{high}")


class SlurmCluster:
    """A real two-node Slurm cluster (node1, node2, partition gpu) under `directory`.

    It uses four consecutive ports from `port_base` (slurmctld, slurmd, node1, node2); by default a
    free block is chosen."""

    def __init__(self, directory: Path, port_base: int | None = None):
        self.directory = Path(directory).resolve()
        self.port_base = port_base if port_base is not None else free_port_block(4)

    @property
    def conf(self) -> Path:
        return self.directory / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.conf)}

    def start(self) -> SlurmCluster:
        _script("slurm.sh", "start", str(self.directory), env={"SLURM_PORT_BASE": str(self.port_base)})
        return self

    def stop(self) -> None:
        _script("slurm.sh", "stop", str(self.directory))

    def __enter__(self) -> SlurmCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def run(self, *argv: str) -> str:
        env = dict(os.environ, **self.env)
        return subprocess.run(list(argv), capture_output=True, text=True, env=env, check=True, timeout=30).stdout

    def submit(self, node: str, seconds: int = 300) -> str:
        """A requeueable batch job pinned to `node`; returns its id."""
        return self.run(
            "sbatch",
            "--parsable",
            "--requeue",
            "-w",
            node,
            f"--chdir={self.directory}",
            f"--output={self.directory}/job-%j.out",
            "--wrap",
            f"sleep {seconds}",
        ).strip()

    def job(self, job_id: str) -> dict[str, str]:
        """`scontrol show job` as a dict (JobState, NodeList, Restarts, ...)."""
        return dict(
            field.split("=", 1) for field in self.run("scontrol", "show", "job", "-o", job_id).split() if "=" in field
        )

    def node(self, name: str) -> dict[str, str]:
        """`scontrol show node`: State, and Reason (without its [user@time] suffix)."""
        text = self.run("scontrol", "show", "node", "-o", name).strip()
        fields = dict(f.split("=", 1) for f in text.split(" Reason=")[0].split() if "=" in f)
        if " Reason=" in text:
            reason = text.split(" Reason=", 1)[1]
            fields["Reason"] = reason.rsplit(" [", 1)[0] if reason.endswith("]") else reason
        return fields


def fleet_missing_reason() -> str | None:
    """Why the multi-host testbed (deploy/testbed/fleet.sh) cannot run here, or None when it can."""
    if os.geteuid() != 0:
        return "the fleet testbed makes network namespaces: not root"
    for tool, package in (
        ("sshd", "openssh-server"),
        ("ssh", "openssh-client"),
        ("nc", "netcat-openbsd"),
        ("ip", "iproute2"),
        ("unshare", "util-linux"),
        ("ssh-keygen", "openssh-client"),
    ):
        if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists():
            return f"{tool} not installed (apt-get install {package})"
    return None


class FleetTestbed:
    """`count` hosts PREFIX1..PREFIXcount, each a network + UTS namespace with sshd, supervisord +
    the demo service (and, with `exporters`, a host exporter), built by deploy/testbed/fleet.sh
    under `directory`. `inventory` is the Ansible inventory that reaches them over SSH."""

    program = "demo"

    def __init__(
        self,
        directory: Path,
        prefix: str,
        count: int = 3,
        demo_port: int = 18080,
        exporters: bool = False,
        env: dict | None = None,
        exporter_health_base: int | None = None,
    ):
        self.directory = Path(directory).resolve()
        self.prefix = prefix
        self.count = count
        self.demo_port = demo_port
        self.exporters = exporters
        self.exporter_health_base = exporter_health_base
        self.env = dict(env or {})
        if exporter_health_base is not None:
            self.env["FLEET_EXPORTER_HEALTH_BASE"] = str(exporter_health_base)

    def health_port(self, host: str) -> int | None:
        """The health port of `host`'s exporter (None without one)."""
        if self.exporter_health_base is None:
            return None
        return self.exporter_health_base + self.hosts.index(host)

    @property
    def hosts(self) -> list[str]:
        return [f"{self.prefix}{i}" for i in range(1, self.count + 1)]

    @property
    def inventory(self) -> Path:
        return self.directory / "inventory.yml"

    def supervisor_config(self, host: str) -> Path:
        return self.directory / host / "supervisord.conf"

    def start(self) -> FleetTestbed:
        args = ["start", str(self.directory), self.prefix, str(self.count), str(self.demo_port)]
        if self.exporters:
            args.append("--exporters")
        try:
            _script("fleet.sh", *args, env=self.env, timeout_s=300)  # minutes on a loaded machine
        except Exception:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        _script("fleet.sh", "stop", str(self.directory), timeout_s=120)

    def stop_sshd(self, host: str) -> None:
        _script("fleet.sh", "sshd-stop", str(self.directory), host)

    def start_sshd(self, host: str) -> None:
        _script("fleet.sh", "sshd-start", str(self.directory), host)

    def __enter__(self) -> FleetTestbed:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def status(self, host: str) -> tuple[str, int | None]:
        """(supervisor state, pid) of the host's demo program: ('RUNNING', 4242), ('EXITED', None)..."""
        ctl = Path(sys.executable).parent / "supervisorctl"
        # a generous timeout: on a loaded shared machine supervisorctl alone has taken over 10 s
        done = subprocess.run(
            [str(ctl), "-c", str(self.supervisor_config(host)), "status", self.program],
            capture_output=True,
            text=True,
            timeout=120,
        )
        fields = done.stdout.split()
        state = fields[1] if len(fields) > 1 else "UNKNOWN"
        pid = None
        if "pid" in fields:
            pid = int(fields[fields.index("pid") + 1].rstrip(","))
        return state, pid

    def answer(self, host: str, timeout_s: float = 2.0) -> dict | None:
        """The host's demo service answer ({"service", "pid"}) asked inside its namespace, or None."""
        code = (
            "import json,sys,urllib.request\n"
            f"r=urllib.request.urlopen('http://127.0.0.1:{self.demo_port}/',timeout={timeout_s})\n"
            "sys.stdout.write(r.read().decode())"
        )
        try:
            done = subprocess.run(
                ["ip", "netns", "exec", host, sys.executable, "-c", code],
                capture_output=True,
                text=True,
                timeout=timeout_s + 10,
            )
        except subprocess.TimeoutExpired:
            return None
        if done.returncode != 0:
            return None
        try:
            return json.loads(done.stdout)
        except ValueError:
            return None

    def kill9(self, host: str) -> int:
        """The fault: SIGKILL the host's demo process. Returns the pid killed."""
        state, pid = self.status(host)
        if state != "RUNNING" or pid is None:
            raise RuntimeError(f"demo on {host} is {state}: nothing to kill")
        os.kill(pid, signal.SIGKILL)
        return pid

    def restart_vars(self) -> dict[str, str]:
        """restart_service.yml variables: the service; its supervisord.conf comes from the inventory."""
        return {"service": self.program, "health_url": f"http://127.0.0.1:{self.demo_port}/"}
