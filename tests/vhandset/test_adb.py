"""The virtual adbd without the adb server: wire functions alone, then a scripted host.

The scripted host (:class:`ScriptedHost`) speaks the wire protocol packet by packet, so these
tests can check what the real server would never show: payload limits, flow control, checksums,
the AUTH exchange, and hostile input. The real server is exercised in
``tests/e2e/test_adb_transport.py``.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.vhandset.adb_backend import SCREENCAP_PNG, FakeDevice, MemoryFS, split_commands
from tests.vhandset.adb_fixtures import wait_until
from vhandset.adb import MAX_BUFFERED, AdbDaemon
from vhandset.adb_reverse import ReverseTable
from vhandset.adb_sync import (
    DENT_V1,
    DENT_V2,
    DONE_V1,
    DONE_V2,
    STAT_V2,
    SYNC_DATA_MAX,
    SyncFailure,
    pack_dent_v1,
    pack_stat_v1,
    pack_stat_v2,
    parse_send_target,
    serve_sync,
)
from vhandset.adb_wire import (
    A_VERSION,
    HEADER,
    MAX_PAYLOAD,
    AuthType,
    Command,
    Message,
    ProtocolError,
    ShellPacket,
    ShellPacketReader,
    checksum,
    device_banner,
    fail_reply,
    pack_message,
    pack_shell_exit,
    pack_shell_packet,
    parse_banner,
    parse_shell_service,
    protocol_string,
    unpack_header,
    unpack_message,
)
from vhandset.interface import FileStat

# --- messages --------------------------------------------------------------------------------


def test_message_round_trip_with_magic_and_byte_sum() -> None:
    message = Message(Command.WRTE, 7, 9, b"\x01\x02\xff")
    raw = pack_message(message)
    command, arg0, arg1, length, crc, magic = HEADER.unpack(raw[: HEADER.size])
    assert raw[:4] == b"WRTE"
    assert (command, arg0, arg1, length) == (Command.WRTE, 7, 9, 3)
    assert crc == 0x102 == checksum(b"\x01\x02\xff")
    assert magic == command ^ 0xFFFFFFFF
    assert unpack_message(raw) == message


def test_command_values_are_the_ascii_names() -> None:
    for command in Command:
        assert command.to_bytes(4, "little") == command.name.encode()


def test_bad_magic_unknown_command_and_oversize_are_protocol_errors() -> None:
    good = pack_message(Message(Command.OKAY, 1, 2))
    bad_magic = good[:20] + b"\0\0\0\0"
    with pytest.raises(ProtocolError, match="magic"):
        unpack_header(bad_magic, MAX_PAYLOAD)
    unknown = HEADER.pack(0x41414141, 0, 0, 0, 0, 0x41414141 ^ 0xFFFFFFFF)
    with pytest.raises(ProtocolError, match="unknown command"):
        unpack_header(unknown, MAX_PAYLOAD)
    huge = HEADER.pack(Command.WRTE, 1, 1, 4097, 0, Command.WRTE ^ 0xFFFFFFFF)
    with pytest.raises(ProtocolError, match="exceeds"):
        unpack_header(huge, 4096)
    with pytest.raises(ProtocolError, match="short"):
        unpack_header(good[:10], MAX_PAYLOAD)


def test_banner_carries_props_and_only_implemented_features() -> None:
    banner = device_banner(
        {"ro.product.name": "a;b", "ro.product.model": "Pixel 8", "ro.product.device": "x:y"}
    )
    kind, props = parse_banner(banner)
    assert kind == "device"
    assert props["ro.product.name"] == "a_b"
    assert props["ro.product.model"] == "Pixel 8"
    assert props["ro.product.device"] == "x_y"
    features = props["features"].split(",")
    assert {"shell_v2", "stat_v2", "cmd"} <= set(features)
    assert not {"delayed_ack", "sendrecv_v2", "abb", "abb_exec"} & set(features)


def test_protocol_string_and_fail_reply() -> None:
    assert protocol_string(b"tcp:1") == b"0005tcp:1"
    assert protocol_string(b"") == b"0000"
    assert fail_reply("nope") == b"FAIL0004nope"
    with pytest.raises(ValueError):
        protocol_string(b"x" * 0x10000)


# --- shell protocol and service names ----------------------------------------------------------


def test_shell_packets() -> None:
    assert pack_shell_packet(ShellPacket.STDOUT, b"hi") == b"\x01\x02\x00\x00\x00hi"
    assert pack_shell_exit(3) == b"\x03\x01\x00\x00\x00\x03"
    assert pack_shell_exit(256 + 7)[-1] == 7


@given(st.lists(st.binary(max_size=40), max_size=6), st.lists(st.integers(1, 30), max_size=20))
def test_shell_packet_reader_reassembles_any_cut(payloads: list[bytes], cuts: list[int]) -> None:
    packets = [(i % 6, data) for i, data in enumerate(payloads)]
    stream = b"".join(pack_shell_packet(kind, data) for kind, data in packets)
    reader = ShellPacketReader()
    got: list[tuple[int, bytes]] = []
    pos = 0
    for cut in [*cuts, len(stream)]:
        got += reader.feed(stream[pos : pos + cut])
        pos += cut
    got += reader.feed(stream[pos:])
    assert got == packets


def test_shell_packet_reader_rejects_oversized_packet() -> None:
    with pytest.raises(ProtocolError):
        ShellPacketReader(max_packet=10).feed(struct.pack("<BI", 0, 11))


@pytest.mark.parametrize(
    ("service", "command", "pty", "v2"),
    [
        ("shell:getprop ro.product.model", "getprop ro.product.model", False, False),
        ("shell:", "", True, False),
        ("shell,v2,TERM=xterm,raw:getprop x", "getprop x", False, True),
        ("shell,v2,TERM=xterm-256color,pty:", "", True, True),
        ("shell,v2,pty:top -n 1", "top -n 1", True, True),
        ("shell,raw:echo a:b", "echo a:b", False, False),
        ("exec:screencap '-p'", "screencap '-p'", False, False),
    ],
)
def test_parse_shell_service(service: str, command: str, pty: bool, v2: bool) -> None:
    request = parse_shell_service(service)
    assert request is not None
    assert (request.command, request.pty, request.shell_protocol) == (command, pty, v2)


@pytest.mark.parametrize("service", ["shellx:ls", "sync:", "reverse:list-forward", "execute:x"])
def test_parse_shell_service_ignores_other_services(service: str) -> None:
    assert parse_shell_service(service) is None


# --- reverse table -----------------------------------------------------------------------------


def test_reverse_table_forward_list_and_kill() -> None:
    table = ReverseTable(label="host-3")
    assert table.handle("forward:tcp:8080;tcp:9090") == (b"OKAY", True)
    assert table.handle("forward:localabstract:x;tcp:1") == (b"OKAY", True)
    reply, changed = table.handle("list-forward")
    listing = b"host-3 tcp:8080 tcp:9090\nhost-3 localabstract:x tcp:1\n"
    assert (reply, changed) == (protocol_string(listing), False)
    assert not reply.startswith(b"OKAY")
    assert table.handle("forward:tcp:8080;tcp:9191") == (b"OKAY", True)
    assert table.host_spec("tcp:8080") == "tcp:9191"
    reply, changed = table.handle("forward:norebind:tcp:8080;tcp:1")
    assert reply.startswith(b"FAIL") and not changed
    assert table.handle("killforward:tcp:8080") == (b"OKAY", True)
    reply, _ = table.handle("killforward:tcp:8080")
    assert reply == fail_reply("listener 'tcp:8080' not found")
    assert table.handle("killforward-all") == (b"OKAY", True)
    assert table.forwards == {}


def test_reverse_table_tcp_zero_resolves_a_port() -> None:
    table = ReverseTable(label="host-1")
    reply, _ = table.handle("forward:tcp:0;tcp:9000")
    assert reply.startswith(b"OKAY")
    port = int(reply[8:])
    assert reply[4:8] == f"{len(str(port)):04x}".encode()
    assert table.forwards == {f"tcp:{port}": "tcp:9000"}
    second, _ = table.handle("forward:tcp:0;tcp:9001")
    assert int(second[8:]) != port


@pytest.mark.parametrize(
    "request_",
    ["forward:tcp:1", "forward:;tcp:1", "forward:tcp:1;*smartsocket*", "forward:tcp:x;tcp:1", "x"],
)
def test_reverse_table_refuses_malformed_requests(request_: str) -> None:
    table = ReverseTable(label="host-1")
    reply, changed = table.handle(request_)
    assert reply.startswith(b"FAIL") and not changed
    assert table.forwards == {}


def test_reverse_table_refuses_forwards_past_what_its_listing_can_say() -> None:
    """list-forward answers with one protocol string (at most 65535 bytes): a table that
    could not list itself used to raise in the service thread (found reading the code)."""
    table = ReverseTable(label="host-1")
    refused = 0
    for port in range(1, 5001):
        reply, _ = table.handle(f"forward:tcp:{port};tcp:{port}")
        refused += reply.startswith(b"FAIL")
    assert refused and b"too many reverse forwards" in table.handle("forward:tcp:6000;tcp:1")[0]
    listing = table.handle("list-forward")[0]
    assert int(listing[:4], 16) == len(listing) - 4 <= 0xFFFF


# --- sync records and the sync service ---------------------------------------------------------

REG = FileStat(mode=0o100644, size=5, mtime=1_700_000_000)


def test_stat_records() -> None:
    assert pack_stat_v1(None) == b"STAT" + bytes(12)
    assert pack_stat_v1(REG) == struct.pack("<4sIII", b"STAT", 0o100644, 5, 1_700_000_000)
    missing = STAT_V2.unpack(pack_stat_v2(b"STA2", "/x", None))
    assert len(pack_stat_v2(b"STA2", "/x", None)) == 72
    assert missing[0] == b"STA2" and missing[1] == errno.ENOENT
    found = STAT_V2.unpack(pack_stat_v2(b"LST2", "/x", REG))
    ident, error, _dev, _ino, mode, nlink, _uid, _gid, size, atime, mtime, ctime = found
    assert (ident, error, mode, nlink, size) == (b"LST2", 0, 0o100644, 1, 5)
    assert atime == mtime == ctime == 1_700_000_000


def test_dent_records_and_done() -> None:
    assert pack_dent_v1("a.txt", REG) == DENT_V1.pack(b"DENT", 0o100644, 5, 1_700_000_000, 5) + (
        b"a.txt"
    )
    assert len(DONE_V1) == 20 and DONE_V1.startswith(b"DONE")
    assert len(DONE_V2) == DENT_V2.size == 76 and DONE_V2.startswith(b"DONE")


def test_parse_send_target() -> None:
    assert parse_send_target("/sdcard/a,b.txt,33261") == ("/sdcard/a,b.txt", 0o100755)
    assert parse_send_target("/x,420") == ("/x", 0o100644)
    for bad in ("/x", "/x,abc", ",33188", f"/x,{0o120777}"):
        with pytest.raises(SyncFailure):
            parse_send_target(bad)


class ScriptedChannel:
    """Feeds request bytes in awkward slices and collects the replies."""

    def __init__(self, data: bytes, slice_size: int = 7) -> None:
        self._chunks = [data[i : i + slice_size] for i in range(0, len(data), slice_size)]
        self._in = bytearray()
        self.out = bytearray()
        self.flushes = 0

    def read_exact(self, size: int) -> bytes:
        while len(self._in) < size:
            if not self._chunks:
                raise EOFError
            self._in += self._chunks.pop(0)
        data = bytes(self._in[:size])
        del self._in[:size]
        return data

    def write(self, data: bytes) -> None:
        self.out += data

    def flush(self) -> None:
        self.flushes += 1


def request(ident: bytes, argument: str) -> bytes:
    raw = argument.encode()
    return struct.pack("<4sI", ident, len(raw)) + raw


def send_records(path: str, data: bytes, mode: int = 0o100644, mtime: int = 1234) -> bytes:
    out = request(b"SEND", f"{path},{mode}")
    for i in range(0, len(data), SYNC_DATA_MAX):
        chunk = data[i : i + SYNC_DATA_MAX]
        out += struct.pack("<4sI", b"DATA", len(chunk)) + chunk
    return out + struct.pack("<4sI", b"DONE", mtime)


def test_sync_send_then_recv_round_trip() -> None:
    fs = MemoryFS()
    data = os.urandom(3 * SYNC_DATA_MAX + 17)
    channel = ScriptedChannel(
        send_records("/sdcard/x.bin", data) + request(b"RECV", "/sdcard/x.bin") + b"QUIT\0\0\0\0",
        slice_size=1000,
    )
    serve_sync(fs, channel)
    assert fs.read("/sdcard/x.bin") == data
    assert fs.stat("/sdcard/x.bin") == FileStat(0o100644, len(data), 1234)
    out = bytes(channel.out)
    assert out[:8] == b"OKAY\0\0\0\0"
    received, pos = b"", 8
    while out[pos : pos + 4] == b"DATA":
        (size,) = struct.unpack_from("<I", out, pos + 4)
        assert size <= SYNC_DATA_MAX
        received += out[pos + 8 : pos + 8 + size]
        pos += 8 + size
    assert out[pos:] == b"DONE\0\0\0\0"
    assert received == data


def test_sync_stat_and_list() -> None:
    fs = MemoryFS()
    fs.put("/sdcard/a.txt", b"hello", mtime=1_700_000_000)
    channel = ScriptedChannel(
        request(b"STAT", "/sdcard/a.txt")
        + request(b"STA2", "/nope")
        + request(b"LIST", "/sdcard")
        + request(b"LIS2", "/missing")
    )
    serve_sync(fs, channel)
    out = bytes(channel.out)
    assert out[:16] == struct.pack("<4sIII", b"STAT", 0o100644, 5, 1_700_000_000)
    assert STAT_V2.unpack(out[16:88])[1] == errno.ENOENT
    names, pos = [], 88
    while out[pos : pos + 4] == b"DENT":
        *_, namelen = DENT_V1.unpack_from(out, pos)
        names.append(out[pos + 20 : pos + 20 + namelen].decode())
        pos += 20 + namelen
    assert names == [".", "..", "a.txt"]
    assert out[pos : pos + 20] == DONE_V1
    assert out[pos + 20 :] == DONE_V2  # a missing directory lists as empty
    assert channel.flushes == 4


@pytest.mark.parametrize(
    ("script", "message"),
    [
        (request(b"RECV", "/nope"), b"open failed: No such file or directory"),
        (send_records("/system/x", b"data"), b"couldn't create file: Read-only file system"),
        (request(b"SEND", "/x,1,2,abc"), b"bad mode in ID_SEND: abc"),
        (request(b"STAT", "/" + "a" * 1100), b"path too long"),
        (request(b"XXXX", "/x"), b"unknown command b'XXXX'"),
        (request(b"SEND", "/x,33188") + struct.pack("<4sI", b"DATA", 70000), b"oversize"),
    ],
)
def test_sync_refusals_answer_fail_and_end_the_session(script: bytes, message: bytes) -> None:
    channel = ScriptedChannel(script + request(b"STAT", "/sdcard"))
    serve_sync(MemoryFS(), channel)
    out = bytes(channel.out)
    assert out[:4] == b"FAIL"
    (length,) = struct.unpack_from("<I", out, 4)
    assert out[8:] == out[8 : 8 + length]  # nothing follows: the STAT was never answered
    assert message in out[8:]


# --- the test backend's own shell ----------------------------------------------------------------


def test_split_commands() -> None:
    assert split_commands("echo 'a; b' && x \"y z\"; exit 3") == [
        (";", ["echo", "a; b"]),
        ("&&", ["x", "y z"]),
        (";", ["exit", "3"]),
    ]


def test_tiny_shell_status_and_streams() -> None:
    device = FakeDevice()
    process = device.shell("cat /nope; echo X4EXIT:$?; true && echo ok >&2; false && echo no")
    chunks = list(process.chunks())
    assert chunks[-2:] == [(1, b"X4EXIT:1\n"), (2, b"ok\n")]
    assert process.exit_code == 1


# --- a scripted host against the daemon ----------------------------------------------------------


class ScriptedHost:
    """One TCP connection speaking raw ADB packets, like the adb server's transport does."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.finished: set[int] = set()  # our ids of streams the device has closed

    def send(self, command: Command, arg0: int, arg1: int, payload: bytes = b"") -> None:
        self.sock.sendall(pack_message(Message(command, arg0, arg1, payload)))

    def _exact(self, size: int) -> bytes | None:
        data = b""
        while len(data) < size:
            try:
                chunk = self.sock.recv(size - len(data))
            except ConnectionResetError:  # dropped with unread data: a reset, not a FIN
                return None
            if not chunk:
                return None
            data += chunk
        return data

    def recv(self, timeout: float = 5.0) -> Message | None:
        """The next packet, skipping the CLSE adbd sends for an OKAY that crossed its CLSE."""
        self.sock.settimeout(timeout)
        while (header := self._exact(HEADER.size)) is not None:
            parsed = unpack_header(header, MAX_PAYLOAD)
            payload = self._exact(parsed.data_length) if parsed.data_length else b""
            assert payload is not None
            assert checksum(payload) == parsed.data_crc32
            message = Message(parsed.command, parsed.arg0, parsed.arg1, payload)
            if message.command != Command.CLSE or message.arg1 not in self.finished:
                return message
        return None

    def connect(self, max_payload: int = MAX_PAYLOAD) -> Message | None:
        self.send(Command.CNXN, A_VERSION, max_payload, b"host::features=shell_v2")
        return self.recv()

    def open(self, local_id: int, service: str) -> int | None:
        self.send(Command.OPEN, local_id, 0, service.encode() + b"\0")
        reply = self.recv()
        assert reply is not None and reply.arg1 == local_id
        return reply.arg0 if reply.command == Command.OKAY else None

    def read_stream(self, local_id: int, remote_id: int) -> tuple[bytes, list[int]]:
        """Everything the device writes until it closes, acknowledging each WRTE."""
        data, sizes = b"", []
        while (message := self.recv()) is not None and message.command == Command.WRTE:
            assert (message.arg0, message.arg1) == (remote_id, local_id)
            data += message.payload
            sizes.append(len(message.payload))
            self.send(Command.OKAY, local_id, remote_id)
        assert message is not None and message.command == Command.CLSE
        self.finished.add(local_id)
        return data, sizes

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def device() -> Iterator[FakeDevice]:
    device = FakeDevice()
    yield device
    device.cancel_timers()


@pytest.fixture
def daemon(device: FakeDevice) -> Iterator[AdbDaemon]:
    with AdbDaemon(device, port=0) as daemon:
        yield daemon


@pytest.fixture
def host(daemon: AdbDaemon) -> Iterator[ScriptedHost]:
    host = ScriptedHost(daemon.port)
    yield host
    host.close()


def test_handshake_answers_cnxn_with_banner_and_negotiated_payload(host: ScriptedHost) -> None:
    reply = host.connect(max_payload=8192)
    assert reply is not None and reply.command == Command.CNXN
    assert (reply.arg0, reply.arg1) == (A_VERSION, 8192)
    kind, props = parse_banner(reply.payload)
    assert kind == "device" and props["ro.product.model"] == "Pixel 6 Sim"


def test_writes_never_exceed_the_negotiated_payload(host: ScriptedHost, device: FakeDevice) -> None:
    blob = os.urandom(100_000)
    device.fs.put("/sdcard/blob", blob)
    host.connect(max_payload=4096)
    remote = host.open(1, "exec:cat /sdcard/blob")
    assert remote is not None
    data, sizes = host.read_stream(1, remote)
    assert data == blob
    assert max(sizes) == 4096 and len(sizes) == 25


def test_device_waits_for_okay_before_its_next_write(
    host: ScriptedHost, device: FakeDevice
) -> None:
    device.fs.put("/sdcard/blob", bytes(10_000))
    host.connect(max_payload=4096)
    remote = host.open(1, "exec:cat /sdcard/blob")
    assert remote is not None
    first = host.recv()
    assert first is not None and first.command == Command.WRTE
    with pytest.raises(TimeoutError):
        host.recv(timeout=0.3)
    host.send(Command.OKAY, 1, remote)
    second = host.recv()
    assert second is not None and second.command == Command.WRTE


def test_shell_v2_frames_stdout_stderr_and_exit(host: ScriptedHost) -> None:
    host.connect()
    remote = host.open(5, "shell,v2,raw:echo out; echo err >&2; exit 4")
    assert remote is not None
    data, _ = host.read_stream(5, remote)
    assert ShellPacketReader().feed(data) == [(1, b"out\n"), (2, b"err\n"), (3, b"\x04")]


def test_exec_output_is_untranslated(host: ScriptedHost) -> None:
    host.connect()
    remote = host.open(2, "exec:screencap -p")
    assert remote is not None
    assert host.read_stream(2, remote)[0] == SCREENCAP_PNG


def test_unknown_service_is_refused_with_clse(host: ScriptedHost) -> None:
    host.connect()
    host.send(Command.OPEN, 9, 0, b"jdwp:1234\0")
    reply = host.recv()
    assert reply is not None
    assert (reply.command, reply.arg0, reply.arg1) == (Command.CLSE, 0, 9)


def test_streaming_command_ends_when_host_closes(host: ScriptedHost, device: FakeDevice) -> None:
    host.connect()
    remote = host.open(3, "shell:logcat")
    assert remote is not None
    first = host.recv()
    assert first is not None and b"I Sim: line 0" in first.payload
    host.send(Command.CLSE, 3, remote)
    process = device.processes[-1]
    assert process.closed.wait(2) and process.finished.wait(2)


def test_unauthorized_device_answers_auth_with_fresh_tokens(
    host: ScriptedHost, device: FakeDevice
) -> None:
    device.authorized_flag = False
    token = host.connect()
    assert token is not None and token.command == Command.AUTH
    assert token.arg0 == AuthType.TOKEN and len(token.payload) == 20
    host.send(Command.AUTH, AuthType.SIGNATURE, 0, os.urandom(256))
    second = host.recv()
    assert second is not None and second.arg0 == AuthType.TOKEN
    assert second.payload != token.payload
    host.send(Command.AUTH, AuthType.RSAPUBLICKEY, 0, b"QAAAA... user@host\0")
    with pytest.raises(TimeoutError):
        host.recv(timeout=0.3)
    host.send(Command.OPEN, 1, 0, b"shell:echo hi\0")  # ignored while unauthorized
    device.authorized_flag = True  # the user taps "Allow"
    online = host.recv()
    assert online is not None and online.command == Command.CNXN


@pytest.mark.parametrize(
    "junk",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        HEADER.pack(Command.CNXN, A_VERSION, 4096, 1 << 30, 0, Command.CNXN ^ 0xFFFFFFFF),
        HEADER.pack(0x12345678, 0, 0, 0, 0, 0x12345678 ^ 0xFFFFFFFF),
        pack_message(Message(Command.OPEN, 1, 0, b"shell:echo\0")),  # OPEN before CNXN
        pack_message(Message(Command.CNXN, A_VERSION, 16, b"host::")),  # absurd max payload
    ],
    ids=["http", "oversized", "unknown-command", "open-before-cnxn", "tiny-max-payload"],
)
def test_garbage_drops_only_that_connection(daemon: AdbDaemon, junk: bytes) -> None:
    good = ScriptedHost(daemon.port)
    good.connect()
    bad = ScriptedHost(daemon.port)
    bad.sock.sendall(junk)
    try:
        assert bad.recv(timeout=2) is None
    except ConnectionResetError:
        pass
    remote = good.open(1, "shell:echo still here")
    assert remote is not None
    assert good.read_stream(1, remote)[0] == b"still here\n"
    good.close()
    bad.close()


def test_host_ignoring_flow_control_is_dropped(host: ScriptedHost, device: FakeDevice) -> None:
    device.stdin_gate.clear()  # the command takes no input, so nothing is acknowledged
    host.connect()
    remote = host.open(1, "shell:logcat")
    assert remote is not None
    try:
        for _ in range(MAX_BUFFERED // MAX_PAYLOAD + 2):
            host.send(Command.WRTE, 1, remote, bytes(MAX_PAYLOAD))
        while host.recv(timeout=3) is not None:
            pass
    except ConnectionResetError:
        pass
    finally:
        device.stdin_gate.set()


def test_reverse_tunnel_to_a_scripted_host(host: ScriptedHost, device: FakeDevice) -> None:
    host.connect()
    remote = host.open(1, "reverse:forward:tcp:8080;tcp:9090")
    assert remote is not None
    assert host.read_stream(1, remote)[0] == b"OKAY"
    assert device.reverse_tables[-1] == {"tcp:8080": "tcp:9090"}
    opener = device.opener
    assert opener is not None
    with pytest.raises(ConnectionRefusedError):
        opener.open("tcp:1234")

    result: dict[str, socket.socket] = {}
    thread = threading.Thread(target=lambda: result.update(sock=opener.open("tcp:8080")))
    thread.start()
    request_ = host.recv()
    assert request_ is not None and request_.command == Command.OPEN
    assert request_.payload == b"tcp:9090\0" and request_.arg1 == 0
    host.send(Command.OKAY, 77, request_.arg0)
    thread.join(5)
    tunnel = result["sock"]
    tunnel.sendall(b"ping")
    wrte = host.recv()
    assert wrte is not None and (wrte.command, wrte.payload) == (Command.WRTE, b"ping")
    host.send(Command.OKAY, 77, request_.arg0)
    host.send(Command.WRTE, 77, request_.arg0, b"pong")
    assert tunnel.recv(4) == b"pong"
    okay = host.recv()
    assert okay is not None and okay.command == Command.OKAY
    host.send(Command.CLSE, 77, request_.arg0)
    tunnel.settimeout(2)
    assert tunnel.recv(10) == b""
    tunnel.close()


def test_reverse_open_refused_by_host(host: ScriptedHost, device: FakeDevice) -> None:
    host.connect()
    remote = host.open(1, "reverse:forward:tcp:1;tcp:2")
    assert remote is not None
    host.read_stream(1, remote)
    opener = device.opener
    assert opener is not None
    errors: list[BaseException] = []

    def try_open() -> None:
        try:
            opener.open("tcp:1")
        except ConnectionRefusedError as exc:
            errors.append(exc)

    thread = threading.Thread(target=try_open)
    thread.start()
    request_ = host.recv()
    assert request_ is not None and request_.command == Command.OPEN
    host.send(Command.CLSE, 0, request_.arg0)
    thread.join(5)
    assert len(errors) == 1


def test_transport_attaches_and_detaches_the_backend(daemon: AdbDaemon, device: FakeDevice) -> None:
    host = ScriptedHost(daemon.port)
    host.connect()
    assert wait_until(lambda: device.opener is not None, 2)
    host.close()
    assert wait_until(lambda: device.openers[-1] is None, 2)
    assert wait_until(lambda: daemon.connection_count == 0, 2)


def test_offline_device_refuses_connections(daemon: AdbDaemon, device: FakeDevice) -> None:
    host = ScriptedHost(daemon.port)
    host.connect()
    device.reboot("recovery")
    assert host.recv(timeout=2) is None  # the open connection is dropped
    refused = ScriptedHost(daemon.port)
    refused.send(Command.CNXN, A_VERSION, MAX_PAYLOAD, b"host::")
    assert refused.recv(timeout=2) is None
    assert device.wait_online(5)
    again = ScriptedHost(daemon.port)
    reply = again.connect()
    assert reply is not None and reply.command == Command.CNXN
    for h in (host, refused, again):
        h.close()


def test_stop_ends_streams_and_joins_threads(device: FakeDevice) -> None:
    daemon = AdbDaemon(device, port=0)
    daemon.start()
    host = ScriptedHost(daemon.port)
    host.connect()
    assert host.open(1, "shell:logcat") is not None
    started = time.monotonic()
    daemon.stop(timeout=3)
    assert time.monotonic() - started < 2
    assert device.processes[-1].closed.is_set()
    assert [t for t in threading.enumerate() if t.name.startswith("adbd")] == []
    host.close()
