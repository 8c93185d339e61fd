"""Parsers of what an Android handset prints: text in, typed records out.

Long because: it holds one short parser per command the device layer runs, all under the
one contract below; the samples and the fuzz tests mirror the list.

A parser here does not know where its text came from (``adb shell``, a bugreport section, a
file in a test); the device layer fetches the text and hands it over. The records are defined in
:mod:`auditor.device.model`.

Two shapes of result, one rule:

* A parser of many lines (``parse_getprop``, ``parse_pm_list_packages``, ``parse_proc_net``, ...)
  returns a :class:`~auditor.device.model.ParseResult`: the records in ``items``, how many lines
  it could not read in ``skipped``, and a few of those lines in ``warnings``. Blank lines and
  the headers the format is known to have are not counted as skipped.
* A parser that extracts one value (``parse_settings_get``, ``parse_logcat_epoch_uid``,
  ``parse_dumpsys_activity_resumed``, ``parse_global_proxy``, ...) returns that value, or ``None``
  when the text does not hold one.

No parser raises on unexpected text. Each accepts ``str`` or ``bytes`` (bytes are decoded as
UTF-8, undecodable bytes replaced), and lines may end in ``\\n`` or ``\\r\\n``.
"""

from __future__ import annotations

import hashlib
import logging
import re
import struct
from collections.abc import Iterator, Mapping
from functools import lru_cache
from ipaddress import IPv4Address, IPv6Address
from typing import Literal

from cryptography import x509

from auditor.device.model import (
    MAX_WARNINGS,
    SOCKET_STATE_BY_CODE,
    ActivityRef,
    CaCertFile,
    IPAddress,
    LogcatLine,
    LogLevel,
    NetProto,
    PackageDetails,
    PackageEntry,
    PackageUserState,
    ParcelResult,
    ParseResult,
    PermissionKind,
    PermissionState,
    PrivateDnsConfig,
    PrivateDnsMode,
    SocketEntry,
    SocketState,
)

log = logging.getLogger(__name__)

Text = str | bytes

# --- Shared helpers ---------------------------------------------------------------------------


def _text(data: Text) -> str:
    if isinstance(data, bytes):
        return data.decode("utf-8", errors="replace")
    return data


def _lines(data: Text) -> Iterator[str]:
    """Lines without their terminator; only ``\\n`` (and a ``\\r`` before it) ends a line."""
    for line in _text(data).split("\n"):
        yield line.rstrip("\r")


class _Skips:
    """Counts skipped lines and keeps the first few, shortened, as warnings."""

    __slots__ = ("count", "examples", "what")

    def __init__(self, what: str) -> None:
        self.what = what
        self.count = 0
        self.examples: list[str] = []

    def add(self, line: str) -> None:
        self.count += 1
        if len(self.examples) < MAX_WARNINGS:
            self.examples.append(line if len(line) <= 120 else line[:117] + "...")

    def result[T](self, items: T) -> ParseResult[T]:
        if self.count:
            log.debug("%s: skipped %d line(s), first %r", self.what, self.count, self.examples[0])
        return ParseResult(items, self.count, tuple(self.examples))


_INT = re.compile(r"[+-]?[0-9]+", re.ASCII)


def _int(value: str) -> int | None:
    """A decimal int, or ``None``; unlike ``int()`` it refuses ``1_000`` and non-ASCII digits."""
    value = value.strip()
    return int(value) if _INT.fullmatch(value) else None


def _bool(value: str) -> bool | None:
    return {"true": True, "false": False}.get(value.strip())


def _null(value: str | None) -> str | None:
    """Android prints a missing string as ``null``."""
    if value is None:
        return None
    value = value.strip()
    return None if value in ("", "null") else value


# --- getprop ----------------------------------------------------------------------------------

_PROP_START = re.compile(r"[ \t]*\[([^\[\]]+)\]: \[")


def parse_getprop(text: Text) -> ParseResult[dict[str, str]]:
    """``getprop`` output (``[key]: [value]`` lines) as a dict.

    A value may contain ``]``: the value is everything between ``]: [`` and the last ``]`` of
    the line. A value that does not close on its line (some bugreports hold multi-line values)
    runs on over the following lines until one ends in ``]``, and keeps its newlines. If a new
    ``[key]: [`` line starts first, the unclosed property is skipped. A key seen twice keeps
    its last value.
    """
    props: dict[str, str] = {}
    skips = _Skips("getprop")
    pending_key: str | None = None
    pending: list[str] = []
    for line in _lines(text):
        if pending_key is not None:
            if _PROP_START.match(line) is None:
                tail = line.rstrip(" \t")
                if tail.endswith("]"):
                    pending.append(tail[:-1])
                    props[pending_key] = "\n".join(pending)
                    pending_key = None
                else:
                    pending.append(line)
                continue
            skips.add(f"[{pending_key}]: [{pending[0]}")
            pending_key = None
        if not line.strip():
            continue
        m = _PROP_START.match(line)
        if m is None:
            skips.add(line)
            continue
        key = m.group(1)
        rest = line[m.end() :].rstrip(" \t")
        if rest.endswith("]"):
            props[key] = rest[:-1]
        else:
            pending_key, pending = key, [rest]
    if pending_key is not None:
        skips.add(f"[{pending_key}]: [{pending[0]}")
    return skips.result(props)


# --- pm list packages -------------------------------------------------------------------------

# PackageManagerShellCommand.runListPackages prints, in this order:
# "package:" [sourceDir "="] name [" versionCode:" N] [" stopped=" bool] ["  installer=" name]
# [" uid:" uid ("," uid)*]
_PM_LINE = re.compile(
    r"[ \t]*package:(?P<head>\S.*?)"
    r"(?: versionCode:(?P<vc>-?[0-9]+))?"
    r"(?: stopped=(?P<stopped>true|false))?"
    r"(?:[ \t]+installer=(?P<installer>\S*))?"
    r"(?: uid:(?P<uids>[0-9]+(?:,[0-9]+)*))?"
    r"[ \t]*",
    re.ASCII,
)
_PACKAGE_NAME = re.compile(r"[A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)*", re.ASCII)


def parse_pm_list_packages(text: Text) -> ParseResult[list[PackageEntry]]:
    """``pm list packages`` with any of ``-f -i -U --show-versioncode`` (and filters such as
    ``-s``, ``-3``, ``-d``, ``-e``, ``-u``, which do not change the line format).

    With ``-f`` the APK path comes first and may itself contain ``=`` (``/data/app/~~abc==/...``),
    so the name is what follows the *last* ``=``. ``uid:`` lists one uid per Android user the
    package is installed for (Android 13 on, comma separated).
    """
    entries: list[PackageEntry] = []
    skips = _Skips("pm list packages")
    for line in _lines(text):
        if not line.strip():
            continue
        m = _PM_LINE.fullmatch(line)
        if m is None:
            skips.add(line)
            continue
        path, sep, name = m.group("head").rpartition("=")
        if _PACKAGE_NAME.fullmatch(name) is None or (sep and not path):
            skips.add(line)
            continue
        vc, stopped, uids = m.group("vc"), m.group("stopped"), m.group("uids")
        entries.append(
            PackageEntry(
                name=name,
                apk_path=path if sep else None,
                uids=tuple(int(u) for u in uids.split(",")) if uids else (),
                installer=_null(m.group("installer")),
                version_code=int(vc) if vc is not None else None,
                stopped=_bool(stopped) if stopped is not None else None,
            )
        )
    return skips.result(entries)


# --- dumpsys package --------------------------------------------------------------------------

_PKG_HEADER = re.compile(r"  Package \[([^\]]+)\] \([0-9a-fA-F]+\):[ \t]*")
_USER_HEADER = re.compile(r"User ([0-9]+):(.*)", re.ASCII)
_SHARED_USER = re.compile(r"SharedUserSetting\{\S+ ([^/}\s]+)")
_GRANTED = re.compile(r"granted=(true|false)")
_PERM_FLAGS = re.compile(r"flags=\[([^\]]*)\]")
_PACKAGE_SECTIONS = {"Packages:": False, "Hidden system packages:": True}
_PERMISSION_LISTS = {
    "install permissions": PermissionKind.INSTALL,
    "runtime permissions": PermissionKind.RUNTIME,
}


def _flag_list(value: str) -> tuple[str, ...]:
    """``[ SYSTEM HAS_CODE ]`` -> ``("SYSTEM", "HAS_CODE")``."""
    return tuple(value.strip().removeprefix("[").removesuffix("]").split())


class _PackageBuilder:
    """Collects the lines of one ``Package [...]`` block; the indentation tells the nesting."""

    def __init__(self, name: str, hidden_system: bool) -> None:
        self.name = name
        self.hidden_system = hidden_system
        self.fields: dict[str, str] = {}
        self.requested: list[str] = []
        self.declared: list[str] = []
        self.permissions: list[PermissionState] = []
        self.users: list[dict[str, str]] = []
        self.list_name: str | None = None
        self.list_indent = 0
        self.in_user = False

    def feed(self, indent: int, content: str) -> None:
        if self.list_name is not None:
            if indent > self.list_indent:
                self._list_entry(content)
                return
            self.list_name = None
        if self.in_user and indent > 4:
            self._user_line(indent, content)
            return
        self.in_user = False
        m = _USER_HEADER.fullmatch(content)
        if m is not None:
            self.in_user = True
            user = {"user_id": m.group(1)}
            for token in m.group(2).split():
                key, sep, value = token.partition("=")
                if sep:
                    user[key] = value
            self.users.append(user)
            return
        if content.endswith(":") and "=" not in content:
            self.list_name, self.list_indent = content[:-1], indent
            return
        key, sep, value = content.partition("=")
        if sep and key and key not in self.fields:
            self.fields[key] = value

    def _user_line(self, indent: int, content: str) -> None:
        if content.endswith(":") and "=" not in content:
            self.list_name, self.list_indent = content[:-1], indent
            return
        key, sep, value = content.partition("=")
        if sep and key:
            self.users[-1].setdefault(key, value)

    def _list_entry(self, content: str) -> None:
        name, _, rest = content.partition(":")
        name = name.strip()
        if not name:
            return
        if self.list_name == "requested permissions":
            self.requested.append(name)
        elif self.list_name == "declared permissions":
            self.declared.append(name)
        elif self.list_name in _PERMISSION_LISTS:
            granted = _GRANTED.search(rest)
            flags = _PERM_FLAGS.search(rest)
            kind = _PERMISSION_LISTS[self.list_name]
            user_id = None
            if kind is PermissionKind.RUNTIME and self.in_user:
                user_id = _int(self.users[-1]["user_id"])
            self.permissions.append(
                PermissionState(
                    name=name,
                    kind=kind,
                    granted=granted.group(1) == "true" if granted else None,
                    flags=tuple(f for f in re.split(r"[|\s]+", flags.group(1)) if f)
                    if flags
                    else (),
                    user_id=user_id,
                )
            )

    def build(self) -> PackageDetails:
        f = self.fields
        version = f.get("versionCode", "").split()
        extra: dict[str, str] = {}
        for token in version[1:]:
            key, _, value = token.partition("=")
            extra[key] = value
        shared = f.get("sharedUser")
        shared_m = _SHARED_USER.search(shared) if shared else None
        users = tuple(
            PackageUserState(
                user_id=int(u["user_id"]),
                installed=_bool(u.get("installed", "")),
                hidden=_bool(u.get("hidden", "")),
                suspended=_bool(u.get("suspended", "")),
                stopped=_bool(u.get("stopped", "")),
                enabled=_int(u.get("enabled", "")),
                first_install_time=_null(u.get("firstInstallTime")),
            )
            for u in self.users
        )
        first_install = _null(f.get("firstInstallTime"))
        if first_install is None and users:
            first_install = users[0].first_install_time
        return PackageDetails(
            name=self.name,
            hidden_system=self.hidden_system,
            app_id=_int(f.get("appId", f.get("userId", ""))),
            shared_user=(shared_m.group(1) if shared_m else shared) if shared else None,
            code_path=_null(f.get("codePath")),
            data_dir=_null(f.get("dataDir")),
            version_code=_int(version[0]) if version else None,
            min_sdk=_int(extra.get("minSdk", "")),
            target_sdk=_int(extra.get("targetSdk", "")),
            version_name=_null(f.get("versionName")),
            first_install_time=first_install,
            last_update_time=_null(f.get("lastUpdateTime")),
            installer=_null(f.get("installerPackageName")),
            flags=_flag_list(f.get("flags", "")),
            pkg_flags=_flag_list(f.get("pkgFlags", "")),
            private_flags=_flag_list(f.get("privateFlags", "")),
            requested_permissions=tuple(self.requested),
            declared_permissions=tuple(self.declared),
            permissions=tuple(self.permissions),
            users=users,
            fields=dict(f),
        )


def parse_dumpsys_package(text: Text) -> ParseResult[list[PackageDetails]]:
    """The ``Packages:`` and ``Hidden system packages:`` sections of ``dumpsys package`` (or of
    ``dumpsys package <name>``, or of the package service in a bugreport).

    Every other section is passed over; a line at column 0 ends a section, and so does a
    header indented by less than a package's fields (Android 10 prints ``  APEX session
    state:`` right after the last package). A system app that has been updated appears
    twice: the installed update in ``Packages:`` and its factory copy in ``Hidden system
    packages:``, with ``hidden_system=True``; the order of the two is the dump's.
    """
    packages: list[PackageDetails] = []
    skips = _Skips("dumpsys package")
    section: str | None = None
    builder: _PackageBuilder | None = None
    for line in _lines(text):
        content = line.strip()
        if not content:
            continue
        indent = len(line) - len(line.lstrip(" "))
        if indent == 0:
            if builder is not None:
                packages.append(builder.build())
                builder = None
            section = content
            continue
        m = _PKG_HEADER.fullmatch(line) if indent == 2 else None
        if m is None and indent < 4 and content.endswith(":") and "=" not in content:
            # A sub-section at the package level ("  APEX session state:" on Android 10,
            # "  Hidden system packages:" where a release indents it) ends the package list.
            if builder is not None:
                packages.append(builder.build())
                builder = None
            section = content
            continue
        if section is not None and section not in _PACKAGE_SECTIONS:
            continue
        if m is not None:
            if builder is not None:
                packages.append(builder.build())
            builder = _PackageBuilder(m.group(1), _PACKAGE_SECTIONS.get(section or "", False))
            continue
        if builder is None or indent < 4:
            if section is not None:
                skips.add(line)
            continue
        builder.feed(indent, content)
    if builder is not None:
        packages.append(builder.build())
    return skips.result(packages)


# --- /proc/net/{tcp,tcp6,udp,udp6} ------------------------------------------------------------

_HEX_ADDR = r"([0-9A-Fa-f]{8}|[0-9A-Fa-f]{32}):([0-9A-Fa-f]{4})"
# net/ipv4/tcp_ipv4.c get_tcp4_sock() and friends:
# "%4d: %08X:%04X %08X:%04X %02X %08X:%08X %02X:%08lX %08X %5u %8d %lu ..."
_NET_ROW = re.compile(
    rf"[ \t]*[0-9]+: {_HEX_ADDR} {_HEX_ADDR} ([0-9A-Fa-f]{{2}}) "
    r"([0-9A-Fa-f]{8}):([0-9A-Fa-f]{8}) [0-9A-Fa-f]{2}:[0-9A-Fa-f]{8} [0-9A-Fa-f]{8} +"
    r"([0-9]+) +-?[0-9]+ +([0-9]+)",
    re.ASCII,
)


@lru_cache(maxsize=8192)
def _proc_ip(hexaddr: str) -> IPAddress:
    """An address as ``/proc/net`` prints it: each 32-bit word in host byte order.

    Android runs little-endian (arm, arm64, x86, x86_64), so every word is byte-swapped.
    """
    raw = bytes.fromhex(hexaddr)
    if len(raw) == 4:
        return IPv4Address(raw[::-1])
    return IPv6Address(struct.pack(">4I", *struct.unpack("<4I", raw)))


def parse_proc_net(
    text: Text, proto: Literal["tcp", "tcp6", "udp", "udp6"] | NetProto
) -> ParseResult[list[SocketEntry]]:
    """A ``/proc/net/{tcp,tcp6,udp,udp6}`` table, one pass over its lines.

    ``proto`` names the file (it raises ``ValueError`` for any other name); the address width
    is read from each row, so a row is decoded correctly even under the wrong name.
    """
    net_proto = NetProto(proto)
    sockets: list[SocketEntry] = []
    append = sockets.append
    skips = _Skips(f"/proc/net/{net_proto}")
    match = _NET_ROW.match
    states = SOCKET_STATE_BY_CODE
    unknown = SocketState.UNKNOWN
    # splitlines() is the fastest split; the kernel writes no other line-breaking characters.
    for line in _text(text).splitlines():
        m = match(line)
        if m is None:
            stripped = line.lstrip()
            if stripped and not stripped.startswith("sl "):
                skips.add(line)
            continue
        lip, lport, rip, rport, st, tx, rx, uid, inode = m.groups()
        if len(lip) != len(rip):
            skips.add(line)
            continue
        code = int(st, 16)
        append(
            SocketEntry(
                net_proto,
                _proc_ip(lip),
                int(lport, 16),
                _proc_ip(rip),
                int(rport, 16),
                states.get(code, unknown),
                code,
                int(uid),
                int(inode),
                int(tx, 16),
                int(rx, 16),
            )
        )
    return skips.result(sockets)


# --- settings ---------------------------------------------------------------------------------


def parse_settings_list(text: Text) -> ParseResult[dict[str, str]]:
    """``settings list global|secure|system``: ``key=value`` lines; the value is everything
    after the first ``=`` (it may hold more). A key never holds whitespace."""
    settings: dict[str, str] = {}
    skips = _Skips("settings list")
    for line in _lines(text):
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        if not sep or not key or any(c.isspace() for c in key):
            skips.add(line)
            continue
        settings[key] = value
    return skips.result(settings)


def parse_settings_get(text: Text) -> str | None:
    """``settings get NAMESPACE KEY``: the value, or ``None`` for ``null`` (unset) or no output.

    Only the line terminator is removed: a value may start or end with spaces.
    """
    value = _text(text)
    if not value:
        return None
    value = value.removesuffix("\n").removesuffix("\r")
    return None if value == "null" else value


# --- service call (Binder parcels) ------------------------------------------------------------

_PARCEL_START = re.compile(r"Parcel\(")
_PARCEL_ERROR = re.compile(r"Error: (\S+)(?: \"([^\"]*)\")?")
_PARCEL_OFFSET = re.compile(r"[ \t]*0x[0-9a-fA-F]+:")
_HEX_WORD = re.compile(r"(?<![0-9A-Za-z])[0-9a-fA-F]{8}(?![0-9A-Za-z])", re.ASCII)

# android.os.Parcel EX_* codes: what the first word of a reply means when it is negative.
PARCEL_EXCEPTIONS: dict[int, str] = {
    -1: "SecurityException",
    -2: "BadParcelableException",
    -3: "IllegalArgumentException",
    -4: "NullPointerException",
    -5: "IllegalStateException",
    -6: "NetworkOnMainThreadException",
    -7: "UnsupportedOperationException",
    -8: "ServiceSpecificException",
    -9: "Parcelable exception",
    -129: "TransactionFailedException",
}
_EX_HAS_NOTED_APPOPS_REPLY_HEADER = -127
_EX_HAS_STRICTMODE_REPLY_HEADER = -128


def _parcel_words(text: str) -> tuple[list[int], str | None] | None:
    """The 32-bit words of the first ``Parcel(...)`` in ``text`` and its ``Error:``, if any.

    A short reply sits on the ``Parcel(`` line; a longer one starts on the next line, one
    ``0x<offset>: `` line per 16 bytes, the last ending in ``')``. Only the hex column counts:
    the text column between quotes may hold anything.
    """
    start = _PARCEL_START.search(text)
    if start is None:
        return None
    first, *rest = text[start.end() :].split("\n")
    first = first.strip()
    err = _PARCEL_ERROR.match(first)
    if err is not None:
        return [], f"{err.group(2) or 'error'} ({err.group(1)})"
    if first.startswith("NULL"):
        return [], "empty reply"
    if first:
        return [int(w, 16) for w in _HEX_WORD.findall(first.partition("'")[0])], None
    words: list[int] = []
    for line in rest:
        hexpart, quote, _ = line.partition("'")
        offset = _PARCEL_OFFSET.match(hexpart)
        if offset is None:
            break
        hexpart = hexpart[offset.end() :]
        words.extend(int(w, 16) for w in _HEX_WORD.findall(hexpart))
        if line.rstrip().endswith("')") or (not quote and ")" in hexpart):
            break
    return words, None


def _signed(word: int) -> int:
    return word - (1 << 32) if word & 0x80000000 else word


def _string16(words: list[int], at: int) -> str | None:
    """A String16 as ``Parcel::writeString16`` lays it out: an int32 length in UTF-16 units
    (``-1`` for null), the units, a 0 terminator, padding to 4 bytes."""
    if at >= len(words):
        return None
    length = _signed(words[at])
    if length < 0:
        return None
    data = b"".join(struct.pack("<I", w) for w in words[at + 1 :])
    if 2 * length > len(data):
        return None
    if 2 * length + 2 <= len(data) and data[2 * length : 2 * length + 2] != b"\0\0":
        return None
    return data[: 2 * length].decode("utf-16-le", errors="replace")


def parse_service_call_parcel(text: Text) -> ParcelResult:
    """The reply ``service call SERVICE CODE ...`` prints, in any of its layouts::

        Result: Parcel(00000000    '....')
        Result: Parcel(00000000 00000001   '........')
        Result: Parcel(
          0x00000000: 00000000 0000000f 00350033 00340030 '........3.5.0.4.'
          ...
        Result: Parcel(Error: 0xffffffb6 "Not a data message")

    The words are little-endian, so a String16 reads two UTF-16 units per word, low half first.
    A reply the text does not contain gives ``status=None`` and an ``error``. Native (C++)
    services write no status word; read ``words`` for their replies.
    """
    found = _parcel_words(_text(text))
    if found is None:
        return ParcelResult(status=None, error="no Parcel( in the output")
    words, error = found
    if error is not None or not words:
        return ParcelResult(status=None, error=error or "empty reply")
    status = _signed(words[0])
    value_at = 1
    if status == _EX_HAS_STRICTMODE_REPLY_HEADER and len(words) > 1:
        # Parcel.writeNoException: a header of that many bytes (its size word included), then
        # the return value with no further status word.
        status, value_at = 0, 1 + max(1, words[1] // 4)
    elif status == _EX_HAS_NOTED_APPOPS_REPLY_HEADER:
        return ParcelResult(status, tuple(words), error="noted-appops reply header not decoded")
    if status == 0:
        return ParcelResult(status, tuple(words), text=_string16(words, value_at))
    message = _string16(words, 1)
    if status in PARCEL_EXCEPTIONS:
        name = PARCEL_EXCEPTIONS[status]
        return ParcelResult(
            status, tuple(words), text=message, error=f"{name}: {message}" if message else name
        )
    return ParcelResult(status, tuple(words), text=message)


def imei_from_parcel(text: Text) -> str | None:
    """The IMEI in a ``service call iphonesubinfo N`` reply, or ``None``.

    Accepts 14 (IMEI without its check digit), 15 (IMEI) or 16 (IMEISV) ASCII digits; it does
    not require a valid Luhn check digit (see :func:`luhn_valid`).
    """
    reply = parse_service_call_parcel(text)
    if not reply.ok or reply.text is None:
        return None
    digits = reply.text.strip()
    if 14 <= len(digits) <= 16 and digits.isascii() and digits.isdigit():
        return digits
    return None


def luhn_valid(digits: str) -> bool:
    """The Luhn check (ISO/IEC 7812-1) that the 15th digit of an IMEI satisfies."""
    if not digits or not (digits.isascii() and digits.isdigit()):
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


# --- CA certificate stores --------------------------------------------------------------------

_CERT_NAME = re.compile(r"([0-9a-f]{8})\.([0-9]+)", re.ASCII)
_LS_MODE = re.compile(r"[-bcdlps][-rwxsStT]{9}[.+@]?", re.ASCII)
_LS_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", re.ASCII)


def _cert_file(token: str, size: int | None) -> CaCertFile | None:
    name = token.rsplit("/", 1)[-1]
    m = _CERT_NAME.fullmatch(name)
    if m is None:
        return None
    return CaCertFile(name=name, subject_hash=m.group(1), index=int(m.group(2)), size=size)


def parse_ca_store_listing(text: Text) -> ParseResult[list[CaCertFile]]:
    """``ls``, ``ls -1``, ``ls -l`` (toybox, with or without ``-Z``) or ``find`` output of a CA
    store folder (``/system/etc/security/cacerts``, ``/apex/com.android.conscrypt/cacerts``,
    ``/data/misc/user/0/cacerts-added``): the ``<hash>.<n>`` files, in listing order.

    ``total N`` lines and the ``.`` and ``..`` entries are not counted as skipped; any other
    name that is not ``<8 hex>.<n>`` is.
    """
    files: list[CaCertFile] = []
    skips = _Skips("CA store listing")
    for line in _lines(text):
        tokens = line.split()
        if not tokens or (tokens[0] == "total" and len(tokens) == 2):
            continue
        if _LS_MODE.fullmatch(tokens[0]) is not None:
            if "->" in tokens:
                tokens = tokens[: tokens.index("->")]
            if tokens[-1] in (".", ".."):
                continue
            size = None
            dates = [i for i, t in enumerate(tokens) if _LS_DATE.fullmatch(t)]
            if dates and dates[0] > 0:
                size = _int(tokens[dates[0] - 1])
            entry = _cert_file(tokens[-1], size)
            if entry is None:
                skips.add(line)
            else:
                files.append(entry)
            continue
        for token in tokens:
            if token in (".", ".."):
                continue
            entry = _cert_file(token, None)
            if entry is None:
                skips.add(line)
                break
            files.append(entry)
    return skips.result(files)


def _der_children(buf: bytes, start: int, end: int) -> list[tuple[int, int, int, int]]:
    """``(tag, offset, content offset, end)`` of each DER element in ``buf[start:end]``."""
    out = []
    pos = start
    while pos < end:
        tag = buf[pos]
        length = buf[pos + 1]
        head = 2
        if length & 0x80:
            n = length & 0x7F
            length = int.from_bytes(buf[pos + 2 : pos + 2 + n], "big")
            head += n
        out.append((tag, pos, pos + head, pos + head + length))
        pos += head + length
    return out


def subject_hash_old(cert: bytes | str) -> str:
    """OpenSSL's ``x509 -subject_hash_old`` of a PEM or DER certificate: the file name stem
    Android gives a CA certificate.

    It is the MD5 of the DER subject name exactly as encoded in the certificate, its first four
    bytes read as a little-endian integer, in 8 lowercase hex digits. Raises ``ValueError`` when
    the input is not a certificate.
    """
    data = cert.encode("ascii", errors="replace") if isinstance(cert, str) else cert
    begin = data.find(b"-----BEGIN")
    try:
        if begin >= 0:
            loaded = x509.load_pem_x509_certificate(data[begin:])
        else:
            loaded = x509.load_der_x509_certificate(data)
        tbs = loaded.tbs_certificate_bytes
        _, _, content, end = _der_children(tbs, 0, len(tbs))[0]
        fields = _der_children(tbs, content, end)
        # TBSCertificate: [0] version?, serialNumber, signature, issuer, validity, subject, ...
        first = 1 if fields[0][0] == 0xA0 else 0
        _, s_start, _, s_end = fields[first + 4]
    except (ValueError, IndexError, x509.InvalidVersion) as exc:  # version 2: InvalidVersion
        raise ValueError(f"not an X.509 certificate: {exc}") from None
    digest = hashlib.md5(tbs[s_start:s_end], usedforsecurity=False).digest()
    return f"{int.from_bytes(digest[:4], 'little'):08x}"


# --- logcat -----------------------------------------------------------------------------------

# liblog logprint.cpp, FORMAT_THREADTIME with the epoch and uid modifiers:
# "%19lld.%03ld" " " uid ("%5s " or "%5d ") "%5d %5d %c %-8.*s: " message
_LOGCAT = re.compile(
    r"[ \t]*(?P<sec>[0-9]+)\.(?P<frac>[0-9]+)"
    r"[ \t]+(?:(?P<uid>[A-Za-z_][A-Za-z0-9_]*|[0-9]+)[ \t]+)?"
    r"(?P<pid>[0-9]+)[ \t]+(?P<tid>[0-9]+)[ \t]+(?P<level>[VDIWEFS?])[ \t]"
    r"(?P<tag>.*?)[ \t]*:(?: (?P<msg>.*))?",
    re.ASCII,
)

# system/core/libcutils/include/private/android_filesystem_config.h
ANDROID_IDS: dict[str, int] = {
    "root": 0,
    "system": 1000,
    "radio": 1001,
    "bluetooth": 1002,
    "graphics": 1003,
    "input": 1004,
    "audio": 1005,
    "camera": 1006,
    "log": 1007,
    "compass": 1008,
    "mount": 1009,
    "wifi": 1010,
    "adb": 1011,
    "install": 1012,
    "media": 1013,
    "dhcp": 1014,
    "sdcard_rw": 1015,
    "vpn": 1016,
    "keystore": 1017,
    "usb": 1018,
    "drm": 1019,
    "mdnsr": 1020,
    "gps": 1021,
    "media_rw": 1023,
    "mtp": 1024,
    "drmrpc": 1026,
    "nfc": 1027,
    "sdcard_r": 1028,
    "clat": 1029,
    "shell": 2000,
    "cache": 2001,
    "diag": 2002,
    "nobody": 9999,
}
_APP_UID_NAME = re.compile(r"u([0-9]+)_a([0-9]+)", re.ASCII)
_OLD_APP_UID_NAME = re.compile(r"app_([0-9]+)", re.ASCII)
_PER_USER_RANGE = 100_000
_FIRST_APPLICATION_UID = 10_000


def uid_from_name(name: str) -> int | None:
    """The uid behind a name Android's ``getpwuid`` gives.

    A number is itself; the fixed AIDs (``root`` 0, ``system`` 1000, ``shell`` 2000, ...) come
    from :data:`ANDROID_IDS`; ``u<user>_a<n>`` is ``user * 100000 + 10000 + n`` (``u0_a123`` is
    10123, ``u10_a5`` 1010005) and the pre-multi-user ``app_<n>`` is ``10000 + n``. Isolated
    process names (``u0_i7``) give ``None``: their first uid moved between releases.
    Note that logcat prints a name only when it has at most 5 characters (``root``, ``shell``,
    ``u0_a5``), and the number otherwise.
    """
    name = name.strip()
    if name.isascii() and name.isdigit():
        return int(name)
    if name in ANDROID_IDS:
        return ANDROID_IDS[name]
    m = _APP_UID_NAME.fullmatch(name)
    if m is not None:
        app = int(m.group(2))
        if app < _PER_USER_RANGE - _FIRST_APPLICATION_UID:
            return int(m.group(1)) * _PER_USER_RANGE + _FIRST_APPLICATION_UID + app
        return None
    m = _OLD_APP_UID_NAME.fullmatch(name)
    if m is not None:
        return _FIRST_APPLICATION_UID + int(m.group(1))
    return None


def parse_logcat_epoch_uid(line: Text) -> LogcatLine | None:
    """One line of ``logcat -v epoch,uid`` (threadtime layout, seconds since the epoch)::

                 1700000000.123  1000  1234  1250 I ActivityManager: Start proc ...
                 1700000000.456 shell  4321  4321 D AndroidRuntime: >>>>>> START ...

    ``None`` for anything else, such as ``--------- beginning of main``. A line whose uid
    column is blank (logd had no uid) parses with ``uid=None``.
    """
    text = _text(line).rstrip("\r\n")
    m = _LOGCAT.fullmatch(text)
    if m is None:
        return None
    uid_name = m.group("uid")
    return LogcatLine(
        timestamp=float(f"{m.group('sec')}.{m.group('frac')}"),
        uid=uid_from_name(uid_name) if uid_name is not None else None,
        uid_name=uid_name,
        pid=int(m.group("pid")),
        tid=int(m.group("tid")),
        level=LogLevel(m.group("level")),
        tag=m.group("tag"),
        message=m.group("msg") or "",
    )


def parse_logcat(text: Text) -> ParseResult[list[LogcatLine]]:
    """Many ``logcat -v epoch,uid`` lines; the ``--------- beginning of <buffer>`` markers are
    not counted as skipped."""
    lines: list[LogcatLine] = []
    skips = _Skips("logcat")
    for line in _lines(text):
        if not line.strip() or line.startswith("--------- "):
            continue
        parsed = parse_logcat_epoch_uid(line)
        if parsed is None:
            skips.add(line)
        else:
            lines.append(parsed)
    return skips.result(lines)


# --- Foreground activity ----------------------------------------------------------------------

_COMPONENT = r"u(?P<user>[0-9]+) (?P<pkg>[^\s/{}]+)/(?P<cls>[^\s{}]+)"
_RECORD = r"ActivityRecord\{(?:[0-9a-fA-F]+ )?" + _COMPONENT
# Most specific first: the focused top resumed activity of the whole system (Android 9 on),
# then a task's top resumed one (Android 12 on), then the per-stack fields of older releases.
_RESUMED = tuple(
    re.compile(p, re.MULTILINE | re.ASCII)
    for p in (
        r"^[ \t]*ResumedActivity: ?" + _RECORD,
        r"^[ \t]*topResumedActivity=" + _RECORD,
        r"^[ \t]*mResumedActivity: ?" + _RECORD,
        r"^[ \t]*mFocusedActivity: ?" + _RECORD,
    )
)
_FOCUS_WINDOW = re.compile(
    r"^[ \t]*mCurrentFocus=Window\{[0-9a-fA-F]+ " + _COMPONENT + r"\}", re.MULTILINE | re.ASCII
)
_FOCUS_APP = re.compile(r"^[ \t]*mFocusedApp=.*?" + _RECORD, re.MULTILINE | re.ASCII)


def _activity(m: re.Match[str]) -> ActivityRef:
    pkg, cls = m.group("pkg"), m.group("cls")
    if cls.startswith("."):
        cls = pkg + cls
    return ActivityRef(package=pkg, class_name=cls, user_id=int(m.group("user")))


def parse_dumpsys_activity_resumed(text: Text) -> ActivityRef | None:
    """The resumed (foreground) activity in ``dumpsys activity activities`` (or ``dumpsys
    activity top``/``a``), from the first of these that is present::

          ResumedActivity: ActivityRecord{9a4f0d1 u0 com.x/.Main t12}        (Android 9 on)
            topResumedActivity=ActivityRecord{9a4f0d1 u0 com.x/.Main t12}    (Android 12 on)
            mResumedActivity: ActivityRecord{9a4f0d1 u0 com.x/.Main t12}     (up to Android 11)
          mFocusedActivity: ActivityRecord{9a4f0d1 u0 com.x/.Main t12}       (up to Android 7)
    """
    body = _text(text)
    for pattern in _RESUMED:
        m = pattern.search(body)
        if m is not None:
            return _activity(m)
    return None


def parse_dumpsys_window_focus(text: Text) -> ActivityRef | None:
    """The focused window's component in ``dumpsys window`` (or ``dumpsys window windows``):
    the first ``mCurrentFocus=Window{... u0 pkg/cls}`` that names one, else the activity of
    ``mFocusedApp=``. ``None`` when the focus is a system window without a component
    (``StatusBar``, ``NotificationShade``) or ``null``."""
    body = _text(text)
    m = _FOCUS_WINDOW.search(body) or _FOCUS_APP.search(body)
    return _activity(m) if m is not None else None


# --- Private DNS and global proxy -------------------------------------------------------------

_DNS_MODES = {mode.value: mode for mode in PrivateDnsMode if mode is not PrivateDnsMode.UNKNOWN}
PRIVATE_DNS_DEFAULT_MODE = PrivateDnsMode.OPPORTUNISTIC
"""``ConnectivityManager.PRIVATE_DNS_DEFAULT_MODE_FALLBACK`` since Android 9."""


def parse_private_dns(settings: Mapping[str, str]) -> PrivateDnsConfig:
    """Private DNS from the ``global`` settings (as :func:`parse_settings_list` returns them).

    ``private_dns_mode`` is ``off``, ``opportunistic`` or ``hostname``; when it is unset,
    ``private_dns_default_mode`` applies, and when that is unset too, Android's default
    (opportunistic). The hostname (``private_dns_specifier``) counts only in ``hostname`` mode.
    """
    raw = _null(settings.get("private_dns_mode"))
    explicit = raw is not None
    if raw is None:
        raw = _null(settings.get("private_dns_default_mode")) or PRIVATE_DNS_DEFAULT_MODE.value
    mode = _DNS_MODES.get(raw, PrivateDnsMode.UNKNOWN)
    hostname = (
        _null(settings.get("private_dns_specifier")) if mode is PrivateDnsMode.HOSTNAME else None
    )
    return PrivateDnsConfig(
        mode=mode,
        hostname=hostname,
        explicit=explicit,
        raw_mode=raw if mode is PrivateDnsMode.UNKNOWN else None,
    )


def parse_global_proxy(value: Text | None) -> tuple[str, int] | None:
    """The ``http_proxy`` global setting as ``(host, port)``, read the way Android's
    ``ProxyTracker.loadDeprecatedGlobalHttpProxy`` reads it: split on ``:``, the host first,
    the port second (8080 when absent).

    ``None`` when no proxy applies: unset, ``null``, an empty host (``:0`` is the usual way to
    clear it), a port that is not a number, or port 0.
    """
    if value is None:
        return None
    text = _text(value).strip()
    if text in ("", "null"):
        return None
    parts = text.split(":")
    while parts and parts[-1] == "":  # Java's String.split drops trailing empty strings
        parts.pop()
    if not parts or not parts[0]:
        return None
    port = 8080
    if len(parts) > 1:
        if _INT.fullmatch(parts[1]) is None:  # Integer.parseInt refuses it: no proxy is set
            return None
        port = int(parts[1])
    if not 0 < port <= 0xFFFF:
        return None
    return parts[0], port


def global_proxy_from_settings(settings: Mapping[str, str]) -> tuple[str, int] | None:
    """The global proxy from the ``global`` settings: ``global_http_proxy_host`` and
    ``global_http_proxy_port`` (set by a device policy) win over ``http_proxy``."""
    host = _null(settings.get("global_http_proxy_host"))
    if host is not None:
        port = _int(settings.get("global_http_proxy_port", ""))
        if port is not None and 0 < port <= 0xFFFF:
            return host, port
    return parse_global_proxy(settings.get("http_proxy"))
