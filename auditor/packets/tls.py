"""TLS ClientHello (RFC 8446): SNI and ALPN, from the handshake bytes or from a stream of TLS
records (a ClientHello may span several records and several TCP segments)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from auditor.packets.dns import _dns_compiled
from auditor.packets.wire import MalformedError

MAX_HANDSHAKE: Final = 64 * 1024  # reassembly cap for one ClientHello


HANDSHAKE: Final = 0x16
CLIENT_HELLO: Final = 1
_EXT_SNI: Final = 0
_EXT_ALPN: Final = 16


@dataclass(frozen=True, slots=True)
class ClientHello:
    """What a TLS ClientHello says about where it goes."""

    sni: str | None
    alpn: tuple[str, ...]
    legacy_version: int


def client_hello_length(handshake: bytes | bytearray) -> int | None:
    """The full length (header included) of the ClientHello that ``handshake`` starts with, or
    None when fewer than 4 bytes are there."""
    if len(handshake) < 4:
        return None
    if handshake[0] != CLIENT_HELLO:
        raise MalformedError(f"handshake type {handshake[0]} is not a ClientHello")
    return 4 + ((handshake[1] << 16) | (handshake[2] << 8) | handshake[3])


def parse_client_hello(handshake: bytes | bytearray) -> ClientHello:
    """SNI and ALPN of a complete ClientHello handshake message (type, length, body).

    Compiled (``_dns.c``, built with the DNS parser) where it is built, else
    :func:`_parse_client_hello_python`: the same results and errors."""
    if _dns_compiled is not None:
        return ClientHello(*_dns_compiled.client_hello(handshake))
    return _parse_client_hello_python(handshake)


def _parse_client_hello_python(handshake: bytes | bytearray) -> ClientHello:
    """:func:`parse_client_hello` in Python: the reference the compiled one is checked
    against."""
    total = client_hello_length(handshake)
    if total is None or total > len(handshake):
        raise MalformedError("incomplete ClientHello")
    b = bytes(handshake[:total])
    if total < 4 + 2 + 32 + 1:
        raise MalformedError("ClientHello too short")
    version = (b[4] << 8) | b[5]
    pos = 4 + 2 + 32
    pos += 1 + b[pos]  # legacy_session_id
    if pos + 2 > total:
        raise MalformedError("ClientHello ends in the session id")
    pos += 2 + ((b[pos] << 8) | b[pos + 1])  # cipher_suites
    if pos + 1 > total:
        raise MalformedError("ClientHello ends in the cipher suites")
    pos += 1 + b[pos]  # legacy_compression_methods
    sni: str | None = None
    alpn: tuple[str, ...] = ()
    if pos == total:
        return ClientHello(None, (), version)  # no extensions at all
    if pos + 2 > total:
        raise MalformedError("ClientHello ends in the compression methods")
    ext_end = pos + 2 + ((b[pos] << 8) | b[pos + 1])
    if ext_end > total:
        raise MalformedError("extensions run past the ClientHello")
    pos += 2
    while pos + 4 <= ext_end:
        etype = (b[pos] << 8) | b[pos + 1]
        elen = (b[pos + 2] << 8) | b[pos + 3]
        pos += 4
        if pos + elen > ext_end:
            raise MalformedError("extension runs past the extensions")
        if etype == _EXT_SNI and sni is None:
            sni = _sni(b[pos : pos + elen])
        elif etype == _EXT_ALPN and not alpn:
            alpn = _alpn(b[pos : pos + elen])
        pos += elen
    return ClientHello(sni, alpn, version)


def _sni(ext: bytes) -> str | None:
    if len(ext) < 2:
        raise MalformedError("short server_name extension")
    end = min(len(ext), 2 + ((ext[0] << 8) | ext[1]))
    pos = 2
    while pos + 3 <= end:
        kind = ext[pos]
        length = (ext[pos + 1] << 8) | ext[pos + 2]
        pos += 3
        if pos + length > end:
            raise MalformedError("server name runs past the extension")
        if kind == 0:
            return ext[pos : pos + length].decode("utf-8", "backslashreplace")
        pos += length
    return None


def _alpn(ext: bytes) -> tuple[str, ...]:
    if len(ext) < 2:
        raise MalformedError("short ALPN extension")
    end = min(len(ext), 2 + ((ext[0] << 8) | ext[1]))
    pos = 2
    out: list[str] = []
    while pos < end:
        length = ext[pos]
        pos += 1
        if pos + length > end:
            raise MalformedError("ALPN protocol runs past the extension")
        out.append(ext[pos : pos + length].decode("ascii", "backslashreplace"))
        pos += length
    return tuple(out)


def looks_like_client_hello_record(payload: bytes | bytearray) -> bool:
    """The payload starts a TLS handshake record whose first message is a ClientHello."""
    return (
        len(payload) >= 6
        and payload[0] == HANDSHAKE
        and payload[1] == 3
        and payload[5] == CLIENT_HELLO
    )


def client_hello_from_records(stream: bytes | bytearray) -> ClientHello | None:
    """The ClientHello carried by the TLS records at the start of ``stream``; None while more
    bytes are needed. A ClientHello may span several records (RFC 8446 5.1)."""
    handshake = bytearray()
    pos = 0
    need: int | None = None
    while pos + 5 <= len(stream):
        if stream[pos] != HANDSHAKE or stream[pos + 1] != 3:
            raise MalformedError("not a TLS handshake record")
        length = (stream[pos + 3] << 8) | stream[pos + 4]
        if length == 0 or length > 16384 + 2048:
            raise MalformedError(f"TLS record length {length}")
        pos += 5
        handshake += stream[pos : pos + length]
        pos += length
        if need is None:
            need = client_hello_length(handshake)
        if need is not None:
            if need > MAX_HANDSHAKE:
                raise MalformedError("ClientHello larger than the reassembly cap")
            if len(handshake) >= need:
                return parse_client_hello(handshake)
    return None
