"""The ADB protocol of the virtual handset, the fast way: its parsing functions fed directly.
Message headers and whole messages (ProtocolError only), CNXN banners and service names
(nothing), shell-v2 framing cut anywhere (ProtocolError only), reverse-forward requests
(a reply, never an exception) and the ``sync:`` service over scripted streams of records,
against the tests' in-memory filesystem and the virtual handset's own (no exception: a
refusal is a FAIL reply). ``test_fuzz_adb_daemon`` does the same over a real socket."""

from __future__ import annotations

import struct
from functools import cache

from hypothesis import example
from hypothesis import strategies as st

from tests.fuzz.helpers import fuzz, mutated
from tests.vhandset.adb_backend import MemoryFS
from vhandset.adb_reverse import ReverseTable
from vhandset.adb_sync import (
    MAX_PATH_LENGTH,
    SYNC_DATA_MAX,
    SyncFailure,
    parse_send_target,
    serve_sync,
)
from vhandset.adb_wire import (
    HEADER,
    MAX_PAYLOAD,
    Command,
    ProtocolError,
    ShellPacketReader,
    pack_message,
    pack_shell_packet,
    parse_banner,
    parse_shell_service,
    unpack_header,
    unpack_message,
)
from vhandset.interface import VirtualFS

_commands = st.one_of(st.sampled_from(list(Command)), st.integers(0, 2**32 - 1))
_u32 = st.one_of(
    st.sampled_from([0, 1, 256, MAX_PAYLOAD, MAX_PAYLOAD + 1, 2**31, 2**32 - 1]),
    st.integers(0, 2**32 - 1),
)


@st.composite
def _raw_messages(draw: st.DrawFn) -> bytes:
    command = draw(_commands)
    payload = draw(st.binary(max_size=64))
    length = draw(st.one_of(st.just(len(payload)), _u32))
    magic = draw(st.one_of(st.just(int(command) ^ 0xFFFFFFFF), _u32))
    head = HEADER.pack(int(command), draw(_u32), draw(_u32), length, draw(_u32), magic)
    return head + payload


@fuzz(st.one_of(st.binary(max_size=80), _raw_messages()), _u32, share=0.15)
def test_headers_and_messages(data: bytes, max_payload: int) -> None:
    try:
        header = unpack_header(data[: HEADER.size], max_payload)
    except ProtocolError:
        pass
    else:
        assert header.data_length <= max_payload
    try:
        message = unpack_message(data)
    except ProtocolError:
        return
    assert pack_message(message)[: HEADER.size - 8] == data[: HEADER.size - 8]


@fuzz(st.one_of(st.binary(max_size=200), st.text(max_size=100).map(str.encode)), share=0.05)
def test_banners(payload: bytes) -> None:
    kind, props = parse_banner(payload)
    assert isinstance(kind, str) and all(isinstance(v, str) for v in props.values())


_services = st.one_of(
    st.text(max_size=60),
    st.builds(
        "{}{}".format,
        st.sampled_from(
            [
                "shell:",
                "shell,",
                "shell,v2,raw:",
                "shell,pty:",
                "exec:",
                "sync:",
                "reverse:",
                "reverse:forward:",
                "reverse:killforward:",
                "root:",
                "reboot:",
                "shell",
            ]
        ),
        st.text(max_size=40),
    ),
)


@fuzz(_services, share=0.05)
def test_service_names(service: str) -> None:
    request = parse_shell_service(service)
    if request is not None:
        assert service.startswith(("shell", "exec:"))


@fuzz(
    st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=40)), max_size=8),
    st.lists(st.integers(0, 300), max_size=10),
    st.binary(max_size=12),
    share=0.1,
)
def test_shell_v2_framing_cut_anywhere(
    packets: list[tuple[int, bytes]], cuts: list[int], junk: bytes
) -> None:
    stream = b"".join(pack_shell_packet(k, d) for k, d in packets) + junk
    reader = ShellPacketReader(max_packet=4096)
    got: list[tuple[int, bytes]] = []
    pos = 0
    try:
        for cut in [*sorted(cuts), len(stream)]:
            got += reader.feed(stream[pos:cut])
            pos = max(pos, cut)
    except ProtocolError:
        return
    assert got[: len(packets)] == packets


_reverse_requests = st.one_of(
    st.text(max_size=60),
    st.builds(
        "{}{}".format,
        st.sampled_from(
            [
                "forward:",
                "forward:norebind:",
                "killforward:",
                "list-forward",
                "killforward-all",
                "forward:tcp:",
                "forward:tcp:0;tcp:",
            ]
        ),
        st.text(max_size=30),
    ),
)


@fuzz(st.lists(_reverse_requests, max_size=12), share=0.1)
def test_reverse_requests(requests: list[str]) -> None:
    table = ReverseTable(label="emulator-5554")
    for request in requests:
        reply, _changed = table.handle(request)
        assert reply.startswith((b"OKAY", b"FAIL")) or request == "list-forward"


# --- sync: ---------------------------------------------------------------------------------


class _Script:
    """A SyncChannel over bytes, handed out in slices of a fixed size."""

    def __init__(self, data: bytes, slice_size: int) -> None:
        self._data = data
        self._pos = 0
        self._slice = max(1, slice_size)
        self._in = bytearray()
        self.out = bytearray()

    def read_exact(self, size: int) -> bytes:
        while len(self._in) < size:
            if self._pos >= len(self._data):
                raise EOFError
            self._in += self._data[self._pos : self._pos + self._slice]
            self._pos += self._slice
        data = bytes(self._in[:size])
        del self._in[:size]
        return data

    def write(self, data: bytes) -> None:
        self.out += data

    def flush(self) -> None:
        pass


_IDS = [
    b"STAT",
    b"STA2",
    b"LST2",
    b"LIST",
    b"LIS2",
    b"SEND",
    b"RECV",
    b"QUIT",
    b"DATA",
    b"DONE",
    b"SND2",
    b"RCV2",
    b"\0\0\0\0",
]
_paths = st.one_of(
    st.sampled_from(
        [
            "/",
            "/sdcard",
            "/sdcard/x.txt",
            "/data/local/tmp/a,33188",
            "/system/bin",
            "/proc/net/tcp",
            "/nope",
            "",
            ".",
            "..",
            "//",
            "/sdcard/../../etc",
            "a" * 1100,
            "/sdcard/x,",
            "/sdcard/x,abc",
            "/sdcard/x,41471",
            "/x,0",
            "/x,99999999999",
        ]
    ),
    st.text(max_size=30),
)


@st.composite
def _sync_records(draw: st.DrawFn) -> bytes:
    out = []
    for _ in range(draw(st.integers(1, 6))):
        ident = draw(st.sampled_from(_IDS))
        arg = draw(_paths).encode("utf-8", "surrogateescape")
        length = draw(st.one_of(st.just(len(arg)), _u32))
        out.append(struct.pack("<4sI", ident, length & 0xFFFFFFFF) + arg)
        if ident == b"SEND":
            for _ in range(draw(st.integers(0, 3))):
                chunk = draw(st.binary(max_size=100))
                size = draw(
                    st.one_of(
                        st.just(len(chunk)),
                        st.sampled_from([0, SYNC_DATA_MAX, SYNC_DATA_MAX + 1, 2**32 - 1]),
                    )
                )
                out.append(
                    struct.pack("<4sI", draw(st.sampled_from([b"DATA", b"DONE", b"XXXX"])), size)
                    + chunk
                )
            out.append(struct.pack("<4sI", b"DONE", draw(_u32)))
    return b"".join(out)


@cache
def _handset_fs() -> VirtualFS:
    from vhandset.device import VirtualDevice

    return VirtualDevice("xiaomi-mi10t").fs


def _serve(fs: VirtualFS, data: bytes, slice_size: int) -> bytes:
    channel = _Script(data, slice_size)
    serve_sync(fs, channel)
    return bytes(channel.out)


# The stream ending inside a request (a host gone mid-push) raised EOFError out of serve_sync.
@example(struct.pack("<4sI", b"SEND", 14) + b"/x,99999999999" + b"DONE\0\0\0\0", 1, False)
@example(struct.pack("<4sI", b"SEND", 8) + b"/x,33188" + struct.pack("<4sI", b"DATA", 10), 7, False)
@example(struct.pack("<4sI", b"STAT", 10) + b"/x", 7, False)
@fuzz(
    st.one_of(_sync_records(), st.binary(max_size=300)),
    st.integers(1, 64),
    st.booleans(),
    share=0.45,
)
def test_sync_service(data: bytes, slice_size: int, handset: bool) -> None:
    fs: VirtualFS = _handset_fs() if handset else MemoryFS()
    out = _serve(fs, data, slice_size)
    if out.startswith(b"FAIL"):
        (length,) = struct.unpack_from("<I", out, 4)
        assert len(out) == 8 + length, "nothing may follow a FAIL"


@cache
def _sample_session() -> bytes:
    def req(ident: bytes, arg: bytes) -> bytes:
        return struct.pack("<4sI", ident, len(arg)) + arg

    return (
        req(b"SEND", b"/sdcard/a.bin,33188")
        + req(b"DATA", b"hello")
        + struct.pack("<4sI", b"DONE", 1_700_000_000)
        + req(b"STAT", b"/sdcard/a.bin")
        + req(b"LIS2", b"/sdcard")
        + req(b"RECV", b"/sdcard/a.bin")
        + req(b"QUIT", b"")
    )


# A FAIL quoting a path that was not UTF-8 raised UnicodeEncodeError.
@example(struct.pack("<4sI", b"SEND", 4) + b"/x,\xf1", False)
@fuzz(st.deferred(lambda: mutated([_sample_session()])), st.booleans(), share=0.1)
def test_mutated_sync_session(data: bytes, handset: bool) -> None:
    _serve(_handset_fs() if handset else MemoryFS(), data, 13)


# st_mode past 32 bits: OverflowError in stat.S_ISLNK; a Unicode digit: ValueError in int()
@example("/x,99999999999")
@example("/x,³")
@fuzz(
    st.one_of(
        st.text(max_size=MAX_PATH_LENGTH // 8),
        st.builds("/x,{}".format, st.integers(min_value=0)),
        st.builds("/x,{}".format, st.text("0123456789²³¹٣۳߃", max_size=12)),
    ),
    share=0.05,
)
def test_send_targets(argument: str) -> None:
    try:
        path, mode = parse_send_target(argument)
    except SyncFailure:
        return
    assert path and mode & 0o170000 == 0o100000
