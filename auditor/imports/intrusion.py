"""Android 16 intrusion logs to auditor records: the OS's own log of DNS lookups and connections.

Android 16's Advanced Protection offers *Intrusion Logging*: the OS records security events,
every DNS lookup and every outgoing connection, each with the package that made it, and keeps
them, encrypted, in the owner's Google account. The owner downloads and decrypts them on the
phone (Settings, "Download and Decrypt"), which writes text files to ``/sdcard/Download/
Intrusion Logging/``; AndroidQF pulls them into ``intrusion_logs/``, and MVT's
``check-intrusion-logs`` and ALEAPP read them. ``docs/intrusion-logs.md`` gives the format and
where each fact of it comes from.

A file is newline-delimited JSON, one event per line, each under one key naming its type::

    {"dns_event":{"event_id":0,"event_time":1787400345334,"package_name":"com.a",
      "hostname":"h.example","ip_addresses":["/192.0.2.7"],"ip_addresses_count":1}}
    {"connect_event":{"event_id":1,"event_time":1787400345540,"package_name":"com.a",
      "port":443,"ip_address":"/192.0.2.7"}}
    {"security_event":{"event_time":1787400345600123456,"adb_shell_cmd":{"command":"id"}}}

A parser only: :func:`read_events` takes a binary stream and yields one
:class:`OsNetworkEvent` per DNS or connect event; :func:`intrusion_records` turns them into
``os_dns`` and ``os_connect`` event records for a session. Security events are counted by tag,
not turned into records. A line that cannot be read is skipped and counted (with its line
number and the field at fault) in the :class:`~auditor.imports.ImportReport`; the others are
still read. Lines are read one at a time, so a file of any size takes little memory.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

from auditor import jsonio
from auditor.imports import ImportReport, SkipKind
from auditor.records import EventRecord

#: The event types Android 16 writes (MVT's KNOWN_INTRUSION_LOG_EVENT_TYPES).
DNS_EVENT = "dns_event"
CONNECT_EVENT = "connect_event"
SECURITY_EVENT = "security_event"
KNOWN_TYPES = (DNS_EVENT, CONNECT_EVENT, SECURITY_EVENT)

#: The kinds of the event records an intrusion log gives.
OS_DNS = "os_dns"
OS_CONNECT = "os_connect"
OS_KINDS = (OS_DNS, OS_CONNECT)
#: ``source`` of those records' data: the OS's own log, not a proxy or a capture.
SOURCE = "intrusion-log"

#: The unit an intrusion-log import skips is one line (one event). ImportReport groups skips
#: by SkipKind; until that enum has a member for it (``OS_EVENT = "os-event"``), lines are
#: counted under the nearest kind there is.
SKIP_KIND: SkipKind = getattr(SkipKind, "OS_EVENT", SkipKind.FLOW)

#: A longer line is skipped (an event is a few hundred bytes; a security event with a long
#: shell command a few KiB).
MAX_LINE = 1024 * 1024
#: Longest host or package name kept; an event with a longer one is skipped.
MAX_NAME = 1024
#: Addresses kept per DNS event (Android logs at most 10: NetworkLoggingTest's
#: MAX_IP_ADDRESSES_LOGGED); past this the rest are counted, not kept.
MAX_ADDRESSES = 64
#: Event times (milliseconds) that auditor.timeutil.iso can write: 1970 to the end of 9999.
_MAX_MS = 253402300799999
#: A security event's time is in nanoseconds (MVT divides it by 1e9); values below this are
#: milliseconds, as some exporters write them.
_NS_FROM = 10**17

_BOMS = (b"\xef\xbb\xbf",)
# What Android gives as a package name (PackageManager.getNameForUid): a package, or a shared
# user id with its uid ("android.uid.system:1000").
_PACKAGE = re.compile(r"[A-Za-z0-9_.]+(:[0-9]+)?")
# A host name as DNS carries it (letters, digits, hyphens, underscores, dots).
_HOSTNAME = re.compile(r"[A-Za-z0-9_.\-]+")


@dataclass(frozen=True, slots=True)
class OsNetworkEvent:
    """One DNS lookup (``kind`` "dns") or outgoing connection ("connect") as the OS logged it.

    ``ts``: seconds since the epoch, from the phone's clock. ``package``: the app (Android's
    name for the UID that made the call; empty when the log gave none). For DNS, ``hostname``,
    the ``addresses`` it resolved to (as the log kept them, at most 10 on Android) and
    ``address_count`` (how many there were). For a connection, ``ip`` and ``port``.
    ``line``: the event's line in its file; ``ref``: the id of the session record that holds
    it (``il-<file's SHA-256, 12 digits>-<line>``, unique across the files of a session), or
    None for an event read from a file."""

    kind: str
    ts: float
    package: str
    line: int
    event_id: int | None = None
    hostname: str | None = None
    addresses: tuple[str, ...] = ()
    address_count: int | None = None
    ip: str | None = None
    port: int | None = None
    ref: str | None = None

    @property
    def key(self) -> str:
        """What names the event in a report: its record's id, else its line."""
        return self.ref or str(self.line)

    def to_record(self, file: str, id_prefix: str) -> EventRecord:
        data: dict[str, Any] = {
            "id": f"{id_prefix}-{self.line}",
            "source": SOURCE,
            "file": file,
            "line": self.line,
            "event_id": self.event_id,
            "package": self.package,
        }
        if self.kind == "dns":
            data |= {
                "hostname": self.hostname,
                "addresses": list(self.addresses),
                "address_count": self.address_count,
            }
            what = f"{self.package or 'an unnamed uid'} looked up {self.hostname}"
            return EventRecord(_iso_ms(self.ts), OS_DNS, what, data)
        data |= {"ip": self.ip, "port": self.port}
        what = f"{self.package or 'an unnamed uid'} connected to {self.ip} port {self.port}"
        return EventRecord(_iso_ms(self.ts), OS_CONNECT, what, data)

    @classmethod
    def from_record(cls, rec: object) -> OsNetworkEvent | None:
        """The event an ``os_dns``/``os_connect`` record holds; ``None`` for any other record,
        or one whose fields are not what :meth:`to_record` writes (an edited session)."""
        if not isinstance(rec, EventRecord) or rec.kind not in OS_KINDS:
            return None
        from auditor.timeutil import parse_iso

        d = rec.data
        try:
            ts = parse_iso(rec.ts)
        except ValueError:
            return None
        line, package = d.get("line"), d.get("package")
        if not isinstance(line, int) or not isinstance(package, str):
            return None
        eid = d.get("event_id") if isinstance(d.get("event_id"), int) else None
        ref = d.get("id") if isinstance(d.get("id"), str) else None
        if rec.kind == OS_DNS:
            host, addrs = d.get("hostname"), d.get("addresses")
            if not isinstance(host, str) or not isinstance(addrs, list):
                return None
            count = d.get("address_count")
            return cls(
                "dns",
                ts,
                package,
                line,
                eid,
                hostname=host,
                addresses=tuple(a for a in addrs if isinstance(a, str)),
                address_count=count if isinstance(count, int) else None,
                ref=ref,
            )
        ip, port = d.get("ip"), d.get("port")
        if not isinstance(ip, str) or not isinstance(port, int) or isinstance(port, bool):
            return None
        return cls("connect", ts, package, line, eid, ip=ip, port=port, ref=ref)


class _Bad(ValueError):
    """An event that cannot be read; the message names the field (never its hostile value)."""


def read_events(
    fh: IO[bytes],
    report: ImportReport,
    *,
    seen: set[bytes] | None = None,
    max_line: int = MAX_LINE,
) -> Iterator[OsNetworkEvent]:
    """The DNS and connect events of an intrusion log, in file order.

    Counts go to ``report``: ``lines`` (events read), ``dns_event`` and ``connect_event``
    (those imported), ``security_event`` and ``other_events`` (read and counted only);
    ``meta`` holds ``security_event_tags`` (by tag) and ``unknown_event_types``.
    Skipped lines (not JSON, a field missing or of the wrong type, too long, a duplicate of an
    earlier event) are counted with their line number and reason; lossless oddities (an
    address that is not one, a name that is no DNS or package name) are ``notes``.
    ``seen``: fingerprints of events already read, shared by the files of one import, so that
    an event two overlapping daily files both hold is imported once (as MVT does)."""
    seen = set() if seen is None else seen
    tags: dict[str, int] = report.meta.setdefault("security_event_tags", {})
    number = 0
    while True:
        raw = fh.readline(max_line + 1)
        if not raw:
            break
        number += 1
        if len(raw) > max_line and not raw.endswith(b"\n"):
            while (rest := fh.readline(max_line)) and not rest.endswith(b"\n"):
                pass
            report.skip(f"line {number}", f"longer than {max_line} bytes", SKIP_KIND)
            continue
        ended = raw.endswith(b"\n")
        line = raw.strip()
        if number == 1:
            for bom in _BOMS:
                if line.startswith(bom):
                    line = line[len(bom) :].lstrip()
        if not line:
            continue
        try:
            obj = jsonio.loads(line, f"line {number}", expect=dict)
        except jsonio.JsonError as exc:
            why = "not JSON" if "not JSON" in str(exc) else str(exc).split(": ", 1)[-1]
            if not ended:
                why = "the file ends in the middle of this event (cut short?)"
                report.warn(f"the file ends in the middle of the event on line {number}")
            report.skip(f"line {number}", why, SKIP_KIND)
            continue
        # an event already read (from this file or an overlapping one) is counted once, and
        # so are its notes; overlapping files come from one exporter and repeat an event byte
        # for byte (hashing the line costs a tenth of re-encoding the object, as MVT does)
        print_ = hashlib.blake2b(line, digest_size=16).digest()
        if print_ in seen:
            report.skip(f"line {number}", "the same event as an earlier line", SkipKind.DUPLICATE)
            continue
        seen.add(print_)
        try:
            event = _event(obj, number, report, tags)
        except _Bad as exc:
            report.skip(f"line {number}", str(exc), SKIP_KIND)
            continue
        report.count("lines")
        if event is None:
            continue
        report.count(DNS_EVENT if event.kind == "dns" else CONNECT_EVENT)
        yield event


def _event(
    obj: dict[str, Any], line: int, report: ImportReport, tags: dict[str, int]
) -> OsNetworkEvent | None:
    if len(obj) != 1:
        raise _Bad(f"{len(obj)} keys at the top level, not one naming the event type")
    (kind, body), *_ = obj.items()
    if not isinstance(body, dict):
        raise _Bad("the event is not a JSON object")
    if kind == SECURITY_EVENT:
        _security(body, report, tags)
        return None
    if kind not in (DNS_EVENT, CONNECT_EVENT):
        report.count("other_events")
        report.note("events_of_unknown_types")
        unknown: dict[str, int] = report.meta.setdefault("unknown_event_types", {})
        label = kind[:64] if _HOSTNAME.fullmatch(kind) else "(a type with unusual characters)"
        if label in unknown or len(unknown) < 50:
            unknown[label] = unknown.get(label, 0) + 1
        return None
    ts = _millis(body.get("event_time"), kind)
    package = _text(body, "package_name", kind, required=False)
    if package and not _PACKAGE.fullmatch(package):
        report.note("package_names_not_android_names")
    if not package:
        report.note("events_without_package")
    eid = body.get("event_id")
    eid = eid if isinstance(eid, int) and not isinstance(eid, bool) else None
    if kind == DNS_EVENT:
        host = _text(body, "hostname", kind, required=True)
        if not _HOSTNAME.fullmatch(host):
            report.note("hostnames_not_dns_names")
        addrs = body.get("ip_addresses", [])
        if addrs is None:
            addrs = []
        if not isinstance(addrs, list):
            raise _Bad(f"{kind}.ip_addresses is not a list")
        kept: list[str] = []
        for a in addrs[:MAX_ADDRESSES]:
            ip = _address(a, report)
            if ip is None:
                report.note("addresses_not_understood")
            elif ip not in kept:
                kept.append(ip)
        if len(addrs) > MAX_ADDRESSES:
            report.note("addresses_past_the_limit", len(addrs) - MAX_ADDRESSES)
        count = body.get("ip_addresses_count")
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            count = None
        elif count > len(addrs):
            report.note("dns_answers_cut_by_the_os")
        return OsNetworkEvent(
            "dns", ts, package, line, eid, hostname=host, addresses=tuple(kept), address_count=count
        )
    ip = _address(body.get("ip_address"), report)
    if ip is None:
        raise _Bad(f"{kind}.ip_address is missing or not an IP address")
    port = body.get("port")
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise _Bad(f"{kind}.port is missing or not a port number")
    return OsNetworkEvent("connect", ts, package, line, eid, ip=ip, port=port)


def _security(body: dict[str, Any], report: ImportReport, tags: dict[str, int]) -> None:
    """Count a security event by its tag: the one key beside ``event_id``/``event_time``
    (``adb_shell_cmd``, ``app_process_start``...), or the numeric ``tag`` some exporters
    write."""
    report.count(SECURITY_EVENT)
    t = body.get("event_time")
    if isinstance(t, int) and not isinstance(t, bool) and 0 < t < _NS_FROM:
        report.note("security_event_times_in_milliseconds")
    names = [k for k in body if k not in ("event_id", "event_time", "tag", "data")]
    if names:
        tag = names[0] if _HOSTNAME.fullmatch(names[0]) else "(a tag with unusual characters)"
    elif isinstance(body.get("tag"), int):
        tag = f"tag {body['tag']}"
    else:
        tag = "(no tag)"
    tag = tag[:64]
    if tag in tags or len(tags) < 200:
        tags[tag] = tags.get(tag, 0) + 1
    else:
        report.note("security_event_tags_past_the_limit")


def _millis(value: Any, kind: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Bad(f"{kind}.event_time is missing or not a number")
    if not 0 < value <= _MAX_MS:
        raise _Bad(f"{kind}.event_time is not a time in milliseconds from 1970 to 9999")
    return float(value) / 1000.0


def _text(body: dict[str, Any], key: str, kind: str, *, required: bool) -> str:
    value = body.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value):
        raise _Bad(f"{kind}.{key} is missing or not a string")
    if len(value) > MAX_NAME:
        raise _Bad(f"{kind}.{key} is longer than {MAX_NAME} characters")
    return value


def _address(value: Any, report: ImportReport) -> str | None:
    """An address as the log writes it (Java's ``InetAddress.toString()``: ``/192.0.2.1``, or
    ``name/192.0.2.1`` when the name was known), as auditor writes addresses: compressed, an
    IPv4-mapped IPv6 address as the IPv4 one (so it meets the captures' rows)."""
    if not isinstance(value, str) or len(value) > 300:
        return None
    ip, mapped = _parse_address(value.rsplit("/", 1)[-1].strip())
    if mapped:
        report.note("ipv4_mapped_addresses")
    return ip


@functools.lru_cache(maxsize=65536)
def _parse_address(text: str) -> tuple[str | None, bool]:
    """(the address, whether it was IPv4-mapped); a log repeats its addresses, so each
    distinct text is parsed once."""
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None, False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped), True
    return str(ip), False


@functools.lru_cache(maxsize=4096)
def _second(sec: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))


def _iso_ms(ts: float) -> str:
    """``ts`` as auditor.timeutil.iso writes it (microseconds, ``Z``), for a time the log
    gave in milliseconds; the date part is made once per second."""
    ms = round(ts * 1000)
    return f"{_second(ms // 1000)}.{ms % 1000:03d}000Z"


def intrusion_records(
    fh: IO[bytes],
    report: ImportReport,
    file: str,
    id_prefix: str,
    *,
    seen: set[bytes] | None = None,
    span: tuple[float, float] | None = None,
) -> Iterator[EventRecord]:
    """The ``os_dns`` and ``os_connect`` records of an intrusion log (see :func:`read_events`);
    each record's ``data.id`` is ``<id_prefix>-<line>``, so it leads back to its line of
    ``file`` (its name under the session's ``original/``).

    ``span``: (first, last) epoch seconds; events outside it are left out and counted in the
    note ``events_outside_the_span`` (a day's log added to a ten-minute capture need not put
    a day of events into the session; the file itself is kept whole)."""
    for event in read_events(fh, report, seen=seen):
        if span is not None and not span[0] <= event.ts <= span[1]:
            report.note("events_outside_the_span")
            continue
        report.count("event")
        yield event.to_record(file, id_prefix)
