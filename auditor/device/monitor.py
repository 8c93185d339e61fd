"""What runs beside the scenario: the logcat stream and the socket-table poller.

Both write into the session: ``logcat.txt`` (``logcat -b all -v epoch,uid``, streamed over one
ADB stream, not polled) and ``sockets.jsonl`` (one snapshot of ``/proc/net/{tcp,tcp6,udp,udp6}``
per line, about once a second). With the package UID map from the profile, the snapshots let
the analyser say which app owned a connection, by local port and time. Sockets the kernel no
longer ties to an app (``TIME_WAIT``) go into a snapshot's ``ownerless`` rows, not its
``entries``, so they never give a flow to uid 0.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from adbutils import AdbError

from auditor.device import parsers
from auditor.device.handset import Handset
from auditor.device.model import NetProto, SocketEntry, socket_has_owner
from auditor.errors import DeviceError
from auditor.session.writer import SessionWriteError, append_line, write_error
from auditor.timeutil import now_iso

log = logging.getLogger(__name__)

LOGCAT = "logcat.txt"
SOCKETS = "sockets.jsonl"
PROC_NET = ("tcp", "tcp6", "udp", "udp6")
_SEP = "--auditor-proc-net--"


def _open_append(path: Path, failed: Callable[[SessionWriteError], None]) -> int | None:
    """A session file opened for whole appends (0600), or None after telling ``failed``."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
    except OSError as exc:
        failed(write_error(path, exc))
        return None


class LogcatStream:
    def __init__(self, handset: Handset, session: Path):
        self.handset = handset
        self.path = Path(session) / LOGCAT
        self.bytes = 0
        self.lines = 0
        self.error: str | None = None
        self.disk_full = ""  # why logcat.txt stopped growing, when the disk is full
        self._stop = threading.Event()
        self._conn: object | None = None
        self._thread = threading.Thread(target=self._run, name="logcat", daemon=True)

    def start(self) -> LogcatStream:
        self._thread.start()
        return self

    def _run(self) -> None:
        fd = _open_append(self.path, self._write_failed)
        if fd is None:
            return
        try:
            while not self._stop.is_set():
                try:
                    conn = self.handset.device.open_shell("logcat -b all -v epoch,uid")
                except (AdbError, OSError, EOFError) as exc:
                    self.error = str(exc)
                    if self._stop.wait(1.0):
                        break
                    continue
                self._conn = conn
                sock = conn.conn
                sock.settimeout(0.5)
                while not self._stop.is_set():
                    try:
                        chunk = sock.recv(65536)
                    except TimeoutError:
                        continue
                    except OSError as exc:
                        self.error = str(exc)
                        break
                    if not chunk:
                        break  # the device went away (reboot); reopen
                    try:
                        append_line(fd, chunk, self.path)  # whole or not at all
                    except SessionWriteError as exc:  # what is written stays; logcat ends
                        self._write_failed(exc)
                        break
                    self.bytes += len(chunk)
                    self.lines += chunk.count(b"\n")
                conn.close()
                self._conn = None
                if not self._stop.is_set():
                    self._stop.wait(1.0)
        finally:
            os.close(fd)

    def _write_failed(self, exc: SessionWriteError) -> None:
        self.error = str(exc)
        log.error("%s", self.error)
        if exc.disk_full:
            self.disk_full = self.error
        self._stop.set()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def has_owner(e: SocketEntry) -> bool:
    """Whether the kernel still ties the socket to a process's uid
    (:func:`auditor.device.model.socket_has_owner`)."""
    return socket_has_owner(e.state.value, e.uid, e.inode)


def snapshot_rows(out: str) -> tuple[list[list[object]], list[list[object]]]:
    """The rows of one poll (``/proc/net`` files, each after ``--auditor-proc-net--<name>``):
    the sockets that have an owner, and apart from them the ones that have none
    (:func:`has_owner`), kept so that nothing read is lost but never attributed."""
    owned: list[list[object]] = []
    ownerless: list[list[object]] = []
    for block in out.split(_SEP)[1:]:
        proto, _, text = block.partition("\n")
        proto = proto.strip()
        if proto not in PROC_NET:
            continue
        for e in parsers.parse_proc_net(text, NetProto(proto)).items:
            row: list[object] = [
                proto,
                str(e.local_ip_unmapped),
                e.local_port,
                str(e.remote_ip_unmapped),
                e.remote_port,
                e.state.value,
                e.uid,
                e.inode,
            ]
            (owned if has_owner(e) else ownerless).append(row)
    return owned, ownerless


class SocketPoller:
    def __init__(self, handset: Handset, session: Path, interval: float = 1.0):
        self.handset = handset
        self.path = Path(session) / SOCKETS
        self.interval = interval
        self.snapshots = 0
        self.errors = 0
        self.disk_full = ""  # why sockets.jsonl stopped growing, when the disk is full
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sockets", daemon=True)

    def start(self) -> SocketPoller:
        self._thread.start()
        return self

    def snapshot(self) -> dict[str, object]:
        cmd = "; ".join(f"echo {_SEP}{p}; cat /proc/net/{p}" for p in PROC_NET)
        out = self.handset.sh(cmd, timeout=10).stdout
        entries, ownerless = snapshot_rows(out)
        return {"ts": now_iso(), "entries": entries, "ownerless": ownerless}

    def _run(self) -> None:
        fd = _open_append(self.path, self._write_failed)
        if fd is None:
            return
        try:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    snap = self.snapshot()
                except (DeviceError, AdbError, OSError, EOFError) as exc:
                    self.errors += 1
                    log.debug("socket snapshot failed: %s", exc)
                else:
                    line = (json.dumps(snap, separators=(",", ":")) + "\n").encode()
                    try:
                        append_line(fd, line, self.path)
                    except SessionWriteError as exc:  # whole lines only; the poller ends
                        self.errors += 1
                        self._write_failed(exc)
                        break
                    self.snapshots += 1
                self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))
        finally:
            os.close(fd)

    def _write_failed(self, exc: SessionWriteError) -> None:
        log.error("%s", exc)
        if exc.disk_full:
            self.disk_full = str(exc)
        self._stop.set()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)
