"""deploy/systemd/: every unit passes `systemd-analyze verify` and an offline security review.

`verify` needs the ExecStart binary to exist, so each unit is checked in a copy whose
/opt/fleetmedic/bin/fleetmedic points at this checkout's own `fleetmedic` command; nothing else
changes. verify prints unknown keys and bad values as warnings but still exits 0: any output fails.
"""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UNITS = sorted((ROOT / "deploy" / "systemd").glob("*.service"))
SERVICES = {
    "fleetmedic-export-host",
    "fleetmedic-export-gpu",
    "fleetmedic-export-logs",
    "fleetmedic-export-prom",
    "fleetmedic-detect",
    "fleetmedic-remediate",
    "fleetmedic-alerts-receive",
}
EXPOSURE_MAX = 3.0  # systemd-analyze security: 0 (locked down) to 10 (exposed); "OK" is < 4

pytestmark = pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")


def _units_for_check(tmp_path: Path) -> list[Path]:
    fleetmedic = Path(sys.executable).with_name("fleetmedic")
    assert fleetmedic.exists(), "run from the virtualenv that has the fleetmedic command"
    out = []
    for unit in UNITS:
        copy = tmp_path / unit.name
        copy.write_text(unit.read_text().replace("/opt/fleetmedic/bin/fleetmedic", str(fleetmedic)))
        out.append(copy)
    return out


def _parse(unit: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None, comment_prefixes=("#", ";"))
    parser.optionxform = str
    # systemd repeats keys (DeviceAllow=): keep the last, we only read single-valued ones here
    parser.read_string(re.sub(r"(?m)^(DeviceAllow|Environment)=", lambda m: f"{m.group(1)}.{id(m)}=", unit.read_text()))
    return parser


def test_one_unit_per_service():
    assert {u.stem for u in UNITS} == SERVICES


def test_every_unit_passes_systemd_analyze_verify(tmp_path):
    copies = _units_for_check(tmp_path)
    done = subprocess.run(["systemd-analyze", "verify", *map(str, copies)], capture_output=True, text=True, timeout=120)
    said = (done.stdout + done.stderr).strip()
    assert done.returncode == 0 and not said, said


def test_verify_catches_a_bad_unit(tmp_path):
    """The check above can fail: a misspelt key and a bad value are reported."""
    bad = tmp_path / "fleetmedic-bad.service"
    bad.write_text(
        UNITS[0]
        .read_text()
        .replace("/opt/fleetmedic/bin/fleetmedic", "/usr/bin/true")
        .replace("ProtectSystem=strict", "ProtectSystem=very")
        .replace("NoNewPrivileges=yes", "NoNewPrivilege=yes")
    )
    done = subprocess.run(["systemd-analyze", "verify", str(bad)], capture_output=True, text=True, timeout=60)
    said = done.stdout + done.stderr
    assert "protect system" in said.lower() and "NoNewPrivilege" in said


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.stem)
def test_unit_runs_as_the_dedicated_user_with_config_secrets_and_hardening(unit, tmp_path):
    service = _parse(unit)["Service"]
    text = unit.read_text()
    assert service["User"] == "fleetmedic" and service["Group"] == "fleetmedic"
    assert "Environment=FLEETMEDIC_CONFIG=/etc/fleetmedic/fleetmedic.yaml" in text
    assert service["EnvironmentFile"] == "-/etc/fleetmedic/secrets.env"
    assert service["StateDirectory"] == "fleetmedic"
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "CapabilityBoundingSet": "",
        "RestrictSUIDSGID": "yes",
    }.items():
        assert service[key] == value, (unit.name, key)
    # only the GPU exporter sees devices, and only the NVIDIA ones
    if unit.stem == "fleetmedic-export-gpu":
        assert service["PrivateDevices"] == "no" and service["DevicePolicy"] == "closed"
        assert re.findall(r"(?m)^DeviceAllow=(\S+)", text) == [
            "/dev/nvidiactl",
            "char-nvidia-frontend",
            "char-nvidia-uvm",
            "char-nvidia-caps",
        ]
    else:
        assert service["PrivateDevices"] == "yes" and "DeviceAllow" not in text
    copy = _units_for_check(tmp_path)[UNITS.index(unit)]
    done = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", f"--threshold={EXPOSURE_MAX * 10:.0f}", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    level = re.search(r"Overall exposure level for \S+: ([0-9.]+)", done.stdout)
    assert level and float(level.group(1)) <= EXPOSURE_MAX, done.stdout[-500:]
