"""Live packet capture into the session folder, from three sources with one small interface.

Long because: the three sources share the capture base class, the rotating writer and the
stream pump, and the choice among them (:class:`PacketsSpec`) needs all three; each source
is a section of its own below.

- :class:`AdbTcpdump`: ``tcpdump -i any -U -w -`` on a rooted phone, streamed raw over ADB
  (``exec:``, so no pty mangles the bytes) into ``packets/adb-tcpdump-NNN.pcap``;
- :class:`IfaceSniffer`: a host interface the phone's traffic crosses (a hotspot, a bridge, a
  mirror port), through scapy, with a BPF filter, into ``packets/iface-NAME-NNN.pcapng``;
- :class:`PcapdroidCollector`: the stream PCAPdroid exports from the phone itself (no root
  needed), into ``packets/pcapdroid-NNN.pcap``; :func:`start_pcapdroid` sets the whole path up
  over USB (collector, ``adb reverse``, PCAPdroid's start), journalled.

Each has ``start()``, ``stop()`` (bounded: it returns within its timeout whatever the far end
does) and ``stats``, a :class:`CaptureStats` snapshot that is safe to read from any thread.
Files rotate at a size cap; every file starts with its own header, so each one reads alone.

Getting PCAPdroid's packets to the host: its ``udp_exporter`` sends one datagram per packet to
``collector_ip_address``, which the API only lets be 127.0.0.1 unless another address was set in
the app first, and ``adb reverse`` forwards TCP only. So UDP export needs the phone to reach
the host over a LAN (set the host's address in the app, run the collector on that address), or
else use ``tcp_exporter`` (recent PCAPdroid) over ``adb reverse tcp:PORT tcp:PORT`` with
``PcapdroidCollector(..., transport="tcp")``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shlex
import socket
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from auditor.device.handset import Handset
from auditor.device.journal import RestoreJournal
from auditor.device.parsers import parse_dumpsys_package
from auditor.errors import CaptureError, DeviceError
from auditor.packets.pcapwrite import (
    DEFAULT_SNAPLEN,
    LINKTYPE_ETHERNET,
    LINKTYPE_RAW,
    global_header,
)
from auditor.session import SessionWriteError, append_line, write_error

log = logging.getLogger(__name__)

PACKETS_DIR = "packets"
ROTATE_BYTES = 256 * 1024 * 1024
STOP_TIMEOUT = 5.0
POLL = 0.5  # how often blocked reads look at the stop flag
DRAIN = 0.3  # at stop, how long a stream's bytes already in flight are still taken
MAX_ERRORS = 50  # errors kept in stats (the first ones and then the latest)
MAX_RECORD = 16 * 1024 * 1024  # a record this long means the stream lost its framing

TCPDUMP_ERR = "/data/local/tmp/auditor-tcpdump.err"
PCAPDROID_PACKAGE = "com.emanuelef.remote_capture"
PCAPDROID_ACTIVITY = f"{PCAPDROID_PACKAGE}/.activities.CaptureCtrl"
PCAPDROID_TRAILER_MAGIC = 0x01072021
PCAPDROID_TRAILER_SIZE = 32  # magic, uid, appname[20], fcs
PCAPDROID_TCP_EXPORTER = (1, 8, 6)  # the first release with tcp_exporter (its release notes)
PCAPDROID_CONNECT_TIMEOUT = 30.0  # start: time to connect (a person may have to tap Allow)
PCAPDROID_FLUSH = 3.0  # stop: how long it has to send what it holds (it exports every second)
PCAPDROID_INSTALL = (
    "install PCAPdroid 1.8.6 or later (F-Droid, Google Play, or `adb install` of the APK from "
    "https://github.com/emanuele-f/PCAPdroid/releases), open it once and accept its VPN prompt"
)

_MAGICS = {
    b"\xd4\xc3\xb2\xa1": "<",
    b"\xa1\xb2\xc3\xd4": ">",
    b"\x4d\x3c\xb2\xa1": "<",
    b"\xa1\xb2\x3c\x4d": ">",
}


# ---- results -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AppPackets:
    """Packets PCAPdroid attributed to one app (from its per-packet trailer)."""

    uid: int
    app: str
    packets: int


@dataclass(frozen=True, slots=True)
class CaptureStats:
    """Where a capture stands. ``dropped``: packets the capture engine itself says it missed
    (kernel, libpcap, socket buffer); ``lost``: packets that arrived broken (a truncated last
    record, a datagram whose length disagrees with its record header); ``interruptions``: times
    the stream ended without being asked to (the phone went away)."""

    source: str
    running: bool
    packets: int
    bytes: int
    dropped: int
    lost: int
    interruptions: int
    files: tuple[str, ...]
    errors: tuple[str, ...]
    apps: tuple[AppPackets, ...] = ()
    # the capture stopped because its files could not grow (disk full, file size limit,
    # quota): the error, for the audit to stop as ``disk_full``
    disk_full: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class CaptureSource(Protocol):
    source: str

    def start(self) -> CaptureSource: ...

    def stop(self, timeout: float = STOP_TIMEOUT) -> CaptureStats: ...

    @property
    def stats(self) -> CaptureStats: ...


# ---- parsing (bytes in, records out) -----------------------------------------------------------


class PcapStreamError(ValueError):
    """The byte stream is not (or no longer) pcap."""


class PcapStream:
    """Splits a classic pcap byte stream into its global header and whole records, as bytes
    arrive in chunks of any size. Text before the header (a shell's complaint) is set aside in
    ``preamble``."""

    def __init__(self, *, max_preamble: int = 4096) -> None:
        self.header: bytes | None = None
        self.preamble = b""
        self.records = 0
        self._buf = bytearray()
        self._rec: struct.Struct = struct.Struct("<IIII")
        self._max_preamble = max_preamble

    @property
    def pending(self) -> int:
        """Bytes held of a record not yet complete."""
        return len(self._buf) if self.header is not None else 0

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        if self.header is None and not self._find_header():
            return []
        out: list[bytes] = []
        buf, pos, size = self._buf, 0, len(self._buf)
        unpack = self._rec.unpack_from
        while size - pos >= 16:
            incl = unpack(buf, pos)[2]
            if incl > MAX_RECORD:
                raise PcapStreamError(f"record of {incl} bytes after record {self.records}")
            end = pos + 16 + incl
            if end > size:
                break
            out.append(bytes(buf[pos:end]))
            pos = end
        del buf[:pos]
        self.records += len(out)
        return out

    def _find_header(self) -> bool:
        buf = self._buf
        at = min((i for i in (buf.find(m) for m in _MAGICS) if i >= 0), default=-1)
        if at < 0:
            if len(buf) > self._max_preamble:
                raise PcapStreamError(f"no pcap header in {bytes(buf[:80])!r}")
            return False
        if len(buf) - at < 24:
            return False
        self.preamble = bytes(buf[:at])
        self.header = bytes(buf[at : at + 24])
        self._rec = struct.Struct(_MAGICS[self.header[:4]] + "IIII")
        del buf[: at + 24]
        return True


def header_info(header: bytes) -> tuple[str, int, int]:
    """(byte order, snaplen, link type) of a 24-byte pcap global header."""
    order = _MAGICS.get(header[:4])
    if order is None or len(header) != 24:
        raise PcapStreamError("not a pcap global header")
    _, _, _, _, _, snaplen, linktype = struct.unpack(order + "IHHiIII", header)
    return order, snaplen, linktype


@dataclass(frozen=True, slots=True)
class PcapdroidTrailer:
    uid: int
    app: str
    fcs_ok: bool


def parse_pcapdroid_trailer(frame: bytes) -> PcapdroidTrailer | None:
    """PCAPdroid's per-packet trailer, when the frame carries one.

    With ``dump_extensions`` (formerly ``pcapdroid_trailer``) PCAPdroid writes Ethernet frames
    with zero MACs and ends each with: magic 0x01072021 and the UID (big-endian), the app name
    (20 bytes, NUL-padded) and a CRC-32 of everything before it (in the phone's byte order,
    little-endian). Source: PCAPdroid ``app/src/main/jni/core/pcap_dump.{c,h}``."""
    if len(frame) < 14 + PCAPDROID_TRAILER_SIZE:
        return None
    t = frame[-PCAPDROID_TRAILER_SIZE:]
    if int.from_bytes(t[:4], "big") != PCAPDROID_TRAILER_MAGIC:
        return None
    uid = int.from_bytes(t[4:8], "big", signed=True)
    app = t[8:28].split(b"\0", 1)[0].decode("utf-8", "replace")
    fcs_ok = zlib.crc32(frame[:-4]) == int.from_bytes(t[28:], "little")
    return PcapdroidTrailer(uid, app, fcs_ok)


# ---- files -------------------------------------------------------------------------------------


class RotatingPcap:
    """Records into ``PREFIX-NNN.EXT`` files of at most about ``limit`` bytes, each beginning
    with the stream's global header. Existing files are never overwritten.

    Written without a buffer, each call's records in one go (:func:`auditor.session.append_line`):
    what :meth:`write` returned for is on disk (in the page cache), and a write that fails (a
    full disk, a file size limit) is taken back to the last whole record and raised as
    :class:`~auditor.session.SessionWriteError`, so a file never ends inside a record and
    nothing is left in a buffer to be written later. ``records`` counts the records written."""

    def __init__(self, directory: Path, prefix: str, *, limit: int = ROTATE_BYTES) -> None:
        self.directory = directory
        self.prefix = prefix
        self.limit = limit
        self.paths: list[Path] = []
        self.header: bytes | None = None
        self.records = 0
        self._fd: int | None = None
        self._size = 0
        self._in_file = 0
        self._next = 1

    def begin(self, header: bytes, *, new_file: bool = True) -> None:
        """A stream (re)starts with this header; a new file unless it may go on in this one."""
        if new_file or header != self.header or self._fd is None:
            self.header = header
            self._open()

    def write(self, records: Iterable[bytes]) -> None:
        if self.header is None:
            raise ValueError("records before a header")
        group: list[bytes] = []
        size = self._size
        for rec in records:
            if self._fd is None or ((self._in_file or group) and size + len(rec) > self.limit):
                self._flush(group)
                group = []
                self._open()
                size = self._size
            group.append(rec)
            size += len(rec)
        self._flush(group)

    def _flush(self, group: list[bytes]) -> None:
        if not group:
            return
        assert self._fd is not None
        data = b"".join(group)
        append_line(self._fd, data, self.paths[-1])  # whole or not at all
        self._size += len(data)
        self._in_file += len(group)
        self.records += len(group)

    def _open(self) -> None:
        self.close()
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        while True:
            path = self.directory / f"{self.prefix}-{self._next:03d}.pcap"
            self._next += 1
            if not path.exists():
                break
        assert self.header is not None
        # owner-only, as every session file; kept open across writes, closed in close()
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        except OSError as exc:
            raise write_error(path, exc) from None
        self.paths.append(path)
        self._fd, self._size, self._in_file = fd, 0, 0
        try:
            append_line(fd, self.header, path)
        except SessionWriteError:
            self.close()
            raise
        self._size = len(self.header)

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


# ---- the common part ---------------------------------------------------------------------------


class _Capture:
    source = "capture"

    def __init__(self, session_dir: Path | str) -> None:
        self.session_dir = Path(session_dir)
        self.directory = self.session_dir / PACKETS_DIR
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._packets = self._bytes = self._dropped = self._lost = self._interruptions = 0
        self._errors: list[str] = []
        self._files: list[Path] = []
        self._apps: dict[int, tuple[str, int]] = {}
        self._running = False
        self._disk_full = ""

    # -- counters ----------------------------------------------------------------------------
    def _count(self, packets: int, nbytes: int) -> None:
        with self._lock:
            self._packets += packets
            self._bytes += nbytes

    def _add(self, *, dropped: int = 0, lost: int = 0, interruptions: int = 0) -> None:
        with self._lock:
            self._dropped += dropped
            self._lost += lost
            self._interruptions += interruptions

    def _error(self, message: str) -> None:
        log.warning("%s: %s", self.source, message)
        with self._lock:
            if len(self._errors) >= MAX_ERRORS:
                del self._errors[MAX_ERRORS // 2]
            self._errors.append(message)

    def _write_failed(self, exc: SessionWriteError) -> None:
        """A capture file could not be written: an error; when the disk is full (or a file
        size limit or quota is reached) also the reason the audit stops."""
        message = str(exc)
        self._error(message)
        if exc.disk_full:
            with self._lock:
                self._disk_full = self._disk_full or message
            self._stop.set()

    def _file(self, path: Path) -> None:
        with self._lock:
            if path not in self._files:
                self._files.append(path)

    @property
    def stats(self) -> CaptureStats:
        with self._lock:
            return CaptureStats(
                source=self.source,
                running=self._running,
                packets=self._packets,
                bytes=self._bytes,
                dropped=self._dropped,
                lost=self._lost,
                interruptions=self._interruptions,
                files=tuple(_relative(p, self.session_dir) for p in self._files),
                errors=tuple(self._errors),
                apps=tuple(
                    AppPackets(uid, name, n) for uid, (name, n) in sorted(self._apps.items())
                ),
                disk_full=self._disk_full,
            )

    # -- life --------------------------------------------------------------------------------
    def _launch(self, target: Callable[[], None]) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        with self._lock:
            self._running = True
        self._thread = threading.Thread(target=self._main, args=(target,), name=self.source)
        self._thread.daemon = True
        self._thread.start()

    def _main(self, target: Callable[[], None]) -> None:
        try:
            target()
        except Exception as exc:  # a capture thread reports, never dies silently
            log.exception("%s crashed", self.source)
            self._error(f"crashed: {exc}")
        finally:
            with self._lock:
                self._running = False

    def _interrupt(self) -> None:
        """Unblock the capture thread (close its socket)."""

    def stop(self, timeout: float = STOP_TIMEOUT) -> CaptureStats:
        self._stop.set()
        self._interrupt()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                self._error(f"did not stop within {timeout:.0f}s")
        return self.stats


def _relative(path: Path, base: Path) -> str:
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return str(path)


class _StreamPump:
    """Reads one pcap byte stream from a socket into rotating files, counting as it goes."""

    def __init__(
        self,
        capture: _Capture,
        files: RotatingPcap,
        on_record: Callable[[bytes], None] | None = None,
    ) -> None:
        self.capture = capture
        self.files = files
        self.on_record = on_record

    def run(self, sock: socket.socket, stop: threading.Event) -> PcapStream:
        """Until the stream ends, fails or ``stop`` is set (then what already arrived is still
        taken, briefly); returns the parser: its header, preamble and any partial record."""
        stream = PcapStream()
        sock.settimeout(POLL)
        while not stop.is_set():
            try:
                chunk = sock.recv(262144)
            except TimeoutError:
                continue
            except OSError as exc:
                if not stop.is_set():
                    self.capture._error(f"stream read failed: {exc}")
                break
            if not chunk or not self._take(stream, chunk):
                break
        else:
            deadline = time.monotonic() + DRAIN
            while time.monotonic() < deadline:
                try:
                    sock.settimeout(0.05)
                    chunk = sock.recv(262144)
                except OSError:  # TimeoutError included: nothing more in flight
                    break
                if not chunk or not self._take(stream, chunk):
                    break
        if stream.pending:
            self.capture._add(lost=1)  # a record cut off when the stream ended
        return stream

    def _take(self, stream: PcapStream, chunk: bytes) -> bool:
        had_header = stream.header is not None
        before = self.files.records
        try:
            records = stream.feed(chunk)
        except PcapStreamError as exc:
            self.capture._error(f"stream is not pcap: {exc}")
            self.capture._add(lost=1)
            return False
        try:
            if not had_header and stream.header is not None:
                self.files.begin(stream.header)
                self.capture._file(self.files.paths[-1])
                if stream.preamble.strip():
                    self.capture._error(stream.preamble.decode("utf-8", "replace").strip())
            if records:
                self.files.write(records)
        except SessionWriteError as exc:  # what was written before stays; the capture ends
            self.capture._write_failed(exc)
            done = self.files.records - before
            self.capture._add(lost=len(records) - done)
            if done:
                self.capture._count(done, sum(len(r) - 16 for r in records[:done]))
            return False
        if records:
            self.capture._file(self.files.paths[-1])
            self.capture._count(len(records), sum(len(r) - 16 for r in records))
            if self.on_record is not None:
                for rec in records:
                    self.on_record(rec)
        return True


# ---- tcpdump on the phone ----------------------------------------------------------------------


def tcpdump_command(iface: str = "any", binary: str = "tcpdump") -> str:
    """The device-side command: pcap to stdout, packet-buffered; stderr (its "listening on"
    line and its closing statistics) to a file, because ``exec:`` mixes stderr into stdout."""
    return f"{shlex.quote(binary)} -i {shlex.quote(iface)} -s 0 -n -p -U -w - 2>{TCPDUMP_ERR}"


class AdbTcpdump(_Capture):
    """tcpdump on a rooted phone, streamed over ADB into ``packets/adb-tcpdump-NNN.pcap``.

    The phone must have root (adbd as root, or ``su``) and a tcpdump binary (userdebug builds
    ship one; otherwise push a static build and give its path as ``binary``). If the stream
    ends unasked (reboot, cable), it is counted in ``interruptions`` and reopened, into a new
    file, until :meth:`stop`."""

    source = "adb-tcpdump"

    def __init__(
        self,
        handset: Handset,
        session_dir: Path | str,
        *,
        iface: str = "any",
        binary: str = "tcpdump",
        rotate_bytes: int = ROTATE_BYTES,
        reconnect: bool = True,
        retry_interval: float = 1.0,
    ) -> None:
        super().__init__(session_dir)
        self.handset = handset
        self.iface = iface
        self.binary = binary
        self.reconnect = reconnect
        self.retry_interval = retry_interval
        self.files = RotatingPcap(self.directory, self.source, limit=rotate_bytes)
        self._conn: Any = None
        self._conn_lock = threading.Lock()
        self._method: str | None = None
        self._stream_records = 0  # records the latest stream delivered, whole or cut

    @property
    def command(self) -> str:
        cmd = tcpdump_command(self.iface, self.binary)
        if self._method == "su":
            return f"su 0 sh -c {shlex.quote(cmd)}"
        return cmd

    def start(self) -> AdbTcpdump:
        serial = self.handset.serial
        self._method = self.handset.root_method()
        if self._method is None:
            raise DeviceError(
                f"{serial}: --packets adb-tcpdump needs root (adbd as root, or su), and this "
                "device has none; use --packets pcapdroid or --packets iface:NAME instead"
            )
        probe = "ls" if "/" in self.binary else "which"
        found = self.handset.su(f"{probe} {shlex.quote(self.binary)}", timeout=10)
        if not found.ok or not found.stdout.strip():
            raise DeviceError(
                f"{serial}: no {self.binary} on the device; push a static tcpdump build "
                "(e.g. to /data/local/tmp/tcpdump) and give its path"
            )
        self._open()
        self._launch(self._run)
        return self

    def _open(self) -> None:
        try:
            conn = self.handset.device.open_transport(timeout=10)
            conn.send_command("exec:" + self.command)
            conn.check_okay()
        except Exception as exc:  # noqa: BLE001 - adbutils raises AdbError, OSError, EOFError
            raise DeviceError(f"{self.handset.serial}: cannot start tcpdump: {exc}") from None
        with self._conn_lock:
            self._conn = conn

    def _close_conn(self) -> None:
        with self._conn_lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except OSError:
                pass

    def _run(self) -> None:
        pump = _StreamPump(self, self.files)
        try:
            while not self._stop.is_set():
                with self._conn_lock:
                    conn = self._conn
                if conn is None:
                    if not self._reopen():
                        break
                    continue
                stream = pump.run(conn.conn, self._stop)
                # a record cut short is already counted lost
                self._stream_records = stream.records + (1 if stream.pending else 0)
                self._close_conn()
                if stream.header is None and not self._stop.is_set():
                    self._error(f"tcpdump wrote no pcap header: {self._stderr() or 'no output'}")
                if self._stop.is_set():
                    break
                self._add(interruptions=1)
                self._error("the tcpdump stream ended (device gone or tcpdump exited)")
                if not self.reconnect:
                    break
        finally:
            self.files.close()

    def _reopen(self) -> bool:
        while not self._stop.wait(self.retry_interval):
            try:
                self._open()
                return True
            except DeviceError as exc:
                log.debug("reopening tcpdump: %s", exc)
        return False

    def _stderr(self, timeout: float = 5.0) -> str:
        try:
            return str(self.handset.su(f"cat {TCPDUMP_ERR}", timeout=timeout).stdout).strip()
        except Exception:  # noqa: BLE001 - only for an error message; the device may be gone
            return ""

    def stop(self, timeout: float = STOP_TIMEOUT) -> CaptureStats:
        deadline = time.monotonic() + timeout
        started = self._thread is not None
        super().stop(timeout)
        # tcpdump prints its statistics to the error file when the closed stream ends it
        # (SIGPIPE, at its next write): wait a little for them. Its kernel drops are ours, and
        # what it captured but never reached us (in flight at the close) is lost.
        settle = min(deadline, time.monotonic() + 2.0)
        while started:
            summary = parse_tcpdump_summary(self._stderr(max(1.0, deadline - time.monotonic())))
            if summary is not None:
                missing = max(0, summary.captured - self._stream_records)
                self._add(dropped=summary.dropped, lost=missing)
                break
            if time.monotonic() >= settle:
                break
            time.sleep(0.2)
        return self.stats


@dataclass(frozen=True, slots=True)
class TcpdumpSummary:
    captured: int
    dropped: int


def parse_tcpdump_summary(text: str) -> TcpdumpSummary | None:
    """tcpdump's closing statistics: ``N packets captured`` ... ``N packets dropped by
    kernel``; None until it has printed them."""
    counts: dict[str, int] = {}
    for line in text.splitlines():
        number, _, rest = line.strip().partition(" ")
        if number.isdigit() and rest in ("packets captured", "packets dropped by kernel"):
            counts[rest] = int(number)
    if len(counts) < 2:
        return None
    return TcpdumpSummary(counts["packets captured"], counts["packets dropped by kernel"])


# ---- a host interface --------------------------------------------------------------------------


class IfaceSniffer(_Capture):
    """A host interface sniffed with scapy into rotating pcapng files, each packet appended
    whole or not at all (a full disk leaves no torn record; it stops the capture).

    Needs the capability to open packet sockets (root or CAP_NET_RAW). On a loopback
    interface each packet is kept once, as tcpdump does (the outgoing copy is dropped)."""

    source = "iface"

    def __init__(
        self,
        iface: str,
        bpf: str,
        session_dir: Path | str,
        *,
        rotate_bytes: int = ROTATE_BYTES,
    ) -> None:
        super().__init__(session_dir)
        self.iface = iface
        self.bpf = bpf
        self.rotate_bytes = rotate_bytes
        self.prefix = f"iface-{_safe_name(iface)}"
        self._sock: Any = None
        self._sniffer: Any = None
        self._writer: Any = None
        self._buffer = io.BytesIO()
        self._fd: int | None = None
        self._path = Path()
        self._size = 0
        self._next = 1

    def start(self) -> IfaceSniffer:
        from scapy.config import conf
        from scapy.sendrecv import AsyncSniffer

        loopback = _is_loopback_iface(self.iface)
        opener = conf.L2socket if loopback else conf.L2listen
        try:
            self._sock = opener(iface=self.iface, filter=self.bpf or None)
        except PermissionError:
            raise CaptureError(
                f"capturing on {self.iface} needs root or CAP_NET_RAW (sudo setcap "
                "cap_net_raw,cap_net_admin=eip on the Python interpreter)"
            ) from None
        except Exception as exc:  # noqa: BLE001 - scapy raises OSError or Scapy_Exception
            raise CaptureError(f"cannot capture on {self.iface} ({self.bpf!r}): {exc}") from None
        self._discard_before_filter()
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._rotate()
        self._sniffer = AsyncSniffer(opened_socket=self._sock, prn=self._on_packet, store=False)
        self._sniffer.start()
        with self._lock:
            self._running = True
        return self

    def _rotate(self) -> None:
        self._close_file()
        while True:
            path = self.directory / f"{self.prefix}-{self._next:03d}.pcapng"
            self._next += 1
            if not path.exists():
                break
        # owner-only; appended to without a buffer, as RotatingPcap does
        try:
            self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        except OSError as exc:
            raise write_error(path, exc) from None
        self._path, self._size = path, 0
        self._new_writer()
        self._file(path)

    def _new_writer(self) -> None:
        """scapy's pcapng writer, writing into memory: each packet's blocks (with the section
        and interface blocks before the first) are then appended to the file in one go."""
        from scapy.utils import PcapNgWriter

        self._buffer = io.BytesIO()
        self._writer = PcapNgWriter(os.devnull)  # it takes only a file name: then its file
        self._writer.f.close()
        self._writer.f = self._buffer  # is replaced

    def _close_file(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)
        self._writer = None

    def _on_packet(self, pkt: Any) -> None:
        try:
            if self._size > self.rotate_bytes:
                self._rotate()
            self._writer.write(pkt)
            data = self._buffer.getvalue()
            self._buffer.seek(0)
            self._buffer.truncate()
        except SessionWriteError as exc:  # a new file could not be made
            self._add(lost=1)
            self._write_failed(exc)
            return
        except Exception as exc:  # noqa: BLE001 - one bad packet must not end the capture
            self._error(f"writing a packet: {exc}")
            return
        assert self._fd is not None
        try:
            append_line(self._fd, data, self._path)  # whole or not at all
        except SessionWriteError as exc:
            self._add(lost=1)
            if not self._size:  # the file's header blocks went back with the packet
                self._new_writer()
            if exc.disk_full:
                if not self._disk_full:
                    self._write_failed(exc)
            else:
                self._error(f"writing a packet: {exc}")
            return
        self._size += len(data)
        self._count(1, len(pkt))

    def _discard_before_filter(self) -> None:
        """Let go of what the kernel queued, and of the drops it counted, between the socket's
        opening and its filter taking effect: every packet of the interface then, not the
        capture's (on a busy host, enough to fill the queue and count as drops). libpcap does
        the same at its start. Reading the kernel's counters resets them."""
        ins = getattr(self._sock, "ins", None)
        if not isinstance(ins, socket.socket):
            return
        timeout = ins.gettimeout()
        ins.setblocking(False)
        try:
            for _ in range(_DRAIN_MAX):
                try:
                    ins.recv(1 << 16)
                except OSError:  # (BlockingIOError: nothing more is queued)
                    break
        finally:
            ins.settimeout(timeout)
        self._kernel_drops()

    def _kernel_drops(self) -> int:
        ins = getattr(self._sock, "ins", None)
        if not isinstance(ins, socket.socket):
            return 0
        try:
            raw = ins.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
        except OSError:
            return 0
        return int(struct.unpack("II", raw)[1])

    def stop(self, timeout: float = STOP_TIMEOUT) -> CaptureStats:
        self._stop.set()
        sniffer = self._sniffer
        if sniffer is not None:
            try:
                sniffer.stop(join=False)
            except Exception as exc:  # noqa: BLE001 - scapy raises if it already ended
                log.debug("stopping the sniffer: %s", exc)
            if sniffer.thread is not None:
                sniffer.thread.join(timeout)
                if sniffer.thread.is_alive():
                    self._error(f"did not stop within {timeout:.0f}s")
        if self._sock is not None:
            self._add(dropped=self._kernel_drops())
            self._sock.close()
            self._sock = None
        self._close_file()
        with self._lock:
            self._running = False
        return self.stats


_DRAIN_MAX = 1 << 16  # packets queued before the filter, at most, read and let go at start
SOL_PACKET = 263
PACKET_STATISTICS = 6


def _is_loopback_iface(name: str) -> bool:
    try:
        return Path(f"/sys/class/net/{name}/type").read_text().strip() == "772"
    except OSError:
        return name == "lo"


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "iface"


# ---- PCAPdroid ---------------------------------------------------------------------------------


def pcapdroid_start_command(
    collector_port: int,
    *,
    collector_ip: str = "127.0.0.1",
    mode: str = "udp_exporter",
    app_filter: str | None = None,
    trailer: bool = True,
    block_quic: bool = False,
) -> str:
    """``am start`` of PCAPdroid's CaptureCtrl with the export settings (docs/app_api.md).

    ``trailer`` asks for the per-packet UID and app name: ``dump_extensions`` since 1.8,
    ``pcapdroid_trailer`` before (both are sent; each version ignores the other).
    ``block_quic`` asks PCAPdroid to drop QUIC itself, so that apps fall back to TCP, which the
    proxy sees: ``block_quic always`` (docs/app_api.md: a string, ``never | always |
    to_decrypt``, from version code 73; the boolean of versions 51 to 72 is read as ``never``
    since. Every PCAPdroid auditor accepts, 1.8.6 or newer for its TCP exporter, is past 73)."""
    if mode not in ("udp_exporter", "tcp_exporter"):
        raise ValueError(f"unknown PCAPdroid export mode {mode!r}")
    extras = [
        ("action", "start"),
        ("pcap_dump_mode", mode),
        ("collector_ip_address", collector_ip),
        ("collector_port", str(int(collector_port))),
    ]
    if app_filter:
        extras.append(("app_filter", app_filter))
    if trailer:
        extras += [("pcapdroid_trailer", "true"), ("dump_extensions", "true")]
    if block_quic:
        extras.append(("block_quic", "always"))
    args = " ".join(f"-e {k} {shlex.quote(v)}" for k, v in extras)
    return f"am start {args} -n {PCAPDROID_ACTIVITY}"


def pcapdroid_stop_command() -> str:
    return f"am start -e action stop -n {PCAPDROID_ACTIVITY}"


class PcapdroidCollector(_Capture):
    """Receives PCAPdroid's export into ``packets/pcapdroid-NNN.pcap``.

    ``udp`` (``udp_exporter``): the first datagram is the 24-byte pcap header and each later
    one a single pcap record (PCAPdroid ``pcap_dump/UDPDumper.java``). The link type is the one
    the header declares: raw IP (101), or Ethernet (1) when the trailer is on. If the header
    was missed (the collector started late), ``trailer`` decides which to assume.
    ``tcp`` (``tcp_exporter``): the same pcap as one byte stream per connection."""

    source = "pcapdroid"

    def __init__(
        self,
        port: int,
        session_dir: Path | str,
        *,
        host: str = "127.0.0.1",
        transport: str = "udp",
        trailer: bool = True,
        rotate_bytes: int = ROTATE_BYTES,
    ) -> None:
        super().__init__(session_dir)
        if transport not in ("udp", "tcp"):
            raise ValueError(f"transport must be udp or tcp, not {transport!r}")
        self.host = host
        self.port = port
        self.transport = transport
        self.trailer = trailer
        self.files = RotatingPcap(self.directory, self.source, limit=rotate_bytes)
        self._sock: socket.socket | None = None
        self._client: socket.socket | None = None
        self._rec = struct.Struct("<IIII")
        self._linktype = LINKTYPE_ETHERNET if trailer else LINKTYPE_RAW
        self._connections = 0
        self._heard = threading.Event()  # a connection (TCP) or a datagram (UDP) arrived
        self._idle = threading.Event()  # no exporter connected now
        self._idle.set()
        self._ending = threading.Event()  # the exporter was asked to stop: its end is expected

    @property
    def connections(self) -> int:
        """Exporter connections accepted so far (TCP)."""
        with self._lock:
            return self._connections

    def wait_heard(self, timeout: float) -> bool:
        """Wait until the exporter has connected (TCP) or sent something (UDP)."""
        return self._heard.wait(timeout)

    def expect_end(self) -> None:
        """The exporter was told to stop: its stream ending from now on is no interruption."""
        self._ending.set()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no exporter connection is open (what it sent has been taken)."""
        return self._idle.wait(timeout)

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def start(self) -> PcapdroidCollector:
        kind = socket.SOCK_DGRAM if self.transport == "udp" else socket.SOCK_STREAM
        sock = socket.socket(socket.AF_INET, kind)
        try:
            if kind == socket.SOCK_DGRAM:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
            else:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
            if kind == socket.SOCK_STREAM:
                sock.listen(1)
        except OSError as exc:
            sock.close()
            raise CaptureError(
                f"cannot listen for PCAPdroid on {self.transport} {self.host}:{self.port}: {exc}"
            ) from None
        sock.settimeout(POLL)
        self._sock = sock
        self.port = int(sock.getsockname()[1])
        self._launch(self._run_udp if self.transport == "udp" else self._run_tcp)
        return self

    # -- UDP ---------------------------------------------------------------------------------
    def _run_udp(self) -> None:
        sock = self._sock
        assert sock is not None
        try:
            while not self._stop.is_set():
                try:
                    data = sock.recv(MAX_RECORD)
                except TimeoutError:
                    continue
                except OSError as exc:
                    if not self._stop.is_set():
                        self._error(f"receive failed: {exc}")
                    break
                self._heard.set()
                try:
                    self._datagram(data)
                except SessionWriteError as exc:  # the file cannot grow: what is written stays
                    self._add(lost=1)
                    self._write_failed(exc)
                    if self._stop.is_set():
                        break
        finally:
            self.files.close()

    def _datagram(self, data: bytes) -> None:
        if len(data) == 24 and data[:4] in _MAGICS:
            order, _, self._linktype = header_info(data)
            self._rec = struct.Struct(order + "IIII")
            self.files.begin(data, new_file=False)
            self._file(self.files.paths[-1])
            return
        if len(data) < 16 or 16 + self._rec.unpack_from(data)[2] != len(data):
            self._add(lost=1)
            self._error(f"a datagram of {len(data)} bytes is not one pcap record")
            return
        if self.files.header is None:  # the header datagram was missed: assume PCAPdroid's
            self.files.begin(global_header(self._linktype, snaplen=DEFAULT_SNAPLEN))
        self.files.write([data])
        self._file(self.files.paths[-1])
        self._count(1, len(data) - 16)
        self._record(data)

    def _record(self, rec: bytes) -> None:
        if self._linktype != LINKTYPE_ETHERNET:
            return
        trailer = parse_pcapdroid_trailer(rec[16:])
        if trailer is None:
            return
        with self._lock:
            name, n = self._apps.get(trailer.uid, (trailer.app, 0))
            self._apps[trailer.uid] = (name or trailer.app, n + 1)

    # -- TCP ---------------------------------------------------------------------------------
    def _run_tcp(self) -> None:
        server = self._sock
        assert server is not None
        pump = _StreamPump(self, self.files, self._record)
        try:
            while not self._stop.is_set():
                try:
                    client, _ = server.accept()
                except TimeoutError:
                    continue
                except OSError as exc:
                    if not self._stop.is_set():
                        self._error(f"accept failed: {exc}")
                    break
                self._client = client
                self._idle.clear()
                with self._lock:
                    self._connections += 1
                self._heard.set()
                try:
                    with client:
                        stream = pump.run(client, self._stop)
                finally:
                    self._client = None
                    self._idle.set()
                if stream.header is not None:
                    _, _, self._linktype = header_info(stream.header)
                if not self._stop.is_set() and not self._ending.is_set():
                    self._add(interruptions=1)
        finally:
            self.files.close()

    def _interrupt(self) -> None:
        for sock in (self._client, self._sock):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)  # wakes a blocked recv/accept on Linux
                with contextlib.suppress(OSError):
                    sock.close()

    def stop(self, timeout: float = STOP_TIMEOUT) -> CaptureStats:
        if self.transport == "udp":
            self._add(dropped=_udp_socket_drops(self.host, self.port))
        return super().stop(timeout)


def _udp_socket_drops(host: str, port: int) -> int:
    """The kernel's drop count for our UDP socket (last column of /proc/net/udp)."""
    try:
        packed = socket.inet_aton(host)
    except OSError:
        return 0
    local = f"{int.from_bytes(packed, 'little'):08X}:{port:04X}"
    try:
        lines = Path("/proc/net/udp").read_text().splitlines()[1:]
    except OSError:
        return 0
    for line in lines:
        fields = line.split()
        if len(fields) > 12 and fields[1] == local:
            try:
                return int(fields[-1])
            except ValueError:
                return 0
    return 0


class PcapdroidSource:
    """PCAPdroid on the phone (no root needed) exporting over USB into
    ``packets/pcapdroid-NNN.pcap``: a TCP collector on 127.0.0.1:P of the host,
    ``adb reverse tcp:P tcp:P`` so that the phone's 127.0.0.1:P reaches it, and PCAPdroid
    started with ``tcp_exporter`` to 127.0.0.1:P and its per-packet trailer (UID and app).

    Both changes to the phone go through the restore journal before they are made: the reverse
    (kind ``reverse``) and the capture (kind ``am_start``, undone by PCAPdroid's stop request).
    :meth:`start` undoes what it did if it fails; :meth:`stop` undoes both. PCAPdroid does not
    see loopback traffic, so nothing apps send to a proxy behind ``adb reverse``; it sees what
    bypasses the proxy (DNS, push channels, QUIC, apps that ignore the proxy).

    On a real phone PCAPdroid asks the user to allow each request from ``adb shell`` (and to
    accept its VPN the first time): if it does not connect within ``connect_timeout`` seconds,
    :meth:`start` fails and says so."""

    source = "pcapdroid"

    def __init__(
        self,
        handset: Handset,
        session_dir: Path | str,
        journal: RestoreJournal,
        *,
        app_filter: str | None = None,
        trailer: bool = True,
        block_quic: bool = False,
        connect_timeout: float = PCAPDROID_CONNECT_TIMEOUT,
        rotate_bytes: int = ROTATE_BYTES,
    ) -> None:
        self.handset = handset
        self.session_dir = Path(session_dir)
        self.journal = journal
        self.app_filter = app_filter
        self.trailer = trailer
        self.blocks_quic = block_quic  # PCAPdroid asked to drop QUIC (see the start command)
        self.connect_timeout = connect_timeout
        self.rotate_bytes = rotate_bytes
        self.collector: PcapdroidCollector | None = None
        self._remote: str | None = None  # the device side of our reverse, while it is set
        self._previous: str | None = None
        self._capturing = False

    @property
    def port(self) -> int | None:
        return self.collector.port if self.collector is not None else None

    @property
    def stats(self) -> CaptureStats:
        if self.collector is None:
            return CaptureStats(self.source, False, 0, 0, 0, 0, 0, (), ())
        return self.collector.stats

    def start(self) -> PcapdroidSource:
        self._check_apps()
        collector = self._listen()
        self.collector = collector
        try:
            self._add_reverse(collector.port)
            self._start_capture(collector.port)
            if not collector.wait_heard(self.connect_timeout):
                raise CaptureError(
                    f"{self.handset.serial}: PCAPdroid did not connect to the collector within "
                    f"{self.connect_timeout:.0f}s: on the phone, allow PCAPdroid's request (and "
                    "its VPN prompt the first time), and check that it is 1.8.6 or later"
                )
        except BaseException:
            self._undo(collector)
            collector.stop()
            raise
        return self

    def stop(self, timeout: float = STOP_TIMEOUT) -> CaptureStats:
        """Stop PCAPdroid (it sends what it still holds and closes), then the collector, then
        remove the reverse. Bounded by ``timeout`` (plus the device's command timeouts)."""
        collector = self.collector
        if collector is None:
            return self.stats
        deadline = time.monotonic() + timeout
        collector.expect_end()
        if self._capturing:
            self._stop_capture(collector)
            collector.wait_idle(max(0.0, min(PCAPDROID_FLUSH, deadline - time.monotonic())))
        collector.stop(max(0.5, deadline - time.monotonic()))
        self._undo(collector)
        return collector.stats

    # -- steps -------------------------------------------------------------------------------
    def _check_apps(self) -> None:
        h = self.handset
        if not _installed(h, PCAPDROID_PACKAGE):
            raise DeviceError(
                f"{h.serial}: --packets pcapdroid needs PCAPdroid ({PCAPDROID_PACKAGE}), which "
                f"is not installed: {PCAPDROID_INSTALL}"
            )
        version = _version_of(h, PCAPDROID_PACKAGE)
        if version is not None and parse_version(version) < PCAPDROID_TCP_EXPORTER:
            raise DeviceError(
                f"{h.serial}: PCAPdroid {version} has no TCP exporter, which a capture over USB "
                f"needs: {PCAPDROID_INSTALL}"
            )
        if self.app_filter and not _installed(h, self.app_filter):
            # PCAPdroid would silently capture every app instead
            raise DeviceError(f"{h.serial}: {self.app_filter} is not installed")

    def _listen(self) -> PcapdroidCollector:
        """A collector on a free host port whose number is not reversed on the phone yet."""
        taken = set(self.handset.reverse_list())
        for _ in range(8):
            collector = PcapdroidCollector(
                0,
                self.session_dir,
                transport="tcp",
                trailer=self.trailer,
                rotate_bytes=self.rotate_bytes,
            ).start()
            if f"tcp:{collector.port}" not in taken:
                return collector
            collector.stop()
        raise CaptureError(f"{self.handset.serial}: no free port for PCAPdroid's collector")

    def _add_reverse(self, port: int) -> None:
        h = self.handset
        remote = f"tcp:{port}"
        self._previous = h.reverse_list().get(remote)
        cid = self.journal.record(
            h.serial,
            f"adb reverse {remote} {remote} (PCAPdroid's exporter)",
            {"kind": "reverse", "remote": remote, "previous": self._previous},
        )
        self._remote = remote
        h.reverse(remote, remote)
        self.journal.applied(cid)

    def _start_capture(self, port: int) -> None:
        h = self.handset
        command = pcapdroid_start_command(
            port,
            mode="tcp_exporter",
            app_filter=self.app_filter,
            trailer=self.trailer,
            block_quic=self.blocks_quic,
        )
        cid = self.journal.record(
            h.serial, f"PCAPdroid capture, tcp_exporter to 127.0.0.1:{port}", pcapdroid_undo()
        )
        self._capturing = True
        result = h.sh(command, timeout=15)
        text = (result.stdout + result.stderr).strip()
        if not result.ok or "Error" in text:
            last = text.splitlines()[-1] if text else f"exit status {result.returncode}"
            raise DeviceError(f"{h.serial}: PCAPdroid did not start: {last}")
        self.journal.applied(cid)

    def _stop_capture(self, collector: PcapdroidCollector) -> None:
        try:
            self.handset.sh(pcapdroid_stop_command(), timeout=15)
            self._capturing = False
        except DeviceError as exc:
            collector._error(f"stopping PCAPdroid: {exc}")

    def _undo(self, collector: PcapdroidCollector) -> None:
        """Undo what is still done (idempotent; errors are kept in the stats)."""
        if self._capturing:
            self._stop_capture(collector)
        remote = self._remote
        if remote is not None:
            try:
                if self._previous:
                    self.handset.reverse(remote, self._previous)
                else:
                    self.handset.reverse_remove(remote)
                self._remote = None
            except DeviceError as exc:
                collector._error(f"removing adb reverse {remote}: {exc}")


def start_pcapdroid(
    handset: Handset,
    session_dir: Path | str,
    journal: RestoreJournal,
    *,
    app_filter: str | None = None,
    block_quic: bool = False,
) -> PcapdroidSource:
    """``--packets pcapdroid``: PCAPdroid on the phone exporting to this host over ``adb
    reverse``, journalled, started (with ``block_quic``, asked to drop QUIC). See
    :class:`PcapdroidSource`."""
    return PcapdroidSource(
        handset, session_dir, journal, app_filter=app_filter, block_quic=block_quic
    ).start()


def pcapdroid_undo() -> dict[str, Any]:
    """The restore journal's undo of a PCAPdroid capture: PCAPdroid's stop request, as the
    ``am start`` of an activity with string extras (idempotent: a stopped capture stays so)."""
    return {"kind": "am_start", "component": PCAPDROID_ACTIVITY, "extras": {"action": "stop"}}


def _installed(h: Handset, package: str) -> bool:
    out = h.sh(f"pm path {shlex.quote(package)}", timeout=15).stdout
    return any(line.startswith("package:") for line in out.splitlines())


def _version_of(h: Handset, package: str) -> str | None:
    out = h.sh(f"dumpsys package {shlex.quote(package)}", timeout=15).stdout
    found = [p for p in parse_dumpsys_package(out).items if p.name == package]
    current = [p for p in found if not p.hidden_system] or found
    return current[0].version_name if current else None


def parse_version(text: str) -> tuple[int, ...]:
    """``1.8.6`` -> (1, 8, 6); what follows the leading numbers (``-beta``) is ignored."""
    parts: list[int] = []
    for piece in text.split("."):
        digits = ""
        for ch in piece:
            if not ch.isdigit():
                break
            digits += ch
        if not digits:
            break
        parts.append(int(digits))
        if len(digits) < len(piece):
            break
    return tuple(parts)


# ---- choosing a source -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PacketsSpec:
    """``--packets``: ``off``, ``iface:NAME``, ``adb-tcpdump`` or ``pcapdroid``."""

    kind: str
    iface: str | None = None

    @classmethod
    def parse(cls, text: str) -> PacketsSpec:
        text = text.strip()
        if text in ("off", "adb-tcpdump", "pcapdroid"):
            return cls(text)
        if text.startswith("iface:") and text[len("iface:") :]:
            return cls("iface", text[len("iface:") :])
        raise ValueError(f"--packets {text!r}: expected off, iface:NAME, adb-tcpdump or pcapdroid")


__all__ = [
    "PACKETS_DIR",
    "ROTATE_BYTES",
    "AdbTcpdump",
    "AppPackets",
    "CaptureSource",
    "CaptureStats",
    "IfaceSniffer",
    "PacketsSpec",
    "PcapStream",
    "PcapStreamError",
    "PcapdroidCollector",
    "PcapdroidSource",
    "PcapdroidTrailer",
    "RotatingPcap",
    "TcpdumpSummary",
    "header_info",
    "parse_pcapdroid_trailer",
    "parse_tcpdump_summary",
    "parse_version",
    "pcapdroid_start_command",
    "pcapdroid_stop_command",
    "pcapdroid_undo",
    "start_pcapdroid",
    "tcpdump_command",
]
