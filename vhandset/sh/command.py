"""A command as the shell runs it: its context (:class:`Ctx`: arguments, streams, environment,
options), the :class:`Command` table entries, and what the shell needs from the phone
(:class:`ShellSystem`)."""

from __future__ import annotations

import datetime as _dt
import getopt
import logging
import posixpath
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from vhandset.sh.streams import Cancelled, Fds, PipeWriter, Reader, enc
from vhandset.vfs import Cred, MemoryFS, normpath

if TYPE_CHECKING:
    from vhandset.sh.interp import Shell

log = logging.getLogger(__name__)


# ---- commands --------------------------------------------------------------------------------


@dataclass(slots=True)
class Ctx:
    """What one running command sees: its arguments, streams, shell and phone."""

    argv: list[str]
    shell: Shell
    fds: Fds
    env: dict[str, str]

    @property
    def name(self) -> str:
        return posixpath.basename(self.argv[0])

    @property
    def args(self) -> list[str]:
        return self.argv[1:]

    @property
    def cred(self) -> Cred:
        return self.shell.cred

    @property
    def fs(self) -> MemoryFS:
        return self.shell.system.vfs

    @property
    def system(self) -> ShellSystem:
        return self.shell.system

    @property
    def stdin(self) -> Reader:
        return self.fds.stdin

    def out(self, data: str | bytes) -> None:
        self.fds.stdout.write(enc(data) if isinstance(data, str) else data)

    def err(self, data: str | bytes) -> None:
        self.fds.stderr.write(enc(data) if isinstance(data, str) else data)

    def error(self, message: str, code: int = 1) -> int:
        self.err(f"{self.name}: {message}\n")
        return code

    def oserror(self, path: str, exc: OSError, quote: bool = False) -> int:
        shown = f"'{path}'" if quote else path
        return self.error(f"{shown}: {exc.strerror}")

    def abspath(self, path: str) -> str:
        return normpath(path, self.shell.cwd)

    def cancelled(self) -> bool:
        """The host closed the stream, or the reader of our stdout pipe went away."""
        out = self.fds.stdout
        return self.shell.cancel.is_set() or (isinstance(out, PipeWriter) and out.pipe.read_closed)

    def sleep(self, seconds: float) -> None:
        if self.shell.cancel.wait(seconds):
            raise Cancelled

    def getopt(
        self, shortopts: str, longopts: tuple[str, ...] = ()
    ) -> tuple[dict[str, str], list[str]]:
        """toybox-style option parsing; raises :class:`UsageError` on an unknown option."""
        try:
            opts, rest = getopt.gnu_getopt(self.args, shortopts, list(longopts))
        except getopt.GetoptError as exc:
            raise UsageError(f"Unknown option '{exc.opt}' (see \"{self.name} --help\")") from exc
        found: dict[str, str] = {}
        for key, value in opts:
            found[key.lstrip("-")] = value
        return found, rest


class UsageError(Exception):
    pass


Handler = Callable[[Ctx], int]


@dataclass(frozen=True, slots=True)
class Command:
    """One program on the phone: where it lives and the function that runs it."""

    name: str
    run: Handler
    toybox: bool = False  # installed as a symlink to /system/bin/toybox
    directory: str = "/system/bin"


class CommandTable(dict[str, Command]):
    """Registry of commands; ``@table.command("ls", toybox=True)`` registers a handler."""

    def command(
        self, *names: str, toybox: bool = False, directory: str = "/system/bin"
    ) -> Callable[[Handler], Handler]:
        def register(fn: Handler) -> Handler:
            for name in names:
                self[name] = Command(name, fn, toybox, directory)
            return fn

        return register


class ShellSystem(Protocol):
    """What the shell needs from the phone (``device.VirtualDevice`` provides it)."""

    @property
    def vfs(self) -> MemoryFS: ...

    @property
    def commands(self) -> Mapping[str, Command]: ...

    def cred_for(self, uid: int) -> Cred: ...

    def user_name(self, uid: int) -> str: ...

    def uid_of(self, name: str) -> int | None: ...

    def spawn(self, name: str, uid: int, ppid: int) -> int: ...

    def reap(self, pid: int) -> None: ...

    def base_env(self, uid: int) -> dict[str, str]: ...

    def local_time(self, epoch: float) -> _dt.datetime: ...
