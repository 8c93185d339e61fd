"""What a payload carries when the values are not known in advance.

Shapes of personal data (IMEI-like numbers that pass the Luhn check, MAC addresses, GPS
coordinates, E.164 phone numbers, e-mail addresses), lists of installed apps (many Android
package names in one payload, as the Trinity College Dublin study of 2021 saw vendor builds
send while idle), the character of a payload (plain, compressed, or encrypted/random: what
cannot be read is itself a finding), and keyword or configuration lists of the kind the
Lithuanian NCSC found Xiaomi handsets downloading in 2021 (``MiAdBlackListConfig``, 449
censorship keywords, from ``globalapi.ad.xiaomi.com``).

Every function takes bytes (already content-decoded) and returns typed records; none keeps
state.
"""

from __future__ import annotations

import json
import logging
import math
import re
import statistics
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from auditor import decoders
from auditor.analysis.payload import BudgetExhausted, parse_protobuf
from auditor.device.parsers import luhn_valid

log = logging.getLogger(__name__)


class PatternKind(StrEnum):
    IMEI = "imei"
    MAC = "mac"
    GPS = "gps"
    PHONE = "phone"
    EMAIL = "email"
    ANDROID_ID = "android_id"  # 16 hex digits: only ever reported under a name that says so


@dataclass(frozen=True, slots=True)
class PatternMatch:
    kind: PatternKind
    value: str
    offset: int
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "value": self.value,
            "offset": self.offset,
            "detail": self.detail,
        }


# ------------------------------------------------------------------------------- shapes

# One pass over the payload: each alternative starts with a distinct character class, so the
# regex engine rejects most positions on their first byte.
_SHAPES = re.compile(
    rb"""
    (?P<imei>(?<![0-9])[0-9]{15}(?![0-9]))
  | (?P<mac>(?<![0-9A-Za-z:-])[0-9A-Fa-f]{2}(?P<sep>[:-])(?:[0-9A-Fa-f]{2}(?P=sep)){4}
        [0-9A-Fa-f]{2}(?![0-9A-Za-z:-]))
  | (?P<phone>(?<![0-9A-Za-z+%])(?:\+|%2[Bb])[1-9][0-9]{7,14}(?![0-9]))
  | (?P<geo>geo:(?P<glat>-?[0-9]{1,2}\.[0-9]+),(?P<glon>-?[0-9]{1,3}\.[0-9]+))
  | (?P<coord>(?<![A-Za-z0-9_])(?P<ckey>[Ll][Aa][Tt](?:[Ii][Tt][Uu][Dd][Ee])?
        |[Ll][Nn][Gg]|[Ll][Oo][Nn](?:[Gg](?:[Ii][Tt][Uu][Dd][Ee])?)?)
        ["']?\s*[:=]\s*["']?(?P<cval>-?[0-9]{1,3}\.[0-9]{2,}))
    """,
    re.VERBOSE,
)
_EMAIL_LOCAL = re.compile(rb"[A-Za-z0-9._%+-]{1,64}$")
_EMAIL_DOMAIN = re.compile(rb"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}")
_EMAIL_AT = re.compile(rb"@|%40")
_NOT_MACS = frozenset({"00:00:00:00:00:00", "ff:ff:ff:ff:ff:ff", "02:00:00:00:00:00"})
# GSMA reporting bodies: the first two digits of an allocated TAC
_IMEI_RBI = frozenset(
    {"01", "10", "30", "33", "35", "44", "45", "49", "50", "51", "52", "53", "54", "86", "91"}
    | {"98", "99"}
)
_PAIR_WINDOW = 200


def find_patterns(data: bytes) -> tuple[PatternMatch, ...]:
    """IMEI-like numbers, MACs, GPS coordinates, phone numbers and e-mail addresses in
    ``data``, ordered by offset. Identical values at the same offset are reported once."""
    out: list[PatternMatch] = []
    lats: list[tuple[int, float, str]] = []
    lons: list[tuple[int, float, str]] = []
    for m in _SHAPES.finditer(data):
        start = m.start()
        if m.group("imei"):
            digits = m.group("imei").decode("ascii")
            if luhn_valid(digits) and len(set(digits)) > 2:
                rbi = "allocated-rbi" if digits[:2] in _IMEI_RBI else "unknown-rbi"
                out.append(PatternMatch(PatternKind.IMEI, digits, start, rbi))
        elif m.group("mac"):
            mac = m.group("mac").decode("ascii")
            if mac.lower().replace("-", ":") not in _NOT_MACS:
                out.append(PatternMatch(PatternKind.MAC, mac, start))
        elif m.group("phone"):
            raw = m.group("phone").decode("ascii")
            number = "+" + raw[3:] if raw[0] == "%" else raw
            out.append(PatternMatch(PatternKind.PHONE, number, start))
        elif m.group("geo"):
            lat, lon = float(m.group("glat")), float(m.group("glon"))
            if _plausible(lat, lon):
                out.append(PatternMatch(PatternKind.GPS, f"{lat},{lon}", start, "geo-uri"))
        elif m.group("coord"):
            key = m.group("ckey").decode("ascii").lower()
            value = float(m.group("cval"))
            (lats if key.startswith("lat") else lons).append((start, value, key))
    out += _pair_coordinates(lats, lons)
    out += _emails(data)
    out.sort(key=lambda p: (p.offset, p.kind, p.value))
    return tuple(dict.fromkeys(out))


def _plausible(lat: float, lon: float) -> bool:
    return -90 <= lat <= 90 and -180 <= lon <= 180 and not (lat == 0 and lon == 0)


def _pair_coordinates(
    lats: list[tuple[int, float, str]], lons: list[tuple[int, float, str]]
) -> Iterator[PatternMatch]:
    used: set[int] = set()
    for off, lat, lkey in lats:
        best = None
        for j, (loff, _, _) in enumerate(lons):
            if j in used or abs(loff - off) > _PAIR_WINDOW:
                continue
            if best is None or abs(loff - off) < abs(lons[best][0] - off):
                best = j
        if best is None:
            continue
        lon, okey = lons[best][1], lons[best][2]
        if _plausible(lat, lon):
            used.add(best)
            yield PatternMatch(
                PatternKind.GPS, f"{lat},{lon}", min(off, lons[best][0]), f"{lkey}/{okey}"
            )


def _emails(data: bytes) -> Iterator[PatternMatch]:
    for at in _EMAIL_AT.finditer(data):
        s, e = at.span()
        local = _EMAIL_LOCAL.search(data, max(0, s - 64), s)
        domain = _EMAIL_DOMAIN.match(data, e)
        if not local or not domain:
            continue
        name = local.group().lstrip(b".")
        if not name:
            continue
        addr = (name + b"@" + domain.group()).decode("ascii")
        yield PatternMatch(PatternKind.EMAIL, addr, s - len(name))


# ------------------------------------------------------------------------------- context
#
# A shape is not an identifier. One 15-digit number in ten passes the Luhn check (ad request
# correlators, timestamps with counters do), random 16-hex ids are everywhere, and e-mail-shaped
# text includes the user part of URLs. What turns a shape into a finding is context: a field or
# parameter whose name says what it holds, or the device profile's own value.

_NAMES: dict[PatternKind, re.Pattern[str]] = {
    PatternKind.IMEI: re.compile(
        r"imei|meid|device_?id|deviceid|dev_?id|^did$|hardware_?id|hw_?id|^uid$", re.I
    ),
    PatternKind.MAC: re.compile(r"mac|bssid|wifi|wlan|ether|bt_?addr|bluetooth|hw_?addr", re.I),
    PatternKind.PHONE: re.compile(r"phone|msisdn|mobile|^tel|line1|cell|^number$", re.I),
    PatternKind.EMAIL: re.compile(r"e?mail|account|^user(name)?$|login", re.I),
    PatternKind.ANDROID_ID: re.compile(r"android_?id|ssaid|^aid$", re.I),
}
_LOCAL_KEY = re.compile(rb"""([A-Za-z_][A-Za-z0-9_.-]{0,40})["']?\s*[:=]\s*["']?$""")
_ANDROID_ID = re.compile(r"[0-9a-f]{16}", re.I)


def field_name_before(data: bytes, offset: int) -> str:
    """The key written just before ``offset`` in flat text (``imei=``, ``"imei": "``), if any."""
    m = _LOCAL_KEY.search(data, max(0, offset - 48), offset)
    return m.group(1).decode("ascii").rsplit(".", 1)[-1] if m else ""


def names_kind(kind: PatternKind, name: str) -> bool:
    """Whether a field called ``name`` says it holds a value of this kind."""
    pattern = _NAMES.get(kind)
    return bool(name and pattern and pattern.search(name))


def _normal(kind: PatternKind, value: str) -> str:
    if kind is PatternKind.MAC or kind is PatternKind.ANDROID_ID:
        return re.sub(r"[^0-9a-f]", "", value.lower())
    if kind in (PatternKind.IMEI, PatternKind.PHONE):
        return re.sub(r"[^0-9]", "", value)
    return value.strip().lower()


def shape_context(
    match: PatternMatch, name: str, device: dict[str, str] | None = None
) -> tuple[str, ...]:
    """What says a shaped value is what it looks like: ``name:<field>`` when the field or
    parameter holding it is named for its kind (coordinates are always read under a name:
    ``lat``/``lon`` or a ``geo:`` URI), ``device:<identifier>`` when it is the device
    profile's own value, ``tac:<code> (<identifier>)`` when an IMEI-shaped value has the type
    allocation code of the device's IMEI. Empty: a shape only."""
    out: list[str] = []
    if match.kind is PatternKind.GPS:
        out.append(f"name:{match.detail or 'coordinates'}")
    elif names_kind(match.kind, name):
        out.append(f"name:{name}")
    mine = _normal(match.kind, match.value)
    for ident, value in sorted((device or {}).items()):
        theirs = _normal(match.kind, str(value))
        if mine and theirs == mine:
            out.append(f"device:{ident}")
        elif (
            match.kind is PatternKind.IMEI
            and ident.startswith(("imei", "meid"))
            and len(theirs) >= 14
            and theirs[:8] == mine[:8]
        ):
            # the device's own type allocation code: another IMEI of this model (a second
            # SIM slot), not a coincidence (one random number in 10^8)
            out.append(f"tac:{mine[:8]} ({ident})")
    return tuple(dict.fromkeys(out))


def named_shapes(name: str, data: bytes) -> tuple[PatternMatch, ...]:
    """Shapes too common to report unnamed, found only as a whole value under a field whose
    name says what it is: an Android ID (16 hex digits) under ``android_id``."""
    if not names_kind(PatternKind.ANDROID_ID, name):
        return ()
    text = data.strip().decode("ascii", "replace")
    if _ANDROID_ID.fullmatch(text) and len(set(text.lower())) > 2:
        return (PatternMatch(PatternKind.ANDROID_ID, text.lower(), 0, "named"),)
    return ()


# ------------------------------------------------------------------------------- app lists

_PACKAGE = re.compile(
    rb"(?<![A-Za-z0-9_.])[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)+(?![A-Za-z0-9_]|\.[A-Za-z0-9_])"
)
# first labels of Android package names in the wild (reverse-DNS: TLDs and a few vendors)
_PACKAGE_ROOTS = frozenset(
    """com org net io cn de jp kr tv me co uk us ru fr br in it es nl app dev android info edu
    gov mobi ai tw hk sg vn id th my ph pl se ch at au ca mx ar tr ua cz be dk fi no pt gr il ir
    sa ae eg za ng ke pk bd nz ie hu ro bg hr sk lt lv ee is lu cc ws xyz top club site online
    tech games game studio fun live pro biz xiaomi miui huawei samsung oppo vivo oneplus
    google""".split()
)
_NOT_PACKAGE_ENDINGS = frozenset(
    "json xml html htm js css png jpg jpeg gif webp svg txt so apk dex jar zip gz php".split()
)


@dataclass(frozen=True, slots=True)
class AppList:
    """Many Android package names in one payload: most likely a list of installed apps."""

    count: int
    sample: tuple[str, ...]  # the first ten, in order of appearance
    names: tuple[str, ...]  # all of them, sorted

    def to_dict(self) -> dict[str, Any]:
        return {"count": self.count, "sample": list(self.sample), "names": list(self.names)}


def package_names(data: bytes) -> list[str]:
    """Distinct Android-package-like names in ``data``, in order of appearance."""
    seen: dict[str, None] = {}
    for m in _PACKAGE.finditer(data):
        name = m.group().decode("ascii")
        labels = name.split(".")
        if labels[0] not in _PACKAGE_ROOTS or labels[-1] in _NOT_PACKAGE_ENDINGS:
            continue
        if len(labels) == 2 and labels[1] in _PACKAGE_ROOTS:
            continue  # "co.uk", "com.cn": a domain suffix, not a package
        seen.setdefault(name, None)
    return list(seen)


def find_app_list(data: bytes, *, threshold: int = 5) -> AppList | None:
    """An :class:`AppList` when ``data`` names at least ``threshold`` distinct packages."""
    names = package_names(data)
    if len(names) < threshold:
        return None
    return AppList(len(names), tuple(names[:10]), tuple(sorted(names)))


# ------------------------------------------------------------------------------- character


class ContentKind(StrEnum):
    EMPTY = "empty"
    GZIP = "gzip"
    ZSTD = "zstd"
    ZLIB = "zlib"
    ZIP = "zip"
    PNG = "png"
    JPEG = "jpeg"
    GIF = "gif"
    WEBP = "webp"
    PDF = "pdf"
    JSON = "json"
    XML = "xml"
    PROTOBUF = "protobuf"
    TEXT = "text"
    BINARY = "binary"  # none of the above (brotli has no magic and lands here)


class PayloadClass(StrEnum):
    PLAINTEXT = "plaintext"  # readable or structured: text, JSON, protobuf, ...
    COMPRESSED = "compressed"
    ENCRYPTED_OR_RANDOM = "encrypted_or_random"


@dataclass(frozen=True, slots=True)
class PayloadCharacter:
    kind: ContentKind
    size: int
    entropy: float  # Shannon entropy, bits per byte (0..8)
    ratio: float  # zlib-compressed size / size (about 1.0 for random data)
    klass: PayloadClass

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "size": self.size,
            "entropy": self.entropy,
            "ratio": self.ratio,
            "class": self.klass.value,
        }


_MAGIC: tuple[tuple[bytes, ContentKind], ...] = (
    (b"\x1f\x8b", ContentKind.GZIP),
    (b"\x28\xb5\x2f\xfd", ContentKind.ZSTD),
    (b"PK\x03\x04", ContentKind.ZIP),
    (b"\x89PNG\r\n\x1a\n", ContentKind.PNG),
    (b"\xff\xd8\xff", ContentKind.JPEG),
    (b"GIF87a", ContentKind.GIF),
    (b"GIF89a", ContentKind.GIF),
    (b"%PDF-", ContentKind.PDF),
)
_COMPRESSED_KINDS = frozenset(
    {
        ContentKind.GZIP,
        ContentKind.ZSTD,
        ContentKind.ZLIB,
        ContentKind.ZIP,
        ContentKind.PNG,
        ContentKind.JPEG,
        ContentKind.GIF,
        ContentKind.WEBP,
    }
)
SAMPLE = 1024 * 1024
_HIGH_ENTROPY = 7.2  # bits/byte; text is 4-5, JSON 5-6, protobuf 5-7, ciphertext 7.9+
_INCOMPRESSIBLE = 0.95


def sniff(data: bytes) -> ContentKind:
    """The content type of ``data`` from its first bytes (brotli cannot be told this way)."""
    if not data:
        return ContentKind.EMPTY
    for magic, kind in _MAGIC:
        if data.startswith(magic):
            return kind
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ContentKind.WEBP
    if len(data) > 2 and data[0] == 0x78 and ((data[0] << 8) | data[1]) % 31 == 0:
        if not decoders.decode(data[:SAMPLE], "deflate", 4 * SAMPLE, keep=False).error:
            return ContentKind.ZLIB
    head = data[:SAMPLE]
    text = _as_text(head)
    if text is not None:
        stripped = text.lstrip("\ufeff \t\r\n")
        if stripped[:1] in ("{", "["):
            try:
                json.loads(data)
                return ContentKind.JSON
            except (ValueError, RecursionError):
                pass
        if stripped[:1] == "<":
            return ContentKind.XML
        return ContentKind.TEXT
    try:
        if parse_protobuf(head, budget=[100_000]):
            return ContentKind.PROTOBUF
    except BudgetExhausted:  # many fields and none wrong so far: protobuf-shaped
        return ContentKind.PROTOBUF
    return ContentKind.BINARY


def _as_text(data: bytes) -> str | None:
    try:
        s = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(data) - 4:  # a character cut at the end of the sample is fine
            return None
        s = data[: exc.start].decode("utf-8")
    controls = sum(1 for c in s[:4096] if c < " " and c not in "\t\r\n")
    return s if controls <= len(s[:4096]) // 100 else None


def entropy(data: bytes) -> float:
    """Shannon entropy of the byte distribution, in bits per byte."""
    if not data:
        return 0.0
    counts = [data.count(bytes((b,))) for b in range(256)] if len(data) < 4096 else _hist(data)
    n = len(data)
    return -sum(c / n * math.log2(c / n) for c in counts if c)


def _hist(data: bytes) -> list[int]:
    import numpy as np

    return [int(c) for c in np.bincount(np.frombuffer(data, dtype=np.uint8), minlength=256)]


def characterise(data: bytes) -> PayloadCharacter:
    """Kind, entropy, compressibility and class of a payload (the first MiB is measured).

    Data is compressed when a magic number says so or when raw deflate or brotli decode it
    cleanly (brotli has no magic); otherwise high entropy that zlib cannot shrink is encrypted
    or random data. Other compressors (xz, bzip2 without their headers) look encrypted.
    """
    kind = sniff(data)
    sample = data[:SAMPLE]
    if not sample:
        return PayloadCharacter(kind, 0, 0.0, 0.0, PayloadClass.PLAINTEXT)
    h = entropy(sample)
    ratio = len(zlib.compress(sample, 6)) / len(sample)
    truncated = len(data) > SAMPLE
    if kind in _COMPRESSED_KINDS or (
        kind is ContentKind.BINARY and _decodes_as_compressed(sample, truncated=truncated)
    ):
        klass = PayloadClass.COMPRESSED
    elif h < _HIGH_ENTROPY or ratio < _INCOMPRESSIBLE:
        klass = PayloadClass.PLAINTEXT
    else:
        klass = PayloadClass.ENCRYPTED_OR_RANDOM
    return PayloadCharacter(kind, len(data), round(h, 4), round(ratio, 4), klass)


def _decodes_as_compressed(sample: bytes, *, truncated: bool) -> bool:
    for enc in ("deflate", "br"):
        res = decoders.decode(sample, enc, 16 * len(sample), keep=False)
        if res.exceeded or (res.error is None and res.size > 0):
            return True
        if truncated and res.error == "truncated stream" and res.size > len(sample):
            return True
    return False


# ------------------------------------------------------------------------------- keyword lists

_LIST_KEY = re.compile(r"black|block|keyword|filter|sensitive|censor|banned", re.I)
_SPLIT = re.compile(r"[,\n|;]")
MIN_LIST = 50
MAX_MEDIAN = 40
_MAX_NODES = 500_000
_MAX_EMBEDDED = 8


@dataclass(frozen=True, slots=True)
class KeywordList:
    """A list of short strings shipped to the handset: keywords, block or filter lists."""

    path: str
    count: int
    sample: tuple[str, ...]  # the first ten entries
    entries: tuple[str, ...]  # all of them, in order (to extract as an artifact)
    reasons: tuple[str, ...]  # "many-short-strings", "key:<name>"

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "count": self.count,
            "sample": list(self.sample),
            "entries": list(self.entries),
            "reasons": list(self.reasons),
        }


def find_keyword_lists(data: Any) -> tuple[KeywordList, ...]:
    """Lists of many short strings (at least 50, median length at most 40), or strings under
    keys named like ``*Blacklist*``, ``*keyword*``, ``*filter*``, in a JSON document (bytes,
    or already parsed). JSON held in string values is looked into as well."""
    if isinstance(data, bytes | bytearray):
        try:
            doc = json.loads(data)
        except (ValueError, RecursionError):
            return ()
    else:
        doc = data
    out: list[KeywordList] = []
    stack: list[tuple[Any, str, tuple[str, ...], int]] = [(doc, "$", (), 0)]
    nodes = 0
    embedded = 0
    while stack and nodes < _MAX_NODES:
        node, path, flagged, depth = stack.pop()
        nodes += 1
        if isinstance(node, dict):
            for k, v in node.items():
                key = str(k)
                marks = (*flagged, key) if _LIST_KEY.search(key) else flagged
                stack.append((v, _key_path(path, key), marks, depth))
        elif isinstance(node, list):
            strings = [x for x in node if isinstance(x, str)]
            found = _judge(path, strings, flagged, len(node))
            if found:
                out.append(found)
            else:
                stack.extend((v, f"{path}[{i}]", flagged, depth) for i, v in enumerate(node))
        elif isinstance(node, str):
            text = node.strip()
            if text[:1] in ("{", "[") and embedded < _MAX_EMBEDDED and depth < 4:
                try:
                    inner = json.loads(text)
                except (ValueError, RecursionError):
                    inner = None
                if inner is not None:
                    embedded += 1
                    stack.append((inner, f"{path}|$", flagged, depth + 1))
                    continue
            if flagged:
                parts = [p.strip() for p in _SPLIT.split(node) if p.strip()]
                if len(parts) >= 10:
                    found = _judge(path, parts, flagged, len(parts))
                    if found:
                        out.append(found)
    out.sort(key=lambda k: k.path)
    return tuple(out)


def _judge(
    path: str, strings: list[str], flagged: tuple[str, ...], size: int
) -> KeywordList | None:
    if not strings or len(strings) < 0.9 * size:
        return None
    reasons: list[str] = []
    if len(strings) >= MIN_LIST and statistics.median(len(s) for s in strings) <= MAX_MEDIAN:
        reasons.append("many-short-strings")
    reasons += [f"key:{k}" for k in dict.fromkeys(flagged)]
    if not reasons:
        return None
    return KeywordList(path, len(strings), tuple(strings[:10]), tuple(strings), tuple(reasons))


def _key_path(path: str, key: str) -> str:
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
        return f"{path}.{key}"
    return f"{path}[{json.dumps(key, ensure_ascii=False)}]"
