"""deploy/k8s/: every manifest validates offline against the Kubernetes OpenAPI schemas
(kubernetes-validate, strict: unknown fields fail), and the manifests agree with each other
and with the settings they carry."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

kubernetes_validate = pytest.importorskip("kubernetes_validate")

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
FILES = sorted(K8S.glob("*.yaml")) + sorted((K8S / "examples").glob("*.yaml"))
VERSION = "1.30.0"  # oldest Kubernetes we target; the newest bundled schemas are checked too


def _docs():
    for path in FILES:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                yield path, doc


def _by_kind(kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for _, d in _docs() if d["kind"] == kind}


@pytest.mark.parametrize("version", [VERSION, kubernetes_validate.latest_version()])
def test_every_manifest_validates_against_the_kubernetes_schemas(version):
    checked = 0
    for _path, doc in _docs():
        kubernetes_validate.validate(doc, version, strict=True)
        checked += 1
    assert checked >= 10


def test_the_validator_rejects_a_wrong_manifest():
    daemonset = _by_kind("DaemonSet")["fleetmedic-node-exporters"]
    broken = yaml.safe_load(yaml.safe_dump(daemonset))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"] = [9731]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSION, strict=True)
    broken = yaml.safe_load(yaml.safe_dump(daemonset))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSION, strict=True)


def _pods():
    for kind in ("DaemonSet", "Deployment"):
        for name, doc in _by_kind(kind).items():
            yield name, doc["spec"]["template"]["spec"]


def test_probes_hit_the_readiness_endpoint_on_the_port_the_service_serves():
    for name, pod in _pods():
        for c in pod["containers"]:
            args = c["args"]
            port = int(args[args.index("--metrics-port") + 1])
            ready = c["readinessProbe"]["httpGet"]
            assert ready["path"] == "/ready", name
            named = {p["name"]: p["containerPort"] for p in c["ports"]}
            assert named.get(ready["port"], ready["port"]) == port, (name, c["name"])
            assert port in named.values()


def test_ports_do_not_collide_on_the_node_network():
    used: dict[int, str] = {}
    for name, pod in _pods():
        if not pod.get("hostNetwork"):
            continue
        for c in pod["containers"]:
            for p in c["ports"]:
                assert p["containerPort"] not in used, (name, c["name"], used.get(p["containerPort"]))
                used[p["containerPort"]] = c["name"]
    assert 9400 not in used  # dcgm-exporter's port on GPU nodes


def test_exporters_mount_host_logs_and_reach_nvml():
    node = _by_kind("DaemonSet")["fleetmedic-node-exporters"]["spec"]["template"]["spec"]
    logs = next(c for c in node["containers"] if c["name"] == "export-logs")
    mounts = {m["mountPath"]: m for m in logs["volumeMounts"]}
    assert mounts["/var/log"]["readOnly"] is True
    volumes = {v["name"]: v for v in node["volumes"]}
    assert volumes[mounts["/var/log"]["name"]]["hostPath"]["path"] == "/var/log"
    assert volumes["state"]["hostPath"]["path"] == "/var/lib/fleetmedic"  # spool and positions survive the pod
    gpu = _by_kind("DaemonSet")["fleetmedic-gpu-exporter"]["spec"]["template"]["spec"]
    assert gpu["runtimeClassName"] == "nvidia"
    env = {e["name"]: e.get("value") for e in gpu["containers"][0]["env"]}
    assert env["NVIDIA_VISIBLE_DEVICES"] == "all"
    assert "nvidia.com/gpu" not in str(gpu["containers"][0].get("resources", {}))  # reads GPUs, takes none


def test_detect_scales_by_partitions():
    config = yaml.safe_load(_by_kind("ConfigMap")["fleetmedic-config"]["data"]["fleetmedic.yaml"])
    partitions = config["topics"]["partitions"]
    hpa = _by_kind("HorizontalPodAutoscaler")["fleetmedic-detect"]["spec"]
    assert hpa["scaleTargetRef"]["name"] == "fleetmedic-detect"
    assert hpa["maxReplicas"] == partitions
    assert _by_kind("Deployment")["fleetmedic-detect"]["spec"]["replicas"] <= partitions


def test_remediate_takes_inventory_and_ssh_key_from_secrets():
    pod = _by_kind("Deployment")["fleetmedic-remediate"]["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert volumes["inventory"]["secret"]["secretName"] == "fleetmedic-remediate-inventory"
    assert volumes["ssh"]["secret"]["secretName"] == "fleetmedic-remediate-ssh"
    assert volumes["ssh"]["secret"]["defaultMode"] == 0o400
    args = pod["containers"][0]["args"]
    assert args[args.index("--inventory") + 1].startswith(mounts["inventory"] + "/")


def test_every_referenced_config_and_secret_exists():
    secrets, maps = set(_by_kind("Secret")), set(_by_kind("ConfigMap")) | {"fleetmedic-policy"}  # policy: from a file
    for name, pod in _pods():
        for v in pod.get("volumes", []):
            if "secret" in v:
                assert v["secret"]["secretName"] in secrets, (name, v)
            if "configMap" in v:
                assert v["configMap"]["name"] in maps, (name, v)
        for c in pod["containers"]:
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in _by_kind("Secret")[ref["name"]]["stringData"], (name, ref)
