"""A small but real :class:`DeviceBackend` for testing the ADB transport alone.

An in-memory filesystem, a tiny shell (``echo``, ``getprop``, ``cat``, ``id``, ``exit N``,
``true``/``false``, ``screencap -p``, ``logcat`` that streams until closed, ``reboot``; ``;``,
``&&``, ``$?`` and ``>&2``), root and reboot state. It stands in for ``vhandset.device``
so that the transport's tests do not depend on it.

It stays after the phone was split (issue 16): the transport's tests need bytes and timings
a real phone does not give on demand (a screencap whose PNG newline translation would corrupt,
a logcat that streams until closed, a reboot at once), and a fuzzer of the wire wants a
backend that cannot fail on its own; like adbutils' fake server, it is sized to what they use.
"""

from __future__ import annotations

import posixpath
import stat
import threading
import time
from collections.abc import Generator, Iterator

from vhandset.interface import STDERR, STDOUT, FileStat, ReverseOpener

# A PNG signature and bytes that newline translation would corrupt.
SCREENCAP_PNG = (
    b"\x89PNG\r\n\x1a\n"
    + b"\x00\x00\x00\rIHDR"
    + bytes(range(256))
    + b"\r\n\n\r\r\n\x1a\x00"
    + bytes(range(255, -1, -1))
)


class MemoryFS:
    """A dict of files and a set of directories, with the errors a phone would give."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._files: dict[str, tuple[bytes, int, int]] = {}
        self._dirs: dict[str, int] = {"/": 0}
        self.read_only = ("/system",)
        for path in ("/sdcard", "/data/local/tmp", "/system/bin"):
            self.mkdir(path)

    @staticmethod
    def _norm(path: str) -> str:
        return posixpath.normpath("/" + path.lstrip("/"))

    def mkdir(self, path: str, mtime: int = 1_700_000_000) -> None:
        path = self._norm(path)
        with self._lock:
            while path not in self._dirs:
                self._dirs[path] = mtime
                path = posixpath.dirname(path)

    def put(self, path: str, data: bytes, mode: int = 0o100644, mtime: int = 1_700_000_000) -> None:
        path = self._norm(path)
        self.mkdir(posixpath.dirname(path))
        with self._lock:
            self._files[path] = (data, mode, mtime)

    def stat(self, path: str) -> FileStat | None:
        path = self._norm(path)
        with self._lock:
            if path in self._dirs:
                return FileStat(mode=0o040771, size=4096, mtime=self._dirs[path])
            if path in self._files:
                data, mode, mtime = self._files[path]
                return FileStat(mode=mode, size=len(data), mtime=mtime)
        return None

    def listdir(self, path: str) -> list[tuple[str, FileStat]] | None:
        path = self._norm(path)
        with self._lock:
            if path not in self._dirs:
                return None
            names = {
                posixpath.basename(p)
                for p in (*self._dirs, *self._files)
                if p != "/" and posixpath.dirname(p) == path
            }
        entries = []
        for name in sorted(names):
            st = self.stat(posixpath.join(path, name))
            if st is not None:
                entries.append((name, st))
        return entries

    def read(self, path: str) -> bytes:
        path = self._norm(path)
        with self._lock:
            if path in self._dirs:
                raise IsADirectoryError(21, "Is a directory", path)
            if path not in self._files:
                raise FileNotFoundError(2, "No such file or directory", path)
            data, mode, _ = self._files[path]
        if not mode & 0o444:
            raise PermissionError(13, "Permission denied", path)
        return data

    def write(self, path: str, data: bytes, mode: int, mtime: int) -> None:
        path = self._norm(path)
        if any(path == ro or path.startswith(ro + "/") for ro in self.read_only):
            raise PermissionError(30, "Read-only file system", path)
        with self._lock:
            if path in self._dirs:
                raise IsADirectoryError(21, "Is a directory", path)
        self.put(path, data, stat.S_IFREG | (mode & 0o7777), mtime)


class ShellExit(Exception):
    def __init__(self, code: int) -> None:
        self.code = code


def split_commands(line: str) -> list[tuple[str, list[str]]]:
    """``a; b && c`` -> [(";", a-words), (";", b-words), ("&&", c-words)]: quotes respected."""
    commands: list[tuple[str, list[str]]] = []
    words: list[str] = []
    word: list[str] = []
    in_word = False
    connector = ";"
    quote = ""
    i = 0
    while i < len(line):
        ch = line[i]
        if quote:
            if ch == quote:
                quote = ""
            elif ch == "\\" and quote == '"' and i + 1 < len(line):
                i += 1
                word.append(line[i])
            else:
                word.append(ch)
        elif ch in "'\"":
            quote, in_word = ch, True
        elif ch == "\\" and i + 1 < len(line):
            i += 1
            word.append(line[i])
            in_word = True
        elif ch.isspace() or ch == ";" or line.startswith("&&", i):
            if in_word:
                words.append("".join(word))
                word, in_word = [], False
            if ch == ";" or line.startswith("&&", i):
                commands.append((connector, words))
                connector, words = (";" if ch == ";" else "&&"), []
                i += 1 if ch == ";" else 2
                continue
        else:
            word.append(ch)
            in_word = True
        i += 1
    if in_word:
        words.append("".join(word))
    commands.append((connector, words))
    return [(c, w) for c, w in commands if w]


class TinyShellProcess:
    """A :class:`ShellProcess`: output is produced lazily, as ``chunks()`` is consumed."""

    def __init__(self, device: FakeDevice, command: str, pty: bool) -> None:
        self.device = device
        self.command = command
        self.pty = pty
        self.exit_code: int | None = None
        self.stdin = bytearray()
        self.closed = threading.Event()
        self.finished = threading.Event()

    def feed_stdin(self, data: bytes) -> None:
        self.device.stdin_gate.wait(10)
        self.stdin += data

    def close(self) -> None:
        self.device.close_calls += 1
        self.closed.set()

    def chunks(self) -> Iterator[tuple[int, bytes]]:
        status = 0
        try:
            for connector, words in split_commands(self.command):
                if connector == "&&" and status != 0:
                    continue
                if self.closed.is_set():
                    break
                status = yield from self._run([w.replace("$?", str(status)) for w in words])
        except ShellExit as done:
            status = done.code
        finally:
            self.exit_code = status & 0xFF
            self.finished.set()

    def _run(self, words: list[str]) -> Generator[tuple[int, bytes], None, int]:
        to_stderr = ">&2" in words
        words = [w for w in words if w != ">&2"]
        out = STDERR if to_stderr else STDOUT
        name, args = words[0], words[1:]
        device = self.device
        if name == "echo":
            yield out, (" ".join(args) + "\n").encode()
            return 0
        if name in ("true", "false"):
            return 0 if name == "true" else 1
        if name == "exit":
            raise ShellExit(int(args[0]) if args else 0)
        if name == "getprop":
            if args:
                yield out, (device.props.get(args[0], "") + "\n").encode()
            else:
                yield out, "".join(f"[{k}]: [{v}]\n" for k, v in device.props.items()).encode()
            return 0
        if name == "id":
            uid = "0(root)" if device.root else "2000(shell)"
            yield out, f"uid={uid}\n".encode()
            return 0
        if name == "cat":
            status = 0
            for path in args:
                try:
                    yield out, device.fs.read(path)
                except OSError as exc:
                    yield STDERR, f"cat: {path}: {exc.strerror}\n".encode()
                    status = 1
            return status
        if name == "screencap":
            yield out, SCREENCAP_PNG
            return 0
        if name == "logcat":
            for n in range(100_000):
                if self.closed.wait(0.01):
                    break
                yield out, f"01-01 00:00:00.{n % 1000:03d}  1000  1000 I Sim: line {n}\n".encode()
            return 0
        if name == "reboot":
            device.reboot(args[0] if args else "")
            return 0
        yield STDERR, f"/system/bin/sh: {name}: inaccessible or not found\n".encode()
        return 127


class FakeDevice:
    """The :class:`DeviceBackend` that the transport tests run against."""

    def __init__(
        self,
        *,
        serial: str = "SIMTEST01",
        authorized: bool = True,
        boot_seconds: float = 0.5,
        debuggable: bool = True,
    ) -> None:
        self._serial = serial
        self._online = True
        self.authorized_flag = authorized
        self.boot_seconds = boot_seconds
        self.debuggable = debuggable
        self.root = False
        self.props = {
            "ro.product.name": "sim_oriole",
            "ro.product.model": "Pixel 6 Sim",
            "ro.product.device": "oriole",
            "ro.build.version.sdk": "34",
            "sys.boot_completed": "1",
        }
        self._fs = MemoryFS()
        self.processes: list[TinyShellProcess] = []
        self.openers: list[ReverseOpener | None] = []
        self.reverse_tables: list[dict[str, str]] = []
        self.reboots: list[str] = []
        self.close_calls = 0
        self.stdin_gate = threading.Event()  # cleared: input blocks, as a command that reads none
        self.stdin_gate.set()
        self._timers: list[threading.Timer] = []

    # --- DeviceBackend

    @property
    def serial(self) -> str:
        return self._serial

    @property
    def online(self) -> bool:
        return self._online

    @property
    def authorized(self) -> bool:
        return self.authorized_flag

    def banner_props(self) -> dict[str, str]:
        keys = ("ro.product.name", "ro.product.model", "ro.product.device")
        return {k: self.props[k] for k in keys}

    @property
    def fs(self) -> MemoryFS:
        return self._fs

    def shell(self, command: str, *, pty: bool = False) -> TinyShellProcess:
        process = TinyShellProcess(self, command, pty)
        self.processes.append(process)
        return process

    def adb_root(self) -> tuple[bool, str]:
        if not self.debuggable:
            return False, "adbd cannot run as root in production builds\n"
        if self.root:
            return False, "adbd is already running as root\n"
        self.root = True
        return True, "restarting adbd as root\n"

    def adb_unroot(self) -> tuple[bool, str]:
        if not self.root:
            return False, "adbd not running as root\n"
        self.root = False
        return True, "restarting adbd as non root\n"

    def reboot(self, target: str = "") -> None:
        self.reboots.append(target)
        self._online = False
        self.props["sys.boot_completed"] = "0"
        self.root = False
        timer = threading.Timer(self.boot_seconds, self._booted)
        timer.daemon = True
        self._timers.append(timer)
        timer.start()

    def _booted(self) -> None:
        self.props["sys.boot_completed"] = "1"
        self._online = True

    def attach_transport(self, opener: ReverseOpener | None) -> None:
        self.openers.append(opener)

    def reverse_changed(self, forwards: dict[str, str]) -> None:
        self.reverse_tables.append(dict(forwards))

    # --- for tests

    @property
    def opener(self) -> ReverseOpener | None:
        return self.openers[-1] if self.openers else None

    def wait_online(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._online:
                return True
            time.sleep(0.02)
        return self._online

    def cancel_timers(self) -> None:
        for timer in self._timers:
            timer.cancel()
