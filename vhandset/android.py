"""What the phone computes exactly as Android (and OpenSSL under it) does.

Written here from Android's and OpenSSL's sources, and deliberately independent of auditor's
parsers: those are the code this double exists to test (``auditor.device.parsers`` reads the
same setting and names the same CA files), so calling them here would make a wrong parser
agree with itself. The tests hold the two to the same answers.
"""

from __future__ import annotations

import hashlib
import re
import struct

from cryptography import x509

_JAVA_INT = re.compile(r"[+-]?[0-9]+", re.ASCII)  # what Integer.parseInt takes (ASCII digits)


def subject_hash_old(cert: x509.Certificate | bytes) -> str:
    """OpenSSL's ``x509 -subject_hash_old`` (``X509_NAME_hash_old``): the first four bytes of
    MD5 over the DER subject, read little-endian, in 8 lowercase hex digits; the stem of a CA
    file's name in Android's stores. ``cert`` is a certificate or its PEM."""
    if isinstance(cert, bytes):
        cert = x509.load_pem_x509_certificate(cert)
    digest = hashlib.md5(cert.subject.public_bytes(), usedforsecurity=False).digest()
    return f"{struct.unpack('<I', digest[:4])[0]:08x}"


def global_http_proxy(value: str | None) -> tuple[str, int] | None:
    """The proxy the ``global`` setting ``http_proxy`` sets, as ``(host, port)``, or ``None``.

    As ``ProxyTracker.loadDeprecatedGlobalHttpProxy`` reads it: Java's ``split(":")`` (trailing
    empty fields dropped), the host first, the port second (8080 when absent), a port that
    ``Integer.parseInt`` refuses sets no proxy; ``setGlobalProxy`` then ignores an empty host,
    and ``ProxyInfo.isValid`` a port outside 1..65535. ``null`` is the unset value.
    """
    if value is None or value.strip() in ("", "null"):
        return None
    fields = value.strip().split(":")
    while fields and not fields[-1]:
        fields.pop()
    if not fields or not fields[0]:
        return None
    port = 8080
    if len(fields) > 1:
        if not _JAVA_INT.fullmatch(fields[1]):
            return None
        port = int(fields[1])
    return (fields[0], port) if 0 < port <= 0xFFFF else None
