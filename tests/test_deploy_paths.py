"""Service files never land in the working directory; a missing extra is one line naming it."""

from __future__ import annotations

import doctest
from pathlib import Path

import pytest

import fleetmedic.extras
import fleetmedic.resources
from fleetmedic.cli import build_parser, main
from fleetmedic.config import SettingsError, load_settings
from fleetmedic.extras import EXTRAS, MissingExtra, extra_for_module, require
from fleetmedic.resources import bundled, default_state_dir


@pytest.mark.parametrize("module", [fleetmedic.resources, fleetmedic.extras])
def test_docstring_examples(module):
    result = doctest.testmod(module)
    assert result.failed == 0 and result.attempted > 0


def test_state_dir_order():
    assert default_state_dir({"STATE_DIRECTORY": "/var/lib/fleetmedic:/var/lib/other"}, uid=0) == Path(
        "/var/lib/fleetmedic"
    )
    assert default_state_dir({}, uid=0) == Path("/var/lib/fleetmedic")
    assert default_state_dir({"HOME": "/h", "XDG_STATE_HOME": "/x"}, uid=1000) == Path("/x/fleetmedic")
    assert default_state_dir({"HOME": "/root", "XDG_STATE_HOME": "/x"}, uid=0) == Path("/x/fleetmedic")
    assert default_state_dir({"HOME": "/h", "XDG_STATE_HOME": "relative"}, uid=1000) == Path(
        "/h/.local/state/fleetmedic"
    )


def test_state_dir_setting_must_be_absolute():
    assert load_settings(environ={"FLEETMEDIC_STATE_DIR": "/srv/fm"}).state_dir == Path("/srv/fm")
    with pytest.raises(SettingsError, match="FLEETMEDIC_STATE_DIR: .*must be an absolute path"):
        load_settings(environ={"FLEETMEDIC_STATE_DIR": "spool-here"})
    assert load_settings(environ={"FLEETMEDIC_HEALTH_BIND": "0.0.0.0"}).health_bind == "0.0.0.0"


def test_no_service_default_is_relative_to_the_cwd():
    parser = build_parser()
    argv = {
        "export host": ["export", "host"],
        "export logs": ["export", "logs", "/var/log/syslog"],
        "remediate": ["remediate", "--policy", "p.yaml"],
        "playbook try": ["playbook", "try", "x.yml", "--incident", "i.json"],
        "simulate": ["simulate"],
    }
    for name, args in argv.items():
        parsed = vars(parser.parse_args(args))
        for key in ("spool_dir", "position_file", "artifacts", "truth", "playbooks", "policy"):
            value = parsed.get(key)
            if key == "policy" and name == "remediate":
                continue  # given on the command line
            assert value is None or Path(value).is_absolute(), (name, key, value)
    assert Path(parser.parse_args(["remediate", "--policy", "p"]).playbooks) == bundled("playbooks")


def test_missing_extra_is_one_line_naming_it():
    with pytest.raises(MissingExtra) as caught:
        require("remediate", "fleetmedic remediate", find=lambda m: None if m == "ansible_runner" else object())
    assert str(caught.value) == (
        "fleetmedic remediate needs the [remediate] extra (ansible-runner is not installed): "
        "pip install 'fleetmedic[remediate]'"
    )
    assert caught.value.code == str(caught.value)  # SystemExit prints it and exits 1
    require("all", "fleetmedic demo", find=lambda m: object())  # all present: no error
    assert extra_for_module("sklearn.ensemble") == ("detect", "scikit-learn")
    assert extra_for_module("matplotlib.pyplot") == ("review", "matplotlib")
    assert extra_for_module("json") is None
    assert {m for m, _ in EXTRAS["all"]} == {"sklearn", "ansible", "ansible_runner", "matplotlib"}


def test_an_import_error_deep_in_a_stage_names_the_extra(monkeypatch, capsys):
    """A stage that did not call require() first still gets the one-line message from main()."""
    import detectors.cli

    def detect_without_sklearn(args):
        raise ModuleNotFoundError("No module named 'sklearn'", name="sklearn")

    monkeypatch.setattr(detectors.cli, "cmd_detect", detect_without_sklearn)
    parser = build_parser()
    monkeypatch.setattr("fleetmedic.cli.build_parser", lambda: parser)
    parser._subparsers._group_actions[0].choices["detect"].set_defaults(func=detect_without_sklearn)
    assert main(["detect"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "fleetmedic detect needs the [detect] extra (scikit-learn is not installed): pip install 'fleetmedic[detect]'"
    ]
