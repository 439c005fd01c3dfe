"""Settings: file + FLEETMEDIC_* environment, errors that name the setting (and line) and the reason."""

import pytest

from fleetmedic.config import SettingsError, load_settings


def test_defaults_then_file_then_environment(tmp_path):
    f = tmp_path / "fm.yaml"
    f.write_text("bootstrap_servers: [kafka-1:9092, kafka-2:9092]\ntopic_prefix: prod.\nbroker:\n  port: 29092\n")
    s = load_settings(f, environ={"FLEETMEDIC_CLIENT_ID": "det-7", "FLEETMEDIC_BROKER__HEAP": "1g"})
    assert s.bootstrap_servers == ["kafka-1:9092", "kafka-2:9092"]
    assert s.topic_prefix == "prod." and s.client_id == "det-7"
    assert s.broker.port == 29092 and s.broker.heap == "1g"
    s = load_settings(f, environ={"FLEETMEDIC_BOOTSTRAP_SERVERS": "a:1,b:2"})
    assert s.bootstrap_servers == ["a:1", "b:2"]
    assert load_settings(environ={}).bootstrap_servers == ["127.0.0.1:19092"]


def test_security_options_pass_through_to_kafka_python():
    s = load_settings(
        environ={
            "FLEETMEDIC_SECURITY__SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "FLEETMEDIC_SECURITY__SASL_MECHANISM": "SCRAM-SHA-512",
            "FLEETMEDIC_SECURITY__SASL_PLAIN_USERNAME": "fm",
            "FLEETMEDIC_SECURITY__SASL_PLAIN_PASSWORD": "s3cret",
        }
    )
    kw = s.kafka_kwargs()
    assert kw["security_protocol"] == "SASL_PLAINTEXT" and kw["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kw["sasl_plain_username"] == "fm" and kw["sasl_plain_password"] == "s3cret"
    assert "s3cret" not in repr(s)  # secrets stay out of logs


@pytest.mark.parametrize(
    "env, expected",
    [
        (
            {"FLEETMEDIC_BOOTSTRAP_SERVERS": "nohostport"},
            "FLEETMEDIC_BOOTSTRAP_SERVERS: Value error, 'nohostport' is not host:port",
        ),
        ({"FLEETMEDIC_BROKER__PORT": "99999"}, "FLEETMEDIC_BROKER__PORT: Input should be less than or equal to 65535"),
        ({"FLEETMEDIC_TOPIC_PREFIX": "bad prefix!"}, "FLEETMEDIC_TOPIC_PREFIX: String should match pattern"),
        ({"FLEETMEDIC_NO_SUCH": "x"}, "FLEETMEDIC_NO_SUCH: Extra inputs are not permitted"),
        ({"FLEETMEDIC_SECURITY__SECURITY_PROTOCOL": "SASL_SSL"}, "needs sasl_mechanism"),
    ],
)
def test_invalid_environment_names_the_variable_and_reason(env, expected):
    with pytest.raises(SettingsError) as err:
        load_settings(environ=env)
    assert expected in str(err.value)


def test_invalid_file_names_the_line_and_reason(tmp_path):
    f = tmp_path / "fm.yaml"
    f.write_text("client_id: ok\n\nbroker:\n  port: 19092\n  heap: lots\ntopics:\n  partitions: 0\n")
    with pytest.raises(SettingsError) as err:
        load_settings(f, environ={})
    msg = str(err.value)
    assert f"{f}:5: broker.heap: String should match pattern" in msg
    assert f"{f}:7: topics.partitions: Input should be greater than or equal to 1" in msg


def test_bad_yaml_names_the_line(tmp_path):
    f = tmp_path / "fm.yaml"
    f.write_text("client_id: ok\nbroker:\n  port: [19092\n")
    with pytest.raises(SettingsError, match=r"fm.yaml:4: invalid YAML"):
        load_settings(f, environ={})
    f.write_text("client_id: a\nclient_id: b\n")
    with pytest.raises(SettingsError, match=r"fm.yaml:2: invalid YAML: duplicate key 'client_id' \(first at line 1\)"):
        load_settings(f, environ={})
    with pytest.raises(SettingsError, match="cannot read"):
        load_settings(tmp_path / "missing.yaml", environ={})


def test_a_bad_detector_or_policy_file_is_rejected_with_its_line(tmp_path, capsys):
    from fleetmedic.cli import main

    f = tmp_path / "detectors.yaml"
    f.write_text("static:\n  - name: hot\n    match: [gpu*.temperature_c]\n    threshold: warm\n")
    assert main(["detect", "--detectors", str(f)]) == 2
    err = capsys.readouterr().err
    assert "invalid configuration file" in err and f"{f}:4: static.0.threshold" in err
    p = tmp_path / "policy.yaml"
    p.write_text("rules:\n  - name: r\n    steps: []\n")
    assert main(["remediate", "--policy", str(p)]) == 2
    assert f"{p}:3: rules.0.steps" in capsys.readouterr().err
