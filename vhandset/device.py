"""The simulated Android phone: :class:`VirtualDevice` implements ``interface.DeviceBackend``.

A device is built from a :class:`~vhandset.profiles.DeviceProfile`. It owns the
state a phone keeps (properties, settings, packages, processes, sockets, mounts, the log
buffers, the foreground activity) under one lock, and the Android commands that read and
change it (``pm``, ``am``, ``settings``, ``getprop``, ``dumpsys``, ``service call``,
``logcat``, ``screencap``, ``mount``, ``su``, ...). Their output follows AOSP's formats so
that host-side parsers and adbutils work on this device and on a real one alike.

The generic shell and toybox live in :mod:`vhandset.sh`, the filesystem in
:mod:`vhandset.vfs`, and PCAPdroid (started by ``am start`` of its ``CaptureCtrl``) in
:mod:`vhandset.pcapdroid`.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import hashlib
import ipaddress
import itertools
import logging
import posixpath
import re
import shlex
import socket
import struct
import threading
import time
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from vhandset.android import subject_hash_old
from vhandset.interface import STDERR, STDOUT, DeviceBackend, ReverseOpener
from vhandset.netfilter import Netfilter
from vhandset.pcapdroid import CTRL_ACTIVITY as PCAPDROID_CTRL
from vhandset.pcapdroid import PACKAGE as PCAPDROID
from vhandset.pcapdroid import SERVICE as PCAPDROID_SERVICE
from vhandset.pcapdroid import PcapdroidApp
from vhandset.png import raw_rgba, solid_png
from vhandset.profiles import (
    CaSpec,
    DeviceProfile,
    Package,
    SuFlavor,
    load_profile,
)
from vhandset.sh.applets import CORE
from vhandset.sh.command import Command, CommandTable, Ctx, UsageError
from vhandset.sh.interp import Process, Shell
from vhandset.sh.streams import Cancelled, applet_binary, dec
from vhandset.vfs import (
    AID_SDCARD_RW,
    KERNEL,
    Cred,
    DeviceFS,
    MemoryFS,
)

if TYPE_CHECKING:
    from vhandset.network import Packet, PacketLog

log = logging.getLogger(__name__)

# ---- Android ids (system/core/libcutils/include/private/android_filesystem_config.h) ----------

AID_NAMES = {
    0: "root",
    1000: "system",
    1001: "radio",
    1002: "bluetooth",
    1003: "graphics",
    1004: "input",
    1005: "audio",
    1006: "camera",
    1007: "log",
    1010: "wifi",
    1011: "adb",
    1013: "media",
    1015: "sdcard_rw",
    1017: "keystore",
    1021: "gps",
    1023: "media_rw",
    1028: "sdcard_r",
    1036: "logd",
    1041: "audioserver",
    1047: "cameraserver",
    1068: "secure_element",
    1073: "network_stack",
    1078: "ext_data_rw",
    1079: "ext_obb_rw",
    2000: "shell",
    3001: "net_bt_admin",
    3002: "net_bt",
    3003: "inet",
    3004: "net_raw",
    3006: "net_bw_stats",
    3009: "readproc",
    3011: "uhid",
    3012: "readtracefs",
    9997: "everybody",
    9999: "nobody",
}
AID_BY_NAME = {name: uid for uid, name in AID_NAMES.items()}
SHELL_GROUPS = (1004, 1007, 1011, 1015, 1028, 1078, 1079, 3001, 3002, 3003, 3006, 3009, 3011)

LAUNCHER_CATEGORY = "android.intent.category.LAUNCHER"
LOG_BUFFERS = ("main", "radio", "events", "system", "crash", "stats", "security", "kernel")
DEFAULT_BUFFERS = ("main", "system", "crash")
PRIORITIES = "VDIWEFS"
EMPTY_ZIP = b"PK\x05\x06" + b"\x00" * 18
KERNEL_BOOT_SECONDS = 14.0  # uptime when sys.boot_completed turns 1
_V4_COLUMNS = "local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout"
_V6_COLUMNS = (
    "local_address                         remote_address                        "
    "st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout"
)
# Kernel headers of /proc/net/*: tcp padded to 149 columns, udp to 127, the v6 files unpadded.
PROC_NET_HEADERS = {
    "tcp": f"  sl  {_V4_COLUMNS} inode",
    "tcp6": f"  sl  {_V6_COLUMNS} inode",
    "udp": f"   sl  {_V4_COLUMNS} inode ref pointer drops",
    "udp6": f"  sl  {_V6_COLUMNS} inode ref pointer drops",
}
PATH_Q = (
    "/sbin:/system/sbin:/product/bin:/apex/com.android.runtime/bin:/system/bin:/system/xbin"
    ":/odm/bin:/vendor/bin:/vendor/xbin"
)
PATH_R = (
    "/product/bin:/apex/com.android.runtime/bin:/apex/com.android.art/bin:/system_ext/bin"
    ":/system/bin:/system/xbin:/odm/bin:/vendor/bin:/vendor/xbin"
)


class TcpState(IntEnum):
    ESTABLISHED = 1
    SYN_SENT = 2
    SYN_RECV = 3
    FIN_WAIT1 = 4
    FIN_WAIT2 = 5
    TIME_WAIT = 6
    CLOSE = 7
    CLOSE_WAIT = 8
    LAST_ACK = 9
    LISTEN = 10
    CLOSING = 11


def user_name(uid: int) -> str:
    """Android's name for a uid (``u0_a123`` for apps), as ``ps`` and ``ls`` print it."""
    if uid in AID_NAMES:
        return AID_NAMES[uid]
    user, app = divmod(uid, 100000)
    if 10000 <= app < 20000:
        return f"u{user}_a{app - 10000}"
    if 99000 <= app < 100000:
        return f"u{user}_i{app - 99000}"
    return str(uid)


def _stable_hex(*parts: object, length: int = 7) -> str:
    """A deterministic stand-in for Java's ``identityHashCode`` in dumps."""
    digest = hashlib.sha1("|".join(map(str, parts)).encode(), usedforsecurity=False).hexdigest()
    return digest[:length].lstrip("0") or "1"


# ---- synthetic CA certificates ---------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def synthetic_ca(spec: CaSpec) -> tuple[str, bytes]:
    """(file name in the CA store, file content) of a deterministic synthetic root CA.

    The key is derived from the subject, signing is deterministic (RFC 6979), so the same spec
    always gives the same bytes. The file holds the PEM then a short text dump, as AOSP's
    ``cacerts`` files do.
    """
    seed = int.from_bytes(hashlib.sha256(f"auditor-ca|{spec}".encode()).digest(), "big")
    key = ec.derive_private_key(seed % (2**255 - 19) + 1, ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, spec.country),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, spec.organization),
            x509.NameAttribute(NameOID.COMMON_NAME, spec.common_name),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(seed >> 128 | 1)
        .not_valid_before(_dt.datetime(2010, 1, 1, tzinfo=_dt.UTC))
        .not_valid_after(_dt.datetime(2040, 1, 1, tzinfo=_dt.UTC))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256(), ecdsa_deterministic=True)
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    fingerprint = ":".join(f"{b:02X}" for b in cert.fingerprint(hashes.SHA1()))  # noqa: S303
    subject = cert.subject.rfc4514_string()
    text = (
        "Certificate:\n    Data:\n        Version: 3 (0x2)\n"
        f"        Serial Number:\n            {cert.serial_number:x}\n"
        "    Signature Algorithm: ecdsa-with-SHA256\n"
        f"        Issuer: {subject}\n        Validity\n"
        "            Not Before: Jan  1 00:00:00 2010 GMT\n"
        "            Not After : Jan  1 00:00:00 2040 GMT\n"
        f"        Subject: {subject}\n"
        f"SHA1 Fingerprint={fingerprint}\n"
    )
    return f"{subject_hash_old(cert)}.0", pem + text.encode()


# ---- binder parcels --------------------------------------------------------------------------


def parcel_string16(text: str | None) -> bytes:
    """A ``String16`` as ``Parcel::writeString16`` lays it out (length, UTF-16LE, NUL, pad)."""
    if text is None:
        return struct.pack("<i", -1)
    data = struct.pack("<i", len(text)) + text.encode("utf-16-le") + b"\x00\x00"
    return data + b"\x00" * (-len(data) % 4)


def parcel_dump(data: bytes) -> str:
    """``Parcel::print``, as ``service call`` shows a reply: libbinder's ``printHexData`` with
    16 bytes a line, 32-bit little-endian words, and one indent level."""
    if not data:
        return "Parcel(NULL)"
    per_line = 16
    one_line = len(data) <= per_line
    out = ["Parcel("]
    if not one_line:
        out.append("\n")
    for offset in range(0, len(data), per_line):
        chunk = data[offset : offset + per_line]
        line = "  " if not one_line else ""
        if not one_line:
            line += f"0x{offset:08x}: "
        words = []
        for w in range(0, per_line, 4):
            piece = chunk[w : w + 4]
            if piece:
                words.append("".join(f"{b:02x}" for b in reversed(piece)).rjust(8))
            else:
                words.append("" if one_line else " " * 8)
        line += " ".join(words)
        ascii_col = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        if not one_line:
            ascii_col = ascii_col.ljust(per_line)
        line += f" '{ascii_col}'"
        if offset + per_line < len(data):
            line += "\n"
        out.append(line)
    out.append(")")
    return "".join(out)


# ---- records of state ------------------------------------------------------------------------


@dataclass(slots=True)
class PackageState:
    pkg: Package
    enabled: int = 0  # COMPONENT_ENABLED_STATE_*: 0 default, 1 enabled, 2 disabled, 3 user
    installed: bool = True
    stopped: bool = False


@dataclass(slots=True)
class ProcInfo:
    pid: int
    ppid: int
    uid: int
    name: str
    vsz: int = 0
    rss: int = 0
    wchan: str = "do_epoll_wait"
    state: str = "S"


@dataclass(frozen=True, slots=True)
class LogEntry:
    ts: float
    uid: int
    pid: int
    tid: int
    priority: str
    tag: str
    message: str
    buffer: str = "main"


@dataclass(slots=True)
class Socket:
    handle: int
    uid: int
    proto: str
    local: tuple[str, int]
    remote: tuple[str, int]
    state: int
    inode: int


@dataclass(frozen=True, slots=True)
class ShellResult:
    exit_code: int
    stdout: bytes
    stderr: bytes
    chunks: tuple[tuple[int, bytes], ...]

    @property
    def out(self) -> str:
        return self.stdout.decode("utf-8", "replace")

    @property
    def err(self) -> str:
        return self.stderr.decode("utf-8", "replace")


def _parse_endpoint(value: str | tuple[str, int]) -> tuple[str, int]:
    if isinstance(value, tuple):
        return str(ipaddress.ip_address(value[0])), int(value[1])
    host, _, port = value.rpartition(":")
    host = host.strip("[]")
    return str(ipaddress.ip_address(host)), int(port)


def _hex_addr(addr: str, v6: bool) -> str:
    """An address as ``/proc/net/*`` prints it: each 32-bit word in host (little-endian) order."""
    ip = ipaddress.ip_address(addr)
    if v6 and ip.version == 4:
        ip = ipaddress.IPv6Address(f"::ffff:{ip}")
    packed = ip.packed
    return "".join(
        f"{struct.unpack('<I', packed[i : i + 4])[0]:08X}" for i in range(0, len(packed), 4)
    )


# ---- the device ------------------------------------------------------------------------------


class VirtualDevice:
    """A simulated Android phone. See :class:`~vhandset.interface.DeviceBackend`."""

    def __init__(
        self,
        profile: DeviceProfile | str | Path,
        *,
        root: bool | None = None,
        unauthorized: bool = False,
        serial: str | None = None,
    ) -> None:
        if not isinstance(profile, DeviceProfile):
            profile = load_profile(profile)
        if root is not None:
            profile = profile.with_root(root)
        self.profile = profile
        self.lock = threading.RLock()
        self._log_cond = threading.Condition()
        self._serial = serial or profile.identifiers.serial
        self._authorized = not unauthorized
        self._online = True
        self.adbd_root = False
        self.boot_count = 0
        self.boot_time = time.time()
        self.vfs = MemoryFS(self.lock)
        self._fs_view = DeviceFS(self.vfs, self._adbd_cred)
        self.commands: dict[str, Command] = {**CORE, **ANDROID}
        self.props: dict[str, str] = {}
        self._persist_props: dict[str, str] = {}
        self.settings: dict[str, dict[str, str]] = {
            ns: dict(profile.settings.get(ns, {})) for ns in ("global", "secure", "system")
        }
        self.settings["secure"]["android_id"] = profile.identifiers.android_id
        self.packages: dict[str, PackageState] = {p.name: PackageState(p) for p in profile.packages}
        self.processes: dict[int, ProcInfo] = {}
        self._pids = itertools.count(1)
        self._logs: list[tuple[int, LogEntry]] = []
        self._log_seq = itertools.count(1)
        self.sockets: dict[int, Socket] = {}
        self.packet_log: PacketLog | None = None  # what tcpdump sees; the network stack's log
        self.netfilter = Netfilter()  # iptables/ip6tables: what the network stack may send
        self.sim_present = True  # the SIM tray: a card in it (the profile's), or none
        self._handles = itertools.count(1)
        self._inodes = itertools.count(43210)
        self.foreground: tuple[str, str] = ("", "")
        self.screen_on = True
        self._task_ids = itertools.count(100)
        self._task_id = 0
        self.reverse: dict[str, str] = {}
        self._opener: ReverseOpener | None = None
        self._live: set[Process] = set()
        self._boot_timer: threading.Timer | None = None
        self._adbd_pid = 0
        self._system_server_pid = 0
        self._zygote64 = 0
        self._zygotes: list[int] = []
        self._boot_id = ""
        self._tz = _zone(profile.timezone)
        self._listeners: list[Callable[[str, dict[str, Any]], None]] = []
        self.pcapdroid = PcapdroidApp(self)  # its capture, when the profile installs it
        self._build_image()
        self._boot()

    # ---- DeviceBackend ---------------------------------------------------------------------

    @property
    def serial(self) -> str:
        return self._serial

    @property
    def online(self) -> bool:
        return self._online

    @property
    def authorized(self) -> bool:
        return self._authorized

    def authorize(self) -> None:
        """The user taps "Allow" on the RSA key prompt."""
        self._authorized = True

    def banner_props(self) -> dict[str, str]:
        return {
            k: self.props[k] for k in ("ro.product.name", "ro.product.model", "ro.product.device")
        }

    @property
    def fs(self) -> DeviceFS:
        return self._fs_view

    def shell(self, command: str, *, pty: bool = False) -> Process:
        if not command:
            raise ValueError("the virtual handset has no interactive shell; pass a command")
        proc = Process(
            self,
            command,
            self._adbd_cred(),
            pty=pty,
            ppid=self._adbd_pid,
            on_exit=self._exited,
            start=False,
        )
        with self.lock:
            self._live.add(proc)
        proc.start()
        return proc

    def adb_root(self) -> tuple[bool, str]:
        with self.lock:
            if not self.profile.adb_root or self.props.get("ro.debuggable") != "1":
                return False, "adbd cannot run as root in production builds\n"
            if self.adbd_root:
                return False, "adbd is already running as root\n"
            self.adbd_root = True
            self.props["service.adb.root"] = "1"
            self._restart_adbd()
            return True, "restarting adbd as root\n"

    def adb_unroot(self) -> tuple[bool, str]:
        with self.lock:
            if not self.adbd_root:
                return False, "adbd not running as root\n"
            self.adbd_root = False
            self.props["service.adb.root"] = "0"
            self._restart_adbd()
            return True, "restarting adbd as non root\n"

    def reboot(self, target: str = "") -> None:
        if self._online:
            self.pcapdroid.stop("reboot")  # a VPN service does not outlive the boot
        with self.lock:
            if not self._online:
                return
            self._online = False
            live = list(self._live)
            self.props.pop("sys.boot_completed", None)
            self.props.pop("dev.bootcomplete", None)
            self.props["sys.powerctl"] = "reboot," + target if target else "reboot"
        self.log("ActivityManager", f"Shutting down for reboot{',' + target if target else ''}")
        for proc in live:
            proc.close()
        timer = threading.Timer(self.profile.boot_seconds, self._finish_reboot)
        timer.daemon = True
        self._boot_timer = timer
        timer.start()

    def attach_transport(self, opener: ReverseOpener | None) -> None:
        with self.lock:
            self._opener = opener

    def reverse_changed(self, forwards: dict[str, str]) -> None:
        with self.lock:
            self.reverse = dict(forwards)

    # ---- more public API -------------------------------------------------------------------

    def run(self, command: str, *, timeout: float = 10.0) -> ShellResult:
        """Run ``command`` like ``adb shell`` and collect its output."""
        proc = self.shell(command)
        chunks: list[tuple[int, bytes]] = []
        done = threading.Event()

        def collect() -> None:
            chunks.extend(proc.chunks())
            done.set()

        threading.Thread(target=collect, daemon=True).start()
        if not done.wait(timeout):
            proc.close()
            done.wait(2)
            raise TimeoutError(f"virtual shell command did not finish: {command!r}")
        out = b"".join(d for fd, d in chunks if fd == STDOUT)
        err = b"".join(d for fd, d in chunks if fd == STDERR)
        return ShellResult(
            proc.exit_code if proc.exit_code is not None else 1, out, err, tuple(chunks)
        )

    def add_listener(self, fn: Callable[[str, dict[str, Any]], None]) -> None:
        """Be told of what the phone's own software reacts to: ``boot_completed``,
        ``screen_on``, ``launch`` and ``view_url`` (an http(s) URL opened in the browser)."""
        self._listeners.append(fn)

    def emit(self, kind: str, **data: Any) -> None:
        for fn in list(self._listeners):
            try:
                fn(kind, data)
            except Exception:
                logging.getLogger(__name__).exception("device listener failed on %s", kind)

    def set_persistent_props(self, props: Mapping[str, str]) -> None:
        """Properties that exist from now on and survive reboots."""
        with self.lock:
            self._persist_props.update(props)
            self.props.update(props)

    def wake(self) -> None:
        with self.lock:
            was_on, self.screen_on = self.screen_on, True
        if not was_on:
            self.emit("screen_on")

    def wait_online(self, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while not self._online and time.monotonic() < deadline:
            time.sleep(0.01)
        return self._online

    def open_reverse(self, device_spec: str) -> socket.socket:
        """Open a device-initiated stream (``tcp:8080``) through the host's reverse forward."""
        with self.lock:
            opener = self._opener
        if opener is None:
            raise ConnectionRefusedError(f"no transport attached for {device_spec}")
        return opener.open(device_spec)

    def open_socket(
        self,
        uid: int,
        proto: str,
        local: str | tuple[str, int],
        remote: str | tuple[str, int],
        state: str | int = "ESTABLISHED",
    ) -> int:
        """Register a socket that then shows in ``/proc/net/<proto>``; returns its handle."""
        if proto not in ("tcp", "tcp6", "udp", "udp6"):
            raise ValueError(f"unknown protocol {proto!r}")
        st = TcpState[state.upper()].value if isinstance(state, str) else int(state)
        with self.lock:
            handle = next(self._handles)
            self.sockets[handle] = Socket(
                handle,
                uid,
                proto,
                _parse_endpoint(local),
                _parse_endpoint(remote),
                st,
                next(self._inodes),
            )
            return handle

    def close_socket(self, handle: int) -> None:
        with self.lock:
            self.sockets.pop(handle, None)

    def log(
        self,
        tag: str,
        message: str,
        *,
        priority: str = "I",
        uid: int = 1000,
        pid: int | None = None,
        tid: int | None = None,
        buffer: str = "main",
        ts: float | None = None,
    ) -> None:
        """Append a line to a log buffer (and wake streaming ``logcat`` readers)."""
        if pid is None:
            pid = self._system_server_pid
        entry = LogEntry(ts or time.time(), uid, pid, tid or pid, priority, tag, message, buffer)
        with self._log_cond:
            self._logs.append((next(self._log_seq), entry))
            if len(self._logs) > 20000:
                del self._logs[:5000]
            self._log_cond.notify_all()

    def log_entries(self, after: int = 0) -> list[tuple[int, LogEntry]]:
        with self._log_cond:
            return [(seq, e) for seq, e in self._logs if seq > after]

    def get_setting(self, namespace: str, key: str) -> str | None:
        with self.lock:
            return self.settings[namespace].get(key)

    def put_setting(self, namespace: str, key: str, value: str, *, uid: int = 2000) -> None:
        with self.lock:
            old = self.settings[namespace].get(key)
            self.settings[namespace][key] = value
        if old != value:
            self.log(
                "SettingsProvider", f"put {namespace} {key}={value} by uid {uid}", priority="D"
            )
            self._setting_changed(namespace, key, value)

    def delete_setting(self, namespace: str, key: str) -> bool:
        with self.lock:
            return self.settings[namespace].pop(key, None) is not None

    def trusted_ca_files(self) -> dict[str, bytes]:
        """The system CA store apps trust now (the conscrypt APEX from Android 14), by path."""
        store = (
            "/apex/com.android.conscrypt/cacerts"
            if self.profile.sdk >= 34
            else "/system/etc/security/cacerts"
        )
        with self.lock:
            return {path: self.vfs.read(path) for path in self.vfs.walk_files(store)}

    def user_ca_files(self) -> dict[str, bytes]:
        with self.lock:
            return {
                p: self.vfs.read(p) for p in self.vfs.walk_files("/data/misc/user/0/cacerts-added")
            }

    def package_uid(self, name: str) -> int | None:
        state = self.packages.get(name)
        return state.pkg.uid if state else None

    # ---- ShellSystem -----------------------------------------------------------------------

    def cred_for(self, uid: int, *, su: bool = False) -> Cred:
        if uid == 0:
            return Cred(0, 0, frozenset() if su else frozenset(SHELL_GROUPS))
        if uid == 2000:
            return Cred(2000, 2000, frozenset(SHELL_GROUPS))
        return Cred(uid, uid, frozenset({9997}))

    def user_name(self, uid: int) -> str:
        return user_name(uid)

    def uid_of(self, name: str) -> int | None:
        if name in AID_BY_NAME:
            return AID_BY_NAME[name]
        m = re.fullmatch(r"u(\d+)_a(\d+)", name)
        return int(m.group(1)) * 100000 + 10000 + int(m.group(2)) if m else None

    def spawn(self, name: str, uid: int, ppid: int) -> int:
        with self.lock:
            pid = next(self._pids)
            self.processes[pid] = ProcInfo(pid, ppid, uid, name, 10_800_000, 3_200, "do_wait", "S")
            return pid

    def reap(self, pid: int) -> None:
        with self.lock:
            self.processes.pop(pid, None)

    def base_env(self, uid: int) -> dict[str, str]:
        sdk = self.profile.sdk
        if sdk <= 29:
            path = PATH_Q
        else:
            path = PATH_R
        name = user_name(uid)
        return {
            "ANDROID_DATA": "/data",
            "ANDROID_ROOT": "/system",
            "ANDROID_STORAGE": "/storage",
            "ANDROID_ASSETS": "/system/app",
            "ASEC_MOUNTPOINT": "/mnt/asec",
            "EXTERNAL_STORAGE": "/sdcard",
            "HOME": "/",
            "HOSTNAME": "localhost",
            "LOGNAME": name,
            "PATH": path,
            "SHELL": "/bin/sh",
            "TMPDIR": "/data/local/tmp",
            "USER": name,
        }

    def local_time(self, epoch: float) -> _dt.datetime:
        return _dt.datetime.fromtimestamp(epoch, self._tz)

    # ---- internals -------------------------------------------------------------------------

    def _adbd_cred(self) -> Cred:
        return self.cred_for(0 if self.adbd_root else 2000)

    def _exited(self, proc: Process) -> None:
        with self.lock:
            self._live.discard(proc)

    def _restart_adbd(self) -> None:
        for proc in list(self._live):
            proc.close()
        self.processes.pop(self._adbd_pid, None)
        self._adbd_pid = next(self._pids)
        uid = 0 if self.adbd_root else 2000
        self.processes[self._adbd_pid] = ProcInfo(self._adbd_pid, 1, uid, "adbd", 11_000_000, 4_100)

    def _finish_reboot(self) -> None:
        self._boot()

    # -- the SIM tray, for whoever plays the operator (a test, a demo) --

    SIM_OPERATOR_PROPS = (
        "gsm.sim.operator.alpha",
        "gsm.sim.operator.numeric",
        "gsm.sim.operator.iso-country",
    )

    def _sim_props_absent(self) -> None:
        self.props["gsm.sim.state"] = "ABSENT"
        for key in self.SIM_OPERATOR_PROPS:
            self.props[key] = ""

    def remove_sim(self) -> None:
        """The card is taken out: telephony says ABSENT (and the tray stays empty across
        reboots until :meth:`insert_sim`)."""
        with self.lock:
            self.sim_present = False
            self._sim_props_absent()
        self._sim_broadcast("ABSENT")

    def insert_sim(self, *, step: float = 0.2) -> None:
        """A card goes in: telephony reads it, NOT_READY, then READY, then LOADED (its
        records read), each state broadcast as ACTION_SIM_STATE_CHANGED, as on a phone that
        takes a card while it runs."""
        with self.lock:
            self.sim_present = True
        for state in ("NOT_READY", "READY", "LOADED"):
            with self.lock:
                self.props["gsm.sim.state"] = state
                if state == "LOADED":
                    for key in self.SIM_OPERATOR_PROPS:
                        self.props[key] = self.profile.props.get(key, "")
            self._sim_broadcast(state)
            time.sleep(step)

    def _sim_broadcast(self, state: str) -> None:
        self.log(
            "IccCardProxy",
            f"broadcastIccStateChangedIntent intent ACTION_SIM_STATE_CHANGED value={state} "
            "reason=null",
            priority="D",
            uid=1001,  # radio: the phone process
        )
        self.emit("sim_state", state=state)

    def _setting_changed(self, namespace: str, key: str, value: str) -> None:
        if (namespace, key) == ("global", "airplane_mode_on"):
            on = value == "1"
            self.log("ConnectivityService", f"setAirplaneMode({str(on).lower()})", uid=1000)
        if (namespace, key) == ("global", "http_proxy"):
            self.log("ConnectivityService", f"global proxy is now {value}", priority="D")
            # PROXY_CHANGE is broadcast, and apps reconnect through the new route
            self.emit("proxy_changed", value=value)

    # -- the image, built once --

    def _build_image(self) -> None:
        fs, p = self.vfs, self.profile
        mk = functools.partial(fs.mkdir, cred=KERNEL, parents=True)
        for d in (
            "/system/bin",
            "/system/xbin",
            "/system/etc/security/cacerts",
            "/system/framework",
            "/system/app",
            "/system/priv-app",
            "/system/lib64",
            "/system_ext",
            "/product/app",
            "/product/priv-app",
            "/vendor/bin",
            "/odm",
            "/acct",
            "/cache",
            "/config",
            "/mnt",
            "/metadata",
            "/oem",
            "/debug_ramdisk",
        ):
            mk(d)
        if p.sdk <= 29:
            mk("/sbin")
        fs.symlink("/system/etc", "/etc")
        fs.symlink("/system/bin", "/bin")
        fs.symlink("/storage/self/primary", "/sdcard")
        fs.write("/system/build.prop", self._build_prop(), mode=0o644)
        fs.write("/default.prop", b"ro.secure=1\nro.adb.secure=1\n", mode=0o600)
        for name in ("dev", "storage", "apex"):
            fs.mount_boot("tmpfs", f"/{name}", "tmpfs", "rw,seclabel,nosuid,relatime,mode=755")
        fs.mount_boot(
            "proc", "/proc", "proc", "rw,relatime,gid=3009,hidepid=2", label="u:object_r:proc:s0"
        )
        fs.mount_boot("sysfs", "/sys", "sysfs", "rw,seclabel,relatime", label="u:object_r:sysfs:s0")
        fs.mount_boot(
            "/dev/block/dm-5",
            "/data",
            "f2fs" if p.vendor != "google" else "ext4",
            "rw,lazytime,seclabel,nosuid,nodev,noatime",
            mode=0o771,
            uid=1000,
            gid=1000,
            label="u:object_r:system_data_file:s0",
        )
        self._build_storage()
        self._build_data()
        self._build_binaries()
        self._build_cacerts()
        self._build_proc()

    def _build_prop(self) -> bytes:
        lines = ["", "# begin build properties", "# autogenerated by buildinfo.sh"]
        lines += [
            f"{k}={v}"
            for k, v in sorted(self.profile.props.items())
            if k.startswith(("ro.build.", "ro.product.system."))
        ]
        lines += ["# end build properties", ""]
        return "\n".join(lines).encode()

    def _build_storage(self) -> None:
        fs, sdk = self.vfs, self.profile.sdk
        fs.mkdir("/storage/self", mode=0o755)
        fs.symlink("/storage/emulated/0", "/storage/self/primary")
        fstype = "sdcardfs" if sdk <= 29 else "fuse"
        fs.mount_boot(
            "/data/media" if sdk <= 29 else "/dev/fuse",
            "/storage/emulated",
            fstype,
            "rw,nosuid,nodev,noexec,noatime,gid=1015,mask=6"
            if sdk <= 29
            else "rw,lazytime,nosuid,nodev,noexec,noatime,user_id=0,group_id=0,allow_other",
            mode=0o771,
            uid=0,
            gid=AID_SDCARD_RW,
            label="u:object_r:sdcardfs:s0" if sdk <= 29 else "u:object_r:fuse:s0",
            force=(0, AID_SDCARD_RW, 0o660, 0o771),
        )
        for d in (
            "0",
            "0/Android/data",
            "0/Android/media",
            "0/Android/obb",
            "0/Alarms",
            "0/DCIM",
            "0/Documents",
            "0/Download",
            "0/Movies",
            "0/Music",
            "0/Notifications",
            "0/Pictures",
            "0/Podcasts",
            "0/Ringtones",
        ):
            fs.mkdir(f"/storage/emulated/{d}", parents=True)

    def _build_data(self) -> None:
        fs, p = self.vfs, self.profile
        dirs = [
            ("/data/local", 0o751, 0, 0, "u:object_r:system_data_file:s0"),
            ("/data/local/tmp", 0o771, 2000, 2000, "u:object_r:shell_data_file:s0"),
            ("/data/app", 0o771, 1000, 1000, "u:object_r:apk_data_file:s0"),
            ("/data/data", 0o771, 1000, 1000, "u:object_r:system_data_file:s0"),
            ("/data/user", 0o711, 1000, 1000, "u:object_r:system_data_file:s0"),
            ("/data/system", 0o775, 1000, 1000, "u:object_r:system_data_file:s0"),
            ("/data/misc", 0o1771, 1000, 9998, "u:object_r:system_data_file:s0"),
            ("/data/misc/user", 0o711, 1000, 1000, "u:object_r:misc_user_data_file:s0"),
            ("/data/misc/user/0", 0o711, 1000, 1000, "u:object_r:misc_user_data_file:s0"),
            (
                "/data/misc/user/0/cacerts-added",
                0o750,
                1000,
                1000,
                "u:object_r:misc_user_data_file:s0",
            ),
            (
                "/data/misc/user/0/cacerts-removed",
                0o750,
                1000,
                1000,
                "u:object_r:misc_user_data_file:s0",
            ),
        ]
        for path, mode, uid, gid, label in dirs:
            fs.mkdir(path, parents=True)
            fs.set_owner(path, uid, gid, mode, label)
        fs.symlink("/data/data", "/data/user/0")
        for pkg in p.packages:
            fs.mkdir(posixpath.dirname(pkg.path), parents=True)
            fs.write(pkg.path, EMPTY_ZIP, mode=0o644, mtime=pkg.last_update)
            if pkg.path.startswith("/data/"):
                fs.set_owner(pkg.path, 1000, 1000, 0o644, "u:object_r:apk_data_file:s0")
            data_dir = f"/data/data/{pkg.name}"
            fs.mkdir(data_dir)
            fs.set_owner(data_dir, pkg.uid, pkg.uid, 0o700, "u:object_r:app_data_file:s0")
        gms = "/data/data/com.google.android.gms"
        ad_id = p.identifiers.advertising_id
        if ad_id and fs.exists(gms):
            fs.mkdir(f"{gms}/shared_prefs")
            xml = (
                "<?xml version='1.0' encoding='utf-8' standalone='yes' ?>\n<map>\n"
                f'    <string name="adid_key">{ad_id}</string>\n'
                '    <int name="adid_reset_count" value="0" />\n'
                '    <boolean name="enable_limit_ad_tracking" value="false" />\n</map>\n'
            )
            fs.write(f"{gms}/shared_prefs/adid_settings.xml", xml.encode(), mode=0o660)
            for path in (f"{gms}/shared_prefs", f"{gms}/shared_prefs/adid_settings.xml"):
                gms_uid = self.packages["com.google.android.gms"].pkg.uid
                st_mode = 0o771 if path.endswith("prefs") else 0o660
                fs.set_owner(path, gms_uid, gms_uid, st_mode, "u:object_r:app_data_file:s0")

    def _build_binaries(self) -> None:
        fs = self.vfs
        for cmd in self.commands.values():
            path = f"{cmd.directory}/{cmd.name}"
            if cmd.name in ("su", "sh"):
                continue
            if cmd.toybox and cmd.directory == "/system/bin":
                fs.symlink("toybox", path)
            else:
                fs.write(path, applet_binary(cmd.name), mode=0o755)
            fs.set_owner(path, 0, 2000, 0o755)
        fs.write("/system/bin/mksh", applet_binary("sh"), mode=0o755)
        fs.set_owner("/system/bin/mksh", 0, 2000, 0o755)
        fs.symlink("mksh", "/system/bin/sh")
        self._install_su()

    def _install_su(self) -> None:
        path = self.profile.su_path
        if path is None:
            return
        fs = self.vfs
        fs.mkdir(posixpath.dirname(path), parents=True)
        fs.write(path, applet_binary("su"), mode=0o755)
        if self.profile.su is SuFlavor.AOSP:
            fs.set_owner(path, 0, 2000, 0o4750)
        else:
            fs.set_owner(path, 0, 0, 0o755, "u:object_r:magisk_file:s0")

    def _build_cacerts(self) -> None:
        fs, p = self.vfs, self.profile
        certs = [synthetic_ca(spec) for spec in p.system_cas]
        for name, data in certs:
            path = f"/system/etc/security/cacerts/{name}"
            fs.write(path, data, mode=0o644)
        if p.sdk >= 34:
            fs.mount_boot(
                "/dev/block/dm-7",
                "/apex/com.android.conscrypt",
                "ext4",
                "ro,dirsync,seclabel,nodev,noatime",
                label="u:object_r:system_file:s0",
            )
            fs.mkdir("/apex/com.android.conscrypt/cacerts")
            fs.mkdir("/apex/com.android.conscrypt/javalib")
            for name, data in certs:
                fs.write(f"/apex/com.android.conscrypt/cacerts/{name}", data, mode=0o644)
                fs.set_owner(
                    f"/apex/com.android.conscrypt/cacerts/{name}",
                    0,
                    0,
                    0o644,
                    "u:object_r:system_security_cacerts_file:s0",
                )
        else:
            fs.mkdir("/apex/com.android.conscrypt/javalib", parents=True)

    def _build_proc(self) -> None:
        fs, p = self.vfs, self.profile
        for proto in ("tcp", "tcp6", "udp", "udp6"):
            fs.dynamic(f"/proc/net/{proto}", functools.partial(self._proc_net, proto))
        fs.dynamic("/proc/mounts", fs.proc_mounts)
        fs.dynamic(
            "/proc/version",
            lambda: (
                f"Linux version {p.kernel.release} (builder@android) (clang version 12.0.5) "
                f"{p.kernel.version}\n".encode()
            ),
        )
        fs.dynamic("/proc/uptime", lambda: f"{time.time() - self.boot_time:.2f} 0.00\n".encode())
        fs.dynamic("/proc/sys/kernel/random/boot_id", lambda: f"{self._boot_id}\n".encode())
        fs.write("/dev/null", b"", mode=0o666)
        fs.dynamic("/dev/null", lambda: b"", mode=0o666)
        fs.mkdir("/sys/class/net/wlan0", parents=True)
        mac_mode = 0o444 if p.sdk <= 29 else 0o400
        fs.write(
            "/sys/class/net/wlan0/address", f"{p.identifiers.wifi_mac}\n".encode(), mode=mac_mode
        )

    # -- boot --

    def _boot(self) -> None:
        p = self.profile
        with self.lock:
            self.boot_count += 1
            self.boot_time = time.time() - KERNEL_BOOT_SECONDS
            self._boot_id = _uuid_from(p.id, self.boot_count)
            self.vfs.reset_mounts()
            self.netfilter.flush_all()
            self.adbd_root = False
            self.props = {**p.props, **self._persist_props}
            self.props.update(
                {
                    "ro.serialno": self._serial,
                    "ro.boot.serialno": self._serial,
                    "init.svc.adbd": "running",
                    "service.adb.root": "0",
                    "persist.sys.usb.config": "mtp,adb",
                    "sys.usb.config": "mtp,adb",
                    "sys.usb.state": "mtp,adb",
                    "ro.boottime.init": "1876543210",
                    "net.dns1": p.network.gateway or "",
                }
            )
            if not self.sim_present:
                self._sim_props_absent()
            self.sockets = {}
            self._start_processes()
            for spec in p.sockets:
                self.open_socket(
                    self.packages[spec.package].pkg.uid,
                    spec.proto,
                    spec.local,
                    spec.remote,
                    spec.state,
                )
            self.foreground = self._component_of(p.launcher)
            self._task_id = next(self._task_ids)
            self.screen_on = True
            with self._log_cond:
                self._logs.clear()
        self._boot_logs()
        with self.lock:
            self.props["sys.boot_completed"] = "1"
            self.props["dev.bootcomplete"] = "1"
            self._online = True
        self.emit("boot_completed", boot_count=self.boot_count)

    def _start_processes(self) -> None:
        p = self.profile
        self.processes = {}
        self._pids = itertools.count(1)

        def add(
            name: str, uid: int, ppid: int, vsz: int, rss: int, wchan: str = "do_epoll_wait"
        ) -> int:
            pid = next(self._pids)
            self.processes[pid] = ProcInfo(pid, ppid, uid, name, vsz, rss, wchan)
            return pid

        add("init", 0, 0, 10_800_000, 9_900)
        add("[kthreadd]", 0, 0, 0, 0, "kthreadd")
        for name in ("[rcu_gp]", "[kworker/0:0H]", "[ksoftirqd/0]", "[migration/0]"):
            add(name, 0, 2, 0, 0, "worker_thread")
        self._pids = itertools.count(320)
        add("ueventd", 0, 1, 10_900_000, 3_800, "poll_schedule_timeout")
        add("logd", 1036, 1, 10_700_000, 7_400, "__skb_wait_for_more_packets")
        add("servicemanager", 1000, 1, 10_600_000, 3_500, "binder_ioctl")
        add("vold", 0, 1, 11_400_000, 8_100)
        add("netd", 0, 1, 11_900_000, 6_200)
        add("surfaceflinger", 1000, 1, 12_400_000, 19_800)
        self._pids = itertools.count(700)
        self._zygote64 = add("zygote64", 0, 1, 14_900_000, 96_000, "do_sys_poll")
        self._zygotes = [self._zygote64]
        if p.props.get("ro.product.cpu.abilist32"):
            self._zygotes.append(add("zygote", 0, 1, 1_700_000, 81_000, "do_sys_poll"))
        self._pids = itertools.count(1480)
        self._system_server_pid = add("system_server", 1000, self._zygote64, 19_700_000, 210_000)
        self._adbd_pid = add("adbd", 2000, 1, 11_000_000, 4_100)
        self._pids = itertools.count(1900)
        for state in self.packages.values():
            state.stopped = False
            pkg = state.pkg
            if pkg.persistent and pkg.name != "android" and state.installed:
                name = (
                    "com.google.android.gms.persistent"
                    if pkg.name == "com.google.android.gms"
                    else pkg.name
                )
                add(
                    name,
                    pkg.uid,
                    self._zygote64,
                    15_000_000 + len(name) * 1000,
                    60_000 + len(name) * 100,
                )
        self._pids = itertools.count(4000)

    def _boot_logs(self) -> None:
        p, t0 = self.profile, self.boot_time + 1.0
        zyg, ss = self._zygote64, self._system_server_pid
        lines = [
            ("kernel", 0, 0, "I", "init", "init first stage started!"),
            (
                "kernel",
                0,
                0,
                "I",
                "init",
                f"Loading SELinux policy; build {p.props.get('ro.build.fingerprint', '')}",
            ),
            ("main", 0, zyg, "I", "Zygote", "Accepting command socket connections"),
            ("events", 0, zyg, "I", "boot_progress_start", "5120"),
            ("system", 1000, ss, "I", "SystemServer", "Entered the Android system server!"),
            (
                "system",
                1000,
                ss,
                "I",
                "SystemServiceManager",
                "Starting com.android.server.pm.PackageManagerService",
            ),
            ("events", 1000, ss, "I", "boot_progress_pms_ready", "9031"),
            ("system", 1000, ss, "I", "ActivityManager", "System now ready"),
            (
                "main",
                1000,
                ss,
                "I",
                "ActivityTaskManager",
                "START u0 {act=android.intent.action.MAIN cat=[android.intent.category.HOME]"
                f" flg=0x10000100 cmp={p.launcher}}} from uid 0",
            ),
            ("events", 1000, ss, "I", "boot_progress_enable_screen", "13870"),
            (
                "system",
                1000,
                ss,
                "I",
                "ActivityManager",
                "Finished processing BOOT_COMPLETED for u0",
            ),
        ]
        for i, (buf, uid, pid, prio, tag, msg) in enumerate(lines):
            step = (KERNEL_BOOT_SECONDS - 1.5) / len(lines)
            self.log(tag, msg, priority=prio, uid=uid, pid=pid, buffer=buf, ts=t0 + i * step)

    # -- apps and activities --

    @staticmethod
    def _component_of(component: str) -> tuple[str, str]:
        pkg, _, cls = component.partition("/")
        return pkg, (pkg + cls if cls.startswith(".") else cls)

    def _short(self, pkg: str, cls: str) -> str:
        return f"{pkg}/{cls[len(pkg) :]}" if cls.startswith(pkg + ".") else f"{pkg}/{cls}"

    def _process_of(self, pkg: str) -> ProcInfo | None:
        for proc in self.processes.values():
            if proc.name in (pkg, f"{pkg}.persistent"):
                return proc
        return None

    def launch(
        self,
        pkg: str,
        cls: str,
        *,
        caller_uid: int = 2000,
        action: str = "android.intent.action.MAIN",
        category: str | None = LAUNCHER_CATEGORY,
        data: str | None = None,
    ) -> int:
        """Bring ``pkg/cls`` to the foreground, starting its process; returns the pid."""
        with self.lock:
            state = self.packages[pkg]
            started = self._process_of(pkg) is None
            proc = self.processes[self.ensure_process(pkg)]
            self.foreground = (pkg, cls)
            self._task_id = next(self._task_ids)
            short = self._short(pkg, cls)
        intent = (
            f"act={action}"
            + (f" cat=[{category}]" if category else "")
            + (f" dat={_safe_uri(data)}" if data else "")
            + f" flg=0x10000000 cmp={short}"
        )
        self.log("ActivityTaskManager", f"START u0 {{{intent}}} from uid {caller_uid}")
        if started:
            reason = "activity" if self.profile.sdk <= 29 else "pre-top-activity"
            self.log(
                "ActivityManager",
                f"Start proc {proc.pid}:{pkg}/{user_name(state.pkg.uid).replace('_', '')}"
                f" for {reason} {{{short}}}",
            )
        self.log("ActivityTaskManager", f"Displayed {short}: +412ms", uid=1000)
        activity = pkg + cls if cls.startswith(".") else cls
        self.emit(
            "launch", package=pkg, activity=activity, uid=state.pkg.uid, action=action, data=data
        )
        if action == "android.intent.action.VIEW" and data and re.match(r"(?i)https?://", data):
            self.emit("view_url", url=data, uid=state.pkg.uid, package=pkg)
        return proc.pid

    def ensure_process(self, pkg: str) -> int:
        """The pid of ``pkg``'s process, forked from the zygote if it is not running."""
        with self.lock:
            state = self.packages[pkg]
            state.stopped = False
            proc = self._process_of(pkg)
            if proc is None:
                pid = next(self._pids)
                proc = ProcInfo(pid, self._zygote64, state.pkg.uid, pkg, 14_000_000, 90_000)
                self.processes[pid] = proc
            return proc.pid

    def force_stop(self, pkg: str, *, caller_pid: int = 0) -> None:
        if pkg == PCAPDROID:
            self.pcapdroid.stop("force-stop")
        with self.lock:
            state = self.packages.get(pkg)
            if state is None:
                return
            state.stopped = True
            for pid, proc in list(self.processes.items()):
                if proc.name == pkg or proc.name.startswith(pkg + ":"):
                    del self.processes[pid]
            if self.foreground[0] == pkg:
                self.foreground = self._component_of(self.profile.launcher)
        self.log(
            "ActivityManager",
            f"Force stopping {pkg} appid={state.pkg.uid % 100000} user=0: from pid {caller_pid}",
        )

    def go_home(self) -> None:
        with self.lock:
            self.foreground = self._component_of(self.profile.launcher)

    # -- /proc/net --

    def _proc_net(self, proto: str) -> bytes:
        with self.lock:
            socks = [s for s in self.sockets.values() if s.proto == proto]
        v6 = proto.endswith("6")
        if proto == "udp" and not _kernel_at_least(self.profile.kernel.release, 5, 10):
            header = PROC_NET_HEADERS["udp"][1:]  # "   sl" became three spaces in 2022
        else:
            header = PROC_NET_HEADERS[proto]
        width = {"tcp": 149, "udp": 127}.get(proto, 0)
        lines = [header.ljust(width)]
        for i, s in enumerate(socks):
            src = f"{_hex_addr(s.local[0], v6)}:{s.local[1]:04X}"
            dst = f"{_hex_addr(s.remote[0], v6)}:{s.remote[1]:04X}"
            ptr = "0000000000000000"
            if proto.startswith("tcp"):
                tail = "100 0 0 10 0" if s.state == TcpState.LISTEN else "20 4 30 10 -1"
                line = (
                    f"{i:4d}: {src} {dst} {s.state:02X} {0:08X}:{0:08X} {0:02X}:{0:08X} {0:08X} "
                    f"{s.uid:5d} {0:8d} {s.inode} 1 {ptr} {tail}"
                )
                lines.append(line.ljust(width))
            else:
                bucket = s.local[1] & 0x3FFF
                line = (
                    f"{bucket:5d}: {src} {dst} {s.state:02X} {0:08X}:{0:08X} {0:02X}:{0:08X} "
                    f"{0:08X} {s.uid:5d} {0:8d} {s.inode} 2 {ptr} 0"
                )
                lines.append(line.ljust(width))
        return ("\n".join(lines) + "\n").encode()


def _kernel_at_least(release: str, major: int, minor: int) -> bool:
    m = re.match(r"(\d+)\.(\d+)", release)
    return m is not None and (int(m.group(1)), int(m.group(2))) >= (major, minor)


def _uuid_from(*parts: object) -> str:
    h = hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def _zone(name: str) -> _dt.tzinfo:
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        log.warning("time zone %s unknown here; using UTC", name)
        return _dt.UTC


# ==== the Android commands ====================================================================

ANDROID = CommandTable()


def _device(ctx: Ctx) -> VirtualDevice:
    system = ctx.system
    assert isinstance(system, VirtualDevice)
    return system


# ---- properties ------------------------------------------------------------------------------


@ANDROID.command("getprop", toybox=True)
def _getprop(ctx: Ctx) -> int:
    dev = _device(ctx)
    args = [a for a in ctx.args if not a.startswith("-")]
    with dev.lock:
        props = dict(dev.props)
    if not args:
        ctx.out("".join(f"[{k}]: [{props[k]}]\n" for k in sorted(props)))
        return 0
    value = props.get(args[0], "")
    ctx.out((value or (args[1] if len(args) > 1 else "")) + "\n")
    return 0


@ANDROID.command("setprop", toybox=True)
def _setprop(ctx: Ctx) -> int:
    dev = _device(ctx)
    if len(ctx.args) != 2:
        return ctx.error("Needs 2 arguments")
    key, value = ctx.args
    allowed = ctx.cred.is_root or key.startswith(
        ("debug.", "log.tag", "persist.log.tag", "persist.debug.")
    )
    with dev.lock:
        if (key.startswith("ro.") and key in dev.props) or not allowed:
            return ctx.error(f"failed to set property '{key}' to '{value}'")
        dev.props[key] = value
        if key.startswith("persist."):
            dev._persist_props[key] = value
    return 0


# ---- settings --------------------------------------------------------------------------------

SETTINGS_HELP = """Settings provider (settings) commands:
  help
      Print this help text.
  get [--user <USER_ID> | current] NAMESPACE KEY
      Retrieve the current value of KEY.
  put [--user <USER_ID> | current] NAMESPACE KEY VALUE [TAG] [default]
      Change the contents of KEY to VALUE.
  delete [--user <USER_ID> | current] NAMESPACE KEY
      Delete the entry for KEY.
  list [--user <USER_ID> | current] NAMESPACE
      Print all defined keys.
      NAMESPACE is one of {system, secure, global}, case-insensitive
"""


@ANDROID.command("settings")
def _settings(ctx: Ctx) -> int:
    """SettingsProvider's shell command: its messages and the -1 (255) it returns on errors."""
    dev = _device(ctx)
    args = list(ctx.args)
    if not args or args[0] in ("help", "-h"):
        ctx.out(SETTINGS_HELP)
        return 0 if args else 255
    while args and args[0] in ("--user", "--lineage"):
        args = args[2:] if args[0] == "--user" else args[1:]
    verb = args[0].lower() if args else ""
    if verb not in ("get", "put", "delete", "list", "reset"):
        ctx.err(f"Invalid command: {args[0] if args else ''}\n")
        return 255
    if len(args) < 2:
        ctx.err("Bad arguments\n")
        return 255
    ns, rest = args[1].lower(), args[2:]
    if ns not in dev.settings:
        ctx.err(f"Invalid namespace '{args[1]}'\n")
        return 255
    wanted = {"get": (1, 1), "delete": (1, 1), "list": (0, 0), "put": (2, 4), "reset": (1, 2)}
    low, high = wanted[verb]
    if len(rest) < low:
        ctx.err("Bad arguments\n")
        return 255
    if len(rest) > high:
        ctx.err("Too many arguments\n")
        return 255
    if verb == "get":
        value = dev.get_setting(ns, rest[0])
        ctx.out(f"{value if value is not None else 'null'}\n")
    elif verb == "put":
        dev.put_setting(ns, rest[0], rest[1], uid=ctx.cred.uid)
    elif verb == "delete":
        ctx.out(f"Deleted {1 if dev.delete_setting(ns, rest[0]) else 0} rows\n")
    elif verb == "list":
        with dev.lock:
            items = sorted(f"{k}={v}" for k, v in dev.settings[ns].items())
        ctx.out("".join(f"{line}\n" for line in items))
    return 0


# ---- packages --------------------------------------------------------------------------------


def _pkg_flags(pkg: Package) -> str:
    flags = []
    if pkg.system:
        flags.append("SYSTEM")
    flags.append("HAS_CODE")
    if pkg.persistent and pkg.system:
        flags.append("PERSISTENT")
    flags.append("ALLOW_CLEAR_USER_DATA")
    if pkg.updated_system:
        flags.append("UPDATED_SYSTEM_APP")
    flags.append("ALLOW_BACKUP")
    return "[ " + " ".join(flags) + " ]"


def _visible(state: PackageState, opts: set[str], filt: str | None, uid: int | None) -> bool:
    pkg = state.pkg
    if not state.installed and "-u" not in opts:
        return False
    enabled = state.enabled in (0, 1)
    return not (
        (filt and filt not in pkg.name)
        or ("-d" in opts and enabled)
        or ("-e" in opts and not enabled)
        or ("-s" in opts and not pkg.system)
        or ("-3" in opts and pkg.system)
        or (uid is not None and pkg.uid != uid)
        or "--apex-only" in opts
    )


def _pm_list_packages(ctx: Ctx, args: list[str]) -> int:
    dev = _device(ctx)
    opts: set[str] = set()
    filt = None
    uid = None
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in ("--user", "--uid"):
            if arg == "--uid" and i + 1 < len(args):
                uid = int(args[i + 1])
            i += 2
            continue
        if arg.startswith("-"):
            if arg not in (
                "-f",
                "-d",
                "-e",
                "-s",
                "-3",
                "-i",
                "-l",
                "-u",
                "-U",
                "-a",
                "--show-versioncode",
                "--apex-only",
                "--show-stopped",
            ):
                ctx.err(f"Error: Unknown option: {arg}\n")
                return 255
            opts.add(arg)
        else:
            filt = arg
        i += 1
    with dev.lock:
        states = list(dev.packages.values())
    for state in states:
        if not _visible(state, opts, filt, uid):
            continue
        pkg = state.pkg
        line = "package:"
        if "-f" in opts:
            line += f"{pkg.path}="
        line += pkg.name
        if "--show-versioncode" in opts:
            line += f" versionCode:{pkg.version_code}"
        if "-i" in opts:
            line += f"  installer={pkg.installer or 'null'}"
        if "-U" in opts:
            line += f" uid:{pkg.uid}"
        ctx.out(line + "\n")
    return 0


def _pm_dump(ctx: Ctx, name: str) -> int:
    dev = _device(ctx)
    with dev.lock:
        state = dev.packages.get(name)
    if state is None:
        return 0
    pkg, sdk = state.pkg, dev.profile.sdk
    fmt = "%Y-%m-%d %H:%M:%S"
    when = {
        k: dev.local_time(v).strftime(fmt)
        for k, v in (("first", pkg.first_install), ("last", pkg.last_update))
    }
    code_path = (
        pkg.path if pkg.path.startswith("/system/framework/") else posixpath.dirname(pkg.path)
    )
    h = functools.partial(_stable_hex, pkg.name)
    out = []
    if pkg.launchable and pkg.component:
        out += [
            "Activity Resolver Table:",
            "  Non-Data Actions:",
            "      android.intent.action.MAIN:",
            f"        {h('act')} {pkg.component} filter {h('filter')}",
            '          Action: "android.intent.action.MAIN"',
            f'          Category: "{LAUNCHER_CATEGORY}"',
            "",
        ]
    out += [
        "Key Set Manager:",
        f"  [{pkg.name}]",
        f"      Signing KeySets: {int(h('ks'), 16) % 90 + 3}",
        "",
        "Packages:",
        f"  Package [{pkg.name}] ({h('ps')}):",
        f"    userId={pkg.uid}",
    ]
    if pkg.shared_user:
        out.append(f"    sharedUser=SharedUserSetting{{{h('su')} {pkg.shared_user}/{pkg.uid}}}")
    out += [
        f"    pkg=Package{{{h('pkg')} {pkg.name}}}",
        f"    codePath={code_path}",
        f"    resourcePath={code_path}",
        f"    legacyNativeLibraryDir={code_path}/lib",
        "    primaryCpuAbi=arm64-v8a"
        if not pkg.system or pkg.updated_system
        else "    primaryCpuAbi=null",
        "    secondaryCpuAbi=null",
        f"    versionCode={pkg.version_code} minSdk={pkg.min_sdk} targetSdk={pkg.target_sdk}",
        f"    versionName={pkg.version_name}",
        "    splits=[base]",
        "    apkSigningVersion=2",
        f"    applicationInfo=ApplicationInfo{{{h('ai')} {pkg.name}}}",
        f"    flags={_pkg_flags(pkg)}",
    ]
    priv = "/priv-app/" in pkg.path or pkg.shared_user == "android.uid.system"
    private = [
        "PRIVATE_FLAG_ACTIVITIES_RESIZE_MODE_RESIZEABLE_VIA_SDK_VERSION",
        "ALLOW_AUDIO_PLAYBACK_CAPTURE",
    ]
    if priv:
        private.append("PRIVILEGED")
    out += [
        "    privateFlags=[ " + " ".join(private) + " ]",
        f"    dataDir=/data/user/0/{pkg.name}",
        "    supportsScreens=[small, medium, large, xlarge, resizeable, anyDensity]",
        f"    timeStamp={when['last']}",
        f"    firstInstallTime={when['first']}",
        f"    lastUpdateTime={when['last']}",
    ]
    if pkg.installer:
        out.append(f"    installerPackageName={pkg.installer}")
    out += [
        f"    signatures=PackageSignatures{{{h('sig')} version:2, "
        f"signatures:[{_stable_hex(pkg.name, 'cert', length=8)}], past signatures:[]}}",
        "    installPermissionsFixed=true",
        f"    pkgFlags={_pkg_flags(pkg)}",
    ]
    distraction = " distractionFlags=0" if sdk >= 30 else ""
    out.append(
        f"    User 0: ceDataInode={int(h('inode'), 16) % 900000 + 100000} "
        f"installed={str(state.installed).lower()} "
        f"hidden=false suspended=false{distraction} stopped={str(state.stopped).lower()} "
        f"notLaunched=false enabled={state.enabled} instant=false virtual=false"
    )
    ctx.out("\n".join(out) + "\n")
    return 0


def _require_pkg(ctx: Ctx, args: list[str]) -> tuple[PackageState | None, str]:
    names = [a for a in args if not a.startswith("-") and not a.isdigit()]
    if not names:
        raise UsageError("Error: package name not specified")
    dev = _device(ctx)
    name = names[-1]
    return dev.packages.get(name), name


def _pm(ctx: Ctx, args: list[str]) -> int:
    dev = _device(ctx)
    if not args:
        ctx.out("Package manager (package) commands:\n  help\n    Print this help text.\n")
        return 0
    sub, rest = args[0], args[1:]
    if sub == "list":
        if rest and rest[0] == "packages":
            return _pm_list_packages(ctx, rest[1:])
        if rest and rest[0] == "users":
            ctx.out("Users:\n\tUserInfo{0:Owner:c13} running\n")
            return 0
        if rest and rest[0] == "features":
            ctx.out(
                "feature:android.hardware.telephony\nfeature:android.hardware.wifi\nfeature:reqGlEsVersion=0x30002\n"
            )
            return 0
        ctx.err(f"Error: unknown list type '{rest[0] if rest else ''}'\n")
        return 255
    if sub == "path":
        state, _ = _require_pkg(ctx, rest)
        if state is None or not state.installed:
            return 1
        ctx.out(f"package:{state.pkg.path}\n")
        return 0
    if sub == "dump":
        _, name = _require_pkg(ctx, rest)
        return _pm_dump(ctx, name)
    if sub == "resolve-activity":
        return _resolve_activity(ctx, rest)
    if sub in ("clear", "grant", "revoke", "trim-caches", "set-permission-enforced"):
        if sub == "clear":
            state, name = _require_pkg(ctx, rest)
            if state is None:
                ctx.out("Failed\n")
                return 1
            dev.force_stop(name)
            ctx.out("Success\n")
        return 0
    if sub in ("disable-user", "disable", "enable", "default-state", "disable-until-used"):
        state, name = _require_pkg(ctx, rest)
        if state is None:
            ctx.err(
                f"Exception occurred while executing '{sub}':\n"
                f"java.lang.IllegalArgumentException: Unknown package: {name}\n"
            )
            return 255
        new = {
            "enable": 1,
            "disable": 2,
            "disable-user": 3,
            "default-state": 0,
            "disable-until-used": 4,
        }[sub]
        if sub == "disable" and not ctx.cred.is_root:
            ctx.err(
                "Exception occurred while executing 'disable':\njava.lang.SecurityException: "
                f"Shell cannot change component state for {name} to 2\n"
            )
            return 255
        with dev.lock:
            state.enabled = new
        if new in (2, 3, 4):
            dev.force_stop(name)
        label = {
            0: "default",
            1: "enabled",
            2: "disabled",
            3: "disabled-user",
            4: "disabled-until-used",
        }[new]
        ctx.out(f"Package {name} new state: {label}\n")
        return 0
    if sub == "uninstall":
        state, name = _require_pkg(ctx, rest)
        if state is None or not state.installed:
            ctx.out("Failure [DELETE_FAILED_INTERNAL_ERROR]\n")
            return 1
        if state.pkg.system and "--user" not in rest:
            ctx.out("Failure [DELETE_FAILED_INTERNAL_ERROR]\n")
            return 1
        with dev.lock:
            if state.pkg.system or "--user" in rest:
                state.installed = False
            else:
                del dev.packages[name]
        dev.force_stop(name)
        ctx.out("Success\n")
        return 0
    if sub == "install-existing":
        state, name = _require_pkg(ctx, rest)
        if state is None:
            ctx.out("Failure [INSTALL_FAILED_INVALID_URI]\n")
            return 1
        with dev.lock:
            state.installed = True
        ctx.out(f"Package {name} installed for user: 0\n")
        return 0
    if sub == "install":
        ctx.out("Failure [INSTALL_FAILED_INVALID_APK: the virtual handset does not install APKs]\n")
        return 1
    ctx.err(f"Unknown command: {sub}\n")
    return 255


def _resolve_activity(ctx: Ctx, args: list[str]) -> int:
    dev = _device(ctx)
    brief = "--brief" in args
    names = [a for a in args if not a.startswith("-")]
    skip = {
        args[i + 1] for i, a in enumerate(args[:-1]) if a in ("-c", "-a", "--user", "--components")
    }
    names = [n for n in names if n not in skip]
    state = dev.packages.get(names[-1]) if names else None
    if (
        state is None
        or not state.pkg.launchable
        or not state.installed
        or state.enabled in (2, 3, 4)
        or not state.pkg.component
    ):
        ctx.out("No activity found\n")
        return 0
    pkg = state.pkg
    if brief:
        ctx.out(
            "priority=0 preferredOrder=0 match=0x108000 specificIndex=-1 isDefault=true\n"
            f"{pkg.name}/{pkg.activity}\n"
        )
    else:
        ctx.out(
            "  priority=0 preferredOrder=0 match=0x108000 specificIndex=-1 isDefault=true\n"
            f"  ActivityInfo:\n    name={pkg.activity}\n    packageName={pkg.name}\n"
            "    enabled=true exported=true directBootAware=false\n"
        )
    return 0


@ANDROID.command("pm")
def _pm_cmd(ctx: Ctx) -> int:
    return _pm(ctx, ctx.args)


# ---- activities ------------------------------------------------------------------------------


def _safe_uri(uri: str) -> str:
    """``Uri.toSafeString``: http(s) URIs lose everything after the host."""
    m = re.match(r"(?i)(https?|ftp|rtsp)://([^/?#]*)", uri)
    if m:
        return f"{m.group(1)}://{m.group(2)}/..."
    return uri


def _parse_intent(args: list[str]) -> tuple[dict[str, str], list[str]]:
    intent: dict[str, str] = {}
    rest: list[str] = []
    i = 0
    keyed = {
        "-a": "act",
        "-d": "dat",
        "-t": "typ",
        "-c": "cat",
        "-n": "cmp",
        "-f": "flg",
        "-p": "pkg",
    }
    value_opts = {
        "--user",
        "--es",
        "--ez",
        "--ei",
        "--el",
        "--ef",
        "--eu",
        "--ecn",
        "--esa",
        "--eia",
        "-e",
        "--receiver-permission",
        "-P",
        "--start-profiler",
        "--sampling",
        "-R",
        "--display",
        "--windowingMode",
        "--activityType",
        "--task",
    }
    while i < len(args):
        arg = args[i]
        if arg in keyed and i + 1 < len(args):
            intent[keyed[arg]] = args[i + 1]
            i += 2
        elif arg in value_opts:
            i += 3 if arg.startswith("--e") or arg == "-e" else 2
            if arg.startswith(("--e", "-e")):
                intent["extras"] = "1"
        elif arg.startswith("-"):
            i += 1
        else:
            rest.append(arg)
            i += 1
    return intent, rest


def _intent_extras(args: list[str]) -> dict[str, str]:
    """The extras of an ``am`` intent (``-e``/``--es``, ``--ez``, ``--ei``, ...), as strings."""
    extras: dict[str, str] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in ("-e", "--es", "--ez", "--ei", "--el", "--ef", "--eu") and i + 2 < len(args):
            extras[args[i + 1]] = args[i + 2]
            i += 3
        elif arg == "--esn" and i + 1 < len(args):
            extras[args[i + 1]] = ""
            i += 2
        else:
            i += 1
    return extras


def _intent_string(intent: Mapping[str, str]) -> str:
    parts = []
    if "act" in intent:
        parts.append(f"act={intent['act']}")
    if "cat" in intent:
        parts.append(f"cat=[{intent['cat']}]")
    if "dat" in intent:
        parts.append(f"dat={_safe_uri(intent['dat'])}")
    if "typ" in intent:
        parts.append(f"typ={intent['typ']}")
    if "flg" in intent:
        parts.append(f"flg={intent['flg']}")
    if "pkg" in intent:
        parts.append(f"pkg={intent['pkg']}")
    if "cmp" in intent:
        parts.append(f"cmp={intent['cmp']}")
    if "extras" in intent:
        parts.append("(has extras)")
    return "Intent { " + " ".join(parts) + " }"


def _am_start(ctx: Ctx, args: list[str]) -> int:
    dev = _device(ctx)
    intent, rest = _parse_intent(args)
    if rest and "dat" not in intent and "cmp" not in intent:
        intent["dat"] = rest[0]
    ctx.out(f"Starting: {_intent_string(intent)}\n")
    if "cmp" in intent:
        pkg, _, cls = intent["cmp"].partition("/")
        full = pkg + cls if cls.startswith(".") else cls
        state = dev.packages.get(pkg)
        if state is None or not state.installed or state.enabled in (2, 3, 4) or not cls:
            ctx.err(f"Error type 3\nError: Activity class {{{pkg}/{full}}} does not exist.\n")
            return 0
        if (pkg, full) == (PCAPDROID, PCAPDROID_CTRL):
            # a dialog-themed activity: it carries the request out and finishes, and the
            # activity below stays in front
            shown = _intent_string({**intent, "flg": "0x10000000"})[len("Intent { ") : -2]
            dev.pcapdroid.request(_intent_extras(args), caller_uid=ctx.cred.uid, intent=shown)
            return 0
        dev.launch(
            pkg,
            full,
            caller_uid=ctx.cred.uid,
            action=intent.get("act", "android.intent.action.MAIN"),
            category=intent.get("cat"),
            data=intent.get("dat"),
        )
        return 0
    action = intent.get("act", "")
    data = intent.get("dat", "")
    target: Package | None = None
    if action == "android.intent.action.VIEW" and re.match(r"(?i)https?://", data):
        state = dev.packages.get(intent.get("pkg") or dev.profile.browser)
        target = state.pkg if state and state.installed and state.enabled in (0, 1) else None
    elif intent.get("pkg"):
        state = dev.packages.get(intent["pkg"])
        target = state.pkg if state and state.pkg.launchable else None
    if target is None or not target.activity:
        ctx.err(f"Error: Activity not started, unable to resolve {_intent_string(intent)}\n")
        return 0
    dev.launch(
        target.name,
        target.activity,
        caller_uid=ctx.cred.uid,
        action=action or "android.intent.action.MAIN",
        category=intent.get("cat"),
        data=data or None,
    )
    return 0


def _am(ctx: Ctx, args: list[str]) -> int:
    dev = _device(ctx)
    if not args:
        ctx.out("Activity manager (activity) commands:\n  help\n      Print this help text.\n")
        return 0
    sub, rest = args[0], args[1:]
    if sub in ("start", "start-activity"):
        return _am_start(ctx, rest)
    if sub in ("force-stop", "kill", "stop-app"):
        names = [a for a in rest if not a.startswith("-") and not a.isdigit()]
        for name in names:
            dev.force_stop(name, caller_pid=ctx.shell.pid)
        return 0
    if sub == "broadcast":
        intent, _ = _parse_intent(rest)
        shown = dict(intent)
        shown["flg"] = "0x400000"
        ctx.out(f"Broadcasting: {_intent_string(shown)}\nBroadcast completed: result=0\n")
        if intent.get("act") == "android.intent.action.AIRPLANE_MODE":
            dev.log(
                "ActivityManager",
                "Broadcast AIRPLANE_MODE from uid " + str(ctx.cred.uid),
                priority="D",
            )
        return 0
    if sub == "get-current-user":
        ctx.out("0\n")
        return 0
    if sub == "stack" or sub == "task":
        return 0
    ctx.err(f"Unknown command: {sub}\n")
    return 255


@ANDROID.command("am")
def _am_cmd(ctx: Ctx) -> int:
    return _am(ctx, ctx.args)


@ANDROID.command("monkey")
def _monkey(ctx: Ctx) -> int:
    dev = _device(ctx)
    args = ctx.args
    for a in args:
        ctx.out(f"  bash arg: {a}\n")
    ctx.out(f"args: [{', '.join(args)}]\n" + "".join(f' arg: "{a}"\n' for a in args))
    pkgs = [args[i + 1] for i, a in enumerate(args[:-1]) if a == "-p"]
    cats = [args[i + 1] for i, a in enumerate(args[:-1]) if a == "-c"]
    ctx.out("".join(f'data="{v}"\n' for v in pkgs + cats))
    target = None
    for name in pkgs:
        state = dev.packages.get(name)
        if (
            state
            and state.installed
            and state.enabled in (0, 1)
            and state.pkg.launchable
            and state.pkg.activity
        ):
            target = state.pkg
    if target is None or target.activity is None:
        ctx.err("** No activities found to run, monkey aborted.\n")
        return 251
    dev.launch(target.name, target.activity, caller_uid=ctx.cred.uid)
    ctx.out(
        "Events injected: 1\n"
        "## Network stats: elapsed time=22ms (0ms mobile, 0ms wifi, 22ms not connected)\n"
    )
    return 0


KEYCODES = {
    "HOME": 3,
    "BACK": 4,
    "POWER": 26,
    "WAKEUP": 224,
    "SLEEP": 223,
    "MENU": 82,
    "APP_SWITCH": 187,
    "ENTER": 66,
    "VOLUME_UP": 24,
    "VOLUME_DOWN": 25,
    "VOLUME_MUTE": 164,
}


@ANDROID.command("input")
def _input(ctx: Ctx) -> int:
    dev = _device(ctx)
    args = list(ctx.args)
    if args and args[0] in (
        "touchscreen",
        "keyboard",
        "mouse",
        "trackball",
        "stylus",
        "dpad",
        "gamepad",
        "touchpad",
    ):
        args = args[1:]
    if args[:1] == ["-d"]:
        args = args[2:]
    if not args:
        ctx.err("Usage: input [<source>] [-d DISPLAY_ID] <command> [<arg>...]\n")
        return 1
    sub, rest = args[0], args[1:]
    need = {
        "tap": 2,
        "swipe": 4,
        "draganddrop": 4,
        "text": 1,
        "keyevent": 1,
        "press": 0,
        "roll": 2,
        "motionevent": 3,
        "keycombination": 2,
    }
    if sub not in need or len(rest) < need[sub]:
        ctx.err(
            f"Error: Unknown command: {sub}\n"
            if sub not in need
            else f"Error: Invalid arguments for command: {sub}\n"
        )
        return 1
    if sub == "keyevent":
        for key in [r for r in rest if r not in ("--longpress", "--doubletap")]:
            code = KEYCODES.get(key.removeprefix("KEYCODE_"), int(key) if key.isdigit() else -1)
            if code in (3, 4):
                dev.go_home()
            elif code == 26:
                if dev.screen_on:
                    dev.screen_on = False
                else:
                    dev.wake()
            elif code == 224:
                dev.wake()
            elif code == 223:
                dev.screen_on = False
    return 0


def _activity_record(dev: VirtualDevice) -> str:
    pkg, cls = dev.foreground
    short = dev._short(pkg, cls)
    return f"ActivityRecord{{{_stable_hex(short, dev._task_id)} u0 {short} t{dev._task_id}}}"


def _dumpsys_activity(dev: VirtualDevice, args: list[str]) -> str:
    with dev.lock:
        pkg, cls = dev.foreground
        record = _activity_record(dev)
        proc = dev._process_of(pkg)
        short = dev._short(pkg, cls)
        task = dev._task_id
    if args and args[0] == "top":
        pid = proc.pid if proc else 0
        token = _stable_hex(short, task)
        return f"TASK {pkg} id={task} userId=0\n  ACTIVITY {short} {token} pid={pid}\n"
    if args and args[0] in ("services", "s"):
        return _dumpsys_services(dev, args[1:])
    if args and args[0] in ("processes", "p"):
        with dev.lock:
            procs = sorted(dev.processes.values(), key=lambda p: p.pid)
        lines = [
            "ACTIVITY MANAGER RUNNING PROCESSES (dumpsys activity processes)",
            "  All known processes:",
        ]
        lines += [
            f"  *APP* UID {p.uid} ProcessRecord{{{_stable_hex(p.pid)} "
            f"{p.pid}:{p.name}/{user_name(p.uid).replace('_', '')}}}"
            for p in procs
            if p.uid >= 10000 or p.name == "system_server"
        ]
        return "\n".join(lines) + "\n"
    return (
        "ACTIVITY MANAGER ACTIVITIES (dumpsys activity activities)\n"
        "Display #0 (activities from top to bottom):\n\n"
        f"  Stack #{task}: type=standard mode=fullscreen\n"
        "  isSleeping=false\n"
        "  mBounds=Rect(0, 0 - 0, 0)\n"
        f"    Task id #{task}\n"
        f"    * TaskRecord{{{_stable_hex('task', task)} #{task} A={pkg} U=0 StackId={task} sz=1}}\n"
        f"      affinity={pkg}\n"
        f"      realActivity={short}\n"
        f"        * Hist #0: {record}\n"
        f"          packageName={pkg} processName={pkg}\n"
        f"          launchedFromUid=2000 launchedFromPackage=null userId=0\n\n"
        f"    mResumedActivity: {record}\n\n"
        f"  ResumedActivity: {record}\n"
    )


def _dumpsys_services(dev: VirtualDevice, args: list[str]) -> str:
    """``dumpsys activity services [PACKAGE]``: the running services the phone models (a
    capture's VPN service)."""
    head = "ACTIVITY MANAGER SERVICES (dumpsys activity services)\n"
    wanted = [a for a in args if not a.startswith("-")]
    if not dev.pcapdroid.running or (wanted and wanted[0] not in (PCAPDROID, PCAPDROID_SERVICE)):
        return head + "  (nothing)\n"
    with dev.lock:
        proc = dev._process_of(PCAPDROID)
        uid = dev.packages[PCAPDROID].pkg.uid
    pid = proc.pid if proc else 0
    record = f"ServiceRecord{{{_stable_hex('svc', PCAPDROID_SERVICE)} u0 {PCAPDROID_SERVICE}}}"
    return (
        head
        + "  User 0 active services:\n"
        + f"  * {record}\n"
        + f"    intent={{cmp={PCAPDROID_SERVICE}}}\n"
        + f"    packageName={PCAPDROID}\n"
        + f"    processName={PCAPDROID}\n"
        + "    permission=android.permission.BIND_VPN_SERVICE\n"
        + f"    app=ProcessRecord{{{_stable_hex(pid)} {pid}:{PCAPDROID}/"
        + f"{user_name(uid).replace('_', '')}}}\n"
        + "    isForeground=true foregroundId=1 types=0x00000000\n"
    )


def _dumpsys_window(dev: VirtualDevice) -> str:
    with dev.lock:
        pkg, cls = dev.foreground
        short = dev._short(pkg, cls)
        record = _activity_record(dev)
        sdk = dev.profile.sdk
        owner = dev.packages[pkg].pkg.uid if pkg in dev.packages else 1000
    win = f"Window{{{_stable_hex('win', short)} u0 {short}}}"
    focused = (
        f"AppWindowToken{{{_stable_hex('awt', short)} "
        f"token=Token{{{_stable_hex('tok', short)} {record}}}}}"
        if sdk <= 29
        else record
    )
    return (
        "WINDOW MANAGER WINDOWS (dumpsys window windows)\n"
        f"  Window #0 {win}:\n"
        "    mDisplayId=0 rootTaskId=1 mSession=Session{2a4c5d1 1480:1000} "
        "mClient=android.os.BinderProxy@7b3a9f2\n"
        f"    mOwnerUid={owner} showForAllUsers=false package={pkg} appop=NONE\n"
        "    mHasSurface=true isReadyForDisplay()=true mWindowRemovalAllowed=false\n\n"
        f"  mCurrentFocus={win}\n"
        f"  mFocusedApp={focused}\n"
    )


def _dumpsys_package(ctx: Ctx, args: list[str]) -> int:
    names = [a for a in args if not a.startswith("-")]
    dev = _device(ctx)
    if names and names[0] not in ("packages", "p"):
        return _pm_dump(ctx, names[0])
    for name in list(dev.packages):
        _pm_dump(ctx, name)
    return 0


@ANDROID.command("dumpsys")
def _dumpsys(ctx: Ctx) -> int:
    dev = _device(ctx)
    args = list(ctx.args)
    if not args or args == ["-l"]:
        ctx.out("Currently running services:\n" + "".join(f"  {name}\n" for name, _ in SERVICES))
        return 0
    service, rest = args[0], args[1:]
    p = dev.profile
    if service == "package":
        return _dumpsys_package(ctx, rest)
    if service == "activity":
        ctx.out(_dumpsys_activity(dev, rest))
    elif service == "window":
        ctx.out(_dumpsys_window(dev))
    elif service == "battery":
        ctx.out(
            "Current Battery Service state:\n  AC powered: false\n  USB powered: true\n"
            "  Wireless powered: false\n  Max charging current: 500000\n"
            "  Max charging voltage: 5000000\n  Charge counter: 3210000\n  status: 2\n"
            "  health: 2\n  present: true\n  level: 85\n  scale: 100\n  voltage: 4211\n"
            "  temperature: 284\n  technology: Li-ion\n"
        )
    elif service == "power":
        on = "true" if dev.screen_on else "false"
        ctx.out(
            "POWER MANAGER (dumpsys power)\n\nPower Manager State:\n"
            f"  mWakefulness={'Awake' if dev.screen_on else 'Asleep'}\n"
            f"  mHoldingDisplaySuspendBlocker={on}\n  mHoldingWakeLockSuspendBlocker=false\n"
        )
    elif service == "display":
        w, h = p.display.width, p.display.height
        ctx.out(
            "DISPLAY MANAGER (dumpsys display)\n"
            "  mViewports=[DisplayViewport{type=INTERNAL, valid=true, isActive=true, "
            "displayId=0, uniqueId='local:4619827259835644672', physicalPort=0, orientation=0, "
            f"logicalFrame=Rect(0, 0 - {w}, {h}), physicalFrame=Rect(0, 0 - {w}, {h}), "
            f"deviceWidth={w}, deviceHeight={h}}}]\n"
        )
    elif service == "SurfaceFlinger" and "--display-id" in rest:
        ctx.out(
            "Display 4619827259835644672 (HWC display 0): port=0 pnpId=QCM "
            f'displayName="{p.props.get("ro.product.model", "")}"\n'
        )
    elif service in dict(SERVICES):
        ctx.out(f"{service} state: (no details in the virtual handset)\n")
    else:
        ctx.err(f"Can't find service: {service}\n")
    return 0


# ---- cmd -------------------------------------------------------------------------------------


@ANDROID.command("cmd")
def _cmd(ctx: Ctx) -> int:
    dev = _device(ctx)
    if not ctx.args:
        ctx.err(
            "cmd: No service specified; use -l to list all running services. "
            "Use -w to start and wait for a service.\n"
        )
        return 20
    if ctx.args[0] == "-l":
        ctx.out("Currently running services:\n" + "".join(f"  {name}\n" for name, _ in SERVICES))
        return 0
    service, rest = ctx.args[0], list(ctx.args[1:])
    if service == "package":
        return _pm(ctx, rest)
    if service == "activity":
        return _am(ctx, rest)
    if service == "settings":
        return _settings(Ctx(["settings", *rest], ctx.shell, ctx.fds, ctx.env))
    if service == "connectivity":
        if rest[:1] == ["airplane-mode"]:
            if len(rest) == 1:
                ctx.out(
                    "enabled\n"
                    if dev.get_setting("global", "airplane_mode_on") == "1"
                    else "disabled\n"
                )
                return 0
            if rest[1] in ("enable", "disable"):
                dev.put_setting(
                    "global",
                    "airplane_mode_on",
                    "1" if rest[1] == "enable" else "0",
                    uid=ctx.cred.uid,
                )
                return 0
        ctx.err(f"Unknown command: {' '.join(rest)}\n")
        return 255
    if service in dict(SERVICES):
        return 0
    ctx.err(f"cmd: Can't find service: {service}\n")
    return 20


@ANDROID.command("wm")
def _wm(ctx: Ctx) -> int:
    d = _device(ctx).profile.display
    if ctx.args[:1] == ["size"]:
        ctx.out(f"Physical size: {d.width}x{d.height}\n")
    elif ctx.args[:1] == ["density"]:
        ctx.out(f"Physical density: {d.density}\n")
    return 0


# ---- binder services -------------------------------------------------------------------------

SERVICES: tuple[tuple[str, str], ...] = (
    ("SurfaceFlinger", "android.ui.ISurfaceComposer"),
    ("account", "android.accounts.IAccountManager"),
    ("activity", "android.app.IActivityManager"),
    ("activity_task", "android.app.IActivityTaskManager"),
    ("appops", "com.android.internal.app.IAppOpsService"),
    ("battery", ""),
    ("clipboard", "android.content.IClipboard"),
    ("connectivity", "android.net.IConnectivityManager"),
    ("display", "android.hardware.display.IDisplayManager"),
    ("input", "android.hardware.input.IInputManager"),
    ("iphonesubinfo", "com.android.internal.telephony.IPhoneSubInfo"),
    ("isub", "com.android.internal.telephony.ISub"),
    ("location", "android.location.ILocationManager"),
    ("netstats", "android.net.INetworkStatsService"),
    ("notification", "android.app.INotificationManager"),
    ("package", "android.content.pm.IPackageManager"),
    ("phone", "com.android.internal.telephony.ITelephony"),
    ("power", "android.os.IPowerManager"),
    ("settings", ""),
    ("statusbar", "com.android.internal.statusbar.IStatusBarService"),
    ("wifi", "android.net.wifi.IWifiManager"),
    ("window", "android.view.IWindowManager"),
)

# IPhoneSubInfo transaction codes (AIDL declaration order) that return an identifier.
IPHONESUBINFO: dict[int, dict[int, tuple[str, str, str]]] = {
    29: {
        1: ("getDeviceId", "getDeviceId", "imei"),
        3: ("getDeviceIdForPhone", "getDeviceId", "imei_for_phone"),
        4: ("getImeiForSubscriber", "getImei", "imei"),
        12: ("getLine1Number", "getLine1Number", "line1"),
    },
    30: {
        1: ("getDeviceId", "getDeviceId", "imei"),
        2: ("getDeviceIdWithFeature", "getDeviceId", "imei"),
        4: ("getDeviceIdForPhone", "getDeviceId", "imei_for_phone"),
        5: ("getImeiForSubscriber", "getImei", "imei"),
        15: ("getLine1Number", "getLine1Number", "line1"),
    },
}


def _parse_call_args(args: list[str]) -> list[int | str]:
    values: list[int | str] = []
    i = 0
    while i < len(args):
        kind = args[i]
        if kind in ("i32", "i64") and i + 1 < len(args):
            values.append(int(args[i + 1], 0))
            i += 2
        elif kind in ("s16", "f", "d") and i + 1 < len(args):
            values.append(args[i + 1])
            i += 2
        elif kind == "null":
            values.append("")
            i += 1
        else:
            raise UsageError(f"service: unknown option {kind}")
    return values


def _iphonesubinfo(dev: VirtualDevice, code: int, args: list[int | str], cred: Cred) -> bytes:
    sdk = dev.profile.sdk
    table = IPHONESUBINFO[29 if sdk <= 29 else 30]
    entry = table.get(code)
    if entry is None:
        return struct.pack("<i", 0) + parcel_string16(None)
    _, label, what = entry
    ids = dev.profile.identifiers
    if what == "line1":
        return struct.pack("<i", 0) + parcel_string16(ids.phone_number)
    if sdk >= 29 and not cred.is_root:
        who = "uid" if sdk >= 33 else "user"
        message = (
            f"{label}: The {who} {cred.uid} does not meet the requirements"
            " to access device identifiers."
        )
        return struct.pack("<i", -1) + parcel_string16(message) + struct.pack("<i", 0)
    value = ids.imei
    if what == "imei_for_phone" and args and isinstance(args[0], int) and args[0] == 1:
        value = ids.imei2 or ids.imei
    return struct.pack("<i", 0) + parcel_string16(value)


@ANDROID.command("service")
def _service(ctx: Ctx) -> int:
    dev = _device(ctx)
    args = ctx.args
    if not args or args[0] in ("-h", "-?"):
        ctx.err(
            "Usage: service [-h|-?]\n"
            "       service list\n"
            "       service check SERVICE\n"
            "       service call SERVICE CODE [i32 N | i64 N | f N | d N | s16 STR | null "
            "| fd f | nfd n | afd f ] ...\n"
        )
        return 0
    known = dict(SERVICES)
    if args[0] == "list":
        ctx.out(
            f"Found {len(SERVICES)} services:\n"
            + "".join(f"{i}\t{n}: [{iface}]\n" for i, (n, iface) in enumerate(SERVICES))
        )
        return 0
    if args[0] == "check" and len(args) > 1:
        ctx.out(f"Service {args[1]}: {'found' if args[1] in known else 'not found'}\n")
        return 0
    if args[0] == "call" and len(args) >= 3:
        name = args[1]
        if name not in known:
            ctx.err(f"service: Service {name} does not exist\n")
            return 10
        code = int(args[2], 0)
        values = _parse_call_args(args[3:])
        if name == "iphonesubinfo":
            reply = _iphonesubinfo(dev, code, values, ctx.cred)
        else:
            reply = struct.pack("<i", 0)
        ctx.out(f"Result: {parcel_dump(reply)}\n")
        return 0
    ctx.err(f"service: Unknown command {args[0]}\n")
    return 10


# ---- logcat ----------------------------------------------------------------------------------


@dataclass(slots=True)
class LogFormat:
    style: str = "threadtime"
    epoch: bool = False
    monotonic: bool = False
    uid: bool = False
    usec: bool = False
    nsec: bool = False
    year: bool = False
    utc: bool = False
    zone: bool = False


def format_log_line(entry: LogEntry, fmt: LogFormat, dev: VirtualDevice) -> str:
    """One entry as ``android_log_formatLogLine`` prints it (liblog logprint.cpp)."""
    ts = entry.ts
    sec = int(ts)
    nsec = round((ts - sec) * 1e9)
    if fmt.epoch or fmt.monotonic:
        shown = sec - int(dev.boot_time) if fmt.monotonic else sec
        time_buf = f"{shown:6d}" if fmt.monotonic else f"{shown:19d}"
        when = None
    else:
        when = _dt.datetime.fromtimestamp(sec, _dt.UTC) if fmt.utc else dev.local_time(sec)
        time_buf = when.strftime("%Y-%m-%d %H:%M:%S" if fmt.year else "%m-%d %H:%M:%S")
    if fmt.nsec:
        time_buf += f".{nsec:09d}"
    elif fmt.usec:
        time_buf += f".{nsec // 1000:06d}"
    else:
        time_buf += f".{nsec // 1000000:03d}"
    if fmt.zone and when is not None:
        time_buf += " " + when.strftime("%z")
    uid = ""
    if fmt.uid:
        name = user_name(entry.uid)
        uid = f"{name:>5}:" if entry.uid in AID_NAMES and len(name) <= 5 else f"{entry.uid:5d}:"
    p, tag = entry.priority, entry.tag
    style = fmt.style
    if style == "threadtime":
        uid = uid.replace(":", " ", 1)
        prefix, suffix = f"{time_buf} {uid}{entry.pid:5d} {entry.tid:5d} {p} {tag:<8}: ", ""
    elif style == "time":
        prefix, suffix = f"{time_buf} {p}/{tag:<8}({uid}{entry.pid:5d}): ", ""
    elif style == "tag":
        prefix, suffix = f"{p}/{tag:<8}: ", ""
    elif style == "process":
        prefix, suffix = f"{p}({uid}{entry.pid:5d}) ", f"  ({tag})"
    elif style == "thread":
        prefix, suffix = f"{p}({uid}{entry.pid:5d}:{entry.tid:5d}) ", ""
    elif style == "raw":
        prefix, suffix = "", ""
    elif style == "long":
        return (
            f"[ {time_buf} {uid}{entry.pid:5d}:{entry.tid:5d} {p}/{tag:<8} ]\n{entry.message}\n\n"
        )
    else:
        prefix, suffix = f"{p}/{tag:<8}({uid}{entry.pid:5d}): ", ""
    return "".join(f"{prefix}{line}{suffix}\n" for line in entry.message.split("\n"))


def _log_filter(specs: list[str]) -> Callable[[LogEntry], bool]:
    rules: dict[str, int] = {}
    default = 0
    for spec in specs:
        tag, _, prio = spec.partition(":")
        level = PRIORITIES.index(prio.upper()[:1]) if prio else 0
        if tag == "*":
            default = level
        else:
            rules[tag] = level
    if not specs:
        return lambda e: True
    return lambda e: (
        PRIORITIES.index(e.priority) >= rules.get(e.tag, default) and rules.get(e.tag, default) < 6
    )


@ANDROID.command("logcat")
def _logcat(ctx: Ctx) -> int:
    dev = _device(ctx)
    args = list(ctx.args)
    buffers: list[str] = []
    fmt = LogFormat()
    dump = clear = False
    tail: int | None = None
    follow_tail = False
    specs: list[str] = []
    pid_filter: int | None = None
    regex: re.Pattern[str] | None = None
    out_file: str | None = None
    i = 0

    def value() -> str:
        nonlocal i
        arg = args[i]
        if len(arg) > 2 and not arg.startswith("--"):
            return arg[2:]
        if "=" in arg and arg.startswith("--"):
            return arg.split("=", 1)[1]
        i += 1
        if i >= len(args):
            raise UsageError(f"option requires an argument -- '{arg.lstrip('-')}'")
        return args[i]

    while i < len(args):
        arg = args[i]
        if arg.startswith(("-b", "--buffer")):
            buffers += value().split(",")
        elif arg.startswith(("-v", "--format")):
            for word in value().split(","):
                word = word.strip()
                if word in (
                    "brief",
                    "process",
                    "tag",
                    "thread",
                    "raw",
                    "time",
                    "threadtime",
                    "long",
                ):
                    fmt.style = word
                elif word in ("epoch", "monotonic", "uid", "usec", "nsec", "year", "zone"):
                    setattr(fmt, word, True)
                elif word == "UTC":
                    fmt.utc = True
                elif word not in ("color", "printable", "descriptive"):
                    return ctx.error(f'Invalid parameter "{word}" to -v.')
        elif arg in ("-d", "--dump"):
            dump = True
        elif arg in ("-c", "--clear"):
            clear = True
        elif arg.startswith("-t") and not arg.startswith("--"):
            tail, dump = int(value()), True
        elif arg.startswith("-T"):
            tail, follow_tail = int(value()), True
        elif arg == "-s":
            specs.insert(0, "*:S")
        elif arg.startswith("--pid"):
            pid_filter = int(value())
        elif arg.startswith(("-e", "--regex")):
            regex = re.compile(value())
        elif arg.startswith("-f") or arg.startswith("--file"):
            out_file = ctx.abspath(value())
        elif arg in (
            "-D",
            "--dividers",
            "-B",
            "--binary",
            "-S",
            "--statistics",
            "-g",
            "--buffer-size",
        ):
            pass
        elif arg.startswith("-"):
            return ctx.error(f"invalid option -- '{arg.lstrip('-')[:1]}'")
        else:
            specs.append(arg)
        i += 1
    if "all" in buffers:
        wanted: tuple[str, ...] = LOG_BUFFERS
    elif "default" in buffers or not buffers:
        wanted = DEFAULT_BUFFERS + tuple(b for b in buffers if b != "default")
    else:
        wanted = tuple(buffers)
    if clear:
        with dev._log_cond:
            dev._logs[:] = [(s, e) for s, e in dev._logs if e.buffer not in wanted]
        return 0
    keep = _log_filter(specs)

    def wanted_entry(e: LogEntry) -> bool:
        return (
            e.buffer in wanted
            and keep(e)
            and (pid_filter is None or e.pid == pid_filter)
            and (regex is None or bool(regex.search(e.message)))
        )

    started: set[str] = set()

    def emit(entries: list[LogEntry]) -> None:
        text = []
        for e in entries:
            if e.buffer not in started:
                started.add(e.buffer)
                text.append(f"--------- beginning of {e.buffer}\n")
            text.append(format_log_line(e, fmt, dev))
        if not text:
            return
        data = "".join(text)
        if out_file:
            ctx.fs.write(out_file, data.encode(), ctx.cred, append=True, mode=0o666)
        else:
            ctx.out(data)

    snapshot = dev.log_entries()
    last = snapshot[-1][0] if snapshot else 0
    entries = sorted((e for _, e in snapshot if wanted_entry(e)), key=lambda e: e.ts)
    if tail is not None:
        entries = entries[-tail:] if tail else []
    emit(entries)
    if dump and not follow_tail:
        return 0
    while not ctx.cancelled():
        with dev._log_cond:
            if not dev._logs or dev._logs[-1][0] <= last:
                dev._log_cond.wait(0.1)
        fresh = dev.log_entries(last)
        if fresh:
            last = fresh[-1][0]
            emit([e for _, e in fresh if wanted_entry(e)])
    return 0


# ---- screen ----------------------------------------------------------------------------------


def _screen_colour(dev: VirtualDevice) -> tuple[int, int, int, int]:
    if not dev.screen_on:
        return (0, 0, 0, 255)
    digest = hashlib.sha256(dev.foreground[0].encode()).digest()
    return (digest[0], digest[1], digest[2], 255)


@ANDROID.command("screencap")
def _screencap(ctx: Ctx) -> int:
    dev = _device(ctx)
    opts, rest = ctx.getopt("phd:")
    d = dev.profile.display
    width, height = max(1, d.width // 10), max(1, d.height // 10)
    colour = _screen_colour(dev)
    png = "p" in opts or (rest and rest[0].endswith(".png"))
    data = (
        solid_png(width, height, colour)
        if png
        else raw_rgba(width, height, colour, dev.profile.sdk)
    )
    if rest:
        try:
            ctx.fs.write(ctx.abspath(rest[0]), data, ctx.cred, mode=0o660)
        except OSError as exc:
            return ctx.error(f"Error opening file: {rest[0]} ({exc.strerror})")
        return 0
    ctx.out(data)
    return 0


# ---- packet capture --------------------------------------------------------------------------

TCPDUMP_VERSION = "tcpdump version 4.99.4\nlibpcap version 1.10.4 (with TPACKET_V3)\n"
TCPDUMP_IFACES = (
    "1.wlan0 [Up, Running, Wireless, Associated]\n"
    "2.any (Pseudo-device that captures on all interfaces) [Up, Running]\n"
    "3.lo [Up, Running, Loopback]\n"
)
WLAN_IFINDEX = 30  # as `ip addr` numbers wlan0
STDIO_BUFFER = 4096  # what tcpdump's stdio holds back without -U


def _is_loopback(addr: str) -> bool:
    return addr.startswith("127.") or addr == "::1"


def _tcpdump_line(p: Packet, iface: str, dev: VirtualDevice) -> str:
    when = dev.local_time(p.ts).strftime("%H:%M:%S.%f")
    loop = _is_loopback(p.src) and _is_loopback(p.dst)
    where = ""
    if iface == "any":
        out = not loop and p.src == dev.profile.network.wlan_ipv4
        where = f"{'lo' if loop else 'wlan0':<5} {'Out' if out else 'In':<3} "  # print-sll.c
    family = "IP6" if ":" in p.src else "IP"
    head = f"{when} {where}{family} {p.src}.{p.sport} > {p.dst}.{p.dport}:"
    if p.proto == "udp":
        return f"{head} UDP, length {len(p.payload)}\n"
    flags = "S" if "S" in p.flags else "F." if "F" in p.flags else "P."
    return f"{head} Flags [{flags}], length {len(p.payload)}\n"


@ANDROID.command("tcpdump")
def _tcpdump(ctx: Ctx) -> int:
    """tcpdump as on a rooted or userdebug image: it captures what the network stack logs
    (``VirtualDevice.packet_log``), from the moment it starts until it is stopped."""
    # Imported here: the packets package brings pandas, which the rest of the phone never needs.
    from auditor.packets.pcapwrite import (
        DEFAULT_SNAPLEN,
        LINKTYPE_ETHERNET,
        LINKTYPE_LINUX_SLL2,
        global_header,
        record,
    )
    from vhandset.synth import LinkIface, PacketSynth, mac_bytes

    dev = _device(ctx)
    opts, rest = ctx.getopt("i:s:w:c:y:Z:B:C:W:G:nNpqUvlSKD", ("version", "help"))
    if "version" in opts or "help" in opts:
        ctx.out(TCPDUMP_VERSION)
        return 0
    if "D" in opts:
        ctx.out(TCPDUMP_IFACES)
        return 0
    iface = opts.get("i", "wlan0")
    if iface not in ("any", "wlan0", "lo"):
        return ctx.error(f"{iface}: No such device exists\n(SIOCGIFHWADDR: No such device)")
    if not ctx.cred.is_root:
        return ctx.error(
            f"{iface}: You don't have permission to capture on that device\n"
            "(socket: Operation not permitted)"
        )
    if rest:
        return ctx.error("filter expressions are not supported by this build")
    linktype = LINKTYPE_LINUX_SLL2 if iface == "any" else LINKTYPE_ETHERNET
    wanted_dlt = {"LINUX_SLL2": LINKTYPE_LINUX_SLL2, "EN10MB": LINKTYPE_ETHERNET}
    if "y" in opts and wanted_dlt.get(opts["y"].upper()) != linktype:
        return ctx.error(f"{opts['y']} is not one of the DLTs supported by this device")
    try:
        snaplen = int(opts.get("s") or 0) or DEFAULT_SNAPLEN  # -s 0: the default
        count = int(opts["c"]) if "c" in opts else None
    except ValueError:
        return ctx.error("invalid number")
    packet_log = dev.packet_log
    if packet_log is None:
        return ctx.error(f"{iface}: That device is not up")
    net = dev.profile.network
    gateway = net.gateway or net.wlan_ipv4
    synth = PacketSynth(
        linktype,
        local=[net.wlan_ipv4, "127.0.0.1"],
        iface=LinkIface("wlan0", WLAN_IFINDEX, mac_bytes(dev.profile.identifiers.wifi_mac)),
        gateway_mac=b"\x02" + hashlib.sha256(gateway.encode()).digest()[:5],
    )
    target = opts.get("w")
    binary = target is not None
    if target in (None, "-"):
        write: Callable[[bytes], None] = ctx.out
    else:
        path = ctx.abspath(target)
        try:
            ctx.fs.write(path, b"", ctx.cred, mode=0o644)
        except OSError as exc:
            return ctx.error(f"{target}: {exc.strerror}")

        def write(data: bytes) -> None:
            ctx.fs.write(path, data, ctx.cred, append=True)

    pending = bytearray(global_header(linktype, snaplen=snaplen) if binary else b"")
    names = {LINKTYPE_LINUX_SLL2: "LINUX_SLL2 (Linux cooked v2)", LINKTYPE_ETHERNET: "EN10MB"}
    ctx.err(
        f"tcpdump: listening on {iface}, link-type {names[linktype]}, "
        f"snapshot length {snaplen} bytes\n"
    )
    seq = packet_log.seq
    captured = dropped = 0
    try:
        while not ctx.cancelled() and (count is None or captured < count):
            if pending and ("U" in opts or len(pending) >= STDIO_BUFFER):
                write(bytes(pending))
                pending.clear()
            if packet_log.wait_beyond(seq, 0.2) == seq:
                continue
            packets, seq, lost = packet_log.since(seq)
            dropped += lost
            for p in packets:
                if count is not None and captured >= count:
                    break
                loop = _is_loopback(p.src) and _is_loopback(p.dst)
                if (iface == "lo" and not loop) or (iface == "wlan0" and loop):
                    continue
                if not binary:
                    pending += _tcpdump_line(p, iface, dev).encode()
                    captured += 1
                    continue
                for ts, frame in synth.frames(p):
                    if count is not None and captured >= count:
                        break
                    pending += record(ts, frame, snaplen=snaplen)
                    captured += 1
    finally:
        # As tcpdump's cleanup() on SIGPIPE/SIGINT/SIGTERM: flush, then the statistics.
        with contextlib.suppress(Cancelled, BrokenPipeError):
            if pending:
                write(bytes(pending))
        with contextlib.suppress(Cancelled, BrokenPipeError):
            ctx.err(
                f"{captured} packets captured\n{captured} packets received by filter\n"
                f"{dropped} packets dropped by kernel\n"
            )
    return 0


# ---- system ----------------------------------------------------------------------------------


@ANDROID.command("reboot")
def _reboot(ctx: Ctx) -> int:
    dev = _device(ctx)
    target = ctx.args[0] if ctx.args and not ctx.args[0].startswith("-") else ""
    dev.reboot(target)
    ctx.shell.cancel.set()  # the phone goes down with the shell that asked it to
    raise Cancelled


@ANDROID.command("id", toybox=True)
def _id(ctx: Ctx) -> int:
    dev = _device(ctx)
    cred = ctx.cred
    opts, _ = ctx.getopt("ugGnrZ")
    if "u" in opts:
        ctx.out(f"{user_name(cred.uid) if 'n' in opts else cred.uid}\n")
        return 0
    if "g" in opts:
        ctx.out(f"{user_name(cred.gid) if 'n' in opts else cred.gid}\n")
        return 0
    if cred.uid == 0:
        context = (
            "u:r:magisk:s0"
            if dev.profile.su is SuFlavor.MAGISK and not cred.groups
            else "u:r:su:s0"
        )
    elif cred.uid == 2000:
        context = "u:r:shell:s0"
    else:
        context = "u:r:untrusted_app:s0"
    groups = [cred.gid, *sorted(g for g in cred.groups if g != cred.gid)]
    text = (
        f"uid={cred.uid}({user_name(cred.uid)}) gid={cred.gid}({user_name(cred.gid)}) groups="
        + ",".join(f"{g}({user_name(g)})" for g in groups)
    )
    ctx.out(f"{text} context={context}\n")
    return 0


@ANDROID.command("whoami", toybox=True)
def _whoami(ctx: Ctx) -> int:
    ctx.out(user_name(ctx.cred.uid) + "\n")
    return 0


@ANDROID.command("uname", toybox=True)
def _uname(ctx: Ctx) -> int:
    k = _device(ctx).profile.kernel
    opts, _ = ctx.getopt("asnrvmpio")
    fields = {
        "s": "Linux",
        "n": "localhost",
        "r": k.release,
        "v": k.version,
        "m": k.machine,
        "o": "Toybox",
    }
    if "a" in opts:
        keys = "snrvmo"
    else:
        keys = "".join(c for c in "snrvmo" if c in opts) or "s"
    ctx.out(" ".join(fields[c] for c in keys) + "\n")
    return 0


@ANDROID.command("getenforce", toybox=True)
def _getenforce(ctx: Ctx) -> int:
    ctx.out("Enforcing\n")
    return 0


PS_FIELDS = {
    "PID": (5, lambda p, d: str(p.pid)),
    "PPID": (5, lambda p, d: str(p.ppid)),
    "USER": (-12, lambda p, d: user_name(p.uid)),
    "UID": (5, lambda p, d: str(p.uid)),
    "VSZ": (7, lambda p, d: str(p.vsz)),
    "RSS": (6, lambda p, d: str(p.rss)),
    "WCHAN": (-10, lambda p, d: p.wchan),
    "ADDR": (10, lambda p, d: "0"),
    "S": (-1, lambda p, d: p.state),
    "NAME": (-27, lambda p, d: p.name),
    "CMD": (-27, lambda p, d: p.name),
    "CMDLINE": (-27, lambda p, d: p.name),
    "ARGS": (-27, lambda p, d: p.name),
    "COMM": (-15, lambda p, d: p.name.strip("[]")[:15]),
    "LABEL": (
        -30,
        lambda p, d: (
            "u:r:untrusted_app:s0"
            if p.uid >= 10000
            else "u:r:shell:s0"
            if p.uid == 2000
            else "u:r:init:s0"
        ),
    ),
}


@ANDROID.command("ps", toybox=True)
def _ps(ctx: Ctx) -> int:
    dev = _device(ctx)
    args = list(ctx.args)
    show_all = False
    fields = ["USER", "PID", "PPID", "VSZ", "RSS", "WCHAN", "ADDR", "S", "NAME"]
    pids: set[int] = set()
    ppids: set[int] = set()
    names: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in ("-A", "-e", "-ef", "-Af"):
            show_all = True
        elif arg in ("-o", "-O") and i + 1 < len(args):
            fields = [f.strip().upper().split("=")[0] for f in args[i + 1].split(",") if f.strip()]
            i += 1
        elif arg in ("-p", "-P") and i + 1 < len(args):
            target = pids if arg == "-p" else ppids
            target.update(int(x) for x in args[i + 1].split(",") if x.isdigit())
            show_all = True
            i += 1
        elif arg in ("-w", "-T", "-t", "-Z", "-f", "-l"):
            pass
        elif arg.startswith("-"):
            return ctx.error(f"Unknown option '{arg[1:]}' (see \"ps --help\")")
        else:
            names.append(arg)
        i += 1
    unknown = [f for f in fields if f not in PS_FIELDS]
    if unknown:
        return ctx.error(f"-o {unknown[0]}: unknown field")
    with dev.lock:
        procs = sorted(dev.processes.values(), key=lambda p: p.pid)
    rows = []
    for proc in procs:
        if pids and proc.pid not in pids and not ppids:
            continue
        if ppids and proc.ppid not in ppids and not (pids and proc.pid in pids):
            continue
        if not show_all and not pids and not ppids and not names and proc.uid != ctx.cred.uid:
            continue
        if names and proc.name not in names:
            continue
        rows.append(proc)
    ctx.out(_ps_table(fields, rows, dev))
    return 0


def _ps_table(fields: list[str], rows: list[ProcInfo], dev: VirtualDevice) -> str:
    def render(values: list[str]) -> str:
        out = []
        slack = 0
        for i, (name, value) in enumerate(zip(fields, values, strict=True)):
            width = PS_FIELDS[name][0]
            last = i == len(fields) - 1
            w = abs(width) - slack if not last else 0
            cell = value.ljust(max(w, 0)) if width < 0 else value.rjust(max(w, 0))
            slack = max(0, len(cell) - abs(width)) if not last else 0
            out.append(cell.rstrip() if last else cell)
        return " ".join(out)

    lines = [render(fields)]
    for proc in rows:
        lines.append(render([PS_FIELDS[f][1](proc, dev) for f in fields]))
    return "\n".join(lines) + "\n"


@ANDROID.command("pidof", toybox=True)
def _pidof(ctx: Ctx) -> int:
    dev = _device(ctx)
    opts, names = ctx.getopt("sxo:")
    with dev.lock:
        found = [
            p.pid for p in sorted(dev.processes.values(), key=lambda p: -p.pid) if p.name in names
        ]
    if "s" in opts:
        found = found[:1]
    if not found:
        return 1
    ctx.out(" ".join(map(str, found)) + "\n")
    return 0


@ANDROID.command("kill", toybox=True)
def _kill(ctx: Ctx) -> int:
    dev = _device(ctx)
    status = 0
    for arg in ctx.args:
        if arg.startswith("-"):
            continue
        with dev.lock:
            proc = dev.processes.get(int(arg)) if arg.isdigit() else None
            if proc is None:
                status = ctx.error(f"{arg}: No such process")
                continue
            if not ctx.cred.is_root and proc.uid != ctx.cred.uid:
                status = ctx.error(f"{arg}: Operation not permitted")
                continue
            del dev.processes[proc.pid]
    return status


@ANDROID.command("ip", toybox=False)
def _ip(ctx: Ctx) -> int:
    dev = _device(ctx)
    net, mac = dev.profile.network, dev.profile.identifiers.wifi_mac
    iface = ipaddress.IPv4Interface(f"{net.wlan_ipv4}/{net.prefix}")
    wlan = (
        "30: wlan0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc mq state UP group default "
        "qlen 3000\n"
        f"    link/ether {mac} brd ff:ff:ff:ff:ff:ff\n"
        f"    inet {net.wlan_ipv4}/{net.prefix} brd {iface.network.broadcast_address} "
        "scope global wlan0\n"
        "       valid_lft forever preferred_lft forever\n"
    )
    lo = (
        "1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN group default "
        "qlen 1000\n"
        "    link/loopback 00:00:00:00:00:00 brd 00:00:00:00:00:00\n"
        "    inet 127.0.0.1/8 scope host lo\n       valid_lft forever preferred_lft forever\n"
    )
    words = [a for a in ctx.args if not a.startswith("-")]
    if words[:1] in (["addr"], ["a"], ["address"]):
        ctx.out(wlan if "wlan0" in words else lo + wlan)
        return 0
    if words[:1] == ["route"]:
        ctx.out(f"{iface.network} dev wlan0 proto kernel scope link src {net.wlan_ipv4}\n")
        return 0
    ctx.err("Usage: ip [ OPTIONS ] OBJECT { COMMAND | help }\n")
    return 255


@ANDROID.command("iptables", "ip6tables")
def _iptables(ctx: Ctx) -> int:
    status, out, err = _device(ctx).netfilter.command(ctx.name, list(ctx.args), ctx.cred.is_root)
    ctx.out(out)
    ctx.err(err)
    return status


# ---- root, mounts and namespaces -------------------------------------------------------------


@ANDROID.command("su", directory="/system/xbin")
def _su(ctx: Ctx) -> int:
    dev = _device(ctx)
    args = list(ctx.args)
    if dev.profile.su is SuFlavor.AOSP:
        if args and args[0] in ("-h", "--help"):
            ctx.err(
                "usage: su [WHO [COMMAND...]]\n\n"
                "Switch to WHO (default 'root') and run the given COMMAND (default sh).\n\n"
                "WHO is a comma-separated list of user, group, and supplementary groups\n"
                "in that order.\n\n"
            )
            return 0
        uid = 0
        if args:
            who = args.pop(0).split(",")[0]
            found = dev.uid_of(who)
            if found is None and not who.isdigit():
                ctx.err(f"su: invalid uid/gid '{who}'\n")
                return 1
            uid = found if found is not None else int(who)
        return _run_as(ctx, uid, argv=args or None, script=None, su=False)
    command: str | None = None
    user = "root"
    while args:
        arg = args.pop(0)
        if arg in ("-c", "--command"):
            command = " ".join(args)
            args = []
        elif arg in (
            "-",
            "-l",
            "--login",
            "-m",
            "-p",
            "--preserve-environment",
            "--mount-master",
            "-M",
        ):
            continue
        elif arg in ("-s", "--shell", "-Z", "--context", "-t", "--target"):
            args = args[1:]
        elif arg in ("-v", "--version"):
            ctx.out("26.4:MAGISKSU\n")
            return 0
        elif arg in ("-V",):
            ctx.out("26400\n")
            return 0
        elif arg.startswith("-"):
            ctx.err(f"su: invalid option -- '{arg.lstrip('-')}'\n")
            return 2
        else:
            user = arg
            if args:
                command = " ".join(shlex.quote(a) for a in args)
                args = []
    found = dev.uid_of(user)
    if found is None and not user.isdigit():
        ctx.err(f"su: unknown user {user}\n")
        return 1
    uid = found if found is not None else int(user)
    return _run_as(ctx, uid, argv=None, script=command, su=True)


def _run_as(ctx: Ctx, uid: int, *, argv: list[str] | None, script: str | None, su: bool) -> int:
    dev = _device(ctx)
    cred = dev.cred_for(uid, su=su)
    env = {
        **ctx.env,
        **{k: v for k, v in dev.base_env(uid).items() if k in ("USER", "LOGNAME", "PATH")},
    }
    sub = Shell(
        dev,
        cred,
        ctx.shell.cancel,
        argv0="/system/bin/sh",
        env=env,
        cwd=ctx.shell.cwd,
        ppid=ctx.shell.pid,
    )
    try:
        if argv:
            return sub.execute(argv, ctx.fds)
        if script is None:
            script = dec(ctx.stdin.read_all())
        return sub.run_script(script, ctx.fds)
    finally:
        sub.close()


@ANDROID.command("nsenter", toybox=True)
def _nsenter(ctx: Ctx) -> int:
    dev = _device(ctx)
    args = list(ctx.args)
    target: int | None = None
    ns_path: str | None = None
    while args:
        arg = args[0]
        if arg == "--":
            args.pop(0)
            break
        if not arg.startswith("-"):
            break
        args.pop(0)
        if arg in ("-t", "--target") and args:
            target = int(args.pop(0))
        elif arg.startswith("--target="):
            target = int(arg.split("=", 1)[1])
        elif arg.startswith("--mount=") or arg.startswith("-m/"):
            ns_path = arg.split("=", 1)[1] if "=" in arg else arg[2:]
        elif arg in (
            "-m",
            "--mount",
            "-a",
            "--all",
            "-n",
            "--net",
            "-p",
            "--pid",
            "-U",
            "-i",
            "-u",
            "-F",
        ):
            continue
        elif re.fullmatch(r"-t\d+", arg):
            target = int(arg[2:])
        else:
            return ctx.error(f"Unknown option '{arg.lstrip('-')}' (see \"nsenter --help\")")
    if ns_path is not None:
        m = re.fullmatch(r"/proc/(\d+)/ns/mnt", ns_path)
        if not m or int(m.group(1)) not in dev.processes:
            return ctx.error(f"{ns_path}: No such file or directory")
    elif target is not None and target not in dev.processes:
        return ctx.error(f"/proc/{target}/ns/mnt: No such file or directory")
    if not ctx.cred.is_root:
        return ctx.error("setns: Operation not permitted")
    if not args:
        return ctx.shell.execute(["sh"], ctx.fds)
    return ctx.shell.execute(args, ctx.fds)


@ANDROID.command("mount", toybox=True)
def _mount(ctx: Ctx) -> int:
    dev = _device(ctx)
    fs = ctx.fs
    args = list(ctx.args)
    fstype = None
    options: list[str] = []
    operands: list[str] = []
    bind = False
    while args:
        arg = args.pop(0)
        if arg == "-t" and args:
            fstype = args.pop(0)
        elif arg == "-o" and args:
            options += args.pop(0).split(",")
        elif arg in ("--bind", "-B"):
            bind = True
        elif arg in ("-r",):
            options.append("ro")
        elif arg in ("-w",):
            options.append("rw")
        elif arg in ("-a", "-f", "-v", "-n"):
            continue
        else:
            operands.append(arg)
    if not operands and not fstype:
        ctx.out(
            "".join(
                f"{m.source} on {m.target} type {m.fstype} ({m.options})\n" for m in fs.mounts()
            )
        )
        return 0
    bind = bind or "bind" in options or "rbind" in options
    if "remount" in options:
        target = operands[-1] if operands else "/"
        path = ctx.abspath(target)
        ro = "ro" in options and "rw" not in options
        if path == "/system" and dev.profile.emulator_like:
            path = "/"
        if path not in {m.target for m in fs.mounts()}:
            return ctx.error(f"'{target}' not in /proc/mounts")
        if not ctx.cred.is_root:
            return ctx.error(f"'{target}': Operation not permitted")
        if path == "/" and not ro and not dev.profile.emulator_like:
            return ctx.error("'/dev/block/dm-0'->'/': Permission denied")
        try:
            fs.remount(path, ctx.cred, ro=ro)
        except OSError as exc:
            return ctx.error(f"'{target}': {exc.strerror}")
        return 0
    if len(operands) != 2:
        return ctx.error("Needs 2 arguments") if operands else 0
    source, target = operands
    src_path, tgt_path = ctx.abspath(source), ctx.abspath(target)
    try:
        if bind:
            fs.mount_bind(src_path, tgt_path, ctx.cred)
        elif fstype == "tmpfs" or source == "tmpfs":
            extra = ",".join(o for o in options if o.startswith(("mode=", "size=", "uid=", "gid=")))
            fs.mount_tmpfs(tgt_path, ctx.cred, source=source, options=extra)
        else:
            return ctx.error(f"'{source}'->'{target}': No such device")
    except OSError as exc:
        return ctx.error(f"'{source}'->'{target}': {exc.strerror}")
    dev.log("vold", f"mount {source} on {tgt_path}", priority="D", uid=0, pid=ctx.shell.pid)
    return 0


@ANDROID.command("umount", toybox=True)
def _umount(ctx: Ctx) -> int:
    operands = [a for a in ctx.args if not a.startswith("-")]
    if not operands:
        return ctx.error("Needs 1 argument")
    status = 0
    for target in operands:
        try:
            ctx.fs.umount(ctx.abspath(target), ctx.cred)
        except OSError as exc:
            status = ctx.error(f"{target}: {exc.strerror}")
    return status


# ---- sanity: every command name is unique across the tables ----------------------------------

_overlap = set(CORE) & set(ANDROID)
assert not _overlap, f"commands defined twice: {_overlap}"


def _as_backend(device: VirtualDevice) -> DeviceBackend:
    """Never called: lets mypy check that VirtualDevice satisfies the transport's protocol."""
    return device


def list_commands() -> list[str]:
    """Every program the virtual handset has (builtins excluded), sorted."""
    return sorted({**CORE, **ANDROID})


__all__ = [
    "LogEntry",
    "ShellResult",
    "VirtualDevice",
    "format_log_line",
    "list_commands",
    "parcel_dump",
    "parcel_string16",
    "subject_hash_old",
    "synthetic_ca",
    "user_name",
]
