"""The server's certificate in a TLS handshake, parsed from bytes.

Up to TLS 1.2 the server's first flight is in clear: ServerHello, then (unless the session is
resumed or the cipher suite is anonymous) a Certificate message whose first entry is the
server's own certificate, the *leaf* (RFC 5246 7.4.2). TLS 1.3 encrypts everything after the
ServerHello (RFC 8446 4.4.2), so a packet capture shows no certificate there.

- :func:`read_server_flight` walks the TLS records at the start of the server's stream and
  gives the leaf's DER as soon as its bytes are there (the rest of the chain need not be),
  says when the stream cannot hold one (TLS 1.3, a resumed session, an alert), or asks for
  more bytes. Records and handshake messages may be cut anywhere.
- :func:`certificate_info` turns a DER certificate into a
  :class:`~auditor.records.CertificateInfo` (subject O, CN, C, SAN DNS names, issuer,
  validity, SHA-256) with ``cryptography``. The recorder uses it too, for the certificates
  mitmproxy received upstream, so that both sources give the same record for the same
  certificate.

The bytes are hostile: every length is checked against what is there and against
:data:`MAX_FLIGHT`; text is capped (:data:`MAX_TEXT`, :data:`MAX_NAMES`) and control
characters are escaped. A certificate ``cryptography`` cannot read still gives its SHA-256,
with ``error`` saying why the rest is missing.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import TYPE_CHECKING, Final

from auditor.records import CertificateInfo

if TYPE_CHECKING:
    from cryptography import x509

MAX_FLIGHT: Final = 64 * 1024  # bytes of the server's stream read for the leaf
MAX_TEXT: Final = 256  # characters kept of a subject or issuer field, or of a SAN name
MAX_NAMES: Final = 1000  # SAN DNS names kept per certificate
MAX_CHAIN: Final = 10  # certificates kept per connection (the recorder's chains)

HANDSHAKE: Final = 22
SERVER_HELLO: Final = 2
CERTIFICATE: Final = 11
TLS13: Final = 0x0304
_EXT_SUPPORTED_VERSIONS: Final = 43
_MAX_RECORD: Final = 16384 + 2048  # TLSCiphertext.length (RFC 5246 6.2.3)


class MalformedError(ValueError):
    """The bytes are not a TLS server flight."""


class TooLargeError(MalformedError):
    """The leaf certificate is longer than :data:`MAX_FLIGHT`."""


@dataclass(frozen=True, slots=True)
class ServerFlight:
    """What the start of a server's stream showed.

    ``done``: nothing more is to be learnt (the leaf was read, or the stream cannot carry
    one); else more bytes are needed. ``leaf``: the leaf certificate's DER. ``version``: the
    version the ServerHello chose (``0x0304`` for TLS 1.3), when it was read."""

    done: bool
    leaf: bytes | None = None
    version: int | None = None


_MORE = ServerFlight(False)


def looks_like_server_flight(payload: bytes | bytearray) -> bool:
    """The payload starts a TLS handshake record (``16 03 0X``) whose first message is a
    ServerHello."""
    return (
        len(payload) >= 6
        and payload[0] == HANDSHAKE
        and payload[1] == 3
        and payload[2] <= 4
        and payload[5] == SERVER_HELLO
    )


def read_server_flight(stream: bytes | bytearray) -> ServerFlight:
    """Read the TLS records at the start of the server's side of a TCP connection.

    The handshake messages are taken from consecutive handshake records, the last one
    possibly cut short; a record of another type (ChangeCipherSpec, Alert, application data)
    before the Certificate message ends the search. Raises :class:`MalformedError` when the
    bytes are not a server flight, :class:`TooLargeError` when the leaf would not fit in
    :data:`MAX_FLIGHT`."""
    handshake = bytearray()
    pos = 0
    n = min(len(stream), MAX_FLIGHT)
    version: int | None = None
    msg = 0  # start of the next handshake message in ``handshake``
    while pos + 5 <= n:
        ctype, major, minor = stream[pos], stream[pos + 1], stream[pos + 2]
        length = (stream[pos + 3] << 8) | stream[pos + 4]
        if major != 3 or minor > 4:
            raise MalformedError(f"not a TLS record (version {major}.{minor})")
        if ctype != HANDSHAKE:
            if pos == 0:
                raise MalformedError(f"TLS record type {ctype} before the ServerHello")
            return ServerFlight(True, None, version)  # e.g. ChangeCipherSpec: no certificate
        if length == 0 or length > _MAX_RECORD:
            raise MalformedError(f"TLS record length {length}")
        pos += 5
        handshake += stream[pos : min(pos + length, n)]
        pos += length
        while True:  # the complete messages so far, and the Certificate's start
            if msg + 4 > len(handshake):
                break
            mtype = handshake[msg]
            mlen = int.from_bytes(handshake[msg + 1 : msg + 4], "big")
            body = msg + 4
            if msg == 0 and mtype != SERVER_HELLO:
                raise MalformedError(f"handshake type {mtype} is not a ServerHello")
            if mtype == CERTIFICATE:
                got = _certificate(handshake, body, mlen, version)
                if got.done:
                    return got
                break  # the leaf is in records still to come
            if mlen > MAX_FLIGHT:
                raise MalformedError(f"handshake message of {mlen} bytes")
            if body + mlen > len(handshake):
                break
            if mtype == SERVER_HELLO:
                if msg != 0:
                    raise MalformedError("a second ServerHello")
                version = server_hello_version(handshake[body : body + mlen])
                if version >= TLS13:
                    return ServerFlight(True, None, version)  # the Certificate is encrypted
            else:  # no Certificate message (an anonymous or PSK cipher suite)
                return ServerFlight(True, None, version)
            msg = body + mlen
    if len(stream) >= MAX_FLIGHT:
        raise TooLargeError(f"no leaf certificate in the first {MAX_FLIGHT} bytes")
    return ServerFlight(False, None, version) if version is not None else _MORE


def _certificate(handshake: bytearray, body: int, mlen: int, version: int | None) -> ServerFlight:
    """The leaf of the Certificate message whose body starts at ``body``."""
    if body + 6 > len(handshake):
        return ServerFlight(False, None, version)
    list_len = int.from_bytes(handshake[body : body + 3], "big")
    if list_len + 3 != mlen:
        raise MalformedError("certificate list length disagrees with its message")
    if list_len == 0:
        return ServerFlight(True, None, version)  # no certificate sent
    leaf_len = int.from_bytes(handshake[body + 3 : body + 6], "big")
    if leaf_len == 0 or leaf_len + 3 > list_len:
        raise MalformedError("leaf certificate length disagrees with the list")
    if body + 6 + leaf_len > MAX_FLIGHT:
        raise TooLargeError(f"leaf certificate of {leaf_len} bytes")
    start = body + 6
    if start + leaf_len > len(handshake):
        return ServerFlight(False, None, version)
    return ServerFlight(True, bytes(handshake[start : start + leaf_len]), version)


def server_hello_version(hello: bytes | bytearray) -> int:
    """The version a ServerHello body chose: its ``supported_versions`` extension (TLS 1.3,
    RFC 8446 4.2.1), else ``legacy_version``."""
    if len(hello) < 2 + 32 + 1:
        raise MalformedError("ServerHello too short")
    version = (hello[0] << 8) | hello[1]
    pos = 2 + 32
    pos += 1 + hello[pos]  # legacy_session_id_echo
    pos += 2 + 1  # cipher_suite, legacy_compression_method
    if pos + 2 > len(hello):
        if pos > len(hello):
            raise MalformedError("ServerHello ends in its session id or cipher suite")
        return version  # no extensions (TLS 1.0 to 1.2 may omit them)
    end = pos + 2 + ((hello[pos] << 8) | hello[pos + 1])
    if end > len(hello):
        raise MalformedError("ServerHello extensions run past the message")
    pos += 2
    while pos + 4 <= end:
        etype = (hello[pos] << 8) | hello[pos + 1]
        elen = (hello[pos + 2] << 8) | hello[pos + 3]
        pos += 4
        if pos + elen > end:
            raise MalformedError("ServerHello extension runs past the extensions")
        if etype == _EXT_SUPPORTED_VERSIONS and elen == 2:
            return (hello[pos] << 8) | hello[pos + 1]
        pos += elen
    return version


# ------------------------------------------------------------------------------ certificates


@cache
def _unreadable() -> tuple[type[Exception], ...]:
    """What ``cryptography`` raises for a certificate it cannot read a field of. It is
    imported with the first certificate read, not with this module: the name worker imports
    this module, and most captures give it no certificate (that import is a tenth of a second
    of the worker's start, while the reading process goes on without it)."""
    from cryptography import x509

    return (ValueError, TypeError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType)


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def _escape(m: re.Match[str]) -> str:
    return f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100 else "\ufffd"


def clean_text(value: object) -> tuple[str, bool]:
    """A captured string as it is kept: control characters as ``\\xNN``, a lone surrogate as
    U+FFFD, at most :data:`MAX_TEXT` characters (cut ends in ``…``). Also says whether it
    was cut."""
    text = (
        value if isinstance(value, str) else value.hex() if isinstance(value, bytes) else str(value)
    )
    if _CONTROL.search(text):
        text = _CONTROL.sub(_escape, text)
    if len(text) > MAX_TEXT:
        return text[: MAX_TEXT - 1] + "…", True
    return text, False


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


class _Reader:
    """Reads one certificate's fields, noting what could not be read instead of raising."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.cut = False

    def text(self, value: object) -> str:
        text, cut = clean_text(value)
        self.cut |= cut
        return text

    def attribute(self, name: x509.Name, oid: x509.ObjectIdentifier) -> str | None:
        attrs = name.get_attributes_for_oid(oid)
        return self.text(attrs[0].value) if attrs else None

    def names(self, cert: x509.Certificate, what: str) -> x509.Name | None:
        try:
            return cert.subject if what == "subject" else cert.issuer
        except ValueError as exc:
            self.errors.append(f"{what} unreadable: {exc}")
            return None

    def dns_names(self, cert: x509.Certificate) -> tuple[str, ...]:
        from cryptography import x509

        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            values = san.get_values_for_type(x509.DNSName)
        except x509.ExtensionNotFound:
            return ()
        except _unreadable() as exc:  # malformed or duplicate extensions
            self.errors.append(f"subjectAltName unreadable: {exc}")
            return ()
        if len(values) > MAX_NAMES:
            self.cut = True
            values = values[:MAX_NAMES]
        return tuple(self.text(v) for v in values)

    def time(self, cert: x509.Certificate, which: str) -> str | None:
        try:
            t = cert.not_valid_before_utc if which == "before" else cert.not_valid_after_utc
            return _iso(t)
        except (ValueError, OverflowError) as exc:
            self.errors.append(f"not {which} unreadable: {exc}")
            return None


@lru_cache(maxsize=4096)
def certificate_info(der: bytes) -> CertificateInfo:
    """The fields of a DER certificate that say whose it is. Never raises: what cannot be
    read is None and ``error`` says why (the SHA-256 is always there).

    Reading one costs about 0.3 ms (``cryptography`` builds the subject and issuer names
    as Python objects), so the answers for the last 4096 certificates are kept: a capture
    meets the same few certificates over and over, one per connection to a server."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    sha = hashlib.sha256(der).hexdigest()
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError as exc:
        return CertificateInfo(sha256=sha, error=clean_text(f"not a certificate: {exc}")[0])
    r = _Reader()
    subject = r.names(cert, "subject")
    issuer = r.names(cert, "issuer")
    o = cn = c = issuer_o = issuer_cn = None
    try:
        if subject is not None:
            o = r.attribute(subject, NameOID.ORGANIZATION_NAME)
            cn = r.attribute(subject, NameOID.COMMON_NAME)
            c = r.attribute(subject, NameOID.COUNTRY_NAME)
        if issuer is not None:
            issuer_o = r.attribute(issuer, NameOID.ORGANIZATION_NAME)
            issuer_cn = r.attribute(issuer, NameOID.COMMON_NAME)
    except _unreadable() as exc:
        r.errors.append(f"name attribute unreadable: {exc}")
    return CertificateInfo(
        sha256=sha,
        subject_o=o,
        subject_cn=cn,
        subject_c=c,
        dns_names=r.dns_names(cert),
        issuer_o=issuer_o,
        issuer_cn=issuer_cn,
        not_before=r.time(cert, "before"),
        not_after=r.time(cert, "after"),
        truncated=r.cut,
        error=clean_text("; ".join(r.errors))[0] if r.errors else None,
    )


def joined(names: Iterable[str]) -> str:
    """Names as one ``;``-separated text (a ``;`` inside a name is written ``\\059``)."""
    return ";".join(n.replace(";", "\\059") for n in names)


def flow_fields(info: CertificateInfo) -> tuple[str | None, ...]:
    """A leaf certificate in the flow table's terms: subject O, C, CN, the SAN DNS names
    (:func:`joined`, None when there are none), the issuer (O, else CN), the SHA-256."""
    return (
        info.subject_o,
        info.subject_c,
        info.subject_cn,
        joined(info.dns_names) or None,
        info.issuer_o or info.issuer_cn,
        info.sha256,
    )


def chain_info(ders: Iterable[bytes]) -> tuple[CertificateInfo, ...]:
    """:func:`certificate_info` of the first :data:`MAX_CHAIN` certificates, leaf first."""
    out: list[CertificateInfo] = []
    for der in ders:
        if len(out) == MAX_CHAIN:
            break
        out.append(certificate_info(der))
    return tuple(out)
