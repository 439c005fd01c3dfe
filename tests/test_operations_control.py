"""Runtime control without files on hosts: pause/resume, silences and maintenance as records, policy reload.

The commands are run as the real `fleetmedic` CLI; the remediator runs the real marker playbook
through ansible-runner, and `pause` cancels it mid-run through ansible-runner's cancel callback.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from remediator_kit import (
    EngineThread,
    incident,
    make_policy,
    marker_lines,
    marker_step,
    send,
    statuses,
    wait_for_status,
)

from fleetmedic.transport import wait_until
from remediator.control import MatcherError, matches, parse_matcher

REPO = Path(__file__).resolve().parent.parent


def fm(settings, *argv, check: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETMEDIC_")}
    env.update(
        {
            "FLEETMEDIC_BOOTSTRAP_SERVERS": ",".join(settings.bootstrap_servers),
            "FLEETMEDIC_TOPIC_PREFIX": settings.topic_prefix,
            "PYTHONPATH": str(REPO),
        }
    )
    out = subprocess.run(
        [sys.executable, "-m", "fleetmedic.cli", *argv], env=env, cwd=REPO, capture_output=True, text=True, timeout=120
    )
    if check:
        assert out.returncode == 0, out.stdout + out.stderr
    return out


def fm_main(settings, monkeypatch, capsys, *argv) -> tuple[int, str, str]:
    """The same `fleetmedic` entry point, in this process (no interpreter start per command)."""
    from fleetmedic.cli import main

    monkeypatch.setenv("FLEETMEDIC_BOOTSTRAP_SERVERS", ",".join(settings.bootstrap_servers))
    monkeypatch.setenv("FLEETMEDIC_TOPIC_PREFIX", settings.topic_prefix)
    capsys.readouterr()
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_matchers_parse_like_alertmanager():
    assert parse_matcher('host=~"gpu-0[1-3]"').model_dump() == {"name": "host", "op": "=~", "value": "gpu-0[1-3]"}
    assert parse_matcher("kind!=xid_79").op == "!="
    labels = {"host": "gpu-02", "kind": "xid_79"}
    assert matches([parse_matcher("host=~gpu-0[1-3]"), parse_matcher("kind!~xid_4.*")], labels)
    assert not matches([parse_matcher("host=~gpu-0")], labels)  # anchored, as in Alertmanager
    assert matches([parse_matcher('rack=""')], labels)  # an absent label is ""
    assert not matches([], labels)
    with pytest.raises(MatcherError, match="bad regex"):
        parse_matcher("host=~gpu-(")
    with pytest.raises(MatcherError, match="a matcher is"):
        parse_matcher("just-a-word")
    import doctest

    import remediator.control

    result = doctest.testmod(remediator.control)
    assert result.attempted > 0 and result.failed == 0


def test_pause_cancels_a_running_playbook_and_resume_releases(settings, tmp_path):
    marker = tmp_path / "marker.txt"
    slow = marker_step(marker, timeout_s=300)
    slow["vars"]["sleep_s"] = {"from": "labels.sleep_s", "type": "int", "default": 0}
    policy = make_policy(marker, steps=[slow])
    with EngineThread(settings, policy, tmp_path):
        send(settings, incident("node1", "inc-long", labels={"sleep_s": "120"}))
        wait_for_status(settings, "running", incident_id="inc-long", timeout_s=120)
        out = fm(settings, "pause", "--by", "oncall", "--reason", "bad driver rollout")
        assert "kill switch engaged by oncall" in out.stdout
        [cancelled] = wait_for_status(settings, "cancelled", incident_id="inc-long", timeout_s=120)
        assert cancelled.gate == "kill_switch"
        assert "fleetmedic pause by oncall: bad driver rollout" in cancelled.reason
        assert marker_lines(marker) == []  # stopped in its sleep, before the marker task

        send(settings, incident("node2", "inc-paused"))
        [skip] = wait_for_status(settings, "skipped", incident_id="inc-paused", timeout_s=60)
        assert skip.gate == "kill_switch" and "bad driver rollout" in skip.reason

        assert "released" in fm(settings, "resume", "--by", "oncall").stdout
        send(settings, incident("node3", "inc-after"))
        wait_for_status(settings, "succeeded", incident_id="inc-after", timeout_s=120)
    # the cancelled ladder did not escalate past the person's stop
    assert statuses(settings, "inc-long") == [
        ("claimed", "restart_service", 0),
        ("running", "restart_service", 0),
        ("cancelled", "restart_service", 0),
    ]


def test_silence_and_maintenance_records(settings, tmp_path, monkeypatch, capsys):
    def run(*argv, rc=0):
        code, out, err = fm_main(settings, monkeypatch, capsys, *argv)
        assert code == rc, out + err
        return out if rc == 0 else err

    marker = tmp_path / "marker.txt"
    out = run(
        "silence", "add", "host=node1", "kind=~service_.*", "--duration", "1h", "--by", "alice", "--reason", "PSU swap"
    )
    silence_id = re.match(r"^(sil-[0-9a-f]+) silence ", out).group(1)
    listed = run("silence", "list")
    assert silence_id in listed and "active" in listed and "by alice: PSU swap" in listed
    out = run(
        "maintenance", "add", "host=~node[23]", "--duration", "30m", "--by", "bob", "--reason", "rack 7 recabling"
    )
    window_id = out.split()[0]
    assert window_id.startswith("mw-")
    assert "bad regex" in run("silence", "add", "host=~node(", "--duration", "1h", "--reason", "x", rc=2)
    assert "duration 'soon'" in run("silence", "add", "host=node1", "--duration", "soon", "--reason", "x", rc=2)
    assert "no silence 'sil-00000000'" in run("silence", "expire", "sil-00000000", rc=1)

    with EngineThread(settings, make_policy(marker), tmp_path):
        send(settings, incident("node1", "inc-s1"), incident("node2", "inc-m2"), incident("node4", "inc-free"))
        [skip] = wait_for_status(settings, "skipped", incident_id="inc-s1", timeout_s=60)
        assert skip.gate == "silence"
        assert skip.reason.startswith(
            f'silenced by silence {silence_id} (host="node1",kind=~"service_.*") by alice until '
        ) and skip.reason.endswith(": PSU swap")
        [maint] = wait_for_status(settings, "skipped", incident_id="inc-m2", timeout_s=60)
        assert maint.gate == "maintenance" and window_id in maint.reason and "rack 7 recabling" in maint.reason
        wait_for_status(settings, "succeeded", incident_id="inc-free", timeout_s=120)

        assert "expired by alice" in run("silence", "expire", silence_id, "--by", "alice")
        assert run("silence", "list").strip() == "no active or pending silence records"
        assert silence_id in run("silence", "list", "--all")
        send(settings, incident("node1", "inc-s2"))
        wait_for_status(settings, "succeeded", incident_id="inc-s2", timeout_s=120)
    assert sorted(line.split()[0] for line in marker_lines(marker)) == ["inc-free", "inc-s2"]


def _policy_file(path: Path, policy) -> Path:
    path.write_text(yaml.safe_dump(policy.model_dump(mode="json", by_alias=True, exclude_none=True)))
    return path


def test_policy_reloads_on_change_and_keeps_the_old_one_when_invalid(settings, tmp_path):
    marker = tmp_path / "marker.txt"
    path = _policy_file(tmp_path / "policy.yaml", make_policy(marker))
    from remediator.policy import load_policy

    with EngineThread(settings, load_policy(path), tmp_path, policy_path=path) as t:
        watcher = t.engine.policy_watcher
        disk = make_policy(
            marker,
            extra_rules=[{"name": "disk_full", "match": {"kinds": ["disk_full"]}, "steps": [marker_step(marker)]}],
        )
        _policy_file(path, disk)
        wait_until(lambda: watcher.reloads == 1, 30, what="the changed policy taken")
        send(settings, incident("node1", "inc-disk", kind="disk_full"))
        wait_for_status(settings, "succeeded", incident_id="inc-disk", timeout_s=120)

        path.write_text(path.read_text().replace("max_concurrent: 4", "max_concurrent: many"))
        wait_until(lambda: watcher.error is not None, 30, what="the bad policy judged")
        assert "not reloaded (the file changed); keeping the policy loaded before" in watcher.error
        assert "max_concurrent" in watcher.error and "policy.yaml:" in watcher.error
        assert watcher.reloads == 1 and t.engine.policy.rule_named("disk_full") is not None
        send(settings, incident("node2", "inc-disk2", kind="disk_full"))
        wait_for_status(settings, "succeeded", incident_id="inc-disk2", timeout_s=120)


def test_remediate_reloads_on_sighup_and_says_why_a_bad_file_is_refused(settings, tmp_path):
    marker = tmp_path / "marker.txt"
    path = _policy_file(tmp_path / "policy.yaml", make_policy(marker))
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETMEDIC_")}
    env.update(
        {
            "FLEETMEDIC_BOOTSTRAP_SERVERS": ",".join(settings.bootstrap_servers),
            "FLEETMEDIC_TOPIC_PREFIX": settings.topic_prefix,
            "PYTHONPATH": str(REPO),
        }
    )
    log = tmp_path / "remediate.log"
    with log.open("w") as sink:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fleetmedic.cli",
                "remediate",
                "--policy",
                str(path),
                "--playbooks",
                str(Path(__file__).parent / "data" / "playbooks"),
                "--artifacts",
                str(tmp_path / "artifacts"),
                "--group",
                settings.topic_prefix + "r",
            ],
            env=env,
            cwd=REPO,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(lambda: "remediator: group" in log.read_text(), 60, what="the remediator started")
        text = path.read_text()
        # the same bytes (no change to notice): only the signal makes it reload
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "reloaded (SIGHUP)" in log.read_text(), 30, what="the SIGHUP reload")
        path.write_text(text.replace("rules:", "rulez:"))
        wait_until(lambda: "not reloaded" in log.read_text(), 30, what="the bad file refused")
        assert "keeping the policy loaded before" in log.read_text() and "rulez" in log.read_text()
        assert proc.poll() is None  # still running on the old policy
        send(settings, incident("node1", "inc-hup"))
        wait_for_status(settings, "succeeded", incident_id="inc-hup", timeout_s=120)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    assert proc.returncode == 0, log.read_text()
