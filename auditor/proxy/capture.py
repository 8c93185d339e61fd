"""Run mitmdump with the recorder addon as a child process, and follow the session it writes.

The controlling ``auditor`` process owns the session: it creates it, starts mitmdump pointed
at it, shows live counts by tailing ``flows.jsonl``, stops mitmdump on duration, Ctrl-C or
SIGTERM, and closes the session (end time, summary, artifact hashes).

Once mitmdump has stopped, :func:`write_keyed_captures` copies each packet capture of the
session into ``tls/<name>.pcapng`` with mitmdump's TLS key log embedded in a Decryption
Secrets Block, as ``editcap --inject-secrets tls,tls/keylog.txt`` writes it: Wireshark opens
that one file and shows the decrypted traffic. It lives beside the key log, not under
``packets/``, so that analysis never reads the same packets twice.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from auditor import __version__
from auditor.errors import CaptureError
from auditor.fsutil import open_regular, private_mkdirs
from auditor.netutil import is_loopback
from auditor.packets.pcapfile import MAX_RECORD
from auditor.proxy import recorder
from auditor.proxy.recorder import EXIT_DISK_FULL, EXIT_WRITE_FAILED, RECORDER_SAYS
from auditor.records import HttpRecord, RecordFormatError, loads
from auditor.session.bodies import DEFAULT_BODY_CAP
from auditor.session.layout import FLOWS, STATUS_COMPLETE, STATUS_INCOMPLETE, TLS_KEYLOG
from auditor.session.writer import SessionWriteError, SessionWriter

log = logging.getLogger(__name__)

# mitmdump loads the addon from the installed module's own file, so an installed auditor needs
# no checkout (addons/recorder.py is the same addon, for plain mitmdump in a checkout)
RECORDER_SCRIPT = Path(recorder.__file__).resolve()
DEFAULT_CONFDIR = Path.home() / ".auditor" / "mitmproxy"
# mitmproxy (net/tls.py) reads the first of these that is set, once, when it starts; both are
# given, so that neither one inherited from the user's shell sends the secrets elsewhere
KEYLOG_ENV = ("MITMPROXY_SSLKEYLOGFILE", "SSLKEYLOGFILE")


def mitmdump_path() -> str:
    """mitmdump beside this interpreter (the venv), else on PATH."""
    beside = Path(sys.executable).parent / "mitmdump"
    if beside.exists():
        return str(beside)
    found = shutil.which("mitmdump")
    if not found:
        raise CaptureError("mitmdump not found: install auditor's dependencies (make bootstrap)")
    return found


def prepare_confdir(confdir: Path) -> Path:
    """mitmproxy's CA lives here; keep it readable by its owner only."""
    private_mkdirs(confdir)  # its parents too: ~/.auditor also holds the device locks
    os.chmod(confdir, 0o700)
    return confdir


def restrict_ca_files(confdir: Path) -> None:
    """The CA's private key owner-only; its public files (certificate, .cer, .p12 without
    key, dhparam) never writable by others."""
    for f in confdir.glob("mitmproxy-*"):
        if not f.is_file() or f.is_symlink():
            continue
        public = f.name.endswith(("-cert.pem", ".cer", "-dhparam.pem"))
        mode = stat.S_IMODE(f.stat().st_mode)
        os.chmod(f, (mode & 0o755) if public else 0o600)


def ca_cert_path(confdir: Path) -> Path:
    return confdir / "mitmproxy-ca-cert.pem"


def create_keylog(session: Path) -> Path:
    """The session's empty TLS key log, owner-only, made before mitmdump starts: mitmproxy
    opens it for appending at the first handshake, and would create it with the umask's mode."""
    path = session / TLS_KEYLOG
    try:
        private_mkdirs(path.parent)
        # no link followed; a FIFO without a reader fails at once (ENXIO) instead of blocking
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_NONBLOCK
        fd = os.open(path, flags, 0o600)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OSError(f"{path}: not a regular file")
            os.fchmod(fd, 0o600)
        finally:
            os.close(fd)
    except OSError as exc:
        raise CaptureError(f"cannot create the TLS key log: {exc}") from None
    return path


class ProxyPortInUse(CaptureError):
    """mitmdump could not listen: another process holds its port."""


# the words that end ProxyPortInUse's message (a campaign's audit process reports the error
# itself as an ``error_kind`` in its result.json: campaign.worker.error_kind)
PORT_IN_USE = "the port is taken by another process"


def _listening_inodes(port: int) -> set[int] | None:
    """The inodes of the TCP sockets listening on ``port`` (any address, IPv4 or IPv6), from
    the kernel's tables in /proc; None without them (not Linux)."""
    found: set[int] = set()
    tables = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="ascii", errors="replace") as fh:
                lines = fh.read().splitlines()[1:]
        except OSError:
            continue
        tables += 1
        for line in lines:
            f = line.split()
            # local address (hex address:port), remote address, state (0A: LISTEN), ... inode
            if len(f) > 9 and f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == port:
                found.add(int(f[9]))
    return found if tables else None


def _socket_inodes(pid: int) -> set[int]:
    """The inodes of the sockets open in process ``pid`` and its children (their file
    descriptors link to ``socket:[inode]``)."""
    found: set[int] = set()
    todo, seen = [pid], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        fds = f"/proc/{p}/fd"
        with contextlib.suppress(OSError):
            for fd in os.listdir(fds):
                with contextlib.suppress(OSError):
                    target = os.readlink(f"{fds}/{fd}")
                    if target.startswith("socket:["):
                        found.add(int(target[8:-1]))
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children", encoding="ascii") as fh:
                    todo += [int(c) for c in fh.read().split()]
    return found


def owns_listener(pid: int, port: int) -> bool | None:
    """Whether the socket listening on TCP ``port`` belongs to process ``pid`` (or a child
    of it): one of its file descriptors is that socket's inode. Asked of the kernel rather
    than of mitmdump's log, because ``--quiet`` keeps mitmdump from saying where it listens
    and because the socket table tells who holds the port, not who meant to. None where
    there is no /proc to ask."""
    listening = _listening_inodes(port)
    if listening is None:
        return None
    return bool(listening) and bool(listening & _socket_inodes(pid))


@dataclass
class ProxyOptions:
    listen_host: str = "127.0.0.1"
    port: int = 8080
    confdir: Path = DEFAULT_CONFDIR
    body_cap: int = DEFAULT_BODY_CAP
    mode: str = "regular"
    extra: dict[str, str] = field(default_factory=dict)  # more --set name=value

    def describe(self) -> dict[str, Any]:
        return {
            "listen_host": self.listen_host,
            "port": self.port,
            "mode": self.mode,
            "confdir": str(self.confdir),
            **{f"mitmproxy_{k}": v for k, v in sorted(self.extra.items())},
        }


class Mitmdump:
    """A mitmdump child process recording into one session."""

    def __init__(self, session: Path, opts: ProxyOptions):
        self.session = session
        self.opts = opts
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = session / "mitmdump.log"
        self.keylog_path = session / TLS_KEYLOG
        self._log_start = 0

    def argv(self) -> list[str]:
        o = self.opts
        args = [
            mitmdump_path(),
            "--quiet",
            "--listen-host",
            o.listen_host,
            "--listen-port",
            str(o.port),
            "--mode",
            o.mode,
            "--set",
            f"confdir={o.confdir}",
            "-s",
            str(RECORDER_SCRIPT),
            "--set",
            f"auditor_session={self.session}",
            "--set",
            f"auditor_body_cap={o.body_cap}",
            # auditor closes the session itself, once the device is restored and the
            # capture's own summary is in (the recorder would close it on its own)
            "--set",
            "auditor_close_on_done=false",
        ]
        for name, value in sorted(o.extra.items()):
            args += ["--set", f"{name}={value}"]
        return args

    def env(self) -> dict[str, str]:
        """auditor's environment, with mitmproxy's TLS secrets sent to the session's key log."""
        keylog = os.path.abspath(self.keylog_path)  # whatever the child's working folder
        return {**os.environ, **dict.fromkeys(KEYLOG_ENV, keylog)}

    def start(self, timeout: float = 30.0) -> None:
        prepare_confdir(self.opts.confdir)
        create_keylog(self.session)
        logf = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._log_start = os.fstat(logf).st_size  # what this start logs comes after
        try:
            # A session of its own: the terminal's Ctrl-C reaches auditor, which stops
            # mitmdump in order (SIGTERM, so its recorder flushes) and then closes the session.
            self.proc = subprocess.Popen(
                self.argv(),
                env=self.env(),
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=logf,
                start_new_session=True,
            )
        except OSError as exc:
            raise CaptureError(f"cannot start mitmdump: {exc}") from None
        finally:
            os.close(logf)
        self._wait_listening(timeout)
        restrict_ca_files(self.opts.confdir)

    def _wait_listening(self, timeout: float) -> None:
        """Until mitmdump itself listens on its port. The port was free when it was chosen,
        but another process may have taken it before mitmdump bound it: a connection that is
        accepted proves only that something listens there, so the listener must be one of
        mitmdump's own sockets (:func:`owns_listener`). mitmdump that cannot bind says so in
        its log and exits: :class:`ProxyPortInUse`."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                if self._port_in_use():
                    raise self._in_use_error()
                raise CaptureError(f"mitmdump exited at start: {self._log_tail()}")
            if self._listening():
                return
            time.sleep(0.1)
        self.stop()
        if self._port_in_use():
            raise self._in_use_error()
        raise CaptureError(f"mitmdump did not listen on port {self.opts.port} in {timeout:.0f}s")

    def _listening(self) -> bool:
        assert self.proc is not None
        owned = owns_listener(self.proc.pid, self.opts.port)
        if owned is not None:
            return owned
        host = self.opts.listen_host  # no /proc: an accepted connection is the only sign
        if host in ("0.0.0.0", ""):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        try:
            with socket.create_connection((host, self.opts.port), timeout=0.5):
                return True
        except OSError:
            return False

    def _port_in_use(self) -> bool:
        """mitmdump's log (of this start) says it could not bind its port."""
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(self._log_start)
                said = fh.read().decode("utf-8", "replace").lower()
        except OSError:
            return False
        return "address already in use" in said or f"[errno {errno.EADDRINUSE}]" in said

    def _in_use_error(self) -> ProxyPortInUse:
        where = f"{self.opts.listen_host}:{self.opts.port}"
        return ProxyPortInUse(f"mitmdump could not listen on {where}: {PORT_IN_USE}")

    def _log_tail(self, n: int = 5) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(lines[-n:]) or "(no output)"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def exited(self) -> ProxyExit | None:
        """Why mitmdump ended, if it has ended (by itself: call before :meth:`stop`)."""
        if self.proc is None or self.proc.poll() is None:
            return None
        rc = self.proc.returncode
        said = self._log_tail(3)
        if rc in (EXIT_DISK_FULL, EXIT_WRITE_FAILED):  # the recorder's own line says why
            said = self._log_line(RECORDER_SAYS) or said
        return describe_exit(rc, said, self.proc.pid)

    def _log_line(self, marker: str) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        found = [line for line in lines if marker in line]
        return found[-1].split(marker, 1)[1].strip() if found else ""

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, wait, then SIGKILL. Returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("mitmdump did not stop in %.0fs; killing it", timeout)
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


@dataclass(frozen=True, slots=True)
class ProxyExit:
    """The capture cannot go on: mitmdump ended by itself, or (``source`` other than
    ``mitmdump``) something writing beside it into the session (the packet capture, logcat,
    the socket poller) found the disk full. The ``stopped_by`` it gives the session, and why."""

    stopped_by: str  # proxy_died | disk_full | write_failed
    exit_status: int
    signal: str | None
    pid: int | None
    message: str
    source: str = "mitmdump"

    @property
    def event(self) -> str:
        """The session event that records it."""
        if self.source != "mitmdump":
            return "session_write_failed"  # as for auditor's own writes to the session
        return "proxy_died" if self.stopped_by == "proxy_died" else "recorder_failed"

    def data(self) -> dict[str, Any]:
        if self.source != "mitmdump":
            return {"source": self.source, "disk_full": self.stopped_by == "disk_full"}
        return {"exit_status": self.exit_status, "signal": self.signal, "pid": self.pid}


def describe_exit(rc: int, log_tail: str = "", pid: int | None = None) -> ProxyExit:
    """Turn mitmdump's exit status into a reason (the recorder's own statuses first)."""
    if rc == EXIT_DISK_FULL:
        return ProxyExit(
            "disk_full",
            rc,
            None,
            pid,
            "the recorder could not write to the session (disk full or file size limit "
            f"reached) and stopped mitmdump: {log_tail}",
        )
    if rc == EXIT_WRITE_FAILED:
        return ProxyExit(
            "write_failed",
            rc,
            None,
            pid,
            f"the recorder could not write to the session and stopped mitmdump: {log_tail}",
        )
    if rc < 0:
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = f"signal {-rc}"
        return ProxyExit("proxy_died", rc, name, pid, f"mitmdump was killed by {name}")
    return ProxyExit(
        "proxy_died", rc, None, pid, f"mitmdump exited by itself with status {rc}: {log_tail}"
    )


@dataclass
class LiveCounts:
    flows: int = 0
    errors: int = 0
    tls_failed: int = 0
    websocket: int = 0
    dns: int = 0
    hosts: set[str] = field(default_factory=set)


class FlowTail:
    """Follows a session's ``flows.jsonl`` as it grows and keeps live counts."""

    def __init__(self, session: Path):
        self.path = session / FLOWS
        self.offset = 0
        self.partial = b""
        self.counts = LiveCounts()

    def poll(self) -> LiveCounts:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                data = fh.read()
        except FileNotFoundError:
            return self.counts
        self.offset += len(data)
        data = self.partial + data
        *lines, self.partial = data.split(b"\n")
        c = self.counts
        for line in lines:
            if not line.strip():
                continue
            try:
                rec = loads(line)
            except RecordFormatError:
                continue
            t = rec.TYPE.value
            if isinstance(rec, HttpRecord):
                c.flows += 1
                c.hosts.add(rec.host)
                c.errors += bool(rec.error)
            elif t == "tls_failed":
                c.tls_failed += 1
                if rec.sni:  # type: ignore[union-attr]
                    c.hosts.add(rec.sni)  # type: ignore[union-attr]
            elif t == "websocket_message":
                c.websocket += 1
            elif t == "dns":
                c.dns += 1
        return c


class StopSignal:
    """Turns SIGINT and SIGTERM into a flag while installed; restores the old handlers."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopSignal:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, _frame: object) -> None:
        self.signum = signum
        self.event.set()

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


ProgressFn = Callable[[float, LiveCounts], None]


@dataclass
class ProxyRunResult:
    session: Path
    manifest: dict[str, Any]
    stopped_by: str


def warn_if_exposed(host: str) -> str | None:
    if not is_loopback(host):
        return (
            f"listening on {host}: anyone who can reach this address can use the proxy and "
            "read what passes through it"
        )
    return None


def run_capture(
    out_dir: Path,
    opts: ProxyOptions,
    *,
    duration: float | None = None,
    notes: str = "",
    on_progress: ProgressFn | None = None,
    stop: threading.Event | None = None,
    poll_interval: float = 0.5,
) -> ProxyRunResult:
    """Record through mitmdump until ``duration`` passes, ``stop`` is set or mitmdump dies."""
    writer = SessionWriter.create(
        out_dir, notes=notes, capture={"proxy": opts.describe()}, body_cap=opts.body_cap
    )
    writer.event("capture_started", "mitmdump starting", **opts.describe())
    mitm = Mitmdump(writer.path, opts)
    stopped_by = "error"
    status = STATUS_INCOMPLETE
    detail = ""

    def event(kind: str, message: str, **data: Any) -> None:
        try:
            writer.event(kind, message, **data)
        except SessionWriteError:
            pass  # kept for the manifest (unwritten_events)

    try:
        mitm.start()
        event("proxy_listening", f"mitmdump pid {mitm.pid}", pid=mitm.pid, tls_keylog=TLS_KEYLOG)
        tail = FlowTail(writer.path)
        started = time.monotonic()
        stop = stop or threading.Event()
        while True:
            elapsed = time.monotonic() - started
            counts = tail.poll()
            if on_progress:
                on_progress(elapsed, counts)
            if stop.is_set():
                stopped_by = "signal"
                break
            if duration is not None and elapsed >= duration:
                stopped_by = "duration"
                break
            ended = mitm.exited()
            if ended is not None:
                stopped_by, detail = ended.stopped_by, ended.message
                log.error("%s", ended.message)
                event(ended.event, ended.message, **ended.data())
                break
            stop.wait(poll_interval if duration is None else min(poll_interval, duration - elapsed))
        rc = mitm.stop()
        if stopped_by in ("signal", "duration"):
            status = STATUS_COMPLETE
        event("capture_stopped", stopped_by, exit_status=rc)
        if on_progress:
            on_progress(time.monotonic() - started, tail.poll())
    except BaseException as exc:
        mitm.stop()
        event("capture_failed", f"capture aborted by an error: {exc}")
        writer.close(status=STATUS_INCOMPLETE, stopped_by="error", stop_detail=str(exc))
        raise
    updates: dict[str, Any] = {"stopped_by": stopped_by}
    if detail:
        updates["stop_detail"] = detail
    manifest = writer.close(status=status, **updates)
    return ProxyRunResult(writer.path, manifest, stopped_by)


# ---- captures with their TLS secrets (pcapng, Decryption Secrets Block) ------------------------

PACKETS = "packets"
KEYED_DIR = "tls"
# pcapng block types and the TLS key log secrets type (draft-ietf-opsawg-pcapng, section 4.7;
# Wireshark wiretap/secrets-types.h SECRETS_TYPE_TLS)
SHB, IDB, EPB, DSB = 0x0A0D0D0A, 0x00000001, 0x00000006, 0x0000000A
SECRETS_TLS = 0x544C534B
BYTE_ORDER_MAGIC = 0x1A2B3C4D
_PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", False),
    b"\xa1\xb2\xc3\xd4": (">", False),
    b"\x4d\x3c\xb2\xa1": ("<", True),  # nanosecond timestamps
    b"\xa1\xb2\x3c\x4d": (">", True),
}
_CHUNK = 1024 * 1024


@dataclass
class KeyedCapture:
    """One packet capture copied with the secrets: what went in and what came out."""

    capture: str  # the session's capture, relative (packets/...)
    keyed: str  # the copy with the secrets, relative (tls/....pcapng)
    packets: int
    secrets_bytes: int
    warning: str = ""  # a last record cut short (a capture killed mid-write): not copied

    def to_dict(self) -> dict[str, Any]:
        out = {
            "capture": self.capture,
            "keyed": self.keyed,
            "packets": self.packets,
            "secrets_bytes": self.secrets_bytes,
        }
        if self.warning:
            out["warning"] = self.warning
        return out


def _pad4(data: bytes) -> bytes:
    return data + b"\x00" * (-len(data) % 4)


def _block(order: str, kind: int, body: bytes) -> bytes:
    body = _pad4(body)
    size = len(body) + 12
    return struct.pack(order + "II", kind, size) + body + struct.pack(order + "I", size)


def secrets_block(secrets: bytes, order: str = "<") -> bytes:
    """A Decryption Secrets Block holding a TLS key log (NSS format), no options."""
    return _block(order, DSB, struct.pack(order + "II", SECRETS_TLS, len(secrets)) + secrets)


def _section_header(order: str) -> bytes:
    app = f"auditor {__version__}".encode()
    options = struct.pack(order + "HH", 4, len(app)) + _pad4(app) + b"\x00" * 4  # shb_userappl
    body = struct.pack(order + "IHHq", BYTE_ORDER_MAGIC, 1, 0, -1) + options
    return _block(order, SHB, body)


def _interface(linktype: int, snaplen: int, nanos: bool) -> bytes:
    options = b""
    if nanos:  # if_tsresol: 10^-9 (microseconds are the default and need no option)
        options = struct.pack("<HHB", 9, 1, 9) + b"\x00" * 3 + b"\x00" * 4
    return _block("<", IDB, struct.pack("<HHI", linktype & 0xFFFF, 0, snaplen) + options)


MAX_BLOCK = 64 * 1024 * 1024  # bytes of one pcapng block (a DSB or name block may be large)


def _pcap_to_pcapng(src: Any, dst: Any, secrets: bytes) -> tuple[int, str]:
    """Copy a classic pcap stream to pcapng with the secrets: SHB, DSB, IDB, then one EPB per
    record, in the order editcap writes them. Returns (packets, warning)."""
    head = src.read(24)
    if len(head) < 24:
        return 0, "the file header is cut short; nothing copied"
    order, nanos = _PCAP_MAGICS[head[:4]]
    _, _, _, _, snaplen, network = struct.unpack(order + "HHiIII", head[4:24])
    dst.write(_section_header("<"))
    dst.write(secrets_block(secrets))
    dst.write(_interface(network & 0x0FFFFFFF, snaplen, nanos))
    rec = struct.Struct(order + "IIII")
    scale = 1_000_000_000 if nanos else 1_000_000
    packets = 0
    while True:
        hdr = src.read(16)
        if not hdr:
            return packets, ""
        if len(hdr) < 16:
            return packets, "the last record's header is cut short; not copied"
        sec, frac, incl, orig = rec.unpack(hdr)
        if incl > MAX_RECORD:  # a damaged length (the reader's bound): no read of gigabytes
            return packets, f"a record of {incl} bytes is not a packet; the rest not copied"
        data = src.read(incl)
        if len(data) < incl:
            return packets, "the last record is cut short; not copied"
        ts = sec * scale + frac
        body = struct.pack("<IIIII", 0, ts >> 32, ts & 0xFFFFFFFF, incl, orig) + data
        dst.write(_block("<", EPB, body))
        packets += 1


def _pcapng_with_secrets(src: Any, dst: Any, secrets: bytes) -> tuple[int, str]:
    """Copy a pcapng stream block by block, a Decryption Secrets Block after each section
    header (in that section's byte order). Returns (packets, warning)."""
    order = "<"
    packets = 0
    while True:
        head = src.read(8)
        if not head:
            return packets, ""
        if len(head) < 8:
            return packets, "the last block is cut short; not copied"
        if head[:4] == b"\x0a\x0d\x0d\x0a":
            magic = src.read(4)
            order = "<" if magic == b"\x4d\x3c\x2b\x1a" else ">"
            head += magic
        kind, size = struct.unpack(order + "II", head[:8])
        if size < 12 or size % 4 or size > MAX_BLOCK:
            return packets, f"a block of {size} bytes is not pcapng; the rest not copied"
        body = src.read(size - len(head))
        if len(body) < size - len(head):
            return packets, "the last block is cut short; not copied"
        dst.write(head + body)
        if kind == SHB:
            dst.write(secrets_block(secrets, order))
        elif kind in (EPB, 3, 2):  # enhanced, simple and obsolete packet blocks
            packets += 1


def write_keyed_pcapng(capture: Path, secrets: bytes, out: Path) -> tuple[int, str]:
    """Write ``capture`` (pcap or pcapng) to ``out`` as pcapng with ``secrets`` (a TLS key
    log) in a Decryption Secrets Block: owner-only, through a temporary name, so that a
    failure leaves no half file. Returns (packets copied, warning). CaptureError when the
    capture is neither pcap nor pcapng."""
    tmp = out.with_name(f".{out.name}.tmp")
    with open_regular(capture) as src:
        magic = src.read(4)
        src.seek(0)
        if magic not in _PCAP_MAGICS and magic != b"\x0a\x0d\x0d\x0a":
            raise CaptureError(f"{capture.name}: not a pcap or pcapng file")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            with os.fdopen(fd, "wb", buffering=_CHUNK) as dst:
                if magic in _PCAP_MAGICS:
                    result = _pcap_to_pcapng(src, dst, secrets)
                else:
                    result = _pcapng_with_secrets(src, dst, secrets)
            os.replace(tmp, out)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    return result


def keyed_name(capture_rel: str) -> str:
    """Where the copy of ``packets/NAME.pcap`` with the secrets goes: ``tls/NAME.pcapng``
    (a capture in a subfolder keeps its path, ``/`` turned into ``-``)."""
    inner = capture_rel.split("/", 1)[1] if capture_rel.startswith(PACKETS + "/") else capture_rel
    stem = inner.rsplit(".", 1)[0] if "." in inner.rsplit("/", 1)[-1] else inner
    return f"{KEYED_DIR}/{stem.replace('/', '-')}.pcapng"


def write_keyed_captures(session: Path) -> list[KeyedCapture]:
    """Every packet capture of ``session`` copied into ``tls/`` with the session's TLS key
    log embedded (see the module's docstring). Nothing when there is no key log, an empty
    one (no TLS was decrypted) or no capture. Run once mitmdump has stopped (its key log is
    then whole) and before the session is closed (so that the copies are hashed).
    CaptureError or OSError (a full disk) for a capture that cannot be copied: the ones
    before it are kept."""
    try:
        with open_regular(session / TLS_KEYLOG) as fh:
            secrets = fh.read()
    except FileNotFoundError:
        return []
    root = session / PACKETS
    if not secrets or root.is_symlink() or not root.is_dir():
        return []
    done = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
        rel = path.relative_to(session).as_posix()
        if path.name.startswith(".") or not path.name.endswith((".pcap", ".pcapng")):
            continue
        keyed = keyed_name(rel)
        private_mkdirs(session / KEYED_DIR)
        packets, warning = write_keyed_pcapng(path, secrets, session / keyed)
        done.append(KeyedCapture(rel, keyed, packets, len(secrets), warning))
    return done
