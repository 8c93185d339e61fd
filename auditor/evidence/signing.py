"""Ed25519 keys and detached signatures over canonical JSON, with the ``cryptography`` package.

A private key is a PEM PKCS#8 file written with mode 0600; its public key sits beside it in
``KEYFILE.pub`` (PEM SubjectPublicKeyInfo). A key is named by its fingerprint, ``sha256:`` and
the hex SHA-256 of the raw 32-byte public key.

What is signed is the *canonical* form of a JSON document: keys sorted, no whitespace, UTF-8,
no NaN or infinity. A signature document (``bundle.sig``) names the algorithm, what it signs,
the signer's public key and its fingerprint.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import json
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from auditor import jsonio
from auditor.evidence import EvidenceError

log = logging.getLogger(__name__)

ALGORITHM = "ed25519"
CANONICALISATION = "json-sorted-compact-utf8"
SIGNATURE_SCHEMA_VERSION = 1
MAX_KEY_FILE = 64 * 1024
SIGNATURE_VALUES = 1000  # a signature document has 8


def canonical_json(obj: Any) -> bytes:
    """The bytes that are signed: sorted keys, no whitespace, UTF-8, no NaN or infinity."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


json_shape = jsonio.shape  # the names the evidence modules use
check_shape = jsonio.check_shape


def strict_json(data: bytes, what: str = "document", max_values: int | None = None) -> Any:
    """Parse JSON that is to be verified: duplicate keys and NaN/Infinity are refused, so
    that what was signed can only be read one way. Nesting deeper than
    :data:`auditor.jsonio.MAX_DEPTH`, or more than ``max_values`` values, is refused before
    parsing. Raises ValueError (:class:`auditor.jsonio.JsonError`, ``UnicodeDecodeError``)."""
    check_shape(data, what, max_values)
    try:
        return json.loads(
            data.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constant
        )
    except RecursionError:  # pragma: no cover - the nesting is checked first
        raise jsonio.JsonError(f"{what}: not usable JSON: nested too deeply") from None


def raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def fingerprint(key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return "sha256:" + hashlib.sha256(raw_public(pub)).hexdigest()


def public_path(keyfile: Path) -> Path:
    return keyfile.with_name(keyfile.name + ".pub")


def _write_new(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600 from the start (O_EXCL: never overwrite, never follow a
    link) and write ``data``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)  # in case the umask took more than group and other bits
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True, slots=True)
class KeyPair:
    private: Path
    public: Path
    fingerprint: str

    def to_dict(self) -> dict[str, str]:
        return {
            "private": str(self.private),
            "public": str(self.public),
            "fingerprint": self.fingerprint,
        }


PASSPHRASE_ENV = "AUDITOR_KEY_PASSPHRASE"  # noqa: S105 - the name of a variable


def is_encrypted_key(path: Path) -> bool:
    """Whether the PEM private key at ``path`` needs a passphrase."""
    return b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in _read_key_file(Path(path))


def generate_keypair(keyfile: Path, passphrase: bytes | None = None) -> KeyPair:
    """Write a new Ed25519 key to ``keyfile`` (PEM PKCS#8, mode 0600; encrypted with
    ``passphrase`` when one is given, by the best scheme ``cryptography`` has) and its public
    key to ``keyfile.pub``. Refuses to overwrite either."""
    keyfile = Path(keyfile)
    pub = public_path(keyfile)
    for p in (keyfile, pub):
        if p.exists() or p.is_symlink():
            raise EvidenceError(f"{p} already exists; refusing to overwrite a key")
    if passphrase is not None and not passphrase:
        raise EvidenceError("an empty passphrase encrypts nothing; give one, or none")
    key = Ed25519PrivateKey.generate()
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    pub_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    try:
        _write_new(keyfile, pem)
    except OSError as exc:
        raise EvidenceError(f"cannot write {keyfile}: {exc.strerror or exc}") from None
    try:
        _write_new(pub, pub_pem)
    except OSError as exc:
        keyfile.unlink(missing_ok=True)
        raise EvidenceError(f"cannot write {pub}: {exc.strerror or exc}") from None
    return KeyPair(keyfile, pub, fingerprint(key))


def _read_key_file(path: Path) -> bytes:
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_KEY_FILE + 1)
    except OSError as exc:
        raise EvidenceError(f"cannot read key {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_KEY_FILE:
        raise EvidenceError(f"{path}: too large to be a key file")
    return data


def load_private_key(path: Path, passphrase: bytes | None = None) -> Ed25519PrivateKey:
    """The Ed25519 key at ``path``; ``passphrase`` opens an encrypted one."""
    path = Path(path)
    data = _read_key_file(path)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        log.warning("%s: private key is readable by others (mode %o); chmod 600 it", path, mode)
    encrypted = b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in data
    if encrypted and not passphrase:
        raise EvidenceError(
            f"{path}: the key is encrypted: give its passphrase ({PASSPHRASE_ENV}, or at the "
            "prompt on a terminal)"
        )
    try:
        key = serialization.load_pem_private_key(data, password=passphrase if encrypted else None)
    except (ValueError, TypeError) as exc:
        if encrypted:
            raise EvidenceError(f"{path}: wrong passphrase, or a damaged key") from None
        raise EvidenceError(
            f"{path}: not a PEM private key ({exc}); make one with auditor keygen"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise EvidenceError(f"{path}: not an Ed25519 key; make one with auditor keygen")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    path = Path(path)
    data = _read_key_file(path)
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, binascii.Error):
        raise EvidenceError(
            f"{path}: not a PEM public key (use the KEYFILE.pub that auditor keygen wrote)"
        ) from None
    if not isinstance(key, Ed25519PublicKey):
        raise EvidenceError(f"{path}: not an Ed25519 public key")
    return key


def sign(doc: Any, key: Ed25519PrivateKey, signed_name: str) -> dict[str, Any]:
    """The signature document over the canonical bytes of ``doc`` (stored as ``signed_name``)."""
    pub = key.public_key()
    return {
        "schema_version": SIGNATURE_SCHEMA_VERSION,
        "algorithm": ALGORITHM,
        "signed": signed_name,
        "canonicalisation": CANONICALISATION,
        "public_key": base64.b64encode(raw_public(pub)).decode("ascii"),
        "fingerprint": fingerprint(pub),
        "signature": base64.b64encode(key.sign(canonical_json(doc))).decode("ascii"),
    }


class SignatureStatus(enum.StrEnum):
    ABSENT = "absent"  # no signature
    SELF_ASSERTED = "self-asserted"  # valid for the key it names; nobody said whose key that is
    VALID = "valid"  # valid for the key given by the verifier
    INVALID = "invalid"  # does not verify: the signed document or the signature was changed
    WRONG_KEY = "wrong-key"  # made with another key than the one given
    MALFORMED = "malformed"  # the signature document cannot be read


@dataclass(frozen=True, slots=True)
class SignatureCheck:
    status: SignatureStatus
    detail: str
    fingerprint: str | None = None  # the key named in the signature document
    trusted: str | None = None  # the key the verifier gave

    @property
    def ok(self) -> bool:
        if self.trusted is not None:
            return self.status is SignatureStatus.VALID
        return self.status in (SignatureStatus.ABSENT, SignatureStatus.SELF_ASSERTED)

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status.value,
            "ok": self.ok,
            "fingerprint": self.fingerprint,
            "trusted_key": self.trusted,
            "detail": self.detail,
        }


def check_signature(
    sig: bytes | None, doc: Any, trusted: Ed25519PublicKey | None = None
) -> SignatureCheck:
    """Check a signature document against the (parsed) signed document.

    With ``trusted`` the signature must verify with that key. Without it, it is checked with
    the key it names: a valid result only shows that whoever holds that key signed it."""
    want = fingerprint(trusted) if trusted is not None else None
    if sig is None:
        detail = "the bundle is not signed"
        return SignatureCheck(SignatureStatus.ABSENT, detail, None, want)
    try:
        meta = strict_json(sig, "bundle.sig", max_values=SIGNATURE_VALUES)
        if not isinstance(meta, dict):
            raise ValueError("not a JSON object")
        if meta.get("algorithm") != ALGORITHM:
            raise ValueError(f"algorithm {meta.get('algorithm')!r}, not {ALGORITHM}")
        if meta.get("canonicalisation") != CANONICALISATION:
            raise ValueError(f"unknown canonicalisation {meta.get('canonicalisation')!r}")
        signature = base64.b64decode(str(meta["signature"]), validate=True)
        embedded = Ed25519PublicKey.from_public_bytes(
            base64.b64decode(str(meta["public_key"]), validate=True)
        )
        signed = canonical_json(doc)
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        return SignatureCheck(SignatureStatus.MALFORMED, f"unreadable signature: {exc}", None, want)
    named = fingerprint(embedded)
    if meta.get("fingerprint") not in (None, named):
        return SignatureCheck(
            SignatureStatus.MALFORMED,
            f"the fingerprint it names ({meta.get('fingerprint')}) is not that of its key "
            f"({named})",
            named,
            want,
        )
    key = trusted if trusted is not None else embedded
    try:
        key.verify(signature, signed)
    except InvalidSignature:
        if trusted is not None and want != named:
            return SignatureCheck(
                SignatureStatus.WRONG_KEY,
                f"signed with key {named}, not with the given key {want}",
                named,
                want,
            )
        return SignatureCheck(
            SignatureStatus.INVALID,
            f"signature by key {named} does not match the signed document "
            "(the document or the signature was changed)",
            named,
            want,
        )
    if trusted is not None:
        return SignatureCheck(
            SignatureStatus.VALID, f"signed by {want}, the key given to check it", named, want
        )
    return SignatureCheck(
        SignatureStatus.SELF_ASSERTED,
        f"valid for the key it names itself ({named}); give --pubkey to check who signed",
        named,
        None,
    )
