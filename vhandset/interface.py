"""The seam between the ADB transport (``adb.py``) and the simulated phone (``device.py``).

The transport speaks the wire protocol and knows nothing of Android; the device knows Android
and nothing of the wire. Both sides are written against these protocols.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

STDOUT = 1
STDERR = 2


@dataclass(frozen=True, slots=True)
class FileStat:
    mode: int  # st_mode, including the file-type bits (0o100000 regular, 0o040000 directory)
    size: int
    mtime: int  # epoch seconds


class ShellProcess(Protocol):
    """A command running on the device.

    ``chunks()`` yields ``(STDOUT|STDERR, data)`` in the order the command produced them; it may
    block (``logcat`` streams until closed) and ends when the command exits, after which
    ``exit_code`` is set. ``close()`` is called when the host closes the stream; a streaming
    command must then end its iterator promptly.
    """

    exit_code: int | None

    def chunks(self) -> Iterator[tuple[int, bytes]]: ...

    def feed_stdin(self, data: bytes) -> None: ...

    def close(self) -> None: ...


class VirtualFS(Protocol):
    def stat(self, path: str) -> FileStat | None: ...

    def listdir(self, path: str) -> list[tuple[str, FileStat]] | None: ...

    def read(self, path: str) -> bytes:
        """Raise FileNotFoundError, IsADirectoryError or PermissionError as a phone would."""
        ...

    def write(self, path: str, data: bytes, mode: int, mtime: int) -> None: ...


class ReverseOpener(Protocol):
    """Given to the device by the transport: opens a device-initiated stream to the host.

    ``open("tcp:8080")`` returns a connected socket whose other end is an ADB stream the host's
    adb server connects to its registered reverse target. Raises ConnectionRefusedError when no
    reverse is registered for that spec (adb 36 would otherwise kill the whole server).
    """

    def open(self, device_spec: str) -> socket.socket: ...


class DeviceBackend(Protocol):
    """What the ADB transport needs from the simulated phone."""

    @property
    def serial(self) -> str: ...

    @property
    def online(self) -> bool:
        """False while rebooting: the transport drops its connection and refuses new ones."""
        ...

    @property
    def authorized(self) -> bool:
        """False in ``--unauthorized`` mode: the transport answers AUTH with a fresh token."""
        ...

    def banner_props(self) -> dict[str, str]:
        """``ro.product.name``, ``ro.product.model`` and ``ro.product.device`` for CNXN."""
        ...

    @property
    def fs(self) -> VirtualFS: ...

    def shell(self, command: str, *, pty: bool = False) -> ShellProcess:
        """Run ``command`` through the device's shell (``sh -c``); ``""`` is unsupported."""
        ...

    def adb_root(self) -> tuple[bool, str]:
        """The ``root:`` service: (restart needed, message). The message is what adbd writes,
        e.g. ``"restarting adbd as root\\n"`` or
        ``"adbd cannot run as root in production builds\\n"``."""
        ...

    def adb_unroot(self) -> tuple[bool, str]: ...

    def reboot(self, target: str = "") -> None:
        """Start a reboot: ``online`` turns False, state is reset as at boot, and it comes back
        online (``sys.boot_completed=1``) after the profile's boot time."""
        ...

    def attach_transport(self, opener: ReverseOpener | None) -> None:
        """Called with the live transport's reverse opener (or None when it goes away)."""
        ...

    def reverse_changed(self, forwards: dict[str, str]) -> None:
        """The transport's current reverse table, device spec -> host spec, after each change."""
        ...
