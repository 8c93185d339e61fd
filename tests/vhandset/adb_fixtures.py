"""A real, isolated adb server for the transport's end-to-end tests, and ways to wait on it.

Each server gets its own port (from 15037 up), ``HOME`` (so its own RSA key) and ``TMPDIR``
(so its own log), no USB and, unless asked, no emulator scan. It is stopped by ``kill-server``
and then, if it lingers, by its PID, which is found from its listening socket.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import adbutils

from vhandset.adb import AdbDaemon
from vhandset.interface import DeviceBackend

ADB = adbutils.adb_path()
FIRST_SERVER_PORT = 15037
COMMAND_TIMEOUT = 30.0


def free_port(start: int | None = None, stop: int = 65535) -> int:
    """A free loopback TCP port: the first from ``start`` up, or an ephemeral one."""
    if start is None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])
    for port in range(start, stop):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in [{start}, {stop})")


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def listening_pid(port: int) -> int | None:
    """The PID whose socket listens on ``port``, from /proc/net/tcp{,6} and /proc/*/fd."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            next(f)
            for line in f:
                fields = line.split()
                local, state, inode = fields[1], fields[3], fields[9]
                if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{inode}]")
    if not inodes:
        return None
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                        return int(pid)
    return None


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


class AdbServer:
    """One adb server process on its own port, driven by the CLI and by adbutils."""

    def __init__(self, workdir: Path, *, scan_emulators: bool = False) -> None:
        # Offset by PID so that concurrent test runs do not race for the same port.
        first = FIRST_SERVER_PORT + os.getpid() % 500
        self.port = free_port(first, first + 500)
        self.workdir = workdir
        self.pid: int | None = None
        self.env = dict(os.environ)
        self.env.update(
            ANDROID_ADB_SERVER_PORT=str(self.port),
            HOME=str(workdir),
            TMPDIR=str(workdir),
            ADB_USB="0",
            ADB_MDNS="0",
        )
        if not scan_emulators:
            # Below 5555 the server scans no emulator port, so no other device can join in.
            self.env["ADB_LOCAL_TRANSPORT_MAX_PORT"] = "5553"

    def adb(
        self, *args: str, timeout: float = COMMAND_TIMEOUT
    ) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [ADB, "-P", str(self.port), *args],
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
        )

    def text(self, *args: str, timeout: float = COMMAND_TIMEOUT) -> str:
        done = self.adb(*args, timeout=timeout)
        return (done.stdout + done.stderr).decode("utf-8", "replace")

    def start(self) -> None:
        done = self.adb("start-server")
        if done.returncode != 0:
            raise RuntimeError(f"adb start-server failed: {done.stderr!r}")
        wait_until(lambda: listening_pid(self.port) is not None, 5.0)
        self.pid = listening_pid(self.port)
        if self.pid is None:
            raise RuntimeError(f"adb server on port {self.port} not found")

    def stop(self) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.adb("kill-server", timeout=10.0)
        pid = self.pid
        if pid is not None and not wait_until(lambda: not pid_alive(pid), 5.0):
            os.kill(pid, signal.SIGKILL)
            wait_until(lambda: not pid_alive(pid), 5.0)
        assert pid is None or not pid_alive(pid), f"adb server {pid} survived"

    def alive(self) -> bool:
        return self.pid is not None and pid_alive(self.pid)

    def client(self) -> adbutils.AdbClient:
        return adbutils.AdbClient(host="127.0.0.1", port=self.port, socket_timeout=20)

    def states(self) -> dict[str, str]:
        """``adb devices`` as serial -> state."""
        out = self.adb("devices").stdout.decode()
        rows = (line.split("\t") for line in out.splitlines()[1:] if "\t" in line)
        return {row[0]: row[1] for row in rows}

    def wait_state(self, serial: str, state: str | None, timeout: float = 10.0) -> bool:
        """Wait until ``serial`` is in ``state`` (None: until it is not listed)."""
        return wait_until(lambda: self.states().get(serial) == state, timeout, 0.1)

    def log(self) -> str:
        path = self.workdir / f"adb.{os.getuid()}.log"
        return path.read_text(errors="replace") if path.exists() else ""


@contextlib.contextmanager
def running_adb_server(workdir: Path, *, scan_emulators: bool = False) -> Iterator[AdbServer]:
    workdir.mkdir(parents=True, exist_ok=True)
    server = AdbServer(workdir, scan_emulators=scan_emulators)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def running_daemon(backend: DeviceBackend, port: int = 0) -> Iterator[AdbDaemon]:
    with AdbDaemon(backend, port=port) as daemon:
        yield daemon


def connect(server: AdbServer, daemon: AdbDaemon, state: str = "device") -> str:
    """``adb connect`` the daemon and wait until the server lists it in ``state``."""
    serial = daemon.address
    out = server.text("connect", serial)
    assert "connected to" in out or state != "device", out
    assert server.wait_state(serial, state), (out, server.states(), server.log()[-3000:])
    return serial
