"""Approvals: an action marked `needs_approval` waits for people who can prove who they are.

The remediator records `awaiting_approval` (the id, playbook and variables a person is asked to
approve) and goes on with other work. `fleetmedic approve ID --key FILE` (or `--deny`) writes an
`Approval` to approvals.v1, signed with the approver's Ed25519 private key over the request's
identity (remediation id, incident, action, step, host), the decision, the approver's name, the
expiry and a random nonce (`signed_bytes`). The policy lists each approver's public key
(`approvals.approvers: {name: base64 key}`); a rule may require N distinct approvers
(`approvers_required`).

`ApprovalDesk` judges each approval against the policy's keys, with the broker's record
timestamp as "now" (approvals.v1 is a LogAppendTime topic, so a client cannot choose it). It
refuses, and the remediator records why as a dead letter of kind `approval_refused` (the request
keeps waiting), an approval that is unsigned, signed by a key the policy does not list, altered
after signing, for another request, without expiry or expired, a replay of a nonce already seen,
or for a request that is not awaiting approval. A valid deny closes the request; valid approvals
from N distinct approvers run it (through the gates again). A request nobody answers within the
policy's `approvals.expire_s` is cancelled: the default is deny.

Nonces and partial approvals are remembered by the running process: after a restart a replayed
approval is still bound to its request, its signed expiry and the request's own expiry.
"""

from __future__ import annotations

import base64
import binascii
import getpass
import json
import os
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from fleetmedic.config import Settings
from fleetmedic.producer import Producer
from fleetmedic.schemas import Approval, Remediation

from .claims import Entry, LedgerReader

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

    from fleetmedic.schemas import DeadLetter
    from fleetmedic.transport import Received

_ID = re.compile(r"^rem-[0-9a-f]{20}$")
DOMAIN = b"fleetmedic approval v1\n"
SIGNED_FIELDS = (
    "remediation_id",
    "incident_id",
    "action",
    "step",
    "host",
    "decision",
    "by",
    "comment",
    "expires_at",
    "nonce",
)
DEFAULT_KEY_FILE = Path("~/.config/fleetmedic/approver.key")


@dataclass(frozen=True)
class Verdict:
    """What an approval means for a waiting remediation: run it, or close it with a reason."""

    run: bool
    reason: str


@dataclass(frozen=True)
class Refused:
    """An approval that counts for nothing; `reason` is recorded."""

    reason: str


@dataclass(frozen=True)
class Counted:
    """A valid approval, but the rule wants more distinct approvers."""

    reason: str


class ApprovalError(ValueError):
    pass


# --- keys and signatures ---------------------------------------------------------------------
def signed_bytes(approval: Approval) -> bytes:
    """The canonical bytes an approval's signature covers."""
    fields = {name: getattr(approval, name) for name in SIGNED_FIELDS}
    fields["expires_at"] = approval.expires_at.isoformat() if approval.expires_at else None
    return DOMAIN + json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()


def public_key_text(public_key: Ed25519PublicKey) -> str:
    from cryptography.hazmat.primitives import serialization

    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def parse_public_key(text: str) -> Ed25519PublicKey:
    """A policy's base64 (32 raw bytes) Ed25519 public key; ValueError when it is not one."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not base64") from None
    if len(raw) != 32:
        raise ValueError(f"an Ed25519 public key is 32 bytes, this is {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


def generate_key(path: Path) -> str:
    """Write a new Ed25519 private key (PKCS#8 PEM, mode 0600; refuses to overwrite); returns the public key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ApprovalError(f"{path} exists: not overwriting an approver key") from None
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    return public_key_text(key.public_key())


def load_private_key(path: Path) -> Ed25519PrivateKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    path = Path(path).expanduser()
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise ApprovalError(
            f"cannot read the approver key {path}: {exc.strerror or exc} (make one with `fleetmedic approver-key`)"
        ) from None
    except (ValueError, TypeError) as exc:
        raise ApprovalError(f"{path} is not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ApprovalError(f"{path} is not an Ed25519 key")
    return key


def sign(approval: Approval, private_key: Ed25519PrivateKey) -> Approval:
    signature = base64.b64encode(private_key.sign(signed_bytes(approval))).decode()
    return approval.model_copy(update={"signature": signature})


# --- judging ---------------------------------------------------------------------------------
def expired(entry: Entry, now: datetime, expire_s: float) -> bool:
    return entry.latest.status == "awaiting_approval" and now > entry.latest.time + timedelta(seconds=expire_s)


class ApprovalDesk:
    """Checks approvals against the policy's approver keys; remembers nonces and partial approvals."""

    def __init__(self, approvers: dict[str, str], expire_s: float) -> None:
        self.keys_ = {name: parse_public_key(text) for name, text in approvers.items()}
        self.expire_s = expire_s
        self.seen_: set[tuple[str, str]] = set()  # (approver, nonce)
        self.pending_: dict[str, dict[str, Approval]] = {}  # remediation id → approver → approval

    def _signature_problem(self, approval: Approval) -> str | None:
        from cryptography.exceptions import InvalidSignature

        if not approval.signature or not approval.nonce:
            return "unsigned approval (no signature or nonce): fleetmedic approve signs with the approver's key"
        key = self.keys_.get(approval.by)
        if key is None:
            return f"approver {approval.by!r} has no key in the policy (approvals.approvers)"
        try:
            key.verify(base64.b64decode(approval.signature, validate=True), signed_bytes(approval))
        except (InvalidSignature, binascii.Error, ValueError):
            return f"signature does not verify with {approval.by}'s key: forged or altered after signing"
        return None

    def consider(
        self, approval: Approval, entry: Entry | None, now: datetime, required: int | Callable[[], int] = 1
    ) -> Verdict | Refused | Counted:
        """The verdict on `approval` for the request `entry`, judged at broker time `now`;
        `required` (an int, or a callable asked only for a valid approval) distinct approvers run it."""
        problem = self._signature_problem(approval)
        if problem:
            return Refused(problem)
        assert approval.nonce is not None  # _signature_problem refuses an approval without one
        if (approval.by, approval.nonce) in self.seen_:
            return Refused(f"replayed approval: nonce {approval.nonce} of {approval.by} was already used")
        self.seen_.add((approval.by, approval.nonce))
        if entry is None or entry.latest.status != "awaiting_approval":
            state = "unknown" if entry is None else entry.latest.status
            return Refused(f"{approval.remediation_id} is not awaiting approval (it is {state})")
        first = entry.first
        if (approval.incident_id, approval.action, approval.step, approval.host) != (
            first.incident_id,
            first.action,
            first.step,
            first.host,
        ):
            return Refused(
                f"signed for incident {approval.incident_id} {approval.action} step {approval.step} on "
                f"{approval.host}, not for this request ({first.incident_id} {first.action} step "
                f"{first.step} on {first.host})"
            )
        requested = entry.latest.time
        if now > requested + timedelta(seconds=self.expire_s):
            return Verdict(
                False, f"approval request expired {self.expire_s:g}s after {requested.isoformat()}: denied by default"
            )
        if approval.expires_at is None:
            return Refused("the approval has no expiry")
        if now > approval.expires_at:
            return Refused(
                f"approval by {approval.by} expired at {approval.expires_at.isoformat()} "
                f"(broker time {now.isoformat()})"
            )
        note = f": {approval.comment}" if approval.comment else ""
        if approval.decision == "deny":
            self.pending_.pop(approval.remediation_id, None)
            return Verdict(False, f"denied by {approval.by}{note}")
        given = self.pending_.setdefault(approval.remediation_id, {})
        given[approval.by] = approval
        required = required() if callable(required) else required
        if len(given) < required:
            return Counted(f"approved by {', '.join(sorted(given))}: {len(given)} of {required} distinct approvers")
        self.pending_.pop(approval.remediation_id, None)
        if required == 1:
            return Verdict(True, f"approved by {approval.by}{note}")
        return Verdict(True, f"approved by {', '.join(sorted(given))}")


# --- writing ---------------------------------------------------------------------------------
def write_approval(
    settings: Settings,
    remediation_id: str,
    *,
    key_file: Path | None = None,
    deny: bool = False,
    by: str | None = None,
    comment: str = "",
    valid_s: float = 3600.0,
) -> tuple[Approval, Remediation]:
    """Sign and write an Approval for a remediation that is awaiting approval; ApprovalError otherwise."""
    if not _ID.match(remediation_id):
        raise ApprovalError(f"{remediation_id!r} is not a remediation id (rem- and 20 hex digits)")
    if not (valid_s and valid_s > 0):
        raise ApprovalError("--valid-s must be a positive number of seconds")
    reader = LedgerReader(settings)
    try:
        reader.catch_up()
    finally:
        reader.close()
    entry = reader.ledger.get(remediation_id)
    if entry is None:
        raise ApprovalError(f"no remediation {remediation_id} on the remediations topic")
    if entry.latest.status != "awaiting_approval":
        raise ApprovalError(f"remediation {remediation_id} is {entry.latest.status}, not awaiting approval")
    key = load_private_key(key_file or DEFAULT_KEY_FILE)
    now = datetime.now(UTC)
    first = entry.first
    approval = Approval(
        remediation_id=remediation_id,
        host=first.host,
        incident_id=first.incident_id,
        action=first.action,
        step=first.step,
        decision="deny" if deny else "approve",
        by=by or getpass.getuser() or "unknown",
        comment=comment,
        time=now,
        expires_at=now + timedelta(seconds=valid_s),
        nonce=secrets.token_hex(16),
    )
    approval = sign(approval, key)
    with Producer(settings) as producer:
        producer.send(approval)
        producer.flush()
    return approval, entry.latest


def refusal_record(item: Received, group: str, reason: str) -> DeadLetter:
    """The dead letter that records why an approval (a `Received`) was refused."""
    from fleetmedic.deadletter import DEAD_LETTER_KEEP_BYTES
    from fleetmedic.schemas import DeadLetter

    return DeadLetter.of(
        topic=item.topic,
        partition=item.partition,
        offset=item.offset,
        timestamp_ms=item.timestamp_ms,
        key=item.key,
        value=item.record.to_bytes(),
        group=group,
        kind="approval_refused",
        error=reason,
        keep_bytes=DEAD_LETTER_KEEP_BYTES,
    )
