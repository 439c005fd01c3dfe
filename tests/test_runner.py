"""remediator.runner: the ansible-runner boundary, with real ansible-playbook runs.

Each test writes tiny playbooks into its own allowed directory; nothing here needs a broker.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psutil
import pytest

from fleetmedic.transport import wait_until
from remediator.runner import PlaybookRefused, PlaybookRun, run_playbook

WRITE_VAR = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: write the variable
      ansible.builtin.copy: {dest: "{{ out }}", content: "{{ payload }}"}
"""
MIXED = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: fine
      ansible.builtin.debug: {msg: ok}
    - name: not today
      ansible.builtin.debug: {msg: skipped}
      when: false
    - name: boom
      ansible.builtin.fail: {msg: "it broke"}
"""
SLOW = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: sleep long
      ansible.builtin.command: {argv: [sleep, "59.917"]}
"""
# 59.917 s: a duration no other process sleeps, so a test can tell whether this play's sleep is alive


def _play_sleeping() -> bool:
    return any(
        p.info["cmdline"][:2] == ["sleep", "59.917"] for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"]
    )


@pytest.fixture
def books(tmp_path) -> Path:
    d = tmp_path / "playbooks"
    d.mkdir()
    (d / "write_var.yml").write_text(WRITE_VAR)
    (d / "mixed.yml").write_text(MIXED)
    (d / "slow.yml").write_text(SLOW)
    return d


def _run(run, books, tmp_path, **kw):
    return run_playbook(run, playbooks_dir=books, artifacts_dir=tmp_path / "artifacts", **kw)


@pytest.mark.parametrize(
    "name, why",
    [
        ("/etc/passwd.yml", "absolute"),
        ("../outside.yml", "'..'"),
        ("sub/../../outside.yml", "'..'"),
        ("escape.yml", "outside"),  # a symlink out of the directory
        ("missing.yml", "not found"),
        ("write_var.txt", ".yml"),
        ("", "not a file name"),
    ],
)
def test_refuses_playbooks_outside_the_allowed_dir(books, tmp_path, name, why):
    (tmp_path / "outside.yml").write_text(WRITE_VAR)
    (books / "escape.yml").symlink_to(tmp_path / "outside.yml")
    started = []
    with pytest.raises(PlaybookRefused, match=why):
        _run(PlaybookRun(name, {"out": "x", "payload": "y"}), books, tmp_path, on_start=lambda: started.append(1))
    assert started == []  # refused before anything started
    assert not (tmp_path / "artifacts").exists() or not any((tmp_path / "artifacts").iterdir())


@pytest.mark.parametrize(
    "extra_vars, why",
    [
        ({"ansible_connection": "ssh"}, "set by the runner"),
        ({"nested": {"a": 1}}, "is not a str"),
        ({"bad name": "x"}, "identifiers"),
        ({"n": float("nan")}, "finite"),
        ({"n": None}, "is not a str"),
    ],
)
def test_refuses_bad_variables(books, tmp_path, extra_vars, why):
    with pytest.raises(PlaybookRefused, match=why):
        _run(PlaybookRun("write_var.yml", extra_vars), books, tmp_path)


def test_variables_travel_as_data_and_artifacts_hold_no_secrets(books, tmp_path, monkeypatch):
    monkeypatch.setenv("FM_TEST_SECRET_TOKEN", "s3cr3t-value-4711")
    injected = tmp_path / "injected"
    payload = f'x\'; touch {injected}; echo "$(touch {injected})" `touch {injected}` {{{{ 7 * 6 }}}}'
    out = tmp_path / "out.txt"
    started = []
    result = _run(
        PlaybookRun("write_var.yml", {"out": str(out), "payload": payload}),
        books,
        tmp_path,
        on_start=lambda: started.append(time.monotonic()),
    )
    assert result.status == "succeeded" and result.rc == 0
    assert len(started) == 1
    # the value arrived byte for byte: no shell ran it, and Ansible did not template it
    assert out.read_text() == payload
    assert not injected.exists()
    assert result.summary.ok == 1 and result.summary.changed == 1 and result.summary.failed == 0
    assert result.finished_at > result.started_at
    # artifacts: kept, but without the environment
    assert result.artifacts is not None and (result.artifacts / "stdout").exists()
    assert not (result.artifacts / "command").exists() and not (result.artifacts / "env").exists()
    for path in (tmp_path / "artifacts").rglob("*"):
        if path.is_file():
            assert b"s3cr3t-value-4711" not in path.read_bytes(), path


def test_failed_run_is_summarised_with_task_names(books, tmp_path):
    result = _run(PlaybookRun("mixed.yml", {}), books, tmp_path)
    assert result.status == "failed" and result.rc != 0
    assert result.summary.failed == 1
    assert result.summary.ok == 1 and result.summary.skipped == 1
    assert result.summary.failed_tasks == ["boom"]


def test_check_mode_changes_nothing(books, tmp_path):
    out = tmp_path / "out.txt"
    result = _run(PlaybookRun("write_var.yml", {"out": str(out), "payload": "p"}, check=True), books, tmp_path)
    assert result.status == "succeeded"
    assert result.summary.changed == 1  # it would change the file ...
    assert not out.exists()  # ... but did not


def test_timeout_stops_the_run(books, tmp_path):
    result = _run(PlaybookRun("slow.yml", {}, timeout_s=3), books, tmp_path)
    assert result.status == "timed_out"
    assert result.summary.ok == 0  # the sleep task never finished: the run was stopped, not waited out
    wait_until(lambda: not _play_sleeping(), 10, what="the play's sleep to be gone")  # killed, not orphaned


def test_cancel_stops_the_run(books, tmp_path):
    cancel = threading.Event()
    timer = threading.Timer(2.0, cancel.set)
    result = _run(PlaybookRun("slow.yml", {}), books, tmp_path, cancel=cancel, on_start=timer.start)
    timer.cancel()
    assert result.status == "cancelled"
    assert result.summary.ok == 0
    wait_until(lambda: not _play_sleeping(), 10, what="the play's sleep to be gone")


def test_artifact_retention_keeps_the_newest(books, tmp_path):
    out = tmp_path / "out.txt"
    results = [
        _run(PlaybookRun("write_var.yml", {"out": str(out), "payload": str(i)}), books, tmp_path, keep_artifacts=2)
        for i in range(3)
    ]
    kept = sorted(p.name for p in (tmp_path / "artifacts").iterdir())
    assert kept == sorted(r.artifacts.name for r in results[1:])
    assert all(r.status == "succeeded" for r in results)
