"""Run mitmdump with the recorder addon as a child process, and follow the session it writes.

The controlling ``auditor`` process owns the session: it creates it, starts mitmdump pointed
at it, shows live counts by tailing ``flows.jsonl``, stops mitmdump on duration, Ctrl-C or
SIGTERM, and closes the session (end time, summary, artifact hashes).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import addons.recorder
from addons.recorder import EXIT_DISK_FULL, EXIT_WRITE_FAILED, RECORDER_SAYS
from auditor.bodies import DEFAULT_BODY_CAP
from auditor.errors import CaptureError
from auditor.fsutil import private_mkdirs
from auditor.records import HttpRecord, RecordFormatError, loads
from auditor.session import (
    FLOWS,
    STATUS_COMPLETE,
    STATUS_INCOMPLETE,
    TLS_KEYLOG,
    SessionWriteError,
    SessionWriter,
)

log = logging.getLogger(__name__)

RECORDER_SCRIPT = Path(addons.recorder.__file__).resolve()
DEFAULT_CONFDIR = Path.home() / ".auditor" / "mitmproxy"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
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
        assert self.proc is not None
        host = self.opts.listen_host
        if host in ("0.0.0.0", ""):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise CaptureError(f"mitmdump exited at start: {self._log_tail()}")
            try:
                with socket.create_connection((host, self.opts.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise CaptureError(f"mitmdump did not listen on port {self.opts.port} in {timeout:.0f}s")

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
class CaptureResult:
    session: Path
    manifest: dict[str, Any]
    stopped_by: str


def warn_if_exposed(host: str) -> str | None:
    if host not in LOOPBACK_HOSTS:
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
) -> CaptureResult:
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
    return CaptureResult(writer.path, manifest, stopped_by)
