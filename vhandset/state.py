"""What a phone keeps, as records, and the Android facts they use: the AID table of user ids
(``android_filesystem_config.h``), package, process, log and socket records, binder parcels,
and the synthetic CA certificates of a profile's stores."""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import ipaddress
import logging
import re
import struct
import zoneinfo
from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from vhandset.android import subject_hash_old
from vhandset.profiles import (
    CaSpec,
    Package,
)

if TYPE_CHECKING:
    pass

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


def stable_hex(*parts: object, length: int = 7) -> str:
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


def parse_endpoint(value: str | tuple[str, int]) -> tuple[str, int]:
    if isinstance(value, tuple):
        return str(ipaddress.ip_address(value[0])), int(value[1])
    host, _, port = value.rpartition(":")
    host = host.strip("[]")
    return str(ipaddress.ip_address(host)), int(port)


def hex_addr(addr: str, v6: bool) -> str:
    """An address as ``/proc/net/*`` prints it: each 32-bit word in host (little-endian) order."""
    ip = ipaddress.ip_address(addr)
    if v6 and ip.version == 4:
        ip = ipaddress.IPv6Address(f"::ffff:{ip}")
    packed = ip.packed
    return "".join(
        f"{struct.unpack('<I', packed[i : i + 4])[0]:08X}" for i in range(0, len(packed), 4)
    )


def kernel_at_least(release: str, major: int, minor: int) -> bool:
    m = re.match(r"(\d+)\.(\d+)", release)
    return m is not None and (int(m.group(1)), int(m.group(2))) >= (major, minor)


def uuid_from(*parts: object) -> str:
    h = hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def tz_of(name: str) -> _dt.tzinfo:
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        log.warning("time zone %s unknown here; using UTC", name)
        return _dt.UTC
