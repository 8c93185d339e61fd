"""Self-signed certificates made on the spot for the tests that need one: an origin's TLS
certificate, a CA-shaped subject, a leaf with many names."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

# a fixed start, so a certificate's dates (and whatever is read from them) never depend on
# the day the tests run
FIXED_START = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def self_signed(
    name: x509.Name | str,
    *,
    sans: Sequence[str] = (),
    valid_from: dt.datetime = FIXED_START,
    days: float = 30,
    serial: int | None = None,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A P-256 certificate signed by its own new key: ``name`` (a plain string is the common
    name), DNS ``sans`` in the order given (no extension when empty), valid ``days`` from
    ``valid_from``, a random serial unless one is given."""
    key = ec.generate_private_key(ec.SECP256R1())
    if isinstance(name, str):
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number() if serial is None else serial)
        .not_valid_before(valid_from)
        .not_valid_after(valid_from + dt.timedelta(days=days))
    )
    if sans:
        san = x509.SubjectAlternativeName([x509.DNSName(s) for s in sans])
        builder = builder.add_extension(san, critical=False)
    return builder.sign(key, hashes.SHA256()), key


def write_pem(
    cert: x509.Certificate, key: ec.EllipticCurvePrivateKey, folder: Path, stem: str
) -> tuple[Path, Path]:
    """``<stem>.pem`` (the certificate) and ``<stem>.key`` (its key, PKCS#8 unencrypted) in
    ``folder``, as a TLS server loads them."""
    cert_path, key_path = folder / f"{stem}.pem", folder / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path
