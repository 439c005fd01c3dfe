"""The secured broker's front door: a wrong password stops a stage's start with a clear message
(and the password is not in it), a plaintext client gets nothing, OAUTHBEARER is refused at
settings load, and secrets come from files, never shown."""

from __future__ import annotations

import pytest
import yaml

from fleetmedic import cli
from fleetmedic.config import SettingsError, load_settings
from fleetmedic.pki import SecureLayout


def _config_without_password(secure_cluster, tmp_path, role: str):
    from fleetmedic.pki import client_settings

    data = client_settings(secure_cluster.layout, role, secure_cluster.bootstrap)
    del data["security"]["sasl_plain_password_file"]
    path = tmp_path / f"{role}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("argv", [["tail", "incidents", "--idle", "1"], ["approve", "rem-0123456789abcdef0123"]])
def test_a_wrong_password_fails_the_start_with_a_clear_message(secure_cluster, tmp_path, monkeypatch, capsys, argv):
    config = _config_without_password(secure_cluster, tmp_path, "detector")
    monkeypatch.setenv("FLEETMEDIC_SECURITY__SASL_PLAIN_PASSWORD", "not-the-detector-password")
    assert cli.main(["--config", str(config), *argv]) == 1
    err = capsys.readouterr().err
    assert (
        f"the broker at {secure_cluster.bootstrap} refused the credentials of user 'detector' (SCRAM-SHA-512): "
        "wrong password or unknown user" in err
    )
    assert "not-the-detector-password" not in err and "Traceback" not in err


def test_the_right_password_from_the_environment_starts(secure_cluster, tmp_path, monkeypatch, capsys):
    config = _config_without_password(secure_cluster, tmp_path, "reviewer")
    monkeypatch.setenv("FLEETMEDIC_SECURITY__SASL_PLAIN_PASSWORD", secure_cluster.password("reviewer"))
    monkeypatch.setenv("FLEETMEDIC_TOPIC_PREFIX", secure_cluster.new_prefix())
    assert cli.main(["--config", str(config), "tail", "incidents", "--idle", "1"]) == 0
    assert "-- 0 records" in capsys.readouterr().out


def test_a_plaintext_client_gets_no_answer(secure_cluster):
    from kafka.admin import KafkaAdminClient
    from kafka.errors import KafkaError

    with pytest.raises(KafkaError):
        KafkaAdminClient(
            bootstrap_servers=secure_cluster.bootstrap, request_timeout_ms=3000, api_version_auto_timeout_ms=3000
        ).list_topics()


def test_oauthbearer_is_refused_when_the_settings_load():
    with pytest.raises(SettingsError, match="OAUTHBEARER is not supported: fleetmedic has no token provider"):
        load_settings(
            environ={
                "FLEETMEDIC_SECURITY__SECURITY_PROTOCOL": "SASL_SSL",
                "FLEETMEDIC_SECURITY__SASL_MECHANISM": "OAUTHBEARER",
            }
        )


def test_passwords_come_from_files_and_never_print(secure_cluster, tmp_path):
    layout = SecureLayout.of(secure_cluster.data_dir)
    settings = load_settings(layout.client_config("remediator"))
    secret = secure_cluster.password("remediator")
    assert settings.security.sasl_plain_password.get_secret_value() == secret
    assert secret not in repr(settings) and secret not in str(settings.model_dump())
    assert layout.password_file("remediator").stat().st_mode & 0o077 == 0  # owner only
    assert secret not in layout.client_config("remediator").read_text()
    with pytest.raises(SettingsError, match="sasl_plain_password_file: cannot read /nonexistent"):
        load_settings(
            environ={
                "FLEETMEDIC_SECURITY__SECURITY_PROTOCOL": "SASL_SSL",
                "FLEETMEDIC_SECURITY__SASL_MECHANISM": "SCRAM-SHA-512",
                "FLEETMEDIC_SECURITY__SASL_PLAIN_USERNAME": "x",
                "FLEETMEDIC_SECURITY__SASL_PLAIN_PASSWORD_FILE": "/nonexistent",
            }
        )
