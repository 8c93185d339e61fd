"""Imports: capture files made by other tools, turned into auditor sessions.

Each format has a parser that takes bytes (or a binary stream) and gives records
(:mod:`auditor.imports.har`, :mod:`auditor.imports.mitmflows`); :mod:`auditor.imports.session`
finds the format of a file by its content, copies the file into a new session and writes the
records there. What a parser leaves out is never dropped silently: it is counted in an
:class:`ImportReport`, which ends up in the session's ``import`` event and manifest.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from auditor.errors import AuditorError

#: At most this many skipped items are listed one by one; all of them are counted.
MAX_LISTED = 100


class ImportFileError(AuditorError):
    """A file cannot be imported: unreadable, of no known format, or broken at its start.

    The message always names the file (and the entry or byte where it went wrong)."""


class ImportFormat(StrEnum):
    HAR = "har"
    MITMPROXY = "mitmproxy"
    PCAP = "pcap"
    PCAPNG = "pcapng"


@dataclass(frozen=True, slots=True)
class Skipped:
    """Something of the file that was not imported, and why."""

    where: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"where": self.where, "reason": self.reason}


@dataclass
class ImportReport:
    """What one file gave: records written by type, what was skipped, what was lost on the way.

    ``counts`` counts the records written (by record type) and what the parser read;
    ``notes`` counts conditions that did not skip anything but lost detail (for instance a
    body that the exporting tool had already decoded); ``warnings`` are sentences for the
    user (for instance where a truncated flow file stopped). ``meta`` goes into the manifest
    with the counts; ``details`` (possibly long, such as the HAR's connection ids) only into
    the session's ``import`` event."""

    format: ImportFormat
    counts: dict[str, int] = field(default_factory=dict)
    notes: dict[str, int] = field(default_factory=dict)
    skipped: list[Skipped] = field(default_factory=list)
    skipped_total: int = 0
    warnings: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    def count(self, key: str, n: int = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + n

    def note(self, key: str, n: int = 1) -> None:
        self.notes[key] = self.notes.get(key, 0) + n

    def skip(self, where: str, reason: str) -> None:
        self.skipped_total += 1
        if len(self.skipped) < MAX_LISTED:
            self.skipped.append(Skipped(where, reason))

    def warn(self, message: str) -> None:
        self.warnings.append(message)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format.value,
            "counts": dict(sorted(self.counts.items())),
            "notes": dict(sorted(self.notes.items())),
            "skipped": self.skipped_total,
            "skipped_detail": [s.to_dict() for s in self.skipped],
            "warnings": list(self.warnings),
            **self.meta,
        }

    def summary(self) -> dict[str, Any]:
        """The manifest's part: no per-item details."""
        out = self.to_dict()
        del out["skipped_detail"]
        return out


_PCAP_MAGICS = (
    b"\xd4\xc3\xb2\xa1",  # microseconds, little-endian
    b"\xa1\xb2\xc3\xd4",  # microseconds, big-endian
    b"\x4d\x3c\xb2\xa1",  # nanoseconds, little-endian
    b"\xa1\xb2\x3c\x4d",  # nanoseconds, big-endian
)
_PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"  # the Section Header Block type
_BOMS = (
    (b"\xef\xbb\xbf", "utf-8"),
    (b"\xff\xfe", "utf-16-le"),
    (b"\xfe\xff", "utf-16-be"),
)
# A flow file is a series of tnetstrings, each a dict: "<length>:<payload>}".
_TNETSTRING = re.compile(rb"([0-9]{1,12}):")
_TNET_KEY = re.compile(rb"[0-9]{1,6}:[A-Za-z_]")


def detect_format(head: bytes) -> ImportFormat | None:
    """The format of a file from its first bytes (64 KiB is plenty); ``None`` if unknown."""
    if head[:4] in _PCAP_MAGICS:
        return ImportFormat.PCAP
    if head[:4] == _PCAPNG_MAGIC:
        return ImportFormat.PCAPNG
    if _looks_like_json_object(head):
        return ImportFormat.HAR
    m = _TNETSTRING.match(head)
    if m and _TNET_KEY.match(head, m.end()):
        end = m.end() + int(m.group(1))
        # the first flow may run past ``head`` (a big flow, or a file cut inside it)
        if end >= len(head) or head[end : end + 1] == b"}":
            return ImportFormat.MITMPROXY
    return None


def _looks_like_json_object(head: bytes) -> bool:
    text: str | None = None
    for bom, codec in _BOMS:
        if head.startswith(bom):
            text = head[len(bom) : len(bom) + 256].decode(codec, "ignore")
            break
    if text is None:
        text = head[:256].decode("utf-8", "ignore")
    return text.lstrip(" \t\r\n").startswith("{")
