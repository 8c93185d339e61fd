"""Redaction for publication: a report that shows what the phone sent without saying which
phone it was.

Long because: the redactor, its placeholders and the writers of the redacted report must
agree on one mapping from original to placeholder, and the output check reads it back.

The originals are the identifiers the analysis searched for (the device profile's IMEI,
serial, Android ID, MAC, advertising ID, and every ``--identifier``), the personal values the
scanner found without knowing them (IMEI-shaped numbers, MACs, phone numbers, e-mail
addresses, coordinates), and any value the user adds. Each original gets a stable placeholder,
``‹IMEI-1›``, numbered by kind and then by the SHA-256 of the value, so the same input gives
the same placeholders. Every encoded form of it that the scanner searches for
(:func:`auditor.analysis.identifiers.build_needles`: case and separator variants, URL
encoding, base64 in its four spellings and inside longer base64, hex, MD5/SHA-1/SHA-256
digests...) is replaced by a placeholder that keeps the link: ``‹IMEI-1:base64›``,
``‹IMEI-1:sha256-hex›``. Matches are replaced in one pass, longest first, so a value inside
another leaves no fragment.

The session folder is never touched (sealed evidence keeps its originals). A redacted report
is checked after it is written: every file is read back, and any original in any encoding
makes :func:`write_redacted` delete what it wrote and refuse. The redaction map records
placeholders, kinds, where each original came from and in which encodings it was seen; never
a value.
"""

from __future__ import annotations

import bisect
import csv
import dataclasses
import hashlib
import html
import io
import json
import logging
import re
import shutil
import string
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

import ahocorasick_rs
import pandas as pd

from auditor import jsonio
from auditor.analysis.escape import visible
from auditor.analysis.identifiers import MIN_NEEDLE_LENGTH, Encoding, build_needles
from auditor.analysis.model import Analysis
from auditor.analysis.patterns import PatternKind, find_patterns
from auditor.analysis.report import write_report
from auditor.decoders import text_views
from auditor.errors import AuditorError

log = logging.getLogger(__name__)

OPEN, CLOSE = "‹", "›"
REDACTED = f"{OPEN}REDACTED{CLOSE}"
_MARKS = str.maketrans({OPEN: "\\u2039", CLOSE: "\\u203a"})
MIN_VALUE = 3  # characters: a shorter value cannot be told from ordinary text
MIN_PARTIAL = 5  # characters of a value cut at the edge of an excerpt that are still replaced
EXCERPT_KEYS = frozenset({"excerpt"})  # the text the scanner cut out of a payload
CUT = "cut"  # label suffix of a placeholder that replaced part of a value cut by an excerpt

_ROUNDS = 3  # replacement passes over one string after the first
_PIECE = 1 << 16  # characters of a long text searched at once (whole lines)
T = TypeVar("T")
# a match: its span in the string, the form, and the layers it was found under ("" for none)
_Match = tuple[int, int, int, str]

# Encodings that change with the case of the value's letters: matched exactly. The others
# (plain text, URL escapes, hex and hex digests) are matched ignoring ASCII case.
_CASE_SENSITIVE = frozenset(
    {
        Encoding.BASE64,
        Encoding.BASE64URL,
        Encoding.BASE64_UNPADDED,
        Encoding.BASE64URL_UNPADDED,
        Encoding.BASE64_INNER,
        Encoding.BASE64URL_INNER,
        Encoding.MD5_BASE64,
        Encoding.MD5_BASE64URL,
        Encoding.MD5_RAW,
        Encoding.SHA1_BASE64,
        Encoding.SHA1_BASE64URL,
        Encoding.SHA1_RAW,
        Encoding.SHA256_BASE64,
        Encoding.SHA256_BASE64URL,
        Encoding.SHA256_RAW,
        Encoding.VARINT,
    }
)
_DIGEST = re.compile(r"[0-9a-fA-F]{32}|[0-9a-fA-F]{40}|[0-9a-fA-F]{64}")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[A-Za-z]{2,24}")
_PHONE = re.compile(r"\+[0-9]{7,15}")
_VISIBLE_ESCAPE = re.compile(r"\\u([0-9a-fA-F]{4})")
_SURROGATE = re.compile("[\ud800-\udfff]")
_HTML_TAG = re.compile(r"(<[^<>]*>)")
_HTML_ATTRIBUTE = re.compile(r""""([^"]*)"|'([^']*)'""")
_MD_CELL = re.compile(r"(?<!\\)\|")  # a table's cell separator (md_text escapes a captured |)
_MD_ESCAPE = re.compile(r"\\([!-/:-@\[-`{-~])")  # CommonMark: any ASCII punctuation
# a word at the edge of an excerpt: what may be the rest of a value cut by the excerpt
_WORD = r"[^\s‹›…\"'<>{}\[\](),;&|]+"
_EDGE_HEAD = re.compile(rf"\A{_WORD}(?=[\s\S])")
_EDGE_TAIL = re.compile(rf"(?<=[\s\S]){_WORD}\Z")

# identifier name (its ``_``/``-``-separated words) -> kind of placeholder
_NAME_KINDS: tuple[tuple[frozenset[str], str], ...] = (
    (frozenset({"imei", "meid", "imei1", "imei2"}), "IMEI"),
    (frozenset({"imsi"}), "IMSI"),
    (frozenset({"iccid"}), "ICCID"),
    (frozenset({"serial", "serialno", "sn"}), "SERIAL"),
    (frozenset({"ssaid"}), "ANDROID-ID"),
    (frozenset({"mac", "bssid"}), "MAC"),
    (frozenset({"advertising", "adid", "gaid", "oaid", "aaid", "idfa"}), "AD-ID"),
    (frozenset({"phone", "msisdn", "line1", "tel", "mobile"}), "PHONE"),
    (frozenset({"email", "mail"}), "EMAIL"),
    (frozenset({"gps", "location", "latitude", "longitude", "lat", "lon", "lng"}), "GPS"),
)
_PATTERN_KINDS = {
    PatternKind.IMEI.value: "IMEI",
    PatternKind.MAC.value: "MAC",
    PatternKind.GPS.value: "GPS",
    PatternKind.PHONE.value: "PHONE",
    PatternKind.EMAIL.value: "EMAIL",
}


def kind_of(name: str, value: str = "") -> str:
    """The placeholder kind for an identifier called ``name``: ``imei`` -> ``IMEI``,
    ``wifi_mac`` -> ``MAC``, ``account`` holding an e-mail address -> ``EMAIL``; otherwise
    the name itself, upper-cased (``custom_id`` -> ``CUSTOM-ID``)."""
    low = name.lower()
    words = set(re.split(r"[^a-z0-9]+", low)) - {""}
    if ("android" in words and "id" in words) or low.replace("_", "") == "androidid":
        return "ANDROID-ID"
    for names, kind in _NAME_KINDS:
        if words & names:
            return kind
    if _EMAIL.fullmatch(value):
        return "EMAIL"
    if _PHONE.fullmatch(value):
        return "PHONE"
    return re.sub(r"[^A-Z0-9]+", "-", name.upper()).strip("-") or "VALUE"


def _canonical(value: str) -> str:
    """What two spellings of one value share (case, separators, a phone number's ``+``)."""
    return re.sub(r"[\s:+\-]", "", value.lower())


# ------------------------------------------------------------------------------------- model


@dataclass(frozen=True, slots=True)
class Original:
    """A value to redact: ``name`` is the identifier's name (or the personal-data kind),
    ``source`` says where it was found (``device``, ``searched``, ``extra``, ``personal``)."""

    name: str
    value: str
    source: str
    kind: str | None = None  # default: from the name


@dataclass(frozen=True, slots=True)
class Placeholder:
    """One original value, as the redaction map records it: never the value itself."""

    placeholder: str  # ‹IMEI-1›
    kind: str
    sources: tuple[str, ...]  # "device:imei", "searched:imei", "personal:email", "extra:owner"
    encodings: tuple[str, ...]  # the forms replaced ("plain", "base64", "md5-hex", ...)
    occurrences: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "placeholder": self.placeholder,
            "kind": self.kind,
            "sources": list(self.sources),
            "encodings": list(self.encodings),
            "occurrences": self.occurrences,
        }


@dataclass(frozen=True, slots=True)
class RedactionMap:
    """What was redacted, as recorded in the report (``redaction`` in ``findings.json``)."""

    placeholders: tuple[Placeholder, ...]
    omitted_artifacts: tuple[dict[str, str], ...] = ()

    @property
    def count(self) -> int:
        return sum(p.occurrences for p in self.placeholders)

    def to_dict(self) -> dict[str, Any]:
        return {
            "placeholders": [p.to_dict() for p in self.placeholders],
            "count": self.count,
            "omitted_artifacts": [dict(a) for a in self.omitted_artifacts],
        }


@dataclass(frozen=True, slots=True)
class Leak:
    """An original value still present in a written file (named by its placeholder)."""

    path: Path
    placeholder: str


@dataclass(slots=True)
class _Secret:
    kind: str
    spellings: list[str]
    sources: set[str]
    token: str = ""  # ‹KIND-n›, set once every secret is known
    seen: Counter[str] = field(default_factory=Counter)  # label -> occurrences


@dataclass(frozen=True, slots=True)
class _Form:
    secret: int
    text: str
    label: str  # "" for a spelling of the value itself
    folded: bool  # matched ignoring ASCII case
    # "digits" or "hex": ``text`` is matched against the digits (hex digits) of a run of them
    # split by separators (``35-209900-176148-1``, ``0012.3456.789a``, ``06 12 34 56 78``)
    skeleton: str = ""
    bounded: bool = False  # a skeleton match must start and end where a group does


# ------------------------------------------------------------------------------------ redactor


class Redactor:
    """Replaces every original value, in every encoding the scanner knows, by its placeholder.

    Build it once per report (:meth:`from_analysis`); :meth:`redact` then walks any structure
    (dicts with their keys, lists, dataclasses, DataFrames) and :meth:`find` tells which
    originals a text still holds.
    """

    def __init__(self, originals: Iterable[Original]) -> None:
        self._secrets: list[_Secret] = []
        by_key: dict[str, int] = {}
        for o in originals:
            value = str(o.value).strip()
            if len(value) < MIN_VALUE:
                log.info("%s %s: value too short to redact by matching", o.source, o.name)
                continue
            key = _canonical(value)
            i = by_key.get(key)
            if i is None:
                by_key[key] = i = len(self._secrets)
                kind = o.kind or kind_of(o.name, value)
                self._secrets.append(_Secret(kind, [value], set()))
            elif value not in self._secrets[i].spellings:
                self._secrets[i].spellings.append(value)
            self._secrets[i].sources.add(f"{o.source}:{o.name}")
        self._by_key = by_key
        self._number()
        self._forms = self._build_forms()
        self._compile()
        self._cache: dict[str, tuple[str, tuple[tuple[int, str], ...]]] = {}
        # what redact_text returned and found nothing in, through the same views as find: the
        # check need not search it again where a file holds it as a value
        self._clean: set[str] = set()

    # -- construction

    @classmethod
    def from_analysis(
        cls,
        analysis: Analysis,
        extra: Mapping[str, str] | None = None,
        *,
        personal: Iterable[tuple[str, str]] | None = None,
    ) -> Redactor:
        """The originals of one analysis: the device profile's identifiers and serial, the
        identifiers searched for (``--identifier`` included), ``extra`` (name -> value), the
        personal values the scanner found (``analysis.personal`` when the engine keeps them,
        and ``personal``: (kind, value) pairs), and the personal values that the report's own
        text shows (found again with :func:`auditor.analysis.patterns.find_patterns`)."""
        for name, value in (extra or {}).items():
            if len(str(value).strip()) < MIN_VALUE:
                raise AuditorError(
                    f"redaction value for {name!r} is shorter than {MIN_VALUE} characters: "
                    "it cannot be told from ordinary text"
                )
        explicit = list(_originals_of_doc(analysis.doc))
        explicit += [Original(str(k), str(v), "extra") for k, v in sorted((extra or {}).items())]
        found: set[tuple[str, str]] = set(personal or ())
        kept = getattr(analysis, "personal", None)
        if isinstance(kept, Mapping):
            found |= {(str(k), str(v)) for values in kept.values() for k, v in values}
        found |= detect_personal(_strings(analysis))
        return cls.with_personal(explicit, found)

    @classmethod
    def with_personal(
        cls, originals: Iterable[Original], personal: Iterable[tuple[str, str]]
    ) -> Redactor:
        """``originals`` and personal (kind, value) pairs; a personal value that is a spelling
        of a known one (``AA-BB-..`` of the MAC ``aa:bb:..``) joins its placeholder."""
        originals = list(originals)
        known = cls(originals)
        extra: list[Original] = []
        for kind, value in sorted(set(personal)):
            for v in _personal_values(kind, value):
                i = known.secret_of(v)
                if i is not None:
                    # joins the known value's placeholder under the same canonical key
                    extra.append(Original(kind, known._secrets[i].spellings[0], "personal"))
                else:
                    extra.append(Original(kind, v, "personal", _PATTERN_KINDS.get(kind)))
        return cls(originals + extra)

    def _number(self) -> None:
        by_kind: dict[str, list[int]] = defaultdict(list)
        for i, s in enumerate(self._secrets):
            by_kind[s.kind].append(i)
        for kind, idx in by_kind.items():
            idx.sort(
                key=lambda i: hashlib.sha256(
                    _canonical(self._secrets[i].spellings[0]).encode()
                ).hexdigest()
            )
            for n, i in enumerate(idx, 1):
                self._secrets[i].token = f"{OPEN}{kind}-{n}{CLOSE}"

    def _build_forms(self) -> list[_Form]:
        forms: list[_Form] = []
        seen: set[tuple[int, str]] = set()
        ids = {
            f"{i}.{j}": spelling
            for i, s in enumerate(self._secrets)
            for j, spelling in enumerate(s.spellings)
        }
        needles = build_needles(ids, min_length=MIN_VALUE)
        for n in needles.needles:
            plain = n.chain == (Encoding.PLAIN,)
            if not plain and len(n.pattern) < MIN_NEEDLE_LENGTH:
                continue  # as the scanner: short encoded forms occur by chance
            secret = int(n.identifier.split(".")[0])
            label = ":".join(e.value for e in n.chain if e is not Encoding.PLAIN)
            folded = n.chain[0] not in _CASE_SENSITIVE
            for text in _texts(n.pattern):
                if (secret, text) in seen:
                    continue
                seen.add((secret, text))
                forms.append(_Form(secret, text, label, folded))
        for i, s in enumerate(self._secrets):
            for spelling in s.spellings:
                for f in _skeleton_forms(i, s.kind, spelling):
                    if (i, f.skeleton + f.text) not in seen:
                        seen.add((i, f.skeleton + f.text))
                        forms.append(f)
        return forms

    def _compile(self) -> None:
        patterns: dict[str, list[int]] = {}
        skeletons: dict[str, dict[str, list[int]]] = {"digits": {}, "hex": {}}
        for fi, f in enumerate(self._forms):
            if f.skeleton:
                # split by separators: matched on the run's digits; written without any,
                # by the automaton like every other form
                skeletons[f.skeleton].setdefault(f.text, []).append(fi)
            patterns.setdefault(_fold(f.text), []).append(fi)
        self._pattern_forms = list(patterns.values())
        self._partials: tuple[dict[str, int], ...] | None = None  # see _partial_maps
        self._min = min((len(f.text) for f in self._forms), default=0)
        self._max_partial = max((len(f.text) for f in self._forms), default=0)
        tagged = [
            (fi, f.text.split("@")) for fi, f in enumerate(self._forms)
            if not f.label and not f.skeleton and _EMAIL.fullmatch(f.text)
        ]  # fmt: skip
        self._tagged_forms = [fi for fi, _ in tagged]
        self._tagged = (
            re.compile(
                "|".join(
                    f"(?P<t{n}>{re.escape(local)}\\+[\\w.-]{{1,64}}@{re.escape(domain)})"
                    for n, (_, (local, domain)) in enumerate(tagged)
                ),
                re.IGNORECASE | re.ASCII,
            )
            if tagged
            else None
        )
        self._skeletons = {
            kind: (
                ahocorasick_rs.AhoCorasick(list(targets)),
                list(targets.values()),
                min(len(t) for t in targets),
            )
            for kind, targets in skeletons.items()
            if targets
        }
        self._ac = (
            ahocorasick_rs.AhoCorasick(
                list(patterns), implementation=ahocorasick_rs.Implementation.DFA
            )
            if patterns
            else None
        )

    # -- queries

    @property
    def placeholders(self) -> list[str]:
        return sorted(s.token for s in self._secrets)

    def secret_of(self, value: str) -> int | None:
        """The index of the original that ``value`` spells, if any."""
        i = self._by_key.get(_canonical(value.strip()))
        if i is not None:
            return i
        spans = self._spans(value.strip())
        if len(spans) == 1 and spans[0][:2] == (0, len(value.strip())) and not spans[0][3]:
            f = self._forms[spans[0][2]]
            return f.secret if not f.label else None
        return None

    def token(self, value: str) -> str | None:
        """The placeholder of ``value`` (``None`` when it is not an original)."""
        i = self.secret_of(value)
        return None if i is None else self._secrets[i].token

    def _candidates(self, text: str) -> list[tuple[int, int, int]]:
        """Matches in ``text`` as it is: every form, and every skeleton."""
        out = []
        if self._ac is not None and len(text) >= self._min:
            folded = _fold(text)
            for pid, start, end in self._ac.find_matches_as_indexes(folded, overlapping=True):
                for fi in self._pattern_forms[pid]:
                    f = self._forms[fi]
                    if f.bounded and not _bounded(text, start, end, f.skeleton):
                        continue
                    if f.folded or text[start:end] == f.text:
                        out.append((start, end, fi))
                        break
        if self._tagged is not None and "+" in text:
            # an address with a tag (``jane+news@example.org``) reaches the same mailbox
            for m in self._tagged.finditer(text):
                n = int((m.lastgroup or "t0")[1:])
                out.append((m.start(), m.end(), self._tagged_forms[n]))
        for kind, (ac, targets, shortest) in self._skeletons.items():
            out += _skeleton_matches(text, kind, ac, targets, shortest, self._forms)
        return out

    def _all_candidates(self, text: str) -> list[_Match]:
        """Matches in every view of ``text`` (:func:`auditor.decoders.text_views`: the text
        itself, its escape layers undone, its base64 and hex runs decoded), as spans of
        ``text`` with the layers they were found under. A long text is read in pieces of
        whole lines (no value holds a line break), so the views' offsets take memory for one
        piece at a time."""
        if len(text) <= _PIECE:
            return self._piece_candidates(text)
        out: list[_Match] = []
        for at, piece in _pieces(text):
            out += [(s + at, e + at, fi, via) for s, e, fi, via in self._piece_candidates(piece)]
        return out

    def _piece_candidates(self, text: str) -> list[_Match]:
        out: list[_Match] = []
        for view in text_views(text):
            if not view.layers:
                out += [(s, e, fi, "") for s, e, fi in self._candidates(text)]
                continue
            binary = view.layers[-1] in ("base64", "hex")
            via = ":".join(view.layers)
            inner = ":".join((*view.layers[:-1], Encoding.BASE64_INNER.value))
            for s, e, fi in self._candidates(view.text):
                if binary and e - s < MIN_NEEDLE_LENGTH:
                    continue  # as the scanner: a short form in decoded bytes is chance
                start, end = view.origin(s, e)
                whole = s == 0 and e == len(view.text)
                out.append((start, end, fi, via if whole or via[-6:] != "base64" else inner))
        return out

    def _spans(self, text: str) -> list[_Match]:
        """Non-overlapping matches, chosen longest first (then leftmost, then found under
        the fewest layers), sorted by start."""
        cands = self._all_candidates(text)
        if len(cands) <= 1:
            return cands
        cands.sort(key=lambda c: (c[0] - c[1], c[0], c[3].count(":"), len(c[3]), c[2]))
        starts: list[int] = []
        chosen: list[_Match] = []
        for c in cands:
            k = bisect.bisect_right(starts, c[0])
            if k and chosen[k - 1][1] > c[0]:
                continue
            if k < len(chosen) and chosen[k][0] < c[1]:
                continue
            starts.insert(k, c[0])
            chosen.insert(k, c)
        return chosen

    def _tok(self, fi: int, cut: bool = False, via: str = "") -> str:
        f = self._forms[fi]
        base = self._secrets[f.secret].token[1:-1]
        label = ":".join(x for x in (via, f.label, CUT if cut else "") if x)
        return f"{OPEN}{base}:{label}{CLOSE}" if label else f"{OPEN}{base}{CLOSE}"

    def _partial_maps(self) -> tuple[dict[str, int], ...]:
        """Beginnings and ends (5 characters or more) of every form and of every number's
        digits -> the form: built on the first excerpt, since they take a while."""
        if self._partials is None:
            prefixes: dict[str, int] = {}
            suffixes: dict[str, int] = {}
            digit_prefixes: dict[str, int] = {}
            digit_suffixes: dict[str, int] = {}
            for fi, f in enumerate(self._forms):
                key = _fold(f.text)
                for n in range(MIN_PARTIAL, len(key)):
                    prefixes.setdefault(key[:n], fi)
                    suffixes.setdefault(key[-n:], fi)
                if f.skeleton == "digits":
                    for n in range(MIN_PARTIAL, len(key)):
                        digit_prefixes.setdefault(key[:n], fi)
                        digit_suffixes.setdefault(key[-n:], fi)
            self._partials = (prefixes, suffixes, digit_prefixes, digit_suffixes)
        return self._partials

    def _edges(self, text: str) -> tuple[int, int, int | None, int | None]:
        """How much of ``text``'s start is the end of a value, and of its end the start of
        one (an excerpt cut through a value), with the forms they belong to."""
        head = tail = 0
        head_form = tail_form = None
        if not self._forms or len(text) < MIN_PARTIAL:
            return head, tail, head_form, tail_form
        prefixes, suffixes, digit_prefixes, digit_suffixes = self._partial_maps()
        folded = _fold(text)
        for n in range(min(len(text), self._max_partial), MIN_PARTIAL - 1, -1):
            fi = suffixes.get(folded[:n])
            if fi is not None and (
                self._forms[fi].folded or self._forms[fi].text.endswith(text[:n])
            ):
                head, head_form = n, fi
                break
        for n in range(min(len(text), self._max_partial), MIN_PARTIAL - 1, -1):
            fi = prefixes.get(folded[-n:])
            if fi is not None and (
                self._forms[fi].folded or self._forms[fi].text.startswith(text[-n:])
            ):
                tail, tail_form = n, fi
                break
        # a number split by separators, cut (``… 35 209900 17``): its digits as a skeleton's
        if head_form is None and (m := _HEAD_DIGITS.match(text)):
            digits = _NOT_DIGIT.sub("", m.group())
            fi = digit_suffixes.get(digits) if len(digits) >= MIN_PARTIAL else None
            if fi is not None:
                head, head_form = m.end(), fi
        if tail_form is None and (m := _TAIL_DIGITS.search(text)):
            digits = _NOT_DIGIT.sub("", m.group())
            fi = digit_prefixes.get(digits) if len(digits) >= MIN_PARTIAL else None
            if fi is not None:
                tail, tail_form = len(text) - m.start(), fi
        return head, tail, head_form, tail_form

    def _replace(
        self, text: str, *, edges: bool = False
    ) -> tuple[str, tuple[tuple[int, str], ...]]:
        spans = self._spans(text)
        head = tail = 0
        head_form = tail_form = None
        if edges:
            head, tail, head_form, tail_form = self._edges(text)
            first = spans[0][0] if spans else len(text)
            last = spans[-1][1] if spans else 0
            if head > first:
                head, head_form = 0, None
            if len(text) - tail < max(last, head):
                tail, tail_form = 0, None
        if not spans and not head and not tail:
            return text, ()
        parts: list[str] = []
        hits: list[tuple[int, str]] = []
        pos = 0
        if head_form is not None:
            parts.append(self._tok(head_form, cut=True))
            hits.append((self._forms[head_form].secret, self._label(head_form, True)))
            pos = head
        for start, end, fi, via in spans:
            parts.append(text[pos:start])
            parts.append(self._tok(fi, via=via))
            hits.append((self._forms[fi].secret, self._label(fi, via=via)))
            pos = end
        end_at = len(text) - tail if tail_form is not None else len(text)
        parts.append(text[pos:end_at])
        if tail_form is not None:
            parts.append(self._tok(tail_form, cut=True))
            hits.append((self._forms[tail_form].secret, self._label(tail_form, True)))
        return "".join(parts), tuple(hits)

    def _label(self, fi: int, cut: bool = False, via: str = "") -> str:
        label = ":".join(x for x in (via, self._forms[fi].label) if x) or "plain"
        return f"{label}:{CUT}" if cut else label

    def redact_text(self, text: str, *, times: int = 1, edges: bool = False) -> str:
        """``text`` with every original replaced (and counted ``times``).

        With ``edges`` (for excerpts, which the scanner cuts out of a payload at a fixed
        width), a known value cut at the start or end goes as well (``‹EMAIL-1:cut›``), and
        so does the word cut at either end, which may be part of a personal value nobody
        named (``used by whistle.blo`` -> ``used by …``).
        """
        key = ("\0e" if edges else "\0") + text
        done = self._cache.get(key)
        if done is None:
            # the marks are the redactor's: in captured text they are shown escaped, so that
            # a capture cannot forge a placeholder (``imei=‹IMEI-1›`` sent to some host)
            marked = text.translate(_MARKS) if OPEN in text or CLOSE in text else text
            done = self._replace(marked, edges=edges)
            clean = not done[1] and not edges  # searched as it is returned, nothing found
            if edges:
                done = (_trim_edges(done[0]), done[1])
            for _ in range(_ROUNDS):
                # a match dropped for a longer one that overlapped it may still show once
                # that one is replaced (in another view): until no view holds an original
                if not done[1]:
                    break
                more = self._replace(done[0])
                if not more[1]:
                    clean = True
                    break
                done = (more[0], done[1] + more[1])
            self._cache[key] = done
            if clean:
                self._clean.add(done[0])
        for i, label in done[1]:
            self._secrets[i].seen[label] += times
        return done[0]

    def find_values(self, values: Iterable[str]) -> list[str]:
        """:meth:`find` over the distinct ``values`` (cells, JSON strings) that are not what
        :meth:`redact_text` returned after finding nothing in it."""
        found: set[str] = set()
        for v in set(values) - self._clean:
            found.update(self.find(v))
        return sorted(found)

    def find(self, text: str, *, decode: bool = True) -> list[str]:
        """The placeholders (with their encoding) of every original that ``text`` holds, in
        any view of it (the same views :meth:`redact_text` replaces in); with ``decode``
        false, in the text as it is only."""
        if not decode:
            return sorted({self._tok(fi) for _, _, fi in self._candidates(text)})
        return sorted({self._tok(fi, via=via) for _, _, fi, via in self._spans(text)})

    # -- structures

    def redact(self, obj: T) -> T:
        """A redacted copy of ``obj``: strings at any depth, dict keys, dataclass fields and
        DataFrame cells and column names. Enums are kept; a number whose digits hold an
        original becomes its redacted string. In excerpts (``excerpt`` keys and fields) a
        value cut at either end goes as well."""
        out: T = self._walk(obj, self._fn(edges=False))
        return out

    def _fn(self, *, edges: bool) -> Callable[..., str]:
        def fn(text: str, n: int = 1) -> str:
            return self.redact_text(text, times=n, edges=edges)

        return fn

    def _walk(self, obj: Any, fn: Callable[..., str]) -> Any:
        if isinstance(obj, Enum) or obj is None or isinstance(obj, bool):
            return obj
        if isinstance(obj, str):
            return fn(obj)
        if isinstance(obj, int | float):
            text = str(obj)
            red = fn(text)
            return obj if red == text else red
        if isinstance(obj, dict):
            return type(obj)(
                (self._walk(k, fn), self._walk(v, self._field_fn(k, fn))) for k, v in obj.items()
            )
        if isinstance(obj, list):
            return [self._walk(v, fn) for v in obj]
        if isinstance(obj, tuple):
            return tuple(self._walk(v, fn) for v in obj)
        if isinstance(obj, set | frozenset):
            return type(obj)(self._walk(v, fn) for v in obj)
        if isinstance(obj, pd.DataFrame):
            return self._frame(obj, fn)
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            changes = {
                f.name: self._walk(getattr(obj, f.name), self._field_fn(f.name, fn))
                for f in dataclasses.fields(obj)
                if f.init
            }
            return dataclasses.replace(obj, **changes)
        return obj

    def _field_fn(self, key: Any, fn: Callable[..., str]) -> Callable[..., str]:
        return self._fn(edges=True) if key in EXCERPT_KEYS else fn

    def _frame(self, df: pd.DataFrame, fn: Callable[..., str]) -> pd.DataFrame:
        out = df.copy()
        for col in out.columns:
            s = out[col]
            if not (s.dtype == object or pd.api.types.is_string_dtype(s.dtype)):
                if isinstance(s.dtype, pd.CategoricalDtype):
                    s = s.astype(object)
                else:
                    continue
            try:
                counts = s.dropna().value_counts(dropna=True)
            except TypeError:  # unhashable cells (lists, dicts)
                out[col] = s.map(lambda v: self._walk(v, fn))
                continue
            mapping = {}
            for value, n in counts.items():
                red = (
                    fn(value, int(n))
                    if isinstance(value, str)
                    else self._walk(value, lambda t, _n=1, k=int(n): fn(t, k))
                )
                if red is not value and red != value:
                    mapping[value] = red
            if mapping:
                out[col] = s.map(lambda v, m=mapping: m.get(v, v) if _hashable(v) else v)
        renamed = {c: fn(c) for c in out.columns if isinstance(c, str)}
        return out.rename(columns={c: r for c, r in renamed.items() if r != c})

    # -- the map

    def redaction_map(self, omitted: Iterable[dict[str, str]] = ()) -> RedactionMap:
        return RedactionMap(
            tuple(
                sorted(
                    (
                        Placeholder(
                            s.token,
                            s.kind,
                            tuple(sorted(s.sources)),
                            tuple(sorted(s.seen)),
                            sum(s.seen.values()),
                        )
                        for s in self._secrets
                    ),
                    key=lambda p: (p.kind, _number_of(p.placeholder)),
                )
            ),
            tuple(omitted),
        )

    def tokens_of(self, i: int) -> list[str]:
        """Every placeholder used so far for original ``i`` (its base first)."""
        s = self._secrets[i]
        base = s.token[1:-1]
        rest = sorted(f"{OPEN}{base}:{lab}{CLOSE}" for lab in s.seen if lab != "plain")
        return [s.token, *rest]


def _fold(text: str) -> str:
    """ASCII letters in lower case, every other character (and so every index) unchanged.
    ``str.lower`` is not that (``İ`` becomes two characters, ``Σ`` depends on its place);
    ``str.translate`` is, but runs a hundred times slower on text that is not ASCII."""
    if text.isascii():
        return text.lower()
    # a lone surrogate (a JSON escape of one) cannot be matched: U+FFFD, one character too
    text = _SURROGATE.sub("\ufffd", text)
    return text.encode("utf-8").lower().decode("utf-8")


def _trim_edges(text: str) -> str:
    return _EDGE_TAIL.sub("…", _EDGE_HEAD.sub("…", text, count=1), count=1)


def _hashable(v: Any) -> bool:
    try:
        hash(v)
    except TypeError:
        return False
    return True


def _number_of(token: str) -> int:
    m = re.search(r"-(\d+)" + CLOSE, token)
    return int(m.group(1)) if m else 0


def _texts(pattern: bytes) -> list[str]:
    """The ways a needle's bytes appear in the analysis's strings: as UTF-8 text, or (raw
    digests, varints) as the scanner's excerpts show them (``backslashreplace``) and as
    Latin-1 (how headers that are not UTF-8 are decoded)."""
    try:
        return [pattern.decode("utf-8")]
    except UnicodeDecodeError:
        return list(
            dict.fromkeys([pattern.decode("utf-8", "backslashreplace"), pattern.decode("latin-1")])
        )


# ------------------------------------------------------------------------------ skeletons

# digits, or hex digits, split into groups by separators as people and SDKs write them
_SKELETON_RUNS = {
    "digits": re.compile(r"[0-9](?:[ \t\-./+()]{1,3}[0-9]|[0-9])*"),
    "hex": re.compile(r"[0-9A-Fa-f](?:[ \t:.\-]{1,2}[0-9A-Fa-f]|[0-9A-Fa-f])*"),
}
_HEAD_DIGITS = re.compile(r"[0-9](?:[ \t\-./+()]{1,3}[0-9]|[0-9])*")
_TAIL_DIGITS = re.compile(r"[0-9](?:[ \t\-./+()]{1,3}[0-9]|[0-9])*\Z")
_NOT_DIGIT = re.compile(r"[\s\-./+()]")
_MIN_SKELETON = 7  # digits: shorter targets are not searched for without separators
_UNBOUNDED = 12  # digits from which a skeleton may match inside a longer run


def _skeleton_forms(secret: int, kind: str, value: str) -> list[_Form]:
    """The forms of a value that are matched against the digits of a run, whatever splits
    them: a number's digits (an IMEI with dashes or spaces, and without its check digit), a
    phone number's national spellings (trunk ``0``, ``(0)``, ``00``), a MAC's hex digits
    (Cisco's ``0012.3456.789a``) and its value as a decimal integer."""
    out: list[tuple[str, str, str]] = []  # (skeleton, text, label)
    digits = _NOT_DIGIT.sub("", value)
    # an emulator's IMEI of zeros: its spellings would be every run of zeros
    if (
        digits.isascii()
        and digits.isdigit()
        and len(digits) >= _MIN_SKELETON
        and len(set(digits)) > 2
    ):
        out.append(("digits", digits, ""))
        if kind == "IMEI" and len(digits) == 15:
            out.append(("digits", digits[:14], "no-check-digit"))
        if kind == "PHONE":
            out.append(("digits", "00" + digits, ""))
            for cc in range(1, 4):  # the country code's length is not known: every one
                national = digits[cc:]
                if len(national) >= _MIN_SKELETON:
                    out += [
                        ("digits", "0" + national, "national"),
                        ("digits", national, "national"),
                        ("digits", digits[:cc] + "0" + national, ""),
                    ]
    bare = re.sub(r"[\s:.\-]", "", value).lower()
    if kind == "MAC" and re.fullmatch(r"[0-9a-f]{12}", bare):
        out += [("hex", bare, ""), ("digits", str(int(bare, 16)), "decimal")]
    if kind == "ANDROID-ID" and re.fullmatch(r"[0-9a-f]{16}", bare):
        # a 64-bit number: some SDKs send it as a Java long, signed
        n = int(bare, 16)
        out += [("digits", str(n), "decimal"), ("digits", str(abs(n - (1 << 64))), "decimal")]
    return [
        _Form(secret, text, label, True, skel, len(text) < _UNBOUNDED)
        for skel, text, label in dict.fromkeys(out)
        if len(text) >= _MIN_SKELETON
    ]


def _pieces(text: str) -> Iterator[tuple[int, str]]:
    """``text`` in pieces of whole lines, about :data:`_PIECE` characters each (a longer line
    is a piece of its own), with where each starts."""
    at = 0
    while at < len(text):
        cut = text.find("\n", at + _PIECE)
        end = len(text) if cut < 0 else cut + 1
        if end - at > _PIECE:  # a long line: cut before it if something precedes it
            before = text.rfind("\n", at, at + _PIECE)
            if before >= at:
                end = before + 1
        yield at, text[at:end]
        at = end


def _bounded(text: str, start: int, end: int, kind: str) -> bool:
    """Whether ``text[start:end]`` is a whole group: no digit (hex digit) just before or
    after it."""
    group = string.hexdigits if kind == "hex" else string.digits
    return (start == 0 or text[start - 1] not in group) and (
        end == len(text) or text[end] not in group
    )


def _skeleton_matches(
    text: str,
    kind: str,
    ac: ahocorasick_rs.AhoCorasick,
    targets: list[list[int]],
    shortest: int,
    forms: list[_Form],
) -> list[tuple[int, int, int]]:
    out: list[tuple[int, int, int]] = []
    for m in _SKELETON_RUNS[kind].finditer(text):
        run = m.group()
        if len(run) < shortest or run.isalnum():
            continue  # too short, or no separator: the automaton has it
        idx = [m.start() + i for i, c in enumerate(run) if c.isalnum()]
        skeleton = "".join(text[i] for i in idx).lower()
        if len(skeleton) < shortest:
            continue
        for pid, s, e in ac.find_matches_as_indexes(skeleton, overlapping=True):
            for fi in targets[pid]:
                if forms[fi].bounded and not (
                    (s == 0 or idx[s] - idx[s - 1] > 1)
                    and (e == len(idx) or idx[e] - idx[e - 1] > 1)
                ):
                    continue  # a short target inside a longer group: another number
                out.append((idx[s], idx[e - 1] + 1, fi))
    return out


def _personal_values(kind: str, value: str) -> list[str]:
    if kind == PatternKind.GPS.value and "," in value:
        # the pair as a geo: URI writes it, and each coordinate as lat=/lng= fields do
        return [value, *value.split(",")]
    return [value]


def _originals_of_doc(doc: Mapping[str, Any]) -> Iterator[Original]:
    device = doc.get("device") or {}
    for ident in device.get("identifiers") or []:
        if isinstance(ident, dict) and ident.get("value"):
            yield Original(str(ident.get("name") or "identifier"), str(ident["value"]), "device")
    if isinstance(device.get("serial"), str) and device["serial"]:
        yield Original("serial", device["serial"], "device", "SERIAL")
    for name, values in sorted((doc.get("_highlight") or {}).items()):
        for v in values if isinstance(values, list | tuple) else [values]:
            if v:
                yield Original(str(name), str(v), "searched")


def _strings(obj: Any) -> Iterator[str]:
    """Every string an analysis shows (dict keys, DataFrame cells and names included)."""
    stack = [obj]
    while stack:
        o = stack.pop()
        if isinstance(o, Enum) or o is None or isinstance(o, bool):
            continue
        if isinstance(o, str):
            yield o
        elif isinstance(o, dict):
            stack += list(o.keys()) + list(o.values())
        elif isinstance(o, list | tuple | set | frozenset):
            stack += list(o)
        elif isinstance(o, pd.DataFrame):
            stack += [c for c in o.columns if isinstance(c, str)]
            for col in o.columns:
                if o[col].dtype == object or pd.api.types.is_string_dtype(o[col].dtype):
                    try:
                        stack += list(pd.unique(o[col].dropna()))
                    except TypeError:
                        stack += list(o[col].dropna())
        elif dataclasses.is_dataclass(o) and not isinstance(o, type):
            stack += [getattr(o, f.name) for f in dataclasses.fields(o)]


def detect_personal(strings: Iterable[str]) -> set[tuple[str, str]]:
    """Personal values (kind, value) that :func:`find_patterns` sees in ``strings``, read as
    they are and with each layer of escapes undone (:func:`auditor.decoders.text_views`, as the
    redactor reads them); digests (32, 40 or 64 hex digits) are skipped."""
    out: set[tuple[str, str]] = set()
    for s in set(strings):
        if len(s) < 6 or _DIGEST.fullmatch(s):
            continue
        for view in text_views(s, binary=False):
            buf = view.text.encode("utf-8", "replace")
            out |= {(p.kind.value, p.value) for p in find_patterns(buf)}
    return out


# ------------------------------------------------------------------------------------ analysis


def redact_analysis(
    analysis: Analysis,
    extra: Mapping[str, str] | None = None,
    *,
    personal: Iterable[tuple[str, str]] | None = None,
    redactor: Redactor | None = None,
) -> tuple[Analysis, RedactionMap]:
    """A redacted copy of ``analysis`` (its ``doc``, ``flows``, findings and warnings) and the
    map of what was replaced, which is also recorded in the copy as ``doc["redaction"]``.
    ``analysis`` itself is left as it was."""
    red = redactor or Redactor.from_analysis(analysis, extra, personal=personal)
    out = _apply(red, analysis)
    rmap = red.redaction_map()
    out.doc["redaction"] = rmap.to_dict()
    return out, rmap


def _apply(red: Redactor, analysis: Analysis) -> Analysis:
    changes = {}
    for f in dataclasses.fields(analysis):
        if not f.init:
            continue
        value = getattr(analysis, f.name)
        changes[f.name] = red.redact(value)
    out = dataclasses.replace(analysis, **changes)
    _seal_device(red, analysis.doc, out.doc)
    _seal_decoded_fields(out.doc)
    return out


def _seal_decoded_fields(out: dict[str, Any]) -> None:
    """The fields of bodies read by a message definition (``bodies_read.by_schema``, a sample
    of each body's fields) keep their path, kind and size, not their value: besides the
    identifiers the redactor knows, they hold tokens, cookies and account names it does not,
    and a value cut short may hold part of an identifier no search would recognise."""
    read = out.get("bodies_read")
    by_schema = read.get("by_schema") if isinstance(read, dict) else None
    if not isinstance(by_schema, dict):
        return
    for readings in by_schema.values():
        for reading in readings if isinstance(readings, list) else []:
            for entry in reading.get("sample") or [] if isinstance(reading, dict) else []:
                if isinstance(entry, dict) and "value" in entry:
                    entry["size"] = len(str(entry.pop("value")))
                    entry["value_withheld"] = True


def _seal_device(red: Redactor, doc: Mapping[str, Any], out: dict[str, Any]) -> None:
    """The device block keeps no identifier value at all, and the highlights (what the HTML
    report marks in excerpts) become the placeholders."""
    device, new = doc.get("device") or {}, out.get("device")
    if isinstance(new, dict):
        for old_i, new_i in zip(
            device.get("identifiers") or [], new.get("identifiers") or [], strict=False
        ):
            if isinstance(old_i, dict) and isinstance(new_i, dict) and old_i.get("value"):
                new_i["value"] = red.token(str(old_i["value"])) or REDACTED
        if isinstance(device.get("serial"), str) and device["serial"]:
            new["serial"] = red.token(device["serial"]) or REDACTED
    highlight = doc.get("_highlight")
    if isinstance(highlight, Mapping):
        marks: dict[str, list[str]] = {}
        for name, values in highlight.items():
            tokens: list[str] = []
            for v in values if isinstance(values, list | tuple) else [values]:
                i = red.secret_of(str(v))
                tokens += red.tokens_of(i) if i is not None else [REDACTED]
            marks[red.redact_text(str(name), times=0)] = list(dict.fromkeys(tokens))
        out["_highlight"] = marks


# ----------------------------------------------------------------------------------- artifacts


def _redact_artifacts(
    src: Path, red: Redactor
) -> tuple[dict[str, bytes], dict[str, dict[str, str]]]:
    """Redacted bytes of every text artifact under ``src`` and the files left out, with why
    (both by relative path). JSON is redacted value by value; other UTF-8 text as text."""
    kept: dict[str, bytes] = {}
    omitted: dict[str, dict[str, str]] = {}
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        rel = path.relative_to(src).as_posix()
        shown = f"{src.name}/{rel}"
        if red.find(shown):
            omitted[rel] = {
                "path": red.redact_text(shown, times=0),
                "reason": "its name holds an original",
            }
            continue
        data = path.read_bytes()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            omitted[rel] = {"path": shown, "reason": "not text: cannot be redacted safely"}
            continue
        if path.suffix == ".json":
            try:
                # nesting bounded: the redactor walks a document by recursion
                doc = jsonio.loads(text, shown)
            except jsonio.JsonError:
                new = red.redact_text(text)
            else:
                new = json.dumps(red.redact(doc), ensure_ascii=False, indent=1)
        else:
            new = red.redact_text(text)
        kept[rel] = new.encode("utf-8")
    return kept, omitted


def _write_private(path: Path, data: bytes) -> None:
    """``data`` into an owner-only ``path``, through a temporary file that goes on every way
    out (a full disk leaves no ``.tmp`` behind)."""
    from auditor.fsutil import private_mkdirs, write_private

    private_mkdirs(path.parent)
    write_private(path, data)


# --------------------------------------------------------------------------------------- write


def write_redacted(
    analysis: Analysis,
    out: Path,
    formats: Iterable[str],
    artifacts_src: Path | None = None,
    *,
    extra: Mapping[str, str] | None = None,
    personal: Iterable[tuple[str, str]] | None = None,
) -> tuple[list[Path], RedactionMap]:
    """Write the redacted report of ``analysis`` (not yet redacted) into ``out``, in
    ``formats`` as :func:`auditor.analysis.report.write_report` writes them, with the
    redacted text artifacts of ``artifacts_src`` under ``out/<artifacts_src.name>/``. Every
    file under ``out`` is then read back; if any original is still there, in any encoding,
    what was written is deleted and :class:`AuditorError` is raised.

    ``artifacts_src`` may be ``out/artifacts`` itself (as ``analyze(artifacts_dir=...)``
    wrote it): its files are then redacted in place, and those that cannot be are removed.
    """
    out = Path(out)
    red = Redactor.from_analysis(analysis, extra, personal=personal)
    artifacts: dict[str, bytes] = {}
    omitted: dict[str, dict[str, str]] = {}
    if artifacts_src is not None and Path(artifacts_src).is_dir():
        artifacts, omitted = _redact_artifacts(Path(artifacts_src), red)
    redacted = _apply(red, analysis)
    rmap = red.redaction_map(omitted.values())
    redacted.doc["redaction"] = rmap.to_dict()
    existed = out.exists()
    before = _files(out)
    written: list[Path] = []
    try:
        written += write_report(out, redacted.doc, redacted.flows, list(formats))
        if artifacts_src is not None:
            target = out / Path(artifacts_src).name
            in_place = target.resolve() == Path(artifacts_src).resolve()
            for rel, data in artifacts.items():
                _write_private(target / rel, data)
                written.append(target / rel)
            if in_place:  # the originals analyze() extracted into the report folder
                for rel in omitted:
                    (target / rel).unlink(missing_ok=True)
        leaks = check_output(out, red)
    except BaseException:
        _remove(written, out, before, existed)
        raise
    if leaks:
        ours = {p.resolve() for p in written} | (_files(out) - before)
        _remove(written, out, before, existed)
        foreign = sorted({x.path for x in leaks if x.path.resolve() not in ours})
        shown = "; ".join(
            f"{red.redact_text(x.path.name, times=0)}: {x.placeholder}" for x in leaks[:5]
        )
        msg = (
            f"redacted report refused: {len(leaks)} original value(s) still present "
            f"({shown}); what was written was deleted"
        )
        if foreign:
            names = ", ".join(red.redact_text(str(p), times=0) for p in foreign)
            msg += f"; files not written by this run also hold originals: {names}"
        raise AuditorError(msg)
    log.info("redacted report in %s: %d replacements", out, rmap.count)
    return written, rmap


def _files(folder: Path) -> set[Path]:
    return {p.resolve() for p in folder.rglob("*") if p.is_file()} if folder.is_dir() else set()


def _remove(written: list[Path], out: Path, before: set[Path], existed: bool) -> None:
    """Delete what this run wrote (and whatever it left half-written), nothing else."""
    for p in {x.resolve() for x in written} | (_files(out) - before):
        p.unlink(missing_ok=True)
    if not existed and out.is_dir() and not any(p.is_file() for p in out.rglob("*")):
        shutil.rmtree(out, ignore_errors=True)


# --------------------------------------------------------------------------------------- check


def check_output(folder: Path, red: Redactor) -> list[Leak]:
    """Every original that a file under ``folder`` still holds, in its name or its content,
    in any encoding. Each file is read as bytes (Latin-1, so raw digests show), as UTF-8 text,
    with the writer's own escaping undone (HTML for ``.html``, Markdown for ``.md``), and,
    for JSON, CSV and Parquet, value by value; each of these is searched through the same
    decoder the redactor used (:func:`auditor.decoders.text_views`), no deeper."""
    leaks: list[Leak] = []
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        found: set[str] = set(red.find(path.relative_to(folder).as_posix()))
        for view, decode in _views(path):
            if isinstance(view, list):
                found.update(red.find_values(view))
            else:
                found.update(red.find(view, decode=decode))
        leaks += [Leak(path, token) for token in sorted(found)]
    return leaks


def _unvisible(text: str) -> str:
    """:func:`auditor.analysis.escape.visible` undone: only the characters it escapes."""

    def back(m: re.Match[str]) -> str:
        ch = chr(int(m.group(1), 16))
        return ch if visible(ch) != ch else m.group()

    return _VISIBLE_ESCAPE.sub(back, text)


def _html_values(text: str) -> Iterator[str]:
    """The text between an HTML page's tags, and its attributes' values (``html_text``
    escapes quotes, so a value holds none), as written."""
    for part in _HTML_TAG.split(text):
        if part.startswith("<"):
            for double, single in _HTML_ATTRIBUTE.findall(part):
                yield double or single
        elif part.strip():
            yield part


def _csv_cells(text: str) -> list[str]:
    """Every cell of a CSV text, however long (a captured URL may pass the csv module's
    default limit of 128 KiB a field; the limit is the module's, so it is put back)."""
    limit = csv.field_size_limit()
    csv.field_size_limit(max(limit, len(text) + 1))
    try:
        return [c for row in csv.reader(io.StringIO(text)) for c in row]
    finally:
        csv.field_size_limit(limit)


def _views(path: Path) -> Iterator[tuple[str | list[str], bool]]:
    """What a reader of ``path`` sees, and whether to read it through the decoder. The
    report's files are decoded once their writer's escaping is undone, exactly as far as it
    went: one more layer undone than the redactor undid would find a value the redactor could
    not see, and refuse a report for it. As written, they are searched as they are (raw
    digests show in the bytes; a layer the decoder undoes there is the writer's own)."""
    data = path.read_bytes()
    yield data.decode("latin-1"), False
    if path.suffix == ".parquet":
        df = pd.read_parquet(path)
        yield [str(c) for c in df.columns], True
        for col in df.columns:
            yield list(df[col].dropna().astype(str)), True
        return
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return
    if path.suffix == ".html":
        yield text, False
        yield [_unvisible(html.unescape(v)) for v in _html_values(text)], True  # html_text
    elif path.suffix == ".md":
        yield text, False
        cells = (c for line in text.splitlines() for c in _MD_CELL.split(line))
        yield [_unvisible(html.unescape(_MD_ESCAPE.sub(r"\1", c))).strip() for c in cells], True
    elif path.suffix == ".csv":
        yield text, False
        yield [_unvisible(c[1:] if c.startswith("'") else c) for c in _csv_cells(text)], True
    elif path.suffix == ".json":
        try:
            strings = list(_strings(json.loads(text)))
        except (ValueError, RecursionError):
            yield text, True
        else:
            yield text, False
            yield strings, True
    else:  # an artifact's text, as it was redacted
        yield text, True
