"""Crashes `make fuzz` found at full size (issue 13): each input is now refused with a reason."""

from __future__ import annotations

import pytest

from fleetmedic.yamlfile import ConfigFileError, read_yaml


@pytest.mark.parametrize("timestamp", ["1e400", "+Inf", "NaN", "1e308", "9" * 400])
def test_a_prometheus_timestamp_that_is_no_time_is_a_parse_error(timestamp):
    from ingest.promtext import PromParseError, parse

    with pytest.raises(PromParseError) as err:  # was OverflowError: it escaped the bridge's handler
        parse(f"x 1 {timestamp}\n")
    assert str(err.value)
    assert [s.timestamp_ms for s in parse("x 1 1700000000000\n")] == [1700000000000]  # milliseconds, as written


@pytest.mark.parametrize("text", ["? [a]\n: 1\n", "{{a: 1}: 2}\n", "a: {[1]: 2}\n"])
def test_a_yaml_key_that_is_a_list_or_mapping_is_a_config_error(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigFileError, match="a mapping key must be a plain value"):  # was TypeError: unhashable
        read_yaml(path)


def test_an_unknown_univariate_param_is_a_config_error(tmp_path):
    from detectors.config import load_config

    path = tmp_path / "d.yaml"
    path.write_text('univariate:\n  - {name: u, match: ["*"], params: {no_such: 1}}\n')
    with pytest.raises(ConfigFileError, match=r"surprise detector: .*no_such"):  # was TypeError from __init__
        load_config(path)


@pytest.mark.parametrize("field", ["extract", "pattern"])
def test_an_invalid_policy_regex_is_a_config_error(tmp_path, field):
    import yaml

    from remediator.policy import load_policy

    rule = {
        "name": "r",
        "match": {"kinds": ["service_down"]},
        "steps": [
            {
                "action": "restart_service",
                "playbook": "restart_service.yml",
                "vars": {"service": {"from": "subject", field: "("}},
            }
        ],
    }
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"rules": [rule]}))
    with pytest.raises(ConfigFileError, match=f"`{field}: \\(` is not a valid regular expression"):  # was re.error
        load_policy(path)
