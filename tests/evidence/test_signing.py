"""Ed25519 keys and signatures over canonical JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from auditor.evidence import EvidenceError
from auditor.evidence.signing import (
    SignatureStatus,
    canonical_json,
    check_signature,
    generate_keypair,
    load_private_key,
    load_public_key,
    sign,
    strict_json,
)

DOC = {"b": [1, 2, {"é": "x"}], "a": None}


def test_canonical_json() -> None:
    assert canonical_json(DOC) == '{"a":null,"b":[1,2,{"é":"x"}]}'.encode()
    with pytest.raises(ValueError):
        canonical_json({"x": float("nan")})


def test_strict_json_refuses_ambiguity() -> None:
    with pytest.raises(ValueError, match="duplicate key"):
        strict_json(b'{"a": 1, "a": 2}')
    with pytest.raises(ValueError, match="NaN"):
        strict_json(b'{"a": NaN}')


def test_sign_and_check(tmp_path: Path) -> None:
    pair = generate_keypair(tmp_path / "k")
    key = load_private_key(pair.private)
    sig = json.dumps(sign(DOC, key, "doc.json")).encode()
    pub = load_public_key(pair.public)
    assert check_signature(sig, DOC, pub).status is SignatureStatus.VALID
    assert check_signature(sig, DOC).status is SignatureStatus.SELF_ASSERTED
    # key order and whitespace do not matter: the canonical form is signed
    assert check_signature(sig, json.loads(json.dumps(DOC, indent=3)), pub).ok
    changed = {**DOC, "a": 1}
    res = check_signature(sig, changed, pub)
    assert res.status is SignatureStatus.INVALID and not res.ok
    assert check_signature(sig, changed).status is SignatureStatus.INVALID
    other = generate_keypair(tmp_path / "other")
    res = check_signature(sig, DOC, load_public_key(other.public))
    assert res.status is SignatureStatus.WRONG_KEY and other.fingerprint in res.detail
    absent = check_signature(None, DOC, pub)
    assert absent.status is SignatureStatus.ABSENT and not absent.ok
    assert check_signature(None, DOC).ok


def test_malformed_signatures(tmp_path: Path) -> None:
    pair = generate_keypair(tmp_path / "k")
    good = sign(DOC, load_private_key(pair.private), "doc.json")
    for bad in (
        b"not json",
        json.dumps({**good, "algorithm": "rsa"}).encode(),
        json.dumps({**good, "signature": "!!"}).encode(),
        json.dumps({**good, "fingerprint": "sha256:00"}).encode(),
    ):
        res = check_signature(bad, DOC)
        assert res.status is SignatureStatus.MALFORMED and not res.ok, bad


def test_key_files(tmp_path: Path) -> None:
    pair = generate_keypair(tmp_path / "k")
    with pytest.raises(EvidenceError, match="refusing to overwrite"):
        generate_keypair(tmp_path / "k")
    (tmp_path / "x.pub").write_text("")
    with pytest.raises(EvidenceError, match=r"x\.pub already exists"):
        generate_keypair(tmp_path / "x")
    assert not (tmp_path / "x").exists()
    with pytest.raises(EvidenceError, match="not a PEM private key"):
        load_private_key(pair.public)
    with pytest.raises(EvidenceError, match="not a PEM public key"):
        load_public_key(pair.private)
    ecdsa = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "ec.pem").write_bytes(
        ecdsa.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(EvidenceError, match="not an Ed25519 key"):
        load_private_key(tmp_path / "ec.pem")
    with pytest.raises(EvidenceError, match="cannot read key"):
        load_public_key(tmp_path / "missing.pub")
