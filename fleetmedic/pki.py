"""The secured embedded broker's material: a local CA, the broker's certificate, one SCRAM
principal per role, and the client settings each role connects with.

`fleetmedic broker start --secure` calls `prepare`, which creates (once, in
``DATA_DIR/secure/``) and afterwards reuses:

- ``ca.pem`` / ``ca.key``: a local certificate authority (EC P-256, made with `cryptography`);
- ``broker.pem`` / ``broker.key``: the broker's certificate (SAN 127.0.0.1 and localhost), used
  by the SASL_SSL client listener and, with client authentication, by the controller listener;
- ``passwords/ROLE.password``: a random password per role (mode 0600), one SCRAM-SHA-512 user
  named after the role (`ROLES`);
- ``clients/ROLE.yaml``: a settings file for that role (bootstrap, client id, SASL_SSL with the
  password read from the password file), for ``--config`` or ``FLEETMEDIC_CONFIG``.

The SCRAM users are written into the storage at format time (KRaft's ``--add-scram``); the
arguments travel in a Java argument file (mode 0600, deleted afterwards) so that no password is
on a command line. Private keys and passwords are files readable by the owner only.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from .config import ROLE_NAMES as ROLES  # one list of roles, with the ACL settings

MECHANISM = "SCRAM-SHA-512"
# The controller listener authenticates the broker by its certificate (SCRAM cannot serve the
# controller listener in KRaft: the credentials live in the metadata the controller serves).
BROKER_CN = "fleetmedic-broker"
BROKER_PRINCIPAL = f"User:CN={BROKER_CN},O=fleetmedic"  # the certificate subject, as Kafka prints it
_VALID_DAYS = 825


@dataclass(frozen=True)
class SecureLayout:
    """Where the secured broker's files live, under the broker's data directory."""

    root: Path

    @classmethod
    def of(cls, data_dir: Path) -> SecureLayout:
        return cls(Path(data_dir).expanduser().resolve() / "secure")

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.root / "ca.key"

    @property
    def broker_cert(self) -> Path:
        return self.root / "broker.pem"

    @property
    def broker_key(self) -> Path:
        return self.root / "broker.key"

    @property
    def marker(self) -> Path:
        """Present once a data directory was formatted for --secure: it stays secure."""
        return self.root / "enabled"

    def password_file(self, role: str) -> Path:
        return self.root / "passwords" / f"{role}.password"

    def client_config(self, role: str) -> Path:
        return self.root / "clients" / f"{role}.yaml"

    def password(self, role: str) -> str:
        return self.password_file(role).read_text().strip()


def _write_private(path: Path, data: bytes) -> None:
    """Write a file readable by its owner only (created 0600, never world-readable in between)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def _name(cn: str):
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fleetmedic"), x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    )


def _pem_key(key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    # Unencrypted PKCS#8: Kafka's PEM key store reads it; the file itself is 0600.
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def make_ca(layout: SecureLayout) -> None:
    """A self-signed CA that signs only the broker's certificate (path length 0)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("fleetmedic local CA"))
        .issuer_name(_name("fleetmedic local CA"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=_VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_private(layout.ca_key, _pem_key(key))
    layout.ca_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def make_leaf(
    layout: SecureLayout, cn: str, cert_path: Path, key_path: Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")
) -> None:
    """A certificate signed by the local CA, for server and client authentication."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID

    ca_key = serialization.load_pem_private_key(layout.ca_key.read_bytes(), password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):  # make_ca writes an EC P-256 key, nothing else
        raise ValueError(f"{layout.ca_key}: not the local CA's EC key (docs/security.md)")
    ca_cert = x509.load_pem_x509_certificate(layout.ca_cert.read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for h in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            names.append(x509.DNSName(h))
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=_VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write_private(key_path, _pem_key(key))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def ensure_material(layout: SecureLayout) -> None:
    """Create what is missing: CA, broker certificate, role passwords. Existing files are kept."""
    layout.root.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not (layout.ca_cert.exists() and layout.ca_key.exists()):
        make_ca(layout)
    if not (layout.broker_cert.exists() and layout.broker_key.exists()):
        make_leaf(layout, BROKER_CN, layout.broker_cert, layout.broker_key)
    for role in ROLES:
        if not layout.password_file(role).exists():
            _write_private(layout.password_file(role), (secrets.token_urlsafe(24) + "\n").encode())


def client_settings(layout: SecureLayout, role: str, bootstrap: str) -> dict:
    """The settings (as a mapping) with which `role` connects to the secured embedded broker."""
    return {
        "bootstrap_servers": [bootstrap],
        "client_id": f"fleetmedic-{role}",
        "security": {
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": MECHANISM,
            "sasl_plain_username": role,
            "sasl_plain_password_file": str(layout.password_file(role)),
            "ssl_cafile": str(layout.ca_cert),
        },
    }


def write_client_configs(layout: SecureLayout, bootstrap: str) -> None:
    import yaml

    for role in ROLES:
        path = layout.client_config(role)
        path.parent.mkdir(parents=True, exist_ok=True)
        text = (
            f"# fleetmedic settings for the {role} principal of the secured embedded broker\n"
            f"# (written by `fleetmedic broker start --secure`; the password stays in its file)\n"
            + yaml.safe_dump(client_settings(layout, role, bootstrap), sort_keys=False)
        )
        path.write_text(text)


def server_overrides(layout: SecureLayout, port: int, controller_port: int) -> dict[str, str]:
    """server.properties entries that replace the plaintext listeners with secured ones."""
    admin = layout.password("admin")
    jaas = f'org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="{admin}";'
    ssl = {
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(layout.root / "broker-keystore.pem"),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(layout.ca_cert),
        "ssl.endpoint.identification.algorithm": "https",
    }
    return {
        "listeners": f"SASL_SSL://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"SASL_SSL://127.0.0.1:{port}",
        "inter.broker.listener.name": "SASL_SSL",
        "listener.security.protocol.map": "SASL_SSL:SASL_SSL,CONTROLLER:SSL",
        "sasl.enabled.mechanisms": MECHANISM,
        "sasl.mechanism.inter.broker.protocol": MECHANISM,
        f"listener.name.sasl_ssl.{MECHANISM.lower()}.sasl.jaas.config": jaas,
        # the controller listener: TLS with the broker's own certificate as the client's
        "listener.name.controller.ssl.client.auth": "required",
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "allow.everyone.if.no.acl.found": "false",
        "super.users": f"User:admin;{BROKER_PRINCIPAL}",
        **ssl,
    }


def prepare(data_dir: Path, port: int, controller_port: int) -> tuple[dict[str, str], list[str]]:
    """Material, client configs and the broker's overrides; returns (overrides, format arguments).

    The format arguments carry the SCRAM users with their passwords: pass them through a private
    argument file (`argument_file`), never on a command line.
    """
    layout = SecureLayout.of(data_dir)
    ensure_material(layout)
    # Kafka's PEM key store wants the key and its certificate chain in one file.
    _write_private(
        layout.root / "broker-keystore.pem",
        layout.broker_key.read_bytes() + layout.broker_cert.read_bytes() + layout.ca_cert.read_bytes(),
    )
    write_client_configs(layout, f"127.0.0.1:{port}")
    scram = []
    for role in ROLES:
        scram += ["--add-scram", f"{MECHANISM}=[name={role},password={layout.password(role)}]"]
    return server_overrides(layout, port, controller_port), scram


def argument_file(path: Path, args: list[str]) -> Path:
    """A Java launcher @-file (one quoted argument per line), readable by the owner only."""
    lines = ['"' + a.replace("\\", "\\\\").replace('"', '\\"') + '"' for a in args]
    _write_private(path, ("\n".join(lines) + "\n").encode())
    return path


def admin_kafka_kwargs(data_dir: Path, bootstrap: str) -> dict:
    """kafka-python options for the embedded broker's own probe (the admin principal)."""
    layout = SecureLayout.of(data_dir)
    return {
        "bootstrap_servers": bootstrap,
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": MECHANISM,
        "sasl_plain_username": "admin",
        "sasl_plain_password": layout.password("admin"),
        "ssl_cafile": str(layout.ca_cert),
    }
