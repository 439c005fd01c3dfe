"""The inventory as the fleet model, playbook sides, GPU identity: no SSH needed (real ansible-inventory)."""

from __future__ import annotations

import textwrap
from datetime import UTC

import pytest
from fleet_kit import PLAYBOOKS

from detectors.gpu_identity import event_gpu, series_gpu
from fleetmedic.schemas import LogEvent
from fleetmedic.transport import wait_until
from remediator.inventory import Inventory, InventoryError, host_address
from remediator.policy import Policy
from remediator.runner import PlaybookRefused, playbook_side


def write(path, text):
    path.write_text(textwrap.dedent(text))
    return path


def test_ini_inventory_groups_children_and_the_host_var_mapping(tmp_path):
    src = write(
        tmp_path / "hosts.ini",
        """
        [gpu]
        gpu-node-0411 ansible_host=10.0.4.11 fleetmedic_host=n0411
        gpu-node-0412 ansible_host=10.0.4.12 ansible_user=ops ansible_port=2222
        [cpu]
        cpu-1
        [compute:children]
        gpu
        cpu
    """,
    )
    inv = Inventory(src)
    assert inv.hosts == {"gpu-node-0411", "gpu-node-0412", "cpu-1"}
    assert inv.members("gpu") == {"gpu-node-0411", "gpu-node-0412"}
    assert inv.members("compute") == inv.hosts
    assert inv.resolve("n0411") == "gpu-node-0411" and inv.resolve("gpu-node-0412") == "gpu-node-0412"
    assert inv.resolve("n9999") is None and inv.target("n9999") is None
    target = inv.target("gpu-node-0412")
    assert target.hostvars["ansible_user"] == "ops" and target.hostvars["ansible_port"] == 2222
    assert host_address(inv, "n0411") == "10.0.4.11" and host_address(inv, "cpu-1") == "cpu-1"
    assert host_address(None, "cpu-1") is None
    # policy host groups are inventory groups (with patterns still allowed); sizes are member counts
    policy = Policy.model_validate({"host_groups": {"gpu": ["@gpu"], "ops": ["cpu-*", "n0411"]}})
    assert policy.group_size("gpu") == 1  # without an inventory: its number of entries
    policy.attach_inventory(inv)
    assert policy.group_size("gpu") == 2 and policy.group_size("ops") == 2
    assert policy.in_group("n0411", "gpu") and not policy.in_group("cpu-1", "gpu")
    assert policy.groups_of("n0411") == ["gpu", "ops"]


def test_a_dynamic_inventory_script_is_refreshed_and_a_bad_refresh_keeps_the_last_view(tmp_path):
    hosts = tmp_path / "hosts.txt"
    hosts.write_text("a1 a2")
    script = write(
        tmp_path / "inv.py",
        f"""\
        #!/usr/bin/env python3
        import json, sys
        names = open({str(hosts)!r}).read().split()
        if names == ["broken"]:
            sys.exit("inventory backend down")
        print(json.dumps({{"_meta": {{"hostvars": {{}}}}, "gpu": {{"hosts": names}}}}))
    """,
    )
    script.chmod(0o755)
    now = [0.0]
    inv = Inventory(script, refresh_s=60, clock=lambda: now[0])
    assert inv.members("gpu") == {"a1", "a2"}
    hosts.write_text("a1 a2 a3")
    inv.maybe_refresh(wait=True)
    assert inv.members("gpu") == {"a1", "a2"}  # not yet due
    now[0] = 61.0
    inv.maybe_refresh(wait=True)
    assert inv.members("gpu") == {"a1", "a2", "a3"}
    hosts.write_text("a4")
    now[0] = 130.0
    inv.maybe_refresh()  # in the background: the view stays usable meanwhile
    wait_until(lambda: inv.members("gpu") == {"a4"}, 60, what="the background refresh")
    hosts.write_text("broken")
    now[0] = 200.0
    inv.maybe_refresh(wait=True)
    assert inv.members("gpu") == {"a4"} and "inventory backend down" in inv.last_error


def test_an_unreadable_inventory_is_a_clear_error(tmp_path):
    bad = write(tmp_path / "bad.yml", "all: [this is: not an inventory\n")
    with pytest.raises(InventoryError, match="bad.yml"):
        Inventory(bad)


def test_playbooks_declare_their_side(tmp_path):
    sides = {b.name: playbook_side(b) for b in PLAYBOOKS.glob("*.yml")}
    assert sides == {
        "restart_service.yml": "host",
        "gpu_reset.yml": "host",
        "collect_diagnostics.yml": "host",
        "slurm_drain.yml": "controller",
        "slurm_resume.yml": "controller",
        "k8s_cordon_drain.yml": "controller",
        "k8s_uncordon.yml": "controller",
    }
    guess = write(tmp_path / "all.yml", "- hosts: all\n  tasks: []\n")
    with pytest.raises(PlaybookRefused, match="declare `hosts: fleetmedic_target`"):
        playbook_side(guess)
    mixed = write(tmp_path / "mixed.yml", "- hosts: localhost\n  tasks: []\n- hosts: fleetmedic_target\n  tasks: []\n")
    with pytest.raises(PlaybookRefused, match="mixes"):
        playbook_side(mixed)


def test_gpu_incidents_carry_the_gpu_index_and_bus_id():
    from datetime import datetime

    now = datetime.now(UTC)
    kernel = LogEvent(
        host="n1",
        time=now,
        source="kern",
        kind="raw",
        line="NVRM: Xid (PCI:0000:3b:00): 79, pid=1, GPU has fallen off the bus.",
    )
    assert event_gpu(kernel) == {"pci_bus_id": "0000:3b:00"}
    nvml = LogEvent(
        host="n1",
        time=now,
        source="nvml",
        kind="xid",
        line="NVML: Xid (PCI:0000:3b:00.0): 48 on GPU 2",
        fields={"xid": 48, "gpu": 2, "pci": "0000:3b:00.0"},
    )
    assert event_gpu(nvml) == {"gpu_index": 2, "pci_bus_id": "0000:3b:00.0"}
    assert series_gpu("gpu3.ecc.dbe", {"gpu3.pci": "00000000:86:00.0"}) == {
        "gpu_index": 3,
        "pci_bus_id": "00000000:86:00.0",
    }
    assert series_gpu("gpu3.ecc.dbe", {}) == {"gpu_index": 3} and series_gpu("mem.used_pct", {}) == {}


def test_an_xid_incident_names_its_gpu_and_gpu_reset_refuses_without_one(tmp_path):
    from datetime import datetime

    from detectors.log_rules import LogRules, load_table
    from remediator.runner import PlaybookRun, run_playbook

    line = "NVRM: Xid (PCI:0000:3b:00): 79, pid=1, GPU has fallen off the bus."
    event = LogEvent(host="n1", time=datetime.now(UTC), source="kern", kind="raw", line=line)
    opened = LogRules(load_table()).process(event, "logs.v1", 0, 7)
    assert [i.status for i in opened] == ["open"] and opened[0].evidence.details["pci_bus_id"] == "0000:3b:00"
    result = run_playbook(PlaybookRun("gpu_reset.yml", {}), playbooks_dir=PLAYBOOKS, artifacts_dir=tmp_path / "a")
    assert result.status == "failed" and result.summary.failed_tasks == ["Check the GPU identity"]
