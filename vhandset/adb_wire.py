"""The ADB wire format as pure functions: messages, the banner, shell-v2 packets, service names.

Nothing here touches a socket, so each piece can be tested alone. The layouts follow AOSP's
``packages/modules/adb`` (``protocol.txt``, ``adb.h``, ``shell_protocol.h``, ``services.cpp``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

A_VERSION = 0x01000001  # skips checksums; the oldest version adb 36 still speaks is 0x01000000
MAX_PAYLOAD = 1024 * 1024  # what adbd offers; the host offers the same
MIN_PEER_PAYLOAD = 256  # a smaller offer is not a real adb server

# Only what this transport implements: no delayed_ack, no sendrecv_v2, no abb, no TLS.
DEVICE_FEATURES = ("shell_v2", "cmd", "stat_v2", "ls_v2")

HEADER = struct.Struct("<6I")


def _cmd(name: bytes) -> int:
    return int.from_bytes(name, "little")


class Command(IntEnum):
    SYNC = _cmd(b"SYNC")
    CNXN = _cmd(b"CNXN")
    AUTH = _cmd(b"AUTH")
    OPEN = _cmd(b"OPEN")
    OKAY = _cmd(b"OKAY")
    CLSE = _cmd(b"CLSE")
    WRTE = _cmd(b"WRTE")
    STLS = _cmd(b"STLS")


class AuthType(IntEnum):
    TOKEN = 1
    SIGNATURE = 2
    RSAPUBLICKEY = 3


AUTH_TOKEN_SIZE = 20


class ProtocolError(Exception):
    """The peer sent something no adb server would: the connection is dropped."""


@dataclass(frozen=True, slots=True)
class Header:
    command: Command
    arg0: int
    arg1: int
    data_length: int
    data_crc32: int


@dataclass(frozen=True, slots=True)
class Message:
    command: Command
    arg0: int
    arg1: int
    payload: bytes = b""


def checksum(payload: bytes) -> int:
    """adb's "crc32" is the byte sum, kept for peers older than A_VERSION."""
    return sum(payload) & 0xFFFFFFFF


def pack_message(message: Message) -> bytes:
    command = int(message.command)
    header = HEADER.pack(
        command,
        message.arg0 & 0xFFFFFFFF,
        message.arg1 & 0xFFFFFFFF,
        len(message.payload),
        checksum(message.payload),
        command ^ 0xFFFFFFFF,
    )
    return header + message.payload


def unpack_header(data: bytes, max_payload: int) -> Header:
    """Parse and check the 24-byte header; raise ProtocolError on anything a host never sends."""
    if len(data) != HEADER.size:
        raise ProtocolError(f"short header: {len(data)} bytes")
    command, arg0, arg1, length, crc, magic = HEADER.unpack(data)
    if magic != command ^ 0xFFFFFFFF:
        raise ProtocolError(f"bad magic {magic:#010x} for command {command:#010x}")
    try:
        known = Command(command)
    except ValueError:
        raise ProtocolError(f"unknown command {command:#010x}") from None
    if length > max_payload:
        raise ProtocolError(f"payload of {length} bytes exceeds {max_payload}")
    return Header(known, arg0, arg1, length, crc)


def unpack_message(data: bytes, max_payload: int = MAX_PAYLOAD) -> Message:
    """A whole message (header and payload) from bytes; used by tests and tools."""
    header = unpack_header(data[: HEADER.size], max_payload)
    payload = data[HEADER.size : HEADER.size + header.data_length]
    if len(payload) != header.data_length:
        raise ProtocolError("truncated payload")
    return Message(header.command, header.arg0, header.arg1, payload)


def _banner_value(value: str) -> str:
    # The host splits the banner on ':', ';' and '='; any of them in a value would garble it.
    return "".join("_" if ch in ":;=\0" else ch for ch in value)


def device_banner(props: dict[str, str], features: tuple[str, ...] = DEVICE_FEATURES) -> bytes:
    """The CNXN payload adbd sends: ``device::ro.product.name=…;…;features=…``."""
    keys = ("ro.product.name", "ro.product.model", "ro.product.device")
    parts = [f"{key}={_banner_value(props.get(key, ''))}" for key in keys]
    parts.append("features=" + ",".join(features))
    return ("device::" + ";".join(parts)).encode("utf-8")


def parse_banner(payload: bytes) -> tuple[str, dict[str, str]]:
    """``(kind, properties)`` of a CNXN banner such as ``host::features=shell_v2,cmd``."""
    text = payload.rstrip(b"\0").decode("utf-8", "replace")
    kind, _, rest = text.partition("::")
    props: dict[str, str] = {}
    for item in rest.split(";"):
        key, sep, value = item.partition("=")
        if sep:
            props[key] = value
    return kind, props


def protocol_string(data: bytes) -> bytes:
    """adb's length-prefixed string: four lowercase hex digits, then the bytes."""
    if len(data) > 0xFFFF:
        raise ValueError("protocol string longer than 65535 bytes")
    return f"{len(data):04x}".encode("ascii") + data


def fail_reply(message: str) -> bytes:
    return b"FAIL" + protocol_string(message.encode("utf-8"))


# --- shell protocol v2 ---------------------------------------------------------------------


class ShellPacket(IntEnum):
    STDIN = 0
    STDOUT = 1
    STDERR = 2
    EXIT = 3
    CLOSE_STDIN = 4
    WINDOW_SIZE = 5


SHELL_HEADER = struct.Struct("<BI")


def pack_shell_packet(kind: int, data: bytes) -> bytes:
    return SHELL_HEADER.pack(kind, len(data)) + data


def pack_shell_exit(code: int) -> bytes:
    return pack_shell_packet(ShellPacket.EXIT, bytes([code & 0xFF]))


class ShellPacketReader:
    """Reassembles shell-v2 packets from stream data, which WRTE boundaries cut anywhere."""

    def __init__(self, max_packet: int = MAX_PAYLOAD) -> None:
        self._buffer = bytearray()
        self._max_packet = max_packet

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self._buffer += data
        packets: list[tuple[int, bytes]] = []
        while len(self._buffer) >= SHELL_HEADER.size:
            kind, length = SHELL_HEADER.unpack_from(self._buffer)
            if length > self._max_packet:
                raise ProtocolError(f"shell packet of {length} bytes")
            end = SHELL_HEADER.size + length
            if len(self._buffer) < end:
                break
            packets.append((kind, bytes(self._buffer[SHELL_HEADER.size : end])))
            del self._buffer[:end]
        return packets


# --- service names ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ShellRequest:
    """A ``shell[,args]:cmd`` or ``exec:cmd`` service."""

    command: str
    pty: bool
    shell_protocol: bool  # shell v2 framing with separate stderr and an exit code


def parse_shell_service(service: str) -> ShellRequest | None:
    """``shell:ls``, ``shell,v2,TERM=xterm,raw:ls`` or ``exec:screencap -p``; else None.

    As adbd: a command means raw by default, no command means a pty; ``exec:`` is always raw
    and unframed, so binary output passes untouched.
    """
    if service.startswith("exec:"):
        return ShellRequest(service[len("exec:") :], pty=False, shell_protocol=False)
    if not service.startswith(("shell:", "shell,")):
        return None
    args, _, command = service[len("shell") :].partition(":")
    pty = not command
    protocol = False
    for arg in args.split(","):
        if arg == "raw":
            pty = False
        elif arg == "pty":
            pty = True
        elif arg == "v2":
            protocol = True
    return ShellRequest(command, pty=pty, shell_protocol=protocol)
