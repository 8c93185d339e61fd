"""Known device identifiers in every encoding a handset may send them in, found in one pass.

From ``{name: value}`` (IMEI, Android ID, serial, Wi-Fi MAC, advertising ID, phone number, or
``--identifier NAME=VALUE``) :func:`build_needles` derives the byte strings ("needles") to look
for: the value as is, URL-encoded, base64 (standard, URL-safe, unpadded), hex, its MD5, SHA-1
and SHA-256 digests (hex, base64, raw), as a protobuf varint when numeric, and the stable core
of its base64 at each of the three byte alignments so that it is seen inside a larger base64
blob without decoding it. Case and separator variants are added where they matter (MAC,
UUID, hex-like values; a phone number without its ``+``).

:class:`Matcher` compiles all needles (and a few magic markers the payload walker wants) into
one automaton and finds them all in a single pass. Hyperscan is used where it is installed
(about 4 GB/s on one core in ``bench/scan_identifiers.py``); ``ahocorasick-rs`` is the
portable fallback (about 0.3-0.5 GB/s). One regex per identifier, or a ``bytes.find`` loop per
needle, runs at a few MB/s with a thousand needles.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import quote

log = logging.getLogger(__name__)

MIN_NEEDLE_LENGTH = 6
DEFAULT_MAX_HITS = 10_000


class Encoding(StrEnum):
    """One step of an encoding chain, outermost first (``gzip > json > base64 > plain``).

    The first group are the forms a needle is built in (the last step of every chain); the
    second group are the layers the payload walker undoes on the way to it.
    """

    PLAIN = "plain"
    URL = "url"  # percent-encoding (as a needle: URL-encoded; as a layer: URL-decoded)
    BASE64 = "base64"
    BASE64URL = "base64url"
    BASE64_UNPADDED = "base64-unpadded"
    BASE64URL_UNPADDED = "base64url-unpadded"
    BASE64_INNER = "base64-inner"  # somewhere inside a longer base64 blob, any alignment
    BASE64URL_INNER = "base64url-inner"
    HEX = "hex"
    HEX_UPPER = "hex-upper"
    MD5_HEX = "md5-hex"
    MD5_HEX_UPPER = "md5-hex-upper"
    MD5_BASE64 = "md5-base64"
    MD5_BASE64URL = "md5-base64url"
    MD5_RAW = "md5-raw"
    SHA1_HEX = "sha1-hex"
    SHA1_HEX_UPPER = "sha1-hex-upper"
    SHA1_BASE64 = "sha1-base64"
    SHA1_BASE64URL = "sha1-base64url"
    SHA1_RAW = "sha1-raw"
    SHA256_HEX = "sha256-hex"
    SHA256_HEX_UPPER = "sha256-hex-upper"
    SHA256_BASE64 = "sha256-base64"
    SHA256_BASE64URL = "sha256-base64url"
    SHA256_RAW = "sha256-raw"
    VARINT = "varint"  # a numeric value as a protobuf varint
    # layers
    GZIP = "gzip"
    DEFLATE = "deflate"
    BR = "br"
    ZSTD = "zstd"
    JSON = "json"
    FORM = "form"
    MULTIPART = "multipart"
    PROTOBUF = "protobuf"
    UNESCAPE = "unescape"  # backslash escapes (\\u003d, \\/) undone outside a JSON parse


class Variant(StrEnum):
    """Which spelling of the value a needle was built from."""

    AS_IS = "as-is"
    LOWER = "lower"
    UPPER = "upper"
    COLONS_LOWER = "colons-lower"
    COLONS_UPPER = "colons-upper"
    DASHES_LOWER = "dashes-lower"
    DASHES_UPPER = "dashes-upper"
    BARE_LOWER = "bare-lower"  # separators removed
    BARE_UPPER = "bare-upper"
    NO_PLUS = "no-plus"  # a phone number without its leading +


@dataclass(frozen=True, slots=True)
class Needle:
    identifier: str
    pattern: bytes
    chain: tuple[Encoding, ...]
    variant: Variant = Variant.AS_IS

    @property
    def encoding(self) -> str:
        return " > ".join(self.chain)


@dataclass(frozen=True, slots=True)
class DroppedNeedle:
    """A form not searched for, and why (too short to mean anything, or an empty value)."""

    identifier: str
    chain: tuple[Encoding, ...]
    variant: Variant
    length: int
    reason: str


@dataclass(frozen=True, slots=True)
class NeedleSet:
    needles: tuple[Needle, ...]
    dropped: tuple[DroppedNeedle, ...]
    min_length: int = MIN_NEEDLE_LENGTH

    @property
    def identifiers(self) -> tuple[str, ...]:
        return tuple(sorted({n.identifier for n in self.needles}))

    def summary(self) -> dict[str, Any]:
        """Counts for a report: needles per identifier and what was dropped."""
        per: dict[str, int] = {}
        for n in self.needles:
            per[n.identifier] = per.get(n.identifier, 0) + 1
        return {
            "needles": len(self.needles),
            "per_identifier": dict(sorted(per.items())),
            "dropped": [
                {
                    "identifier": d.identifier,
                    "encoding": " > ".join(d.chain),
                    "variant": d.variant.value,
                    "length": d.length,
                    "reason": d.reason,
                }
                for d in self.dropped
            ],
        }


def parse_identifier(spec: str) -> tuple[str, str]:
    """``NAME=VALUE`` (the CLI's ``--identifier`` and ``--redact-value``) as ``(name, value)``,
    both stripped; the value may hold ``=``. Raises ValueError saying what is wrong."""
    name, sep, value = spec.partition("=")
    name, value = name.strip(), value.strip()
    if not sep:
        raise ValueError(f"{spec!r}: use NAME=VALUE")
    if not name or not value:
        raise ValueError(f"{spec!r}: NAME and VALUE of NAME=VALUE must not be empty")
    return name, value


# ------------------------------------------------------------------------------- spellings

_HEXPAIR = "[0-9A-Fa-f]{2}"
_MAC_SEP = re.compile(rf"{_HEXPAIR}([:-])(?:{_HEXPAIR}\1){{4}}{_HEXPAIR}")
_MAC_BARE = re.compile(r"[0-9A-Fa-f]{12}")
_UUID = re.compile(r"[0-9A-Fa-f]{8}(?:-[0-9A-Fa-f]{4}){3}-[0-9A-Fa-f]{12}")
_PHONE = re.compile(r"\+[0-9]{6,15}")


def _variants(name: str, value: str) -> list[tuple[Variant, str]]:
    out: list[tuple[Variant, str]] = [(Variant.AS_IS, value)]
    if _MAC_SEP.fullmatch(value) or ("mac" in name.lower() and _MAC_BARE.fullmatch(value)):
        bare = value.replace(":", "").replace("-", "")
        pairs = [bare[i : i + 2] for i in range(0, 12, 2)]
        for variant, sep, upper in (
            (Variant.COLONS_LOWER, ":", False),
            (Variant.COLONS_UPPER, ":", True),
            (Variant.DASHES_LOWER, "-", False),
            (Variant.DASHES_UPPER, "-", True),
            (Variant.BARE_LOWER, "", False),
            (Variant.BARE_UPPER, "", True),
        ):
            s = sep.join(pairs)
            out.append((variant, s.upper() if upper else s.lower()))
    elif _UUID.fullmatch(value):
        bare = value.replace("-", "")
        out += [
            (Variant.LOWER, value.lower()),
            (Variant.UPPER, value.upper()),
            (Variant.BARE_LOWER, bare.lower()),
            (Variant.BARE_UPPER, bare.upper()),
        ]
    elif _PHONE.fullmatch(value):
        out.append((Variant.NO_PLUS, value[1:]))
    elif any(c.isalpha() for c in value):
        out += [(Variant.LOWER, value.lower()), (Variant.UPPER, value.upper())]
    seen: set[str] = set()
    unique = []
    for variant, s in out:
        if s not in seen:
            seen.add(s)
            unique.append((variant, s))
    return unique


# ------------------------------------------------------------------------------- encodings

_HASHES: tuple[tuple[Callable[[bytes], Any], tuple[Encoding, ...]], ...] = (
    (
        hashlib.md5,
        (
            Encoding.MD5_HEX,
            Encoding.MD5_HEX_UPPER,
            Encoding.MD5_BASE64,
            Encoding.MD5_BASE64URL,
            Encoding.MD5_RAW,
        ),
    ),
    (
        hashlib.sha1,
        (
            Encoding.SHA1_HEX,
            Encoding.SHA1_HEX_UPPER,
            Encoding.SHA1_BASE64,
            Encoding.SHA1_BASE64URL,
            Encoding.SHA1_RAW,
        ),
    ),
    (
        hashlib.sha256,
        (
            Encoding.SHA256_HEX,
            Encoding.SHA256_HEX_UPPER,
            Encoding.SHA256_BASE64,
            Encoding.SHA256_BASE64URL,
            Encoding.SHA256_RAW,
        ),
    ),
)


def varint(n: int) -> bytes:
    """The protobuf base-128 varint of a non-negative integer."""
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def base64_cores(data: bytes, *, urlsafe: bool = False) -> list[bytes]:
    """The base64 characters that encode only ``data``'s bits, for each of the 3 alignments
    ``data`` can have inside a longer base64-encoded blob."""
    enc = base64.urlsafe_b64encode if urlsafe else base64.b64encode
    out = []
    for k in range(3):
        text = enc(b"\0" * k + data).rstrip(b"=")
        lo, hi = 8 * k, 8 * (k + len(data))
        first = -(-lo // 6)  # ceil
        core = text[first : hi // 6]
        if core:
            out.append(core)
    return out


def _forms(raw: bytes) -> list[tuple[tuple[Encoding, ...], bytes]]:
    """Every encoded form of one spelling, in preference order (earlier wins a tie)."""
    text = raw.decode("utf-8", "surrogateescape")
    forms: list[tuple[tuple[Encoding, ...], bytes]] = [
        ((Encoding.PLAIN,), raw),
        ((Encoding.URL,), quote(raw, safe="").encode("ascii")),
        ((Encoding.BASE64,), base64.b64encode(raw)),
        ((Encoding.BASE64URL,), base64.urlsafe_b64encode(raw)),
        ((Encoding.BASE64_UNPADDED,), base64.b64encode(raw).rstrip(b"=")),
        ((Encoding.BASE64URL_UNPADDED,), base64.urlsafe_b64encode(raw).rstrip(b"=")),
        ((Encoding.HEX,), raw.hex().encode("ascii")),
        ((Encoding.HEX_UPPER,), raw.hex().upper().encode("ascii")),
    ]
    for fn, (hex_lo, hex_up, b64, b64url, raw_enc) in _HASHES:
        digest = fn(raw).digest()
        forms += [
            ((hex_lo,), digest.hex().encode("ascii")),
            ((hex_up,), digest.hex().upper().encode("ascii")),
            ((b64,), base64.b64encode(digest)),
            ((b64,), base64.b64encode(digest).rstrip(b"=")),
            ((b64url,), base64.urlsafe_b64encode(digest)),
            ((b64url,), base64.urlsafe_b64encode(digest).rstrip(b"=")),
            ((raw_enc,), digest),
        ]
    if text.isascii() and text.isdigit() and int(text) < 2**64:
        forms.append(((Encoding.VARINT,), varint(int(text))))
    inner: list[tuple[tuple[Encoding, ...], bytes]] = []
    for chain, value in forms:
        for core in base64_cores(value):
            inner.append(((Encoding.BASE64_INNER, *chain), core))
        for core in base64_cores(value, urlsafe=True):
            inner.append(((Encoding.BASE64URL_INNER, *chain), core))
    return forms + inner


def build_needles(
    identifiers: Mapping[str, str], *, min_length: int = MIN_NEEDLE_LENGTH
) -> NeedleSet:
    """All needles for ``identifiers`` (name -> value), in a stable order.

    Forms shorter than ``min_length`` bytes are dropped and listed in ``dropped``; a form that
    repeats an earlier one of the same identifier (hex of a number is the same in both cases)
    is kept once, under the earlier name.
    """
    needles: list[Needle] = []
    dropped: list[DroppedNeedle] = []
    for name in sorted(identifiers):
        value = str(identifiers[name]).strip()
        if not value:
            dropped.append(DroppedNeedle(name, (Encoding.PLAIN,), Variant.AS_IS, 0, "empty value"))
            continue
        seen: set[bytes] = set()
        for variant, spelling in _variants(name, value):
            for chain, pattern in _forms(spelling.encode("utf-8")):
                if pattern in seen:
                    continue
                seen.add(pattern)
                if len(pattern) < min_length:
                    dropped.append(
                        DroppedNeedle(
                            name,
                            chain,
                            variant,
                            len(pattern),
                            f"shorter than {min_length} bytes",
                        )
                    )
                    continue
                needles.append(Needle(name, pattern, chain, variant))
    if dropped:
        log.info("dropped %d needles shorter than %d bytes", len(dropped), min_length)
    return NeedleSet(tuple(needles), tuple(dropped), min_length)


# ------------------------------------------------------------------------------- matching


@dataclass(frozen=True, slots=True)
class Hit:
    """A needle found at ``data[start:end]``."""

    start: int
    end: int
    needle: Needle


@dataclass(frozen=True, slots=True)
class Found:
    """What one pass over a buffer found: needle hits, and marker offsets by marker index."""

    hits: tuple[Hit, ...]
    markers: tuple[tuple[int, int], ...] = ()
    truncated: bool = False  # stopped after ``max_hits`` raw matches

    def __bool__(self) -> bool:
        return bool(self.hits or self.markers)


_NO_HITS = Found(())


def _hyperscan_available() -> bool:
    try:
        import hyperscan  # noqa: F401
    except ImportError:
        return False
    return True


class Matcher:
    """All needles, plus extra ``markers``, in one automaton; :meth:`find` is one pass.

    Not thread-safe (Hyperscan's scratch space is per matcher): use one per thread.
    """

    def __init__(
        self,
        needles: NeedleSet | Iterable[Needle],
        *,
        markers: Sequence[bytes] = (),
        backend: str = "auto",
        max_hits: int = DEFAULT_MAX_HITS,
    ) -> None:
        items = needles.needles if isinstance(needles, NeedleSet) else tuple(needles)
        by_pattern: dict[bytes, list[Needle]] = {}
        for n in items:
            by_pattern.setdefault(n.pattern, []).append(n)
        self.patterns: list[bytes] = list(by_pattern)
        self.tags: list[tuple[Needle, ...]] = [tuple(v) for v in by_pattern.values()]
        self.n_needles = len(self.patterns)
        self.markers = tuple(markers)
        self.max_hits = max_hits
        self.min_length = min((len(p) for p in self.patterns), default=0)
        all_patterns = self.patterns + [m for m in self.markers if m]
        if backend == "auto":
            backend = "hyperscan" if _hyperscan_available() else "aho-corasick"
        self.backend = backend
        self._scan: Callable[[bytes, int], list[tuple[int, int]]]
        if not all_patterns:
            self._scan = lambda data, limit: []
        elif backend == "hyperscan":
            self._scan = self._hyperscan(all_patterns)
        elif backend == "aho-corasick":
            self._scan = self._aho_corasick(all_patterns)
        else:
            raise ValueError(f"unknown matcher backend {backend!r}")

    @staticmethod
    def _hyperscan(patterns: list[bytes]) -> Callable[[bytes, int], list[tuple[int, int]]]:
        import hyperscan

        # Each byte as \xHH: the pure-literal API stops at NUL bytes, raw digests contain them.
        exprs = [b"".join(b"\\x%02x" % c for c in p) for p in patterns]
        db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
        db.compile(expressions=exprs, ids=list(range(len(exprs))), elements=len(exprs))
        lengths = [len(p) for p in patterns]

        def scan(data: bytes, limit: int) -> list[tuple[int, int]]:
            out: list[tuple[int, int]] = []

            def on_match(pid: int, _from: int, to: int, _flags: int, _ctx: object) -> bool:
                out.append((pid, to - lengths[pid]))
                return len(out) >= limit

            try:
                db.scan(data, match_event_handler=on_match)
            except hyperscan.ScanTerminated:
                pass
            return out

        return scan

    @staticmethod
    def _aho_corasick(patterns: list[bytes]) -> Callable[[bytes, int], list[tuple[int, int]]]:
        import ahocorasick_rs

        ac = ahocorasick_rs.BytesAhoCorasick(
            patterns, implementation=ahocorasick_rs.Implementation.DFA
        )

        def scan(data: bytes, limit: int) -> list[tuple[int, int]]:
            found = ac.find_matches_as_indexes(data, overlapping=True)
            return [(pid, start) for pid, start, _ in found[:limit]]

        return scan

    def find(self, data: bytes) -> Found:
        """Every needle and marker in ``data``, in one pass.

        Within one identifier a hit inside another hit's span is dropped (the padded base64
        wins over its unpadded prefix, ``+8613800138000`` over ``8613800138000``).
        """
        if len(data) < self.min_length and not self.markers:
            return _NO_HITS
        raw = self._scan(data, self.max_hits)
        if not raw:
            return _NO_HITS
        truncated = len(raw) >= self.max_hits
        hits: list[Hit] = []
        markers: list[tuple[int, int]] = []
        n = self.n_needles
        for pid, start in raw:
            if pid >= n:
                markers.append((start, pid - n))
                continue
            end = start + len(self.patterns[pid])
            for needle in self.tags[pid]:
                hits.append(Hit(start, end, needle))
        return Found(_outermost(hits), tuple(sorted(markers)), truncated)

    def any(self, data: bytes) -> bool:
        """Whether any needle (not marker) occurs in ``data``."""
        return any(pid < self.n_needles for pid, _ in self._scan(data, self.max_hits))


def _outermost(hits: list[Hit]) -> tuple[Hit, ...]:
    if len(hits) <= 1:
        return tuple(hits)
    hits.sort(key=lambda h: (h.needle.identifier, h.start, -h.end, h.needle.chain))
    out: list[Hit] = []
    ident = None
    reach = -1
    for h in hits:
        if h.needle.identifier != ident:
            ident, reach = h.needle.identifier, -1
        if h.end <= reach:
            continue
        reach = h.end
        out.append(h)
    out.sort(key=lambda h: (h.start, h.end, h.needle.identifier))
    return tuple(out)
