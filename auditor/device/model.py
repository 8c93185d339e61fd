"""Typed records for what :mod:`auditor.device.parsers` reads out of a handset's text output.

Every record is a frozen dataclass with slots and every closed set of values is a ``StrEnum``.
Their JSON form is ``dataclasses.asdict`` of the record with enums written as their value and
IP addresses as ``str(address)``; tuples become lists.

Parsers that read many lines return a :class:`ParseResult`: the records in ``items``, the number
of lines that looked like neither a record nor a known header in ``skipped``, and up to
:data:`MAX_WARNINGS` of those lines (shortened) in ``warnings``, so a caller can log why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from ipaddress import IPv4Address, IPv6Address

MAX_WARNINGS = 20
"""How many skipped lines a :class:`ParseResult` keeps as examples."""

IPAddress = IPv4Address | IPv6Address


@dataclass(frozen=True, slots=True)
class ParseResult[T]:
    """What a multi-line parser read: its records plus an account of what it skipped."""

    items: T
    skipped: int = 0
    warnings: tuple[str, ...] = ()


# --- Packages ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PackageEntry:
    """One line of ``pm list packages`` with any of ``-f -i -U --show-versioncode``.

    ``uids`` holds one uid per Android user the package is installed for (``pm`` joins them
    with commas on Android 13 and later); it is empty when ``-U`` was not given.
    ``installer`` is ``None`` when ``-i`` was not given or the installer is ``null``.
    """

    name: str
    apk_path: str | None = None
    uids: tuple[int, ...] = ()
    installer: str | None = None
    version_code: int | None = None
    stopped: bool | None = None

    @property
    def uid(self) -> int | None:
        """The first uid listed (user 0's, when the package is installed for user 0)."""
        return self.uids[0] if self.uids else None


class PermissionKind(StrEnum):
    INSTALL = "install"
    RUNTIME = "runtime"


@dataclass(frozen=True, slots=True)
class PermissionState:
    """A permission's grant state as ``dumpsys package`` prints it.

    Install permissions apply to every user (``user_id`` is ``None``); runtime permissions are
    listed per user. ``granted`` is ``None`` when the line carried no ``granted=`` field.
    """

    name: str
    kind: PermissionKind
    granted: bool | None
    flags: tuple[str, ...] = ()
    user_id: int | None = None


@dataclass(frozen=True, slots=True)
class PackageUserState:
    """A package's ``User N:`` block in ``dumpsys package``."""

    user_id: int
    installed: bool | None = None
    hidden: bool | None = None
    suspended: bool | None = None
    stopped: bool | None = None
    enabled: int | None = None
    first_install_time: str | None = None


@dataclass(frozen=True, slots=True)
class PackageDetails:
    """One ``Package [name] (hash):`` block of ``dumpsys package``.

    ``app_id`` is the value of ``userId=`` (up to Android 13) or ``appId=`` (Android 14 on); it
    is the same for every Android user. Times are as printed: ``YYYY-MM-DD HH:MM:SS`` in the
    handset's local time zone, with no zone marker. ``first_install_time`` comes from the
    package line when there is one (older releases) and otherwise from the first ``User`` block.
    ``hidden_system`` marks entries of the ``Hidden system packages:`` section: the factory
    copy of a system app that has since been updated. ``fields`` keeps every top-level
    ``key=value`` line of the block as printed, for facts this record has no attribute for.
    """

    name: str
    hidden_system: bool = False
    app_id: int | None = None
    shared_user: str | None = None
    code_path: str | None = None
    data_dir: str | None = None
    version_code: int | None = None
    min_sdk: int | None = None
    target_sdk: int | None = None
    version_name: str | None = None
    first_install_time: str | None = None
    last_update_time: str | None = None
    installer: str | None = None
    flags: tuple[str, ...] = ()
    pkg_flags: tuple[str, ...] = ()
    private_flags: tuple[str, ...] = ()
    requested_permissions: tuple[str, ...] = ()
    declared_permissions: tuple[str, ...] = ()
    permissions: tuple[PermissionState, ...] = ()
    users: tuple[PackageUserState, ...] = ()
    fields: dict[str, str] = field(default_factory=dict)

    @property
    def is_system(self) -> bool:
        return "SYSTEM" in self.pkg_flags or "SYSTEM" in self.flags

    @property
    def is_updated_system_app(self) -> bool:
        return "UPDATED_SYSTEM_APP" in self.pkg_flags or "UPDATED_SYSTEM_APP" in self.flags

    def granted_permissions(self, user_id: int = 0) -> frozenset[str]:
        """Install permissions granted, plus runtime permissions granted to ``user_id``."""
        return frozenset(
            p.name
            for p in self.permissions
            if p.granted and (p.user_id is None or p.user_id == user_id)
        )


# --- Sockets ----------------------------------------------------------------------------------


class NetProto(StrEnum):
    """The ``/proc/net`` file a socket table came from."""

    TCP = "tcp"
    TCP6 = "tcp6"
    UDP = "udp"
    UDP6 = "udp6"


class SocketState(StrEnum):
    """``sk_state`` as the kernel numbers it (``include/net/tcp_states.h``).

    UDP sockets use the same numbers: ``ESTABLISHED`` when connected, ``CLOSE`` when not.
    """

    ESTABLISHED = "ESTABLISHED"
    SYN_SENT = "SYN_SENT"
    SYN_RECV = "SYN_RECV"
    FIN_WAIT1 = "FIN_WAIT1"
    FIN_WAIT2 = "FIN_WAIT2"
    TIME_WAIT = "TIME_WAIT"
    CLOSE = "CLOSE"
    CLOSE_WAIT = "CLOSE_WAIT"
    LAST_ACK = "LAST_ACK"
    LISTEN = "LISTEN"
    CLOSING = "CLOSING"
    NEW_SYN_RECV = "NEW_SYN_RECV"
    UNKNOWN = "UNKNOWN"


SOCKET_STATE_BY_CODE: dict[int, SocketState] = {
    0x01: SocketState.ESTABLISHED,
    0x02: SocketState.SYN_SENT,
    0x03: SocketState.SYN_RECV,
    0x04: SocketState.FIN_WAIT1,
    0x05: SocketState.FIN_WAIT2,
    0x06: SocketState.TIME_WAIT,
    0x07: SocketState.CLOSE,
    0x08: SocketState.CLOSE_WAIT,
    0x09: SocketState.LAST_ACK,
    0x0A: SocketState.LISTEN,
    0x0B: SocketState.CLOSING,
    0x0C: SocketState.NEW_SYN_RECV,
}


def socket_has_owner(state: str, uid: int, inode: int | None) -> bool:
    """Whether the kernel still ties a socket (one ``/proc/net`` row) to a process's uid.

    A ``TIME_WAIT`` socket is the kernel's alone: it prints uid 0 and inode 0 for it
    (``get_timewait4_sock``), whoever opened the connection. Any other socket with inode 0
    and uid 0 has lost its file too (an orphan on a kernel without ``sk_uid``). Such a row
    names root, not the app, and must never own a flow. An orphan that kept its uid
    (kernel 4.10 on) and a half-open ``NEW_SYN_RECV`` (the listener's uid) keep their owner.
    """
    if state == SocketState.TIME_WAIT.value:
        return False
    return not (inode == 0 and uid == 0)


@dataclass(frozen=True, slots=True)
class SocketEntry:
    """One row of ``/proc/net/{tcp,tcp6,udp,udp6}``.

    Addresses are ``ipaddress`` objects exactly as the kernel holds them, so a ``tcp6`` row of
    an IPv4 peer carries an IPv4-mapped :class:`~ipaddress.IPv6Address`; ``remote_ip_unmapped``
    gives the plain IPv4 address for those. ``state_code`` keeps the kernel's number, also when
    ``state`` is ``UNKNOWN``. Sockets in ``TIME_WAIT`` and ``NEW_SYN_RECV`` have ``inode == 0``
    (and ``TIME_WAIT`` ones ``uid == 0``): the kernel no longer ties them to a process.
    """

    proto: NetProto
    local_ip: IPAddress
    local_port: int
    remote_ip: IPAddress
    remote_port: int
    state: SocketState
    state_code: int
    uid: int
    inode: int
    tx_queue: int = 0
    rx_queue: int = 0

    @property
    def local_ip_unmapped(self) -> IPAddress:
        return _unmapped(self.local_ip)

    @property
    def remote_ip_unmapped(self) -> IPAddress:
        return _unmapped(self.remote_ip)


def _unmapped(ip: IPAddress) -> IPAddress:
    if isinstance(ip, IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


# --- Binder parcels ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ParcelResult:
    """The reply of ``service call``, decoded from its hex dump.

    ``status`` is the first 32-bit word as a signed int: ``0`` for success, a negative Java
    exception code (``-1`` SecurityException, ``-3`` IllegalArgumentException, ...) when the
    remote method threw. ``text`` is the string16 that follows the status (the return value on
    success, the exception message on failure); ``None`` when there is none. ``error`` is set
    when the call itself failed (``Parcel(Error: ...)``) or the method threw.
    """

    status: int | None
    words: tuple[int, ...] = ()
    text: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == 0 and self.error is None


# --- Certificates -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CaCertFile:
    """A file of an Android CA store folder: ``<subject_hash_old>.<n>``.

    ``size`` is known only from ``ls -l`` output.
    """

    name: str
    subject_hash: str
    index: int
    size: int | None = None


# --- Logcat -----------------------------------------------------------------------------------


class LogLevel(StrEnum):
    VERBOSE = "V"
    DEBUG = "D"
    INFO = "I"
    WARN = "W"
    ERROR = "E"
    FATAL = "F"
    SILENT = "S"
    UNKNOWN = "?"


@dataclass(frozen=True, slots=True)
class LogcatLine:
    """One line of ``logcat -v epoch,uid``.

    ``uid_name`` is the uid column as printed (a number, or a name such as ``shell``);
    ``uid`` is its numeric value, ``None`` when logd had no uid or the name is not one that
    maps to a single number (see :func:`auditor.device.parsers.uid_from_name`).
    """

    timestamp: float
    uid: int | None
    uid_name: str | None
    pid: int
    tid: int
    level: LogLevel
    tag: str
    message: str


# --- Activities -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ActivityRef:
    """An activity (or window) named by ``package/class`` and the Android user it runs as."""

    package: str
    class_name: str
    user_id: int | None = None

    @property
    def component(self) -> str:
        """The short form Android prints: ``com.x/.Main`` when the class is in the package."""
        if self.class_name.startswith(self.package + "."):
            return f"{self.package}/{self.class_name[len(self.package) :]}"
        return f"{self.package}/{self.class_name}"


# --- Network settings -------------------------------------------------------------------------


class PrivateDnsMode(StrEnum):
    OFF = "off"
    OPPORTUNISTIC = "opportunistic"
    HOSTNAME = "hostname"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class PrivateDnsConfig:
    """Private DNS (DNS over TLS) as set in ``settings global``.

    ``explicit`` is false when ``private_dns_mode`` is unset and the mode is Android's
    default; ``raw_mode`` keeps an unrecognised value.
    """

    mode: PrivateDnsMode
    hostname: str | None = None
    explicit: bool = True
    raw_mode: str | None = None
