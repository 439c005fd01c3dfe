"""Install per role, as an operator would: build the wheel and sdist once with `python -m build`
from a copy of the files git would commit (a clean clone), install the wheel into a fresh
virtualenv per role, and run that role's `--help` and a short real run against the real broker.

Roles: base (`pip install fleetmedic`: exporters and read-only commands), `[detect]`,
`[remediate]`, `[review]`. `[all]` is their union; the Python 3.13 job of `.ci/run` installs it.
pip resolves against requirements.lock (`-c`), from its warm cache. Each venv costs seconds to a
minute of install time, so these tests are marked slow.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from conftest import make_settings
from kafka_helpers import read_topic

from fleetmedic import __version__
from fleetmedic.schemas import Incident, MetricBatch
from fleetmedic.topics import topic_name
from fleetmedic.transport import wait_until

ROOT = Path(__file__).resolve().parent.parent
# pip's install time (unpacking; ansible alone is ~40,000 files) dominates, and grows with the
# machine's load: minutes per venv on a loaded 2-core machine, hence the timeout.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]
HEAVY = ("sklearn", "ansible", "ansible_runner", "matplotlib")


@pytest.fixture(scope="session")
def dist(tmp_path_factory) -> Path:
    """dist/ with the wheel and the sdist, built from the files a clean clone would have."""
    listed = (
        subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    src = tmp_path_factory.mktemp("clone")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            (src / name).write_bytes(source.read_bytes())
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(src)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


def _wheel(dist: Path) -> Path:
    (wheel,) = dist.glob("fleetmedic-*.whl")
    return wheel


class Venv:
    """A fresh virtualenv with the wheel installed, and a way to run its `fleetmedic`."""

    def __init__(self, root: Path, wheel: Path, extra: str | None, env: dict[str, str]):
        self.root = root
        subprocess.run([sys.executable, "-m", "venv", str(root)], check=True, timeout=300)
        spec = f"{wheel}[{extra}]" if extra else str(wheel)
        # --no-compile: byte-compiling every installed file is most of the CPU time, and unused here
        done = subprocess.run(
            [
                str(root / "bin" / "pip"),
                "install",
                "-q",
                "--disable-pip-version-check",
                "--no-compile",
                "-c",
                str(ROOT / "requirements.lock"),
                spec,
            ],
            capture_output=True,
            text=True,
            timeout=1100,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        self.env = env

    def has(self, module: str) -> bool:
        done = subprocess.run([str(self.root / "bin" / "python"), "-c", f"import {module}"], capture_output=True)
        return done.returncode == 0

    def run(self, *args: str, cwd: Path, timeout: float = 180, **kw) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(self.root / "bin" / "fleetmedic"), *args],
            capture_output=True,
            text=True,
            env=self.env,
            cwd=cwd,
            timeout=timeout,
            **kw,
        )

    def start(self, *args: str, cwd: Path) -> subprocess.Popen:
        return subprocess.Popen(
            [str(self.root / "bin" / "fleetmedic"), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
            cwd=cwd,
        )


@pytest.fixture
def place(tmp_path, kafka_bootstrap):
    """An empty working directory, a home, settings with a fresh prefix, and the env a service gets."""
    cwd, home, state = tmp_path / "cwd", tmp_path / "home", tmp_path / "xdg-state"
    for d in (cwd, home):
        d.mkdir()
    settings = make_settings(kafka_bootstrap)
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "XDG_STATE_HOME": str(state),
        "FLEETMEDIC_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "FLEETMEDIC_TOPIC_PREFIX": settings.topic_prefix,
        "FLEETMEDIC_TOPICS__PARTITIONS": "3",
    }
    return cwd, env, settings, state


def _one_line_missing_extra(done: subprocess.CompletedProcess, extra: str) -> None:
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert f"needs the [{extra}] extra" in lines[0] and f"pip install 'fleetmedic[{extra}]'" in lines[0]


def test_wheel_and_sdist_carry_the_package_data(dist):
    names = set(zipfile.ZipFile(_wheel(dist)).namelist())
    for needed in (
        "detectors/default.yaml",
        "detectors/xid_table.yaml",
        "fleetmedic/_bundled/playbooks/restart_service.yml",
        "fleetmedic/_bundled/playbooks/collect_diagnostics.yml",
        "fleetmedic/_bundled/deploy/policy.example.yaml",
        "fleetmedic/_bundled/deploy/kafka/pom.xml",
        "fleetmedic/_bundled/deploy/systemd/fleetmedic-detect.service",
        "fleetmedic/_bundled/deploy/k8s/40-detect.yaml",
        "fleetmedic/_bundled/schemas/incident.v1.json",
    ):
        assert needed in names, needed
    metadata = zipfile.ZipFile(_wheel(dist)).read(f"fleetmedic-{__version__}.dist-info/METADATA").decode()
    assert "Requires-Python: <3.14,>=3.11" in metadata
    base = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:") and "extra ==" not in line]
    assert not [line for line in base if any(h in line for h in ("scikit-learn", "ansible", "matplotlib"))], base
    assert any("prometheus-client" in line for line in base) and any("cryptography" in line for line in base)
    for extra in ("detect", "remediate", "review", "all", "test"):
        assert f"Provides-Extra: {extra}" in metadata
    (sdist,) = dist.glob("fleetmedic-*.tar.gz")
    members = tarfile.open(sdist).getnames()
    assert f"fleetmedic-{__version__}/playbooks/slurm_drain.yml" in members
    assert f"fleetmedic-{__version__}/setup.py" in members


def test_base_install_runs_an_exporter_and_names_the_missing_extras(dist, tmp_path, place):
    cwd, env, settings, state = place
    venv = Venv(tmp_path / "venv-base", _wheel(dist), None, env)
    assert not any(venv.has(m) for m in HEAVY)
    assert venv.run("--version", cwd=cwd).stdout.strip() == f"fleetmedic {__version__}"
    helped = venv.run("--help", cwd=cwd)
    assert helped.returncode == 0 and "export" in helped.stdout and "doctor" in helped.stdout
    assert venv.run("export", "host", "--help", cwd=cwd).returncode == 0
    _one_line_missing_extra(venv.run("detect", cwd=cwd), "detect")
    _one_line_missing_extra(venv.run("remediate", "--policy", "x.yaml", cwd=cwd), "remediate")
    _one_line_missing_extra(venv.run("report", "--incident", "x", cwd=cwd), "review")
    # a short real run: two collections published to the real broker, the spool in the state dir
    done = venv.run(
        "export", "host", "--count", "2", "--interval", "0.2", "--health-port", "-1", "--create-topics", cwd=cwd
    )
    assert done.returncode == 0, done.stderr
    assert f"spool {state / 'fleetmedic' / 'spool' / 'host'}," in done.stdout  # XDG_STATE_HOME, not the cwd
    assert "sent 2," in done.stdout
    batches = [v for *_, v in read_topic(settings, topic_name(settings, "metrics.v1"), MetricBatch)]
    assert len(batches) == 2 and all(b.source == "host" and b.values for b in batches)
    assert list(cwd.iterdir()) == []  # nothing written where it was started
    # the doctor runs from the base install and says what a remediator host would lack
    doctor = venv.run("doctor", "--role", "remediate", "--group", settings.topic_prefix + "none", cwd=cwd)
    assert doctor.returncode == 1
    assert any(line.startswith("FAIL  ansible") for line in doctor.stdout.splitlines())
    assert "pip install 'fleetmedic[remediate]'" in doctor.stdout
    assert venv.run("topics", "create", "--check", cwd=cwd).returncode == 0


def test_detect_install_turns_published_records_into_incidents(dist, tmp_path, place):
    cwd, env, settings, _ = place
    venv = Venv(tmp_path / "venv-detect", _wheel(dist), "detect", env)
    assert venv.has("sklearn") and not venv.has("ansible") and not venv.has("matplotlib")
    assert venv.run("detect", "--help", cwd=cwd).returncode == 0
    sim = venv.run(
        "simulate",
        "--nodes",
        "1",
        "--gpus",
        "1",
        "--seconds",
        "1200",
        "--faults",
        "1",
        "--fault-kinds",
        "xid_burst",
        cwd=cwd,
    )
    assert sim.returncode == 0, sim.stderr
    detect = venv.start("detect", "--group", settings.topic_prefix + "detectors", cwd=cwd)
    try:
        incidents = topic_name(settings, "incidents.v1")
        wait_until(
            lambda: any(v.kind == "xid" for *_, v in read_topic(settings, incidents, Incident)),
            120,
            interval_s=1.0,
            what="an xid incident from the installed detector",
        )
    finally:
        detect.send_signal(signal.SIGTERM)
        out, err = detect.communicate(timeout=60)
    assert detect.returncode == 0, err[-2000:]
    assert "detect: stopped" in out
    assert list(cwd.iterdir()) == []


def test_remediate_install_runs_a_packaged_playbook(dist, tmp_path, place):
    cwd, env, settings, _ = place
    venv = Venv(tmp_path / "venv-remediate", _wheel(dist), "remediate", env)
    assert venv.has("ansible_runner") and not venv.has("sklearn") and not venv.has("matplotlib")
    assert venv.run("remediate", "--help", cwd=cwd).returncode == 0
    listed = venv.run("playbook", "list", cwd=cwd)  # the packaged playbooks, wherever it runs
    assert listed.returncode == 0 and "restart_service.yml" in listed.stdout
    incident = Incident(
        id="inc-d15",
        fingerprint="localhost/disk_full/root",
        host="localhost",
        kind="disk_full",
        subject="/",
        status="open",
        severity="critical",
        detector="ewma",
        time="2026-01-01T00:00:00Z",
        opened_at="2026-01-01T00:00:00Z",
    )
    path = tmp_path / "incident.json"
    path.write_bytes(incident.to_bytes())
    # a short real run: the packaged policy's catch-all rule, the packaged playbook, check mode
    tried = venv.run("playbook", "try", "collect_diagnostics.yml", "--incident", str(path), cwd=cwd, timeout=300)
    assert tried.returncode == 0, tried.stdout[-2000:] + tried.stderr[-2000:]
    assert "rule anything_else_critical, step 0 (collect_diagnostics)" in tried.stdout
    assert "succeeded rc=0" in tried.stdout
    assert list(cwd.iterdir()) == []  # the artifacts went to the state dir
    assert venv.run("topics", "create", cwd=cwd).returncode == 0
    doctor = venv.run("doctor", "--role", "remediate", "--group", settings.topic_prefix + "none", cwd=cwd)
    lines = doctor.stdout.splitlines()
    assert any(line.startswith("ok    ansible") for line in lines), doctor.stdout
    assert any(line.startswith("ok    playbooks") and "_bundled/playbooks" in line for line in lines), doctor.stdout


def test_review_install_writes_a_report(dist, tmp_path, place):
    cwd, env, settings, _ = place
    venv = Venv(tmp_path / "venv-review", _wheel(dist), "review", env)
    assert venv.has("matplotlib") and venv.has("sklearn") and not venv.has("ansible")
    assert venv.run("report", "--help", cwd=cwd).returncode == 0
    sim = venv.run("simulate", "--nodes", "1", "--gpus", "1", "--seconds", "300", "--faults", "1", cwd=cwd)
    assert sim.returncode == 0, sim.stderr
    out = tmp_path / "report.html"
    done = venv.run(
        "report",
        "--host",
        "sim-node-0000",
        "--from",
        "2026-01-01T00:00:00Z",
        "--to",
        "2026-01-01T00:05:00Z",
        "-o",
        str(out),
        cwd=cwd,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert out.stat().st_size > 1000 and "<html" in out.read_text()[:500].lower()
    assert "series" in done.stdout
