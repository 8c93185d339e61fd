"""The shell's plumbing: its constants and signals (exit codes, cancellation, ``exit``,
``break``), text to bytes, and the byte streams between its threads (pipes, readers, writers,
the process output queue, file descriptors)."""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from vhandset.interface import STDOUT
from vhandset.vfs import Cred, MemoryFS

log = logging.getLogger(__name__)


ASCII_DIGITS = frozenset("0123456789")


def is_number(text: str) -> bool:
    """ASCII digits only, as sh reads them ("³".isdigit() is true, but no shell number)."""
    return text.isascii() and text.isdigit()


SH = "/system/bin/sh"
ELF_MAGIC = b"\x7fELF\x02\x01\x01\x00"
APPLET_TAG = b"#applet:"
UMASK = 0o000
EXIT_NOT_FOUND = 127
EXIT_CANNOT_EXEC = 126
EXIT_PIPE = 141
EXIT_HANGUP = 129  # adbd hangs up on a command whose stream the host closed
POLL = 0.05


def applet_binary(name: str) -> bytes:
    """Content of a virtual binary: an ELF header and the applet it runs."""
    return ELF_MAGIC + b"\x00" * 8 + APPLET_TAG + name.encode() + b"\n"


def enc(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def dec(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


class Cancelled(Exception):
    """The host closed the stream: unwind the whole process."""


class ShellExit(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class LoopControl(Exception):
    def __init__(self, kind: str, levels: int) -> None:
        super().__init__(kind)
        self.kind = kind
        self.levels = levels


# ---- streams ---------------------------------------------------------------------------------


class Pipe:
    """A bounded-by-nothing byte pipe between threads; reads poll the process's cancel flag."""

    def __init__(self, cancel: threading.Event) -> None:
        self._buf: collections.deque[bytes] = collections.deque()
        self._cond = threading.Condition()
        self._cancel = cancel
        self.write_closed = False
        self.read_closed = False

    def write(self, data: bytes) -> None:
        if self._cancel.is_set():
            raise Cancelled
        with self._cond:
            if self.read_closed:
                raise BrokenPipeError
            if data:
                self._buf.append(data)
                self._cond.notify_all()

    def close_write(self) -> None:
        with self._cond:
            self.write_closed = True
            self._cond.notify_all()

    def close_read(self) -> None:
        with self._cond:
            self.read_closed = True
            self._buf.clear()
            self._cond.notify_all()

    def read(self) -> bytes:
        """The next chunk, or ``b""`` at end of input."""
        with self._cond:
            while not self._buf:
                if self.write_closed or self.read_closed:
                    return b""
                if self._cancel.is_set():
                    raise Cancelled
                self._cond.wait(POLL)
            return self._buf.popleft()


class Reader:
    """Standard input of a command."""

    def __init__(self, source: Pipe | bytes | None) -> None:
        self._pipe = source if isinstance(source, Pipe) else None
        self._data = source if isinstance(source, bytes) else b""
        self._pending = b""

    def chunk(self) -> bytes:
        if self._pending:
            data, self._pending = self._pending, b""
            return data
        if self._data:
            data, self._data = self._data, b""
            return data
        return self._pipe.read() if self._pipe else b""

    def read_all(self) -> bytes:
        out = bytearray()
        while chunk := self.chunk():
            out += chunk
        return bytes(out)

    def lines(self) -> Iterator[bytes]:
        """Lines with their ``\\n``, as they arrive (the last may lack one)."""
        buf = b""
        while chunk := self.chunk():
            buf += chunk
            while (nl := buf.find(b"\n")) >= 0:
                line, buf = buf[: nl + 1], buf[nl + 1 :]
                yield line
        if buf:
            yield buf

    def close(self) -> None:
        if self._pipe:
            self._pipe.close_read()


class Writer(Protocol):
    def write(self, data: bytes) -> None: ...


class NullWriter:
    def write(self, data: bytes) -> None:
        return None


class Capture:
    def __init__(self) -> None:
        self.buf = bytearray()

    def write(self, data: bytes) -> None:
        self.buf += data


class PipeWriter:
    def __init__(self, pipe: Pipe) -> None:
        self.pipe = pipe

    def write(self, data: bytes) -> None:
        self.pipe.write(data)


class FileWriter:
    """``> file``: created (or truncated) when the redirection is set up, then appended to."""

    def __init__(self, fs: MemoryFS, path: str, cred: Cred, append: bool) -> None:
        self.fs, self.path, self.cred = fs, path, cred
        fs.write(path, b"", cred, append=append, mode=0o666 & ~UMASK)

    def write(self, data: bytes) -> None:
        self.fs.write(self.path, data, self.cred, append=True)


class ProcessOutput:
    """The ordered ``(fd, bytes)`` queue the host reads; ``pty`` merges fd 2 and maps LF to CRLF."""

    def __init__(self, cancel: threading.Event, pty: bool) -> None:
        self._q: collections.deque[tuple[int, bytes] | None] = collections.deque()
        self._cond = threading.Condition()
        self._cancel = cancel
        self.pty = pty

    def put(self, fd: int, data: bytes) -> None:
        if self._cancel.is_set():
            raise Cancelled
        if not data:
            return
        if self.pty:
            fd, data = STDOUT, data.replace(b"\n", b"\r\n")
        with self._cond:
            self._q.append((fd, data))
            self._cond.notify_all()

    def finish(self) -> None:
        with self._cond:
            self._q.append(None)
            self._cond.notify_all()

    def get(self) -> tuple[int, bytes] | None:
        with self._cond:
            while not self._q:
                self._cond.wait()
            return self._q.popleft()


class FdWriter:
    def __init__(self, out: ProcessOutput, fd: int) -> None:
        self.out, self.fd = out, fd

    def write(self, data: bytes) -> None:
        self.out.put(self.fd, data)


@dataclass(slots=True)
class Fds:
    stdin: Reader
    stdout: Writer
    stderr: Writer

    def copy(self) -> Fds:
        return dataclasses.replace(self)
