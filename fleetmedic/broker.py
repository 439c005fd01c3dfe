"""The embedded default broker: Apache Kafka's own broker, from its Maven jars, on loopback.

`fetch_jars` runs Maven on deploy/kafka/pom.xml (pinned versions) into a cache that later runs
reuse; `start` formats the storage once (single-node KRaft, static quorum), launches
`kafka.Kafka` detached and waits until an admin client answers; `stop` sends SIGTERM and waits
for a clean shutdown. Data and logs live in the configured data directory; a second start
reuses them.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .config import BrokerSettings
from .resources import bundled

POM = bundled("deploy") / "kafka" / "pom.xml"
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"


class BrokerError(RuntimeError):
    """The embedded broker cannot be fetched, started or stopped; the message says why and what to do."""


@dataclass(frozen=True)
class BrokerStatus:
    running: bool
    pid: int | None
    answering: bool
    bootstrap: str
    data_dir: Path

    def describe(self) -> str:
        if not self.running:
            return f"stopped (data in {self.data_dir})"
        state = "answering" if self.answering else "not answering yet"
        return f"running, pid {self.pid}, {self.bootstrap}, {state} (data in {self.data_dir})"


def _require(tool: str, install: str) -> str:
    path = shutil.which(tool)
    if not path:
        raise BrokerError(f"{tool} not found on PATH: {install}")
    return path


def _java_major(java: str) -> int:
    out = subprocess.run([java, "-version"], capture_output=True, text=True).stderr
    # e.g. openjdk version "17.0.15" 2025-04-15
    for token in out.split('"')[1:2]:
        head = token.split(".")[0]
        return int(head) if head.isdigit() else 0
    return 0


def jar_dir(settings: BrokerSettings) -> Path:
    """Cache folder for one pom: a changed pin fetches into a new folder."""
    digest = hashlib.sha256(POM.read_bytes()).hexdigest()[:12]
    return settings.jar_cache.expanduser() / digest


def fetch_jars(settings: BrokerSettings, quiet: bool = True) -> Path:
    """Collect the broker's runtime jars with Maven, once per pinned pom."""
    target = jar_dir(settings)
    done = target / ".complete"
    if done.exists():
        return target
    mvn = _require("mvn", "install Maven (Debian: apt-get install maven)")
    _require("java", "install a Java 17+ runtime (Debian: apt-get install openjdk-17-jre-headless)")
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    cmd = [
        mvn,
        "-B",
        "-f",
        str(POM),
        f"{DEPENDENCY_PLUGIN}:copy-dependencies",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={tmp}",
    ]
    if quiet:
        cmd.insert(1, "-q")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not any(tmp.glob("kafka_2.13-*.jar")):
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise BrokerError(
            f"could not fetch the Kafka jars with Maven (exit {proc.returncode}); is Maven Central reachable?\n{tail}"
        )
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    (target / ".complete").write_text("ok\n")
    return target


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def server_properties(settings: BrokerSettings, data_dir: Path) -> str:
    p, c = settings.port, settings.controller_port
    return "\n".join(
        [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{c}",
            f"listeners=PLAINTEXT://127.0.0.1:{p},CONTROLLER://127.0.0.1:{c}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{p}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            f"log.dirs={data_dir / 'logs'}",
            "num.partitions=1",
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=4",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            "auto.create.topics.enable=false",
            "log.cleaner.backoff.ms=1000",
            "",
        ]
    )


def with_overrides(properties: str, overrides: dict[str, str]) -> str:
    """`properties` with the keys in `overrides` replaced (or added), other lines unchanged."""
    out, seen = [], set()
    for line in properties.splitlines():
        key = line.split("=", 1)[0]
        if key in overrides:
            out.append(f"{key}={overrides[key]}")
            seen.add(key)
        elif line:
            out.append(line)
    out += [f"{k}={v}" for k, v in overrides.items() if k not in seen]
    return "\n".join(out) + "\n"


class EmbeddedBroker:
    """One single-node KRaft broker whose files live in `settings.data_dir`."""

    def __init__(self, settings: BrokerSettings, secure: bool = False) -> None:
        self.settings = settings
        self.data_dir = settings.data_dir.expanduser().resolve()
        self.pid_file = self.data_dir / "broker.pid"
        self.log_file = self.data_dir / "broker.log"
        self.bootstrap = f"127.0.0.1:{settings.port}"
        # --secure (fleetmedic.pki): TLS + SASL/SCRAM listeners and Kafka's authorizer. A data
        # directory formatted secure stays secure, whatever later starts ask for.
        self.secure = secure or (self.data_dir / "secure" / "enabled").exists()

    def properties(self) -> str:
        """This broker's server.properties (a cluster node overrides it: fleetmedic/cluster.py)."""
        return server_properties(self.settings, self.data_dir)

    # -- state -------------------------------------------------------------------------
    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return pid
        # A recycled pid belonging to some other program is not our broker.
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return pid
        return pid if b"kafka.Kafka" in cmdline else None

    def answering(self, timeout_s: float = 3.0) -> bool:
        from kafka.admin import KafkaAdminClient
        from kafka.errors import KafkaError

        connect = {"bootstrap_servers": self.bootstrap}
        if self.secure:
            from .pki import admin_kafka_kwargs

            connect = admin_kafka_kwargs(self.data_dir, self.bootstrap)
        try:
            admin = KafkaAdminClient(
                **connect,
                request_timeout_ms=int(timeout_s * 1000),
                api_version_auto_timeout_ms=int(timeout_s * 1000),
                client_id="fleetmedic-broker-probe",
            )
        except (KafkaError, OSError, ValueError):
            return False
        try:
            admin.list_topics()
            return True
        except (KafkaError, OSError, ValueError):
            return False
        finally:
            admin.close()

    def status(self) -> BrokerStatus:
        pid = self.pid()
        return BrokerStatus(pid is not None, pid, pid is not None and self.answering(), self.bootstrap, self.data_dir)

    # -- lifecycle ---------------------------------------------------------------------
    def _format(self, java: str, jars: Path, props: Path, extra_args: Sequence[str] = ()) -> None:
        meta = self.data_dir / "logs" / "meta.properties"
        if meta.exists():
            if self.secure and not (self.data_dir / "secure" / "enabled").exists():
                raise BrokerError(
                    f"{self.data_dir} was formatted without --secure (it has no SCRAM users): "
                    "use another data directory (FLEETMEDIC_BROKER__DATA_DIR) for the secured broker"
                )
            return
        cp = str(jars / "*")
        cluster_id_file = self.data_dir / "cluster.id"
        if not cluster_id_file.exists():
            out = subprocess.run(
                [java, "-cp", cp, "kafka.tools.StorageTool", "random-uuid"], capture_output=True, text=True
            )
            cluster_id = out.stdout.strip().splitlines()[-1] if out.returncode == 0 and out.stdout.strip() else ""
            if not cluster_id:
                raise BrokerError(f"kafka StorageTool random-uuid failed: {out.stderr.strip()[-2000:]}")
            cluster_id_file.write_text(cluster_id + "\n")
        cluster_id = cluster_id_file.read_text().strip()
        args = ["kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props), "--ignore-formatted"]
        if extra_args:  # secrets (SCRAM passwords): through a private @-file, not the command line
            from .pki import argument_file

            argfile = argument_file(self.data_dir / "secure" / "format.args", [*args, *extra_args])
            args = [f"@{argfile}"]
        try:
            out = subprocess.run([java, "-cp", cp, *args], capture_output=True, text=True)
        finally:
            if extra_args:
                argfile.unlink(missing_ok=True)
        if out.returncode != 0:
            raise BrokerError(f"formatting the broker storage failed:\n{(out.stdout + out.stderr).strip()[-2000:]}")
        if extra_args:
            (self.data_dir / "secure" / "enabled").write_text("formatted with SCRAM users\n")

    def start(self, progress: Callable[[str], object] = print) -> float:
        """Start (or find running) and wait until it answers; returns seconds taken."""
        t0 = time.monotonic()
        if self.pid() is not None:
            if self.answering():
                progress(f"broker already running (pid {self.pid()}) on {self.bootstrap}")
                return 0.0
        java = _require("java", "install a Java 17+ runtime (Debian: apt-get install openjdk-17-jre-headless)")
        if (major := _java_major(java)) < 17:
            raise BrokerError(f"Kafka 4 needs Java 17 or newer; found Java {major} at {java}")
        for port in (self.settings.port, self.settings.controller_port):
            if not _port_free(port):
                raise BrokerError(
                    f"port {port} on 127.0.0.1 is taken by another program; "
                    "choose another with FLEETMEDIC_BROKER__PORT / FLEETMEDIC_BROKER__CONTROLLER_PORT"
                )
        progress("fetching Kafka broker jars (cached after the first time)...")
        jars = fetch_jars(self.settings)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        props = self.data_dir / "server.properties"
        text = self.properties()
        format_args: list[str] = []
        if self.secure:
            from .pki import prepare

            overrides, format_args = prepare(self.data_dir, self.settings.port, self.settings.controller_port)
            text = with_overrides(text, overrides)
        props.touch(mode=0o600)
        props.chmod(0o600)  # a secured broker's file holds its inter-broker password
        props.write_text(text)
        self._format(java, jars, props, format_args)
        heap = self.settings.heap
        cmd = [
            java,
            f"-Xmx{heap}",
            f"-Xms{heap}",
            "-XX:+UseG1GC",
            "-XX:TieredStopAtLevel=1",
            "-Djava.awt.headless=true",
            "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
            "-cp",
            str(jars / "*"),
            "kafka.Kafka",
            str(props),
        ]
        with open(self.log_file, "ab") as log_out:
            proc = subprocess.Popen(
                cmd,
                stdout=log_out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.data_dir,
                start_new_session=True,
            )
        self.pid_file.write_text(f"{proc.pid}\n")
        progress(f"broker starting (pid {proc.pid}), waiting for it to answer on {self.bootstrap}...")
        deadline = time.monotonic() + self.settings.start_timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise BrokerError(f"the broker exited with code {proc.returncode}; last log lines:\n{self.log_tail()}")
            if self.answering(timeout_s=2.0):
                return time.monotonic() - t0
            time.sleep(0.25)
        self.stop()
        raise BrokerError(
            f"the broker did not answer within {self.settings.start_timeout_s:.0f}s; last log lines:\n{self.log_tail()}"
        )

    def stop(self, timeout_s: float = 30.0) -> bool:
        """SIGTERM, wait for a controlled shutdown, SIGKILL as a last resort. False if not running."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.pid() is not None:
            time.sleep(0.1)
        if self.pid() is not None:
            os.kill(pid, signal.SIGKILL)
            while self.pid() is not None:
                time.sleep(0.05)
        self.pid_file.unlink(missing_ok=True)
        return True

    def log_tail(self, lines: int = 25) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no broker log)"
