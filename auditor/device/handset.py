"""A handset reached through the adb server, with adbutils.

This layer runs commands and returns their text; what the text means is for
:mod:`auditor.device.parsers`. It never shells out to the adb CLI and never speaks the host side
of ADB itself: the adb server (started by adbutils when needed) does that.
"""

from __future__ import annotations

import logging
import os
import shlex
import time
from dataclasses import dataclass
from typing import Any

import adbutils
from adbutils import AdbClient, AdbDevice, AdbError, AdbTimeout

from auditor.errors import DeviceError

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 30.0

STATE_HINTS = {
    "unauthorized": (
        "unlock the phone and accept the 'Allow USB debugging?' prompt "
        "(tick 'Always allow from this computer'), then try again"
    ),
    "offline": (
        "the adb server lost the device: replug the cable or run `adb reconnect offline`; "
        "if it persists, revoke USB debugging authorisations on the phone and reconnect"
    ),
    "no permissions": "add a udev rule for the phone's USB vendor id, or run the adb server as a "
    "user allowed to open the USB device",
    "recovery": "the phone is in recovery mode: reboot it into Android",
    "bootloader": "the phone is in the bootloader: reboot it into Android",
    "sideload": "the phone is in sideload mode: reboot it into Android",
}


def adb_server_port() -> int:
    try:
        return int(os.environ.get("ANDROID_ADB_SERVER_PORT", "5037"))
    except ValueError:
        raise DeviceError("ANDROID_ADB_SERVER_PORT is not a port number") from None


def client() -> AdbClient:
    """The adb server client; honours ANDROID_ADB_SERVER_PORT (and _HOST)."""
    return AdbClient(
        host=os.environ.get("ANDROID_ADB_SERVER_HOST", "127.0.0.1"),
        port=adb_server_port(),
        socket_timeout=DEFAULT_TIMEOUT,
    )


@dataclass(frozen=True, slots=True)
class DeviceListing:
    serial: str
    state: str
    model: str | None
    product: str | None
    transport: str  # usb | tcp | emulator
    transport_id: int | None
    hint: str | None

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}


def transport_of(serial: str) -> str:
    if serial.startswith("emulator-"):
        return "emulator"
    if "._adb-tls-connect._tcp" in serial or "._adb._tcp" in serial:
        return "tcp"  # wireless debugging, found over mDNS (Android 11+)
    host, _, port = serial.rpartition(":")
    if host and port.isdigit():
        return "tcp"
    return "usb"


def list_devices() -> list[DeviceListing]:
    try:
        infos = client().list(extended=True)
    except (AdbError, AdbTimeout, OSError) as exc:
        raise DeviceError(
            f"cannot reach the adb server on port {adb_server_port()}: {exc}"
        ) from None
    out = []
    for info in infos:
        tags = info.tags or {}
        out.append(
            DeviceListing(
                serial=info.serial,
                state=info.state,
                model=tags.get("model"),
                product=tags.get("product"),
                transport=transport_of(info.serial),
                transport_id=info.transport_id,
                hint=STATE_HINTS.get(info.state),
            )
        )
    return sorted(out, key=lambda d: d.serial)


@dataclass(frozen=True, slots=True)
class ShellResult:
    command: str
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def check(self) -> ShellResult:
        if not self.ok:
            detail = (self.stderr or self.stdout).strip().splitlines()
            raise DeviceError(
                f"`{self.command}` failed ({self.returncode}): {detail[-1] if detail else ''}"
            )
        return self


class Handset:
    """One device, by serial. Root is found once: adbd running as root, or a working ``su``."""

    def __init__(self, serial: str | None = None, *, adb: AdbClient | None = None):
        self.adb = adb or client()
        self.serial = serial or self._only_device()
        self._root: str | bool | None = False  # False: not probed yet
        self._features: set[str] | None = None
        self.device: AdbDevice = self.adb.device(self.serial)
        self.require_online()

    def _only_device(self) -> str:
        devices = [d for d in list_devices()]
        online = [d for d in devices if d.state == "device"]
        if len(online) == 1:
            return online[0].serial
        if not devices:
            raise DeviceError("no device: plug a phone in, or start one with `auditor simulate`")
        names = ", ".join(f"{d.serial} ({d.state})" for d in devices)
        raise DeviceError(f"several devices or none online ({names}): choose one with -s SERIAL")

    def state(self) -> str:
        for d in list_devices():
            if d.serial == self.serial:
                return d.state
        return "absent"

    def require_online(self) -> None:
        state = self.state()
        if state == "device":
            return
        if state == "absent":
            raise DeviceError(f"device {self.serial} is not connected (see `auditor devices`)")
        hint = STATE_HINTS.get(state, "")
        raise DeviceError(f"device {self.serial} is {state}" + (f": {hint}" if hint else ""))

    # ---------------------------------------------------------------------------- commands

    def sh(self, command: str, timeout: float = DEFAULT_TIMEOUT) -> ShellResult:
        try:
            r = self.device.shell2(command, timeout=timeout, rstrip=False, v2=self._v2())
        except AdbTimeout:
            raise DeviceError(
                f"`{command}` timed out after {timeout:.0f}s on {self.serial}"
            ) from None
        except (AdbError, OSError, EOFError) as exc:
            # EOFError: the device went away mid-command (unplugged, adbd restarted)
            raise DeviceError(f"{self.serial}: `{command}`: {exc or 'connection lost'}") from None
        # Over shell v1 stdout and stderr arrive mixed in `output`.
        stdout = r.stdout if (r.stdout or r.stderr) else r.output
        return ShellResult(command, r.returncode, stdout or "", r.stderr or "")

    def _v2(self) -> bool:
        if self._features is None:
            try:
                self._features = set(self.device.get_features().split(","))
            except (AdbError, OSError):
                self._features = set()
        return "shell_v2" in self._features

    def root_method(self) -> str | None:
        """``"adbd"`` when adbd runs as root, ``"su"`` when ``su -c`` works, else None."""
        if self._root is False:
            self._root = None
            if self.sh("id -u").stdout.strip() == "0":
                self._root = "adbd"
            else:
                try:
                    probe = self.sh("su 0 id -u", timeout=10)
                except DeviceError:
                    probe = None
                if probe is not None and probe.ok and probe.stdout.strip() == "0":
                    self._root = "su"
        return self._root if isinstance(self._root, str) else None

    def su(self, command: str, timeout: float = DEFAULT_TIMEOUT) -> ShellResult:
        method = self.root_method()
        if method == "adbd":
            return self.sh(command, timeout)
        if method == "su":
            # `su 0 sh -c CMD` works with Magisk's su and with AOSP userdebug su alike
            return self.sh(f"su 0 sh -c {shlex.quote(command)}", timeout)
        raise DeviceError(f"{self.serial}: this needs root, and the device has none")

    def getprop(self, name: str) -> str:
        return self.sh(f"getprop {shlex.quote(name)}").stdout.strip()

    def setting_get(self, namespace: str, key: str) -> str | None:
        out = self.sh(f"settings get {namespace} {shlex.quote(key)}").stdout.strip()
        return None if out in ("null", "") else out

    def setting_put(self, namespace: str, key: str, value: str | None) -> None:
        if value is None:
            self.sh(f"settings delete {namespace} {shlex.quote(key)}").check()
        else:
            self.sh(f"settings put {namespace} {shlex.quote(key)} {shlex.quote(value)}").check()

    def push_bytes(self, data: bytes, remote: str, mode: int = 0o644) -> None:
        import io

        try:
            self.device.sync.push(io.BytesIO(data), remote, mode)
        except (AdbError, OSError) as exc:
            raise DeviceError(f"{self.serial}: push to {remote}: {exc}") from None

    def pull_bytes(self, remote: str) -> bytes:
        try:
            return bytes(self.device.sync.read_bytes(remote))
        except (AdbError, OSError) as exc:
            raise DeviceError(f"{self.serial}: pull {remote}: {exc}") from None

    def reverse(self, remote: str, local: str) -> None:
        try:
            self.device.reverse(remote, local)
        except (AdbError, OSError) as exc:
            raise DeviceError(f"{self.serial}: adb reverse {remote} {local}: {exc}") from None

    def reverse_list(self) -> dict[str, str]:
        try:
            return {r.remote: r.local for r in self.device.reverse_list()}
        except (AdbError, OSError) as exc:
            raise DeviceError(f"{self.serial}: reverse --list: {exc}") from None

    def reverse_remove(self, remote: str) -> None:
        if remote not in self.reverse_list():
            return
        try:
            self.device.reverse_remove(remote)
        except (AdbError, OSError) as exc:
            raise DeviceError(f"{self.serial}: reverse --remove {remote}: {exc}") from None

    def wait_boot_completed(self, timeout: float = 180.0) -> float:
        """Wait for the device to come back and report ``sys.boot_completed=1``."""
        start = time.monotonic()
        deadline = start + timeout
        time.sleep(0.5)
        while time.monotonic() < deadline:
            try:
                if self.state() == "device" and self.getprop("sys.boot_completed") == "1":
                    self.device = self.adb.device(self.serial)
                    self._root = False
                    return time.monotonic() - start
            except (DeviceError, AdbError, OSError):
                pass
            time.sleep(0.5)
        raise DeviceError(f"{self.serial} did not finish booting in {timeout:.0f}s")

    def reboot(self, timeout: float = 180.0) -> float:
        try:
            self.device.shell("reboot", timeout=10)
        except (AdbError, AdbTimeout, OSError):
            pass  # the connection drops as the phone goes down
        return self.wait_boot_completed(timeout)


def adb_path() -> str:
    return str(adbutils.adb_path())
