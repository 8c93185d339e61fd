"""The ADB protocol of the virtual handset, the slow way: scripted hosts send hostile
sessions (garbage, then any mix of CNXN/AUTH/OPEN/WRTE/OKAY/CLSE with hostile service names
and stream data: sync records, shell-v2 packets) over a real loopback socket to a running
``AdbDaemon``. After each session is closed, nothing in the daemon logged an error, every
thread it started has ended (no hang), and it still answers a fresh handshake."""

from __future__ import annotations

import logging
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any

import pytest
from hypothesis import example
from hypothesis import strategies as st

from tests.fuzz.helpers import fuzz
from tests.vhandset.adb_backend import FakeDevice
from vhandset.adb import AdbDaemon
from vhandset.adb_wire import (
    A_VERSION,
    HEADER,
    MAX_PAYLOAD,
    AuthType,
    Command,
    checksum,
    pack_shell_packet,
)

# For a closed session's threads to end, and for the device to come back (the virtual
# handset reboots in 2 s); together well under the 10 s after which an input counts as a hang.
SETTLE_SECONDS = 3.0


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@dataclass
class _Rig:
    daemon: AdbDaemon
    device: Any
    errors: _Errors


def _start(device: Any) -> _Rig:
    errors = _Errors()
    logging.getLogger("vhandset").addHandler(errors)
    daemon = AdbDaemon(device, port=0, max_payload=4096)
    daemon.start()
    rig = _Rig(daemon, device, errors)
    _STARTED.append(rig)
    return rig


_STARTED: list[_Rig] = []


@pytest.fixture(scope="module", autouse=True)
def _stop_daemons() -> Iterator[None]:
    """The daemons are shared by every example of this module, and stopped with it (later
    tests check that no daemon thread is left running)."""
    yield
    while _STARTED:
        rig = _STARTED.pop()
        rig.daemon.stop(2.0)
        logging.getLogger("vhandset").removeHandler(rig.errors)
    _fake.cache_clear()
    _handset.cache_clear()


@cache
def _fake() -> _Rig:
    return _start(FakeDevice(boot_seconds=0.01))


@cache
def _handset() -> _Rig:
    from vhandset.device import VirtualDevice

    return _start(VirtualDevice("xiaomi-mi10t"))


def _message(command: int, arg0: int, arg1: int, payload: bytes, magic: int | None = None) -> bytes:
    magic = command ^ 0xFFFFFFFF if magic is None else magic
    head = HEADER.pack(command, arg0, arg1, len(payload), checksum(payload), magic)
    return head + payload


_ids = st.one_of(st.integers(0, 6), st.sampled_from([2**31, 2**32 - 1]))
_services = st.one_of(
    st.sampled_from(
        [
            "shell:echo hi",
            "shell,v2,raw:cat /sdcard/x",
            "shell,v2:id",
            "shell:",
            "shell:logcat",
            "exec:screencap -p",
            "shell:getprop",
            "shell:exit 3",
            "shell:cat /proc/net/tcp",
            "shell:pm list packages -f",
            "shell:dumpsys package",
            "shell:settings list global",
            "shell:service call iphonesubinfo 1",
            "shell:ls -l /system/etc/security/cacerts",
            "sync:",
            "reverse:forward:tcp:0;tcp:8080",
            "reverse:forward:tcp:5000;tcp:1",
            "reverse:list-forward",
            "reverse:killforward-all",
            "reverse:forward:norebind:x;y",
            "root:",
            "unroot:",
            "reconnect",
            "framebuffer:",
            "jdwp:1",
            "host:version",
            "",
        ]
    ),
    st.text(max_size=40),
    st.builds("shell:{}".format, st.text(max_size=40)),
    st.builds("shell,v2,raw:{}".format, st.text(max_size=40)),
)


@st.composite
def _sync_data(draw: st.DrawFn) -> bytes:
    ident = draw(
        st.sampled_from(
            [
                b"STAT",
                b"STA2",
                b"LIS2",
                b"LIST",
                b"RECV",
                b"SEND",
                b"QUIT",
                b"DATA",
                b"DONE",
                b"XXXX",
            ]
        )
    )
    arg = draw(
        st.sampled_from(
            [
                b"/sdcard",
                b"/sdcard/x,33188",
                b"/",
                b"/nope",
                b"/proc/net/tcp",
                b"/data/local/tmp/f,420",
            ]
        )
        | st.binary(max_size=20)
    )
    size = draw(st.one_of(st.just(len(arg)), st.integers(0, 2**32 - 1)))
    return struct.pack("<4sI", ident, size) + arg


_stream_data = st.one_of(
    st.binary(max_size=120),
    _sync_data(),
    st.builds(pack_shell_packet, st.integers(0, 7), st.binary(max_size=40)),
    st.builds(lambda n: struct.pack("<BI", 0, n), st.integers(0, 2**32 - 1)),
)


@st.composite
def _messages(draw: st.DrawFn) -> bytes:
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(st.binary(min_size=1, max_size=40))  # garbage on the wire
    if kind == 1:
        banner = draw(
            st.sampled_from([b"host::features=shell_v2,cmd", b"host::", b""])
            | st.binary(max_size=40)
        )
        payload_size = draw(st.sampled_from([0, 255, 256, 4096, MAX_PAYLOAD, 2**32 - 1]))
        return _message(Command.CNXN, A_VERSION, payload_size, banner)
    if kind == 2:
        auth = draw(st.sampled_from(list(AuthType)) | st.integers(0, 9))
        return _message(Command.AUTH, int(auth), 0, draw(st.binary(max_size=40)))
    if kind in (3, 4):
        service = draw(_services).encode("utf-8", "surrogatepass")
        return _message(Command.OPEN, draw(_ids), draw(st.sampled_from([0, 0, 1])), service + b"\0")
    if kind in (5, 6):
        return _message(Command.WRTE, draw(_ids), draw(_ids), draw(_stream_data))
    if kind == 7:
        return _message(Command.OKAY, draw(_ids), draw(_ids), draw(st.binary(max_size=4)))
    if kind == 8:
        return _message(Command.CLSE, draw(_ids), draw(_ids), b"")
    command = draw(st.sampled_from([Command.SYNC, Command.STLS, 0x12345678]))
    magic = draw(st.sampled_from([None, 0, 0xFFFFFFFF]))
    return _message(int(command), draw(_ids), draw(_ids), draw(st.binary(max_size=8)), magic)


def _connect(rig: _Rig, timeout: float = SETTLE_SECONDS) -> socket.socket:
    deadline = time.monotonic() + timeout
    while True:
        if rig.device.online:
            try:
                return socket.create_connection(("127.0.0.1", rig.daemon.port), timeout=2)
            except OSError:
                pass
        if time.monotonic() > deadline:
            raise AssertionError("the virtual adbd no longer accepts connections")
        time.sleep(0.01)


def _drain(sock: socket.socket, ack: bool) -> None:
    """Read what the device sent so far; with ``ack``, OKAY its WRTEs as a host would."""
    sock.settimeout(0.0005)
    buffer = b""
    try:
        while chunk := sock.recv(65536):
            buffer += chunk
    except (TimeoutError, BlockingIOError, OSError):
        pass
    while ack and len(buffer) >= HEADER.size:
        command, arg0, arg1, length, _, _ = HEADER.unpack_from(buffer)
        if command == Command.WRTE:
            try:
                sock.sendall(_message(Command.OKAY, arg1, arg0, b""))
            except OSError:
                return
        buffer = buffer[HEADER.size + length :]


def _handshake_works(rig: _Rig) -> bool:
    deadline = time.monotonic() + SETTLE_SECONDS
    while time.monotonic() < deadline:
        with _connect(rig) as sock:
            try:
                sock.sendall(_message(Command.CNXN, A_VERSION, 4096, b"host::"))
                sock.settimeout(1.0)
                head = sock.recv(HEADER.size, socket.MSG_WAITALL)
            except OSError:
                head = b""
            if len(head) == HEADER.size and HEADER.unpack(head)[0] == Command.CNXN:
                return True
        time.sleep(0.05)  # dropped while the device rebooted or adbd restarted as root
    return False


def _settle(rig: _Rig) -> None:
    deadline = time.monotonic() + SETTLE_SECONDS
    while time.monotonic() < deadline:
        with rig.daemon._lock:
            alive = [t for t in rig.daemon._threads if t.is_alive()]
        if not alive and rig.daemon.connection_count == 0:
            return
        time.sleep(0.005)
    raise AssertionError(f"threads still running {SETTLE_SECONDS} s after the host left: {alive}")


def _session(rig: _Rig, handshake: bool, messages: list[bytes], ack: bool) -> None:
    rig.errors.records.clear()
    with _connect(rig) as sock:
        try:
            if handshake:
                sock.sendall(_message(Command.CNXN, A_VERSION, 4096, b"host::features=shell_v2"))
            for data in messages:
                sock.sendall(data)
                _drain(sock, ack)
        except OSError:
            pass  # the daemon dropped us, as it should for a protocol error
    _settle(rig)
    errors = [(r.name, r.getMessage(), r.exc_info and r.exc_info[1]) for r in rig.errors.records]
    assert not errors, errors
    assert _handshake_works(rig), _state(rig)
    _settle(rig)


def _state(rig: _Rig) -> str:
    """What the daemon looks like when it stopped answering, for the failure message."""
    daemon = rig.daemon
    accept = daemon._accept_thread
    with daemon._lock:
        threads = sorted(t.name for t in daemon._threads if t.is_alive())
    return (
        f"no CNXN answer: device online={rig.device.online}, accept thread alive="
        f"{accept is not None and accept.is_alive()}, connections={daemon.connection_count}, "
        f"threads={threads[:10]}, process threads={threading.active_count()}"
    )


_HALF_PUSH = [
    _message(Command.OPEN, 2, 0, b"sync:\0"),
    _message(Command.WRTE, 2, 1, struct.pack("<4sI", b"SEND", 8) + b"/x,33188"),
    _message(Command.WRTE, 2, 1, struct.pack("<4sI", b"DATA", 10)),
]


# A host gone in the middle of a push: EOFError escaped the sync service ("service failed").
@example(True, _HALF_PUSH, True)
@fuzz(st.booleans(), st.lists(_messages(), max_size=12), st.booleans(), share=0.7)
def test_hostile_sessions(handshake: bool, messages: list[bytes], ack: bool) -> None:
    _session(_fake(), handshake, messages, ack)


@fuzz(st.lists(_messages(), max_size=10), st.booleans(), share=0.3)
def test_hostile_sessions_with_the_virtual_handset(messages: list[bytes], ack: bool) -> None:
    _session(_handset(), True, messages, ack)


def test_a_unicode_digit_before_a_redirection() -> None:
    """Found by the fuzz: the virtual shell read a redirection's fd with str.isdigit(), which
    takes "³" (and "⓵"); int() then raised and the shell logged a crash."""
    for digit in "³⓵":
        session = [_message(Command.OPEN, 1, 0, f"shell:{digit}>x\0".encode())]
        _session(_handset(), True, session, True)
