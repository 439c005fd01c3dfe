"""`fleetmedic broker start --nodes N`: an N-node KRaft cluster of the embedded broker on loopback.

Every node is broker and controller (a static quorum of N voters), node k (0-based) listens on
`port + 2k` and `controller_port + 2k`, and keeps its files in `data_dir/node<k+1>`; all share
one cluster id. Internal topics (offsets, transactions) get replication factor min(3, N) and
min.insync.replicas 2 when N >= 3, like fleetmedic's own topics (`fleetmedic.topics.durability`).
The single-node path (`EmbeddedBroker`) is unchanged; a node is an `EmbeddedBroker` whose
properties name its peers.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from .broker import BrokerError, EmbeddedBroker, server_properties
from .config import BrokerSettings

NODES_FILE = "cluster.nodes"  # in data_dir: how many nodes `start` made, so `stop` finds them all


def node_ports(settings: BrokerSettings, k: int) -> tuple[int, int]:
    return settings.port + 2 * k, settings.controller_port + 2 * k


class ClusterNode(EmbeddedBroker):
    """Node k of an N-node cluster."""

    def __init__(self, settings: BrokerSettings, k: int, n: int) -> None:
        port, controller = node_ports(settings, k)
        root = settings.data_dir.expanduser().resolve()
        super().__init__(
            settings.model_copy(update={"port": port, "controller_port": controller, "data_dir": root / f"node{k + 1}"})
        )
        self.k, self.n, self.root_settings = k, n, settings

    def properties(self) -> str:
        replicas = min(3, self.n)
        min_isr = 2 if replicas >= 3 else 1
        voters = ",".join(f"{j + 1}@127.0.0.1:{node_ports(self.root_settings, j)[1]}" for j in range(self.n))
        override = {
            "node.id": str(self.k + 1),
            "controller.quorum.voters": voters,
            "offsets.topic.replication.factor": str(replicas),
            "transaction.state.log.replication.factor": str(replicas),
            "transaction.state.log.min.isr": str(min_isr),
            "share.coordinator.state.topic.replication.factor": str(replicas),
            "share.coordinator.state.topic.min.isr": str(min_isr),
            "default.replication.factor": str(replicas),
            "min.insync.replicas": str(min_isr),
        }
        lines = []
        for line in server_properties(self.settings, self.data_dir).splitlines():
            key = line.split("=", 1)[0]
            if key not in override:
                lines.append(line)
        lines[-1:-1] = [f"{k}={v}" for k, v in override.items()]
        return "\n".join(lines) + "\n"


class EmbeddedCluster:
    """N `ClusterNode`s started together (a node cannot answer before a quorum of voters is up)."""

    def __init__(self, settings: BrokerSettings, nodes: int | None = None) -> None:
        self.settings = settings
        self.root = settings.data_dir.expanduser().resolve()
        if nodes is None:
            try:
                nodes = int((self.root / NODES_FILE).read_text().strip())
            except (OSError, ValueError):
                nodes = settings.nodes
        ports = {p for k in range(nodes) for p in node_ports(settings, k)}
        if len(ports) != 2 * nodes:
            raise BrokerError(
                f"the ports of {nodes} nodes overlap: give controller_port outside "
                f"port..port+{2 * nodes - 1} (e.g. port + 1)"
            )
        self.nodes = [ClusterNode(settings, k, nodes) for k in range(nodes)]
        self.bootstrap = ",".join(n.bootstrap for n in self.nodes)

    def _shared_cluster_id(self) -> None:
        """Every node formats with one cluster id (the first node's, made once)."""
        first = self.nodes[0].data_dir / "cluster.id"
        if not first.exists():
            import subprocess

            from .broker import _require, fetch_jars

            java = _require("java", "install a Java 17+ runtime")
            out = subprocess.run(
                [java, "-cp", str(fetch_jars(self.settings) / "*"), "kafka.tools.StorageTool", "random-uuid"],
                capture_output=True,
                text=True,
            )
            if out.returncode != 0 or not out.stdout.strip():
                raise BrokerError(f"kafka StorageTool random-uuid failed: {out.stderr.strip()[-2000:]}")
            first.parent.mkdir(parents=True, exist_ok=True)
            first.write_text(out.stdout.strip().splitlines()[-1] + "\n")
        for node in self.nodes[1:]:
            node.data_dir.mkdir(parents=True, exist_ok=True)
            target = node.data_dir / "cluster.id"
            if not target.exists():
                target.write_text(first.read_text())

    def start(self, progress: Callable[[str], object] = print) -> float:
        """Start every node that is not running, in parallel; returns the slowest node's seconds."""
        self.root.mkdir(parents=True, exist_ok=True)
        self._shared_cluster_id()
        (self.root / NODES_FILE).write_text(f"{len(self.nodes)}\n")
        took: dict[int, float] = {}
        errors: dict[int, BaseException] = {}

        def one(node: ClusterNode) -> None:
            try:
                took[node.k] = node.start(progress=lambda m: progress(f"node {node.k + 1}: {m}"))
            except BaseException as exc:  # reported below, for every node that failed
                errors[node.k] = exc

        threads = [threading.Thread(target=one, args=(n,)) for n in self.nodes]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            self.stop()
            raise BrokerError("; ".join(f"node {k + 1}: {e}" for k, e in sorted(errors.items())))
        return max(took.values(), default=0.0)

    def stop(self, timeout_s: float = 30.0) -> bool:
        stopped = [n.stop(timeout_s) for n in self.nodes]
        return any(stopped)

    def status(self) -> list:
        return [n.status() for n in self.nodes]

    def node(self, k: int) -> ClusterNode:
        return self.nodes[k]


def is_cluster(settings: BrokerSettings) -> bool:
    """Was the broker in this data directory started with --nodes (so stop/status mean all nodes)?"""
    return (Path(settings.data_dir).expanduser().resolve() / NODES_FILE).exists()


__all__ = ["ClusterNode", "EmbeddedCluster", "is_cluster", "node_ports"]
