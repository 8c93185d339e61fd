"""The schema of auditor's intel: host-name normalisation, the YAML helpers that the knowledge
base's data files and user intel files share (sources, facts, categories, organisations), and
the records an intel file is read into (:class:`IntelEntry`, :class:`IntelFile`).
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from auditor.intel.lookalike import ascii_key, inspect_host
from auditor.intel.model import (
    Category,
    Fact,
    IntelImportError,
    Organisation,
    Source,
)

log = logging.getLogger(__name__)

MAX_FILE_BYTES = 64 * 1024 * 1024
"""Larger intel files are refused rather than read into memory."""

MAX_WARNINGS_KEPT = 200
"""Warnings beyond this are counted but their text is dropped."""

LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_PATTERNLABEL_RE = re.compile(r"^[a-z0-9_*-]{1,63}$")
ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
COUNTRY_RE = re.compile(r"^[A-Z]{2}$")
DATE_RE = re.compile(r"^\d{4}(-\d{2}(-\d{2})?)?$")
URL_RE = re.compile(r"^https?://[^\s]+$")
ADBLOCK_RULE_RE = re.compile(r"^\|\|([^\^/$|*]+)\^(\$[^\s]*)?$")

LOCAL_NAMES = frozenset(
    {
        "localhost",
        "localhost.localdomain",
        "local",
        "broadcasthost",
        "ip6-localhost",
        "ip6-loopback",
        "ip6-localnet",
        "ip6-mcastprefix",
        "ip6-allnodes",
        "ip6-allrouters",
        "ip6-allhosts",
        "0.0.0.0",
    }
)


class IntelFormat(StrEnum):
    YAML = "yaml"
    STIX = "stix"
    HOSTS = "hosts"
    ADBLOCK = "adblock"


class IndicatorKind(StrEnum):
    HOST = "host"  # exactly this host
    DOMAIN = "domain"  # this name and every host under it
    IP = "ip"
    NETWORK = "network"


@dataclass(frozen=True, slots=True)
class IntelEntry:
    kind: IndicatorKind
    value: str  # normalised host, domain, address or network
    label: str  # the user's label for the file (``label=path``)
    source: Source
    organisation: str | None = None  # an organisation id (knowledge base or the intel file)
    categories: tuple[Category, ...] = ()
    name: str | None = None  # STIX indicator name, YAML entry name
    tags: tuple[str, ...] = ()  # STIX labels and indicator_types
    created: str | None = None  # ISO timestamp (STIX created)
    note: str | None = None
    where: str = ""  # file:line, or file and STIX object id

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": str(self.kind),
            "value": self.value,
            "label": self.label,
            "organisation": self.organisation,
            "categories": [str(c) for c in self.categories],
            "name": self.name,
            "tags": list(self.tags),
            "created": self.created,
            "note": self.note,
            "where": self.where,
            "source": self.source.to_json(),
        }


@dataclass(frozen=True)
class IntelFile:
    """One imported file: its entries, and what was skipped and why."""

    path: str
    label: str
    format: IntelFormat
    sha256: str
    source: Source
    entries: tuple[IntelEntry, ...]
    warnings: tuple[str, ...] = ()
    warning_count: int = 0
    ignored: int = 0  # valid lines/objects that say nothing about hosts or addresses
    organisations: tuple[Organisation, ...] = ()

    def summary(self) -> str:
        return (
            f"{self.label}: {len(self.entries)} entries from {self.path} ({self.format}), "
            f"{self.warning_count} warnings, {self.ignored} ignored"
        )


class Warnings:
    def __init__(self) -> None:
        self.kept: list[str] = []
        self.count = 0

    def add(self, text: str) -> None:
        self.count += 1
        if len(self.kept) < MAX_WARNINGS_KEPT:
            self.kept.append(text)
        log.debug("intel: %s", text)


# --- host names ------------------------------------------------------------------------------


def _escaped(c: str) -> str:
    n = ord(c)
    return f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}"


def safe_text(value: object, limit: int = 96) -> str:
    """A printable, bounded rendering of untrusted text for reports and messages."""
    text = value if isinstance(value, str) else repr(value)
    cut = text[:limit]
    shown = "".join(c if c.isprintable() else _escaped(c) for c in cut)
    return shown + (f"...({len(text)} chars)" if len(text) > limit else "")


def normalise_host(raw: object) -> str | None:
    """A DNS name in canonical form (IDNA A-labels, lower case, no port, no root dot).

    None for anything that is not a host name: markup, control characters, spaces, empty
    labels, oversize names. A label holding invisible characters (U+200B, U+00AD, variation
    selectors...) or variant forms (fullwidth letters, the ideographic full stop) keeps them:
    its key is the Punycode of the label as written, never the plain name UTS #46 would fold
    it into (:mod:`auditor.intel.lookalike`). Never raises.
    """
    if isinstance(raw, str):
        key = ascii_key(raw)  # most names: plain ASCII, no A-label to look into
        if key is not None:
            return key
    name = inspect_host(raw)
    return None if name is None else name.key


def normalise_pattern(raw: object) -> str | None:
    """A host pattern (``*`` matches any characters, dots included), or None if malformed."""
    if not isinstance(raw, str) or "*" not in raw:
        return None
    h = raw.strip().lower().rstrip(".")
    if not h or len(h) > 253 or not h.isascii():
        return None
    if not all(_PATTERNLABEL_RE.match(label) for label in h.split(".")):
        return None
    return h if h.replace("*", "").strip(".") else None


# --- auditor's own YAML format ------------------------------------------------------------------


class LineDict(dict[Any, Any]):
    """A YAML mapping that remembers its 1-based line."""

    line: int = 0


@functools.cache
def _line_loader() -> Any:
    """A safe YAML loader whose mappings are :class:`LineDict` (built on first use: importing
    yaml costs a cold ``intel lookup`` that reads the compiled index about 20 ms)."""
    import yaml

    class LineLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
        pass

    def construct_mapping(loader: Any, node: Any) -> LineDict:
        loader.flatten_mapping(node)
        out = LineDict()
        out.line = node.start_mark.line + 1
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str | int | float | bool) and key is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, "mapping keys must be scalars", key_node.start_mark
                )
            if key in out:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            out[key] = loader.construct_object(value_node, deep=True)
        return out

    LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    return LineLoader


def load_yaml(text: str, where: str, error: type[Exception] = IntelImportError) -> Any:
    """YAML text parsed safely; mappings are :class:`LineDict` with their line numbers.

    A document whose aliases expand it far beyond its size (a "billion laughs") is refused:
    every later ``str()`` or walk of it would take exponential time."""
    import yaml

    try:
        doc = yaml.load(text, Loader=_line_loader())  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"{where}:{mark.line + 1}" if mark is not None else where
        problem = getattr(exc, "problem", None) or str(exc)
        raise error(f"{at}: not valid YAML: {problem}") from exc
    except RecursionError:
        raise error(f"{where}: not valid YAML: nested too deeply") from None
    except UnicodeEncodeError:  # the C loader reads UTF-8: a lone surrogate in the text
        raise error(f"{where}: not valid YAML: holds a lone surrogate") from None
    if "*" in text and "&" in text:  # no anchor and alias, no expansion
        limit = _MIN_YAML_NODES + len(text)
        if _expanded_size(doc, limit) > limit:
            raise error(f"{where}: YAML aliases expand it to over {limit} values")
    return doc


_MIN_YAML_NODES = 100_000


def _expanded_size(doc: Any, limit: int) -> int:
    """How many values ``doc`` has with every alias expanded, counting up to ``limit + 1``."""
    count = 0
    stack = [doc]
    while stack and count <= limit:
        value = stack.pop()
        count += 1
        if isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return count


def line_of(value: Any, default: int = 0) -> int:
    return value.line if isinstance(value, LineDict) else default


def check_keys(raw: Mapping[str, Any], allowed: Iterable[str], what: str) -> None:
    unknown = sorted(str(k) for k in raw if k not in set(allowed))
    if unknown:
        raise ValueError(f"{what}: unknown fields: {', '.join(unknown)}")


def text_field(raw: Mapping[str, Any], key: str, *, required: bool = False) -> str | None:
    value = raw.get(key)
    if value is None:
        if required:
            raise ValueError(f"missing field {key!r}")
        return None
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"field {key!r} must be a non-empty string")
    return " ".join(value.split())


def parse_date(value: Any, key: str) -> str | None:
    if value is None:
        return None
    text = str(value)  # YAML turns unquoted 2024-06-30 into a date
    if not DATE_RE.match(text):
        raise ValueError(f"{key!r} must be an ISO date (YYYY, YYYY-MM or YYYY-MM-DD): {value!r}")
    return text


def parse_source(source_id: str, raw: Any) -> Source:
    """A source record; title, publisher, year and an http(s) URL are all required."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"source {source_id!r} must be a mapping")
    check_keys(raw, ("title", "publisher", "year", "url", "accessed", "note"), source_id)
    year = raw.get("year")
    if not isinstance(year, int) or isinstance(year, bool) or not 1900 <= year <= 2100:
        raise ValueError(f"source {source_id!r}: `year` must be a year, e.g. 2021")
    url = text_field(raw, "url", required=True) or ""
    if not URL_RE.match(url):
        raise ValueError(f"source {source_id!r}: `url` must be an http(s) URL")
    return Source(
        id=source_id,
        title=text_field(raw, "title", required=True) or "",
        publisher=text_field(raw, "publisher", required=True) or "",
        year=year,
        url=url,
        accessed=parse_date(raw.get("accessed"), "accessed"),
        note=text_field(raw, "note"),
    )


def resolve_source(value: Any, sources: Mapping[str, Source], default: Source | None) -> Source:
    """The source a record cites by id; ``default`` (a user file's own source) if it cites none."""
    if value is None:
        if default is None:
            raise ValueError("missing field 'source' (every entry must cite a source)")
        return default
    if not isinstance(value, str) or value not in sources:
        raise ValueError(f"unknown source id {value!r}")
    return sources[value]


def parse_categories(value: Any, *, required: bool) -> tuple[Category, ...]:
    if value is None:
        if required:
            raise ValueError("missing field 'categories'")
        return ()
    if not isinstance(value, list) or (required and not value):
        raise ValueError("`categories` must be a non-empty list")
    out: list[Category] = []
    for item in value:
        try:
            cat = Category(str(item))
        except ValueError:
            allowed = ", ".join(c.value for c in Category)
            raise ValueError(f"unknown category {item!r} (one of: {allowed})") from None
        if cat not in out:
            out.append(cat)
    return tuple(out)


def parse_facts(
    value: Any, key: str, sources: Mapping[str, Source], default: Source | None
) -> tuple[Fact, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ValueError(f"`{key}` must be a list of facts")
    facts: list[Fact] = []
    for i, raw in enumerate(value):
        if not isinstance(raw, Mapping):
            raise ValueError(f"{key} #{i + 1}: a fact is a mapping with statement and source")
        check_keys(raw, ("statement", "source", "as_of"), f"{key} #{i + 1}")
        try:
            statement = text_field(raw, "statement", required=True) or ""
            source = resolve_source(raw.get("source"), sources, default)
            as_of = parse_date(raw.get("as_of"), "as_of")
        except ValueError as exc:
            raise ValueError(f"{key} #{i + 1} (line {line_of(raw)}): {exc}") from None
        facts.append(Fact(statement, source, as_of))
    return tuple(facts)


ORGANISATION_FIELDS = (
    "id",
    "name",
    "legal_names",
    "parent",
    "country",
    "categories",
    "state_control",
    "sources",
    "jurisdiction",
    "assessments",
    "manufacturers",
    "note",
)
# Before schema 2 of the knowledge base, one flag mixed state control with the law of the
# headquarters country; user intel files may still carry it (``state_linked: false``, or
# ``true`` with ``state_link`` facts, read as state control).
LEGACY_ORGANISATION_FIELDS = ("state_linked", "state_link")


def parse_organisation(
    raw: Any,
    sources: Mapping[str, Source],
    default: Source | None = None,
    *,
    allow_legacy: bool = False,
) -> Organisation:
    """An organisation record; every one cites at least one source (``default`` for user files)."""
    if not isinstance(raw, Mapping):
        raise ValueError("an organisation is a mapping")
    check_keys(raw, ORGANISATION_FIELDS + LEGACY_ORGANISATION_FIELDS, "organisation")
    oid = raw.get("id")
    if not isinstance(oid, str) or not ID_RE.match(oid):
        raise ValueError(f"`id` must be a lower-case slug, got {oid!r}")
    parent = raw.get("parent")
    if parent is not None and (not isinstance(parent, str) or not ID_RE.match(parent)):
        raise ValueError(f"{oid}: `parent` must be an organisation id")
    country = raw.get("country")
    if not isinstance(country, str) or not COUNTRY_RE.match(country):
        raise ValueError(f"{oid}: `country` must be an ISO 3166-1 alpha-2 code, got {country!r}")
    legacy = [k for k in LEGACY_ORGANISATION_FIELDS if k in raw]
    if legacy and not allow_legacy:
        raise ValueError(
            f"{oid}: `state_linked`/`state_link` are replaced by `state_control` (facts of state "
            "ownership or control); the law of the headquarters country comes from its country"
        )
    names = raw.get("legal_names") or []
    if not isinstance(names, list) or not all(isinstance(x, str) and x.strip() for x in names):
        raise ValueError(f"{oid}: `legal_names` must be a list of names")
    src_ids = raw.get("sources")
    if src_ids is None and default is not None:
        org_sources: tuple[Source, ...] = (default,)
    else:
        if not isinstance(src_ids, list) or not src_ids:
            raise ValueError(f"{oid}: `sources` must be a non-empty list of source ids")
        org_sources = tuple(resolve_source(s, sources, None) for s in src_ids)
    try:
        categories = parse_categories(raw.get("categories"), required=True)
        state_control = parse_facts(raw.get("state_control"), "state_control", sources, default)
        if raw.get("state_linked") is True:
            state_control += parse_facts(raw.get("state_link"), "state_link", sources, default)
        jurisdiction = parse_facts(raw.get("jurisdiction"), "jurisdiction", sources, default)
        assessments = parse_facts(raw.get("assessments"), "assessments", sources, default)
    except ValueError as exc:
        raise ValueError(f"{oid}: {exc}") from None
    if raw.get("state_linked") is True and not state_control:
        raise ValueError(f"{oid}: `state_linked: true` needs `state_link` facts with sources")
    if "state_linked" in raw and not isinstance(raw.get("state_linked"), bool):
        raise ValueError(f"{oid}: `state_linked` must be true or false")
    makers = raw.get("manufacturers") or []
    if not isinstance(makers, list) or not all(isinstance(x, str) and x.strip() for x in makers):
        raise ValueError(f"{oid}: `manufacturers` must be a list of names")
    return Organisation(
        id=oid,
        name=text_field(raw, "name", required=True) or "",
        parent=parent,
        country=country,
        categories=categories,
        state_control=state_control,
        jurisdiction=jurisdiction,
        legal_names=tuple(" ".join(x.split()) for x in names),
        sources=org_sources,
        assessments=assessments,
        manufacturers=tuple(" ".join(x.split()) for x in makers),
        note=text_field(raw, "note"),
    )


def finish_file(
    path: Path,
    label: str,
    fmt: IntelFormat,
    source: Source,
    entries: list[IntelEntry],
    warnings: Warnings,
    ignored: int,
    organisations: Sequence[Organisation] = (),
) -> IntelFile:
    digest = (source.note or "").rpartition(" ")[2]
    return IntelFile(
        path=str(path),
        label=label,
        format=fmt,
        sha256=digest,
        source=source,
        entries=tuple(entries),
        warnings=tuple(warnings.kept),
        warning_count=warnings.count,
        ignored=ignored,
        organisations=tuple(organisations),
    )


MAY_HOLD_SURROGATE = re.compile(r"[\ud800-\udfff]|\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def scrub(value: Any) -> Any:
    """Lone surrogates (``"\\ud800"`` in the JSON) to U+FFFD: entries are written as UTF-8."""
    root = [value]
    stack: list[tuple[Any, Any]] = [(root, 0)]  # (container, key) of each value to visit
    while stack:
        holder, key = stack.pop()
        v = holder[key]
        if isinstance(v, str):
            holder[key] = _SURROGATE.sub("\ufffd", v)
        elif isinstance(v, list):
            stack.extend((v, i) for i in range(len(v)))
        elif isinstance(v, dict):
            items = [
                (_SURROGATE.sub("\ufffd", k) if isinstance(k, str) else k, x) for k, x in v.items()
            ]
            v.clear()
            v.update(items)
            stack.extend((v, k) for k in v)
    return root[0]


def utf8_text(text: str) -> str:
    """Text that UTF-8 can hold: a lone surrogate (in a str from anywhere but a strictly
    decoded file) would reach the entries, which are written as UTF-8."""
    return _SURROGATE.sub("\ufffd", text) if _SURROGATE.search(text) else text
