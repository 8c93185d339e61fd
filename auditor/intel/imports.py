"""User intel: auditor's own YAML format, STIX 2.1 bundles, hosts files and adblock lists.

``auditor intel lookup --intel LABEL=FILE`` (and ``KnowledgeBase.load(extra=...)``) read these.
Each parser takes text and gives an :class:`IntelFile` of :class:`IntelEntry` records; only
:func:`load_intel` touches the file system. Problems that spoil a whole file raise
:class:`IntelImportError` naming the file and line; problems with one line or object become
counted warnings, so one bad rule never hides the rest.

Matching, as :class:`IntelIndex` does it:

- ``host`` entries (hosts files, STIX ``url:value``): that exact host only;
- ``domain`` entries (adblock ``||host^``, STIX ``domain-name:value``, YAML ``domain:``): the
  name and every host under it;
- ``ip`` / ``network`` entries (STIX ``ipv4-addr``/``ipv6-addr``, YAML ``ip:``/``network:``).

This module also holds the parsing helpers of auditor's own YAML format (sources, facts,
categories, organisations, host names), which the knowledge base's data files share.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from auditor.intel.ipdb import parse_ip
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

_LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_HOST_LABEL_RE = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$")
_PATTERN_LABEL_RE = re.compile(r"^[a-z0-9_*-]{1,63}$")
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
_COUNTRY_RE = re.compile(r"^[A-Z]{2}$")
_DATE_RE = re.compile(r"^\d{4}(-\d{2}(-\d{2})?)?$")
_URL_RE = re.compile(r"^https?://[^\s]+$")
_ADBLOCK_RULE_RE = re.compile(r"^\|\|([^\^/$|*]+)\^(\$[^\s]*)?$")

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


class _Warnings:
    def __init__(self) -> None:
        self.kept: list[str] = []
        self.count = 0

    def add(self, text: str) -> None:
        self.count += 1
        if len(self.kept) < MAX_WARNINGS_KEPT:
            self.kept.append(text)
        log.debug("intel: %s", text)


# --- host names ------------------------------------------------------------------------------


def safe_text(value: object, limit: int = 96) -> str:
    """A printable, bounded rendering of untrusted text for reports and messages."""
    text = value if isinstance(value, str) else repr(value)
    cut = text[:limit]
    shown = "".join(c if c.isprintable() else f"\\x{ord(c) & 0xFF:02x}" for c in cut)
    return shown + (f"...({len(text)} chars)" if len(text) > limit else "")


def normalise_host(raw: object) -> str | None:
    """A DNS name in canonical form (IDNA A-labels, lower case, no port, no trailing dot).

    None for anything that is not a host name: markup, control characters, empty labels,
    oversize names. Never raises.
    """
    if not isinstance(raw, str) or not raw or len(raw) > 1024:
        return None
    h = raw.strip()
    if h.startswith("[") or h.count(":") > 1:
        return None  # an IPv6 literal is an address, not a name
    if ":" in h:
        h, _, port = h.partition(":")
        if not port.isdigit():
            return None
    h = h.rstrip(".")
    if not h:
        return None
    if not h.isascii():
        encoded = _idna(h)
        if encoded is None:
            return None
        h = encoded
    h = h.lower()
    if len(h) > 253:
        return None
    if all(_HOST_LABEL_RE.match(label) for label in h.split(".")):
        return h
    return None


def _idna(text: str) -> str | None:
    if len(text) > 253:
        return None
    try:
        import idna

        return str(idna.encode(text, uts46=True).decode("ascii"))
    except ImportError:  # pragma: no cover - idna ships with tldextract's dependencies
        pass
    except (ValueError, UnicodeError):
        return None
    try:
        return text.encode("idna").decode("ascii")
    except UnicodeError:
        return None


def normalise_pattern(raw: object) -> str | None:
    """A host pattern (``*`` matches any characters, dots included), or None if malformed."""
    if not isinstance(raw, str) or "*" not in raw:
        return None
    h = raw.strip().lower().rstrip(".")
    if not h or len(h) > 253 or not h.isascii():
        return None
    if not all(_PATTERN_LABEL_RE.match(label) for label in h.split(".")):
        return None
    return h if h.replace("*", "").strip(".") else None


# --- auditor's own YAML format ------------------------------------------------------------------


class LineDict(dict[Any, Any]):
    """A YAML mapping that remembers its 1-based line."""

    line: int = 0


class _LineLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    pass


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> LineDict:
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


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_yaml(text: str, where: str, error: type[Exception] = IntelImportError) -> Any:
    """YAML text parsed safely; mappings are :class:`LineDict` with their line numbers.

    A document whose aliases expand it far beyond its size (a "billion laughs") is refused:
    every later ``str()`` or walk of it would take exponential time."""
    try:
        doc = yaml.load(text, Loader=_LineLoader)  # noqa: S506 - a SafeLoader subclass
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
    if not _DATE_RE.match(text):
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
    if not _URL_RE.match(url):
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
    "parent",
    "country",
    "categories",
    "state_linked",
    "sources",
    "jurisdiction",
    "state_link",
    "assessments",
    "manufacturers",
    "note",
)


def parse_organisation(
    raw: Any, sources: Mapping[str, Source], default: Source | None = None
) -> Organisation:
    """An organisation record; every one cites at least one source (``default`` for user files)."""
    if not isinstance(raw, Mapping):
        raise ValueError("an organisation is a mapping")
    check_keys(raw, ORGANISATION_FIELDS, "organisation")
    oid = raw.get("id")
    if not isinstance(oid, str) or not _ID_RE.match(oid):
        raise ValueError(f"`id` must be a lower-case slug, got {oid!r}")
    parent = raw.get("parent")
    if parent is not None and (not isinstance(parent, str) or not _ID_RE.match(parent)):
        raise ValueError(f"{oid}: `parent` must be an organisation id")
    country = raw.get("country")
    if not isinstance(country, str) or not _COUNTRY_RE.match(country):
        raise ValueError(f"{oid}: `country` must be an ISO 3166-1 alpha-2 code, got {country!r}")
    state_linked = raw.get("state_linked")
    if not isinstance(state_linked, bool):
        raise ValueError(f"{oid}: `state_linked` must be true or false")
    src_ids = raw.get("sources")
    if src_ids is None and default is not None:
        org_sources: tuple[Source, ...] = (default,)
    else:
        if not isinstance(src_ids, list) or not src_ids:
            raise ValueError(f"{oid}: `sources` must be a non-empty list of source ids")
        org_sources = tuple(resolve_source(s, sources, None) for s in src_ids)
    try:
        categories = parse_categories(raw.get("categories"), required=True)
        state_link = parse_facts(raw.get("state_link"), "state_link", sources, default)
        jurisdiction = parse_facts(raw.get("jurisdiction"), "jurisdiction", sources, default)
        assessments = parse_facts(raw.get("assessments"), "assessments", sources, default)
    except ValueError as exc:
        raise ValueError(f"{oid}: {exc}") from None
    if state_linked and not state_link:
        raise ValueError(f"{oid}: `state_linked: true` needs `state_link` facts with sources")
    makers = raw.get("manufacturers") or []
    if not isinstance(makers, list) or not all(isinstance(x, str) and x.strip() for x in makers):
        raise ValueError(f"{oid}: `manufacturers` must be a list of names")
    return Organisation(
        id=oid,
        name=text_field(raw, "name", required=True) or "",
        parent=parent,
        country=country,
        categories=categories,
        state_linked=state_linked,
        jurisdiction=jurisdiction,
        state_link=state_link,
        sources=org_sources,
        assessments=assessments,
        manufacturers=tuple(" ".join(x.split()) for x in makers),
        note=text_field(raw, "note"),
    )


# --- reading files ------------------------------------------------------------------------------


def parse_intel_spec(spec: str | Path) -> tuple[str, Path]:
    """``label=path`` (or a bare path, labelled by its stem) as (label, path)."""
    text = str(spec)
    label, sep, rest = text.partition("=")
    if sep and _LABEL_RE.match(label) and not Path(text).exists():
        return label, Path(rest)
    path = Path(text)
    stem = re.sub(r"[^A-Za-z0-9_.-]", "-", path.stem)[:64].strip("-.") or "intel"
    return stem, path


def file_source(path: Path, label: str, data: bytes, *, publisher: str = "user intel") -> Source:
    """The source that entries of a user file cite: the file itself, with its SHA-256."""
    digest = hashlib.sha256(data).hexdigest()
    return Source(
        id=f"intel:{label}",
        title=f"{label} ({path.name})",
        publisher=publisher,
        year=None,
        url=path.resolve().as_uri(),
        note=f"user intel file, sha256 {digest}",
    )


def detect_format(path: Path, text: str) -> IntelFormat:
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        return IntelFormat.YAML
    if suffix in (".json", ".stix"):
        return IntelFormat.STIX
    head = text.lstrip()
    if head.startswith("[Adblock") or head.startswith("!"):
        return IntelFormat.ADBLOCK
    if head[:1] in ("{", "["):
        return IntelFormat.STIX
    for line in text.splitlines()[:200]:
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        if s.startswith(("||", "!", "[Adblock", "@@")) or "##" in s:
            return IntelFormat.ADBLOCK
        return IntelFormat.HOSTS
    return IntelFormat.HOSTS


def load_intel(
    spec: str | Path,
    *,
    sources: Mapping[str, Source] | None = None,
    fmt: IntelFormat | None = None,
) -> IntelFile:
    """Read and parse one intel file given as ``label=path`` or a path.

    ``sources`` are the knowledge base's sources, which a YAML intel file may cite by id.
    """
    label, path = parse_intel_spec(spec)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise IntelImportError(f"{path}: {size} bytes, over the {MAX_FILE_BYTES}-byte limit")
        data = path.read_bytes()
    except OSError as exc:
        raise IntelImportError(f"{path}: cannot read intel file: {exc.strerror or exc}") from exc
    except ValueError as exc:  # a NUL in the path
        raise IntelImportError(f"{safe_text(str(path))}: cannot read intel file: {exc}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise IntelImportError(f"{path}:{line}: not UTF-8 text (byte {exc.start})") from exc
    kind = fmt or detect_format(path, text)
    parsers: dict[IntelFormat, Callable[..., IntelFile]] = {
        IntelFormat.YAML: parse_intel_yaml,
        IntelFormat.STIX: parse_stix,
        IntelFormat.HOSTS: parse_hosts,
        IntelFormat.ADBLOCK: parse_adblock,
    }
    src = file_source(path, label, data)
    result = parsers[kind](text, path=path, label=label, source=src, sources=sources or {})
    log.info("%s", result.summary())
    return result


def _finish(
    path: Path,
    label: str,
    fmt: IntelFormat,
    source: Source,
    entries: list[IntelEntry],
    warnings: _Warnings,
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


# --- hosts files --------------------------------------------------------------------------------


def parse_hosts(text: str, *, path: Path, label: str, source: Source, **_: Any) -> IntelFile:
    """``ADDRESS HOST [HOST...]`` lines (``0.0.0.0 tracker.example``); ``#`` starts a comment."""
    text = _utf8_text(text)
    entries: list[IntelEntry] = []
    warnings = _Warnings()
    ignored = 0
    content = 0
    for lineno, line in enumerate(text.splitlines(), 1):
        body = line.split("#", 1)[0].strip()
        if not body:
            continue
        content += 1
        parts = body.split()
        if len(parts) < 2 or parse_ip(parts[0]) is None:
            warnings.add(f"{path}:{lineno}: expected 'ADDRESS HOST...', got {safe_text(body)!r}")
            continue
        for name in parts[1:]:
            if name.lower() in LOCAL_NAMES:
                ignored += 1
                continue
            host = normalise_host(name)
            if host is None:
                warnings.add(f"{path}:{lineno}: not a host name: {safe_text(name)!r}")
                continue
            entries.append(
                IntelEntry(IndicatorKind.HOST, host, label, source, where=f"{path.name}:{lineno}")
            )
    if content and not entries and warnings.count:
        raise IntelImportError(f"{warnings.kept[0]} (no valid line in a hosts file)")
    return _finish(path, label, IntelFormat.HOSTS, source, entries, warnings, ignored)


# --- adblock lists ------------------------------------------------------------------------------


def parse_adblock(text: str, *, path: Path, label: str, source: Source, **_: Any) -> IntelFile:
    """Adblock-style ``||host^`` rules (options after ``$`` are kept as a note).

    Exception rules (``@@``), cosmetic rules (``##``) and path or regex rules are valid but say
    nothing about a whole host: they are counted as ignored.
    """
    text = _utf8_text(text)
    entries: list[IntelEntry] = []
    warnings = _Warnings()
    ignored = 0
    content = 0
    for lineno, line in enumerate(text.splitlines(), 1):
        rule = line.strip()
        if not rule or rule.startswith("!") or (rule.startswith("[") and rule.endswith("]")):
            continue
        content += 1
        if rule.startswith("@@") or "##" in rule or "#@#" in rule or "#?#" in rule:
            ignored += 1
            continue
        match = _ADBLOCK_RULE_RE.match(rule)
        if match is None:
            if rule.startswith("||"):
                warnings.add(f"{path}:{lineno}: unsupported or malformed rule {safe_text(rule)!r}")
            else:
                ignored += 1
            continue
        host = normalise_host(match.group(1))
        if host is None:
            warnings.add(f"{path}:{lineno}: not a host name in {safe_text(rule)!r}")
            continue
        options = match.group(2)
        entries.append(
            IntelEntry(
                IndicatorKind.DOMAIN,
                host,
                label,
                source,
                note=f"adblock options {options}" if options else None,
                where=f"{path.name}:{lineno}",
            )
        )
    if content and not entries and warnings.count:
        raise IntelImportError(f"{warnings.kept[0]} (no valid rule in an adblock list)")
    return _finish(path, label, IntelFormat.ADBLOCK, source, entries, warnings, ignored)


# --- STIX 2.1 -----------------------------------------------------------------------------------

_STIX_NETWORK_TYPES = frozenset({"domain-name", "ipv4-addr", "ipv6-addr", "url"})


def _stix_value_entry(
    obj_type: str, value: str, *, label: str, source: Source, where: str, **meta: Any
) -> IntelEntry | str:
    """An entry for one observable value, or the reason it was refused."""
    if obj_type == "domain-name":
        host = normalise_host(value)
        if host is None:
            return f"not a domain name: {safe_text(value)!r}"
        return IntelEntry(IndicatorKind.DOMAIN, host, label, source, where=where, **meta)
    if obj_type == "url":
        try:
            netloc_host = urlsplit(value).hostname
        except ValueError:
            netloc_host = None
        meta["note"] = "; ".join(x for x in (f"url {safe_text(value, 200)}", meta.get("note")) if x)
        ip = parse_ip(netloc_host) if netloc_host else None
        if ip is not None:
            return IntelEntry(IndicatorKind.IP, str(ip), label, source, where=where, **meta)
        host = normalise_host(netloc_host) if netloc_host else None
        if host is None:
            return f"no host in url {safe_text(value)!r}"
        return IntelEntry(IndicatorKind.HOST, host, label, source, where=where, **meta)
    # ipv4-addr / ipv6-addr: an address or a CIDR block
    try:
        if "/" in value:
            net = ipaddress.ip_network(value, strict=False)
            if net.num_addresses == 1:
                return IntelEntry(
                    IndicatorKind.IP, str(net.network_address), label, source, where=where, **meta
                )
            return IntelEntry(IndicatorKind.NETWORK, str(net), label, source, where=where, **meta)
        addr = ipaddress.ip_address(value)
    except ValueError:
        return f"not an address: {safe_text(value)!r}"
    return IntelEntry(IndicatorKind.IP, str(addr), label, source, where=where, **meta)


_MAY_HOLD_SURROGATE = re.compile(r"[\ud800-\udfff]|\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _scrub(value: Any) -> Any:
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


def _utf8_text(text: str) -> str:
    """Text that UTF-8 can hold: a lone surrogate (in a str from anywhere but a strictly
    decoded file) would reach the entries, which are written as UTF-8."""
    return _SURROGATE.sub("\ufffd", text) if _SURROGATE.search(text) else text


def _pattern_values(pattern: str) -> tuple[list[tuple[str, str]], int]:
    """(object type, value) pairs an indicator pattern compares for equality, and the number of
    comparisons it has that cannot be turned into a host or address (hashes, LIKE, MATCHES...).
    """
    import stix2.patterns as sp
    from stix2.pattern_visitor import create_pattern_object

    tree = create_pattern_object(pattern, version="2.1")
    found: list[tuple[str, str]] = []
    other = 0
    stack: list[Any] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, sp._ComparisonExpression):
            lhs = node.lhs
            path = [getattr(c, "property_name", None) for c in getattr(lhs, "property_path", [])]
            obj_type = getattr(lhs, "object_type_name", None)
            usable = obj_type in _STIX_NETWORK_TYPES and path == ["value"] and not node.negated
            if usable and node.operator == "=" and isinstance(node.rhs, sp.StringConstant):
                found.append((str(obj_type), str(node.rhs.value)))
            elif usable and node.operator == "IN" and isinstance(node.rhs, sp.ListConstant):
                found.extend(
                    (str(obj_type), str(c.value))
                    for c in node.rhs.value
                    if isinstance(c, sp.StringConstant)
                )
            else:
                other += 1
            continue
        for attr in ("operands", "operand", "expression"):
            child = getattr(node, attr, None)
            if isinstance(child, list):
                stack.extend(reversed(child))
            elif child is not None:
                stack.append(child)
    found.reverse()
    return found, other


def parse_stix(text: str, *, path: Path, label: str, source: Source, **_: Any) -> IntelFile:
    """A STIX 2.1 bundle, parsed object by object with the ``stix2`` library.

    Indicators with STIX patterns over ``domain-name:value``, ``ipv4-addr:value``,
    ``ipv6-addr:value`` and ``url:value`` (``=`` and ``IN``) become entries carrying the
    indicator's name, labels, indicator types and creation time; so do such observables
    (SCOs) given directly in the bundle. The bundle's identities name the publisher.
    """
    import stix2
    from stix2.exceptions import STIXError

    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise IntelImportError(f"{path}:{exc.lineno}:{exc.colno}: not JSON: {exc.msg}") from exc
    except RecursionError:
        raise IntelImportError(f"{path}: not JSON: nested too deeply") from None
    if _MAY_HOLD_SURROGATE.search(text):
        data = _scrub(data)
    if not isinstance(data, dict) or data.get("type") != "bundle":
        kind = data.get("type") if isinstance(data, dict) else type(data).__name__
        raise IntelImportError(f"{path}: not a STIX 2.1 bundle (type {safe_text(kind)!r})")
    objects = data.get("objects", [])
    if not isinstance(objects, list):
        raise IntelImportError(f"{path}: the bundle's `objects` must be a list")
    bundle_id = safe_text(data.get("id", "bundle"))
    warnings = _Warnings()
    ignored = 0
    parsed: list[Any] = []
    # What stix2 (and stix2-patterns, antlr) raise on hostile objects goes beyond its own
    # STIXError: an empty pattern gives UnboundLocalError, for one. One bad object must not
    # lose the bundle, so each becomes a warning whatever the library raises.
    stix_errors = (
        STIXError,
        ValueError,
        TypeError,
        LookupError,
        AttributeError,
        NameError,
        ArithmeticError,
        RecursionError,
    )
    for i, raw in enumerate(objects):
        oid = safe_text(raw.get("id", f"#{i + 1}")) if isinstance(raw, dict) else f"#{i + 1}"
        try:
            parsed.append(stix2.parse(raw, allow_custom=True, version="2.1"))
        except stix_errors as exc:
            warnings.add(f"{path}: object {oid}: not valid STIX 2.1: {safe_text(str(exc), 300)}")
    identities = {o["id"]: str(o.get("name", "")) for o in parsed if o.get("type") == "identity"}
    publishers = sorted({n for n in identities.values() if n})
    if publishers:
        source = Source(
            id=source.id,
            title=source.title,
            publisher=", ".join(publishers),
            year=source.year,
            url=source.url,
            note=f"STIX bundle {bundle_id}; {source.note}",
        )
    entries: list[IntelEntry] = []
    for obj in parsed:
        otype = obj.get("type")
        oid = str(obj.get("id", ""))
        where = f"{path.name}#{oid}"
        if otype == "indicator":
            if obj.get("pattern_type") != "stix":
                ignored += 1
                continue
            try:
                values, other = _pattern_values(str(obj.get("pattern")))
            except stix_errors as exc:
                warnings.add(f"{path}: {oid}: bad pattern: {safe_text(str(exc), 300)}")
                continue
            if not values:
                ignored += 1
                continue
            created = obj.get("created")
            tags = tuple(
                sorted(
                    {
                        *map(str, obj.get("labels") or ()),
                        *map(str, obj.get("indicator_types") or ()),
                    }
                )
            )
            meta: dict[str, Any] = {
                "name": str(obj["name"]) if obj.get("name") else None,
                "tags": tags,
                "created": created.isoformat() if created is not None else None,
                "note": identities.get(str(obj.get("created_by_ref", ""))) or None,
            }
            if other:
                meta["note"] = "; ".join(
                    x for x in (meta["note"], f"{other} other comparisons not used") if x
                )
            for obj_type, value in values:
                entry = _stix_value_entry(
                    obj_type, value, label=label, source=source, where=where, **meta
                )
                if isinstance(entry, str):
                    warnings.add(f"{path}: {oid}: {entry}")
                else:
                    entries.append(entry)
        elif otype in _STIX_NETWORK_TYPES:
            entry = _stix_value_entry(
                str(otype), str(obj.get("value", "")), label=label, source=source, where=where
            )
            if isinstance(entry, str):
                warnings.add(f"{path}: {oid}: {entry}")
            else:
                entries.append(entry)
        elif otype not in ("identity", "marking-definition"):
            ignored += 1
    return _finish(path, label, IntelFormat.STIX, source, entries, warnings, ignored)


# --- auditor's own YAML intel -------------------------------------------------------------------

_YAML_ENTRY_FIELDS = (
    "host",
    "domain",
    "ip",
    "network",
    "organisation",
    "categories",
    "name",
    "note",
    "source",
)


def parse_intel_yaml(
    text: str,
    *,
    path: Path,
    label: str,
    source: Source,
    sources: Mapping[str, Source] | None = None,
    **_: Any,
) -> IntelFile:
    """auditor's own intel format (see docs/intel.md)::

    version: 1
    source: {title: ..., publisher: ..., year: 2024, url: https://...}   # optional
    sources: {my-id: {title: ..., publisher: ..., year: ..., url: ...}}   # optional
    organisations: [{id: acme-ads, name: ..., country: FR, categories: [...],
                     state_linked: false}]
    entries:
      - {host: t.acme.example, organisation: acme-ads, categories: [advertising]}
      - {domain: acme.example, organisation: acme-ads}
      - {ip: 198.51.100.7, name: collector}
    """
    where = str(path)
    raw = load_yaml(text, where)
    if not isinstance(raw, Mapping):
        raise IntelImportError(f"{where}: an intel file is a mapping with `entries:`")
    try:
        check_keys(
            raw, ("version", "label", "source", "sources", "organisations", "entries"), "intel file"
        )
    except ValueError as exc:
        raise IntelImportError(f"{where}:{line_of(raw, 1)}: {exc}") from None
    if raw.get("version") != 1:
        raise IntelImportError(f"{where}:{line_of(raw, 1)}: `version: 1` is required")
    known: dict[str, Source] = dict(sources or {})
    default = source
    try:
        if raw.get("source") is not None:
            default = parse_source(source.id, raw["source"])
            default = Source(
                id=default.id,
                title=default.title,
                publisher=default.publisher,
                year=default.year,
                url=default.url,
                accessed=default.accessed,
                note="; ".join(x for x in (default.note, source.note) if x),
            )
        extra_sources = raw.get("sources") or {}
        if not isinstance(extra_sources, Mapping):
            raise ValueError("`sources:` must be a mapping of source ids")
        for sid, sraw in extra_sources.items():
            if sid in known:
                raise ValueError(f"source id {sid!r} is already defined by the knowledge base")
            known[str(sid)] = parse_source(str(sid), sraw)
    except ValueError as exc:
        raise IntelImportError(f"{where}: {exc}") from None
    orgs: list[Organisation] = []
    org_items = raw.get("organisations") or []
    if not isinstance(org_items, list):
        raise IntelImportError(f"{where}: `organisations:` must be a list")
    for item in org_items:
        try:
            orgs.append(parse_organisation(item, known, default))
        except ValueError as exc:
            raise IntelImportError(f"{where}:{line_of(item)}: {exc}") from None
    items = raw.get("entries")
    if not isinstance(items, list):
        raise IntelImportError(f"{where}: `entries:` must be a list")
    entries: list[IntelEntry] = []
    for i, item in enumerate(items):
        at = f"{where}:{line_of(item)}: entry #{i + 1}"
        try:
            entries.append(_yaml_entry(item, label, known, default, f"{path.name}:{line_of(item)}"))
        except ValueError as exc:
            raise IntelImportError(f"{at}: {exc}") from None
    return _finish(path, label, IntelFormat.YAML, default, entries, _Warnings(), 0, orgs)


def _yaml_entry(
    item: Any, label: str, sources: Mapping[str, Source], default: Source, where: str
) -> IntelEntry:
    if not isinstance(item, Mapping):
        raise ValueError("an entry is a mapping")
    check_keys(item, _YAML_ENTRY_FIELDS, "entry")
    keys = [k for k in ("host", "domain", "ip", "network") if k in item]
    if len(keys) != 1:
        raise ValueError("give exactly one of host, domain, ip, network")
    key = keys[0]
    value = item[key]
    kind: IndicatorKind
    if key in ("host", "domain"):
        norm = normalise_host(value)
        if norm is None:
            raise ValueError(f"not a host name: {safe_text(value)!r}")
        kind = IndicatorKind.HOST if key == "host" else IndicatorKind.DOMAIN
    elif key == "ip":
        addr = parse_ip(str(value))
        if addr is None:
            raise ValueError(f"not an IP address: {safe_text(value)!r}")
        norm, kind = str(addr), IndicatorKind.IP
    else:
        try:
            norm, kind = str(ipaddress.ip_network(str(value), strict=False)), IndicatorKind.NETWORK
        except ValueError:
            raise ValueError(f"not a network: {safe_text(value)!r}") from None
    org = item.get("organisation")
    if org is not None and (not isinstance(org, str) or not _ID_RE.match(org)):
        raise ValueError(f"`organisation` must be an organisation id, got {safe_text(org)!r}")
    return IntelEntry(
        kind=kind,
        value=norm,
        label=label,
        source=resolve_source(item.get("source"), sources, default),
        organisation=org,
        categories=parse_categories(item.get("categories"), required=False),
        name=text_field(item, "name"),
        note=text_field(item, "note"),
        where=where,
    )


# --- matching -----------------------------------------------------------------------------------


@dataclass
class IntelIndex:
    """Entries of several intel files, indexed for matching hosts and addresses."""

    files: Sequence[IntelFile] = ()
    _hosts: dict[str, list[IntelEntry]] = field(default_factory=dict)
    _domains: dict[str, list[IntelEntry]] = field(default_factory=dict)
    _ips: dict[str, list[IntelEntry]] = field(default_factory=dict)
    _networks: list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, IntelEntry]] = field(
        default_factory=list
    )

    def __post_init__(self) -> None:
        for f in self.files:
            for e in f.entries:
                if e.kind is IndicatorKind.HOST:
                    self._hosts.setdefault(e.value, []).append(e)
                elif e.kind is IndicatorKind.DOMAIN:
                    self._domains.setdefault(e.value, []).append(e)
                elif e.kind is IndicatorKind.IP:
                    self._ips.setdefault(e.value, []).append(e)
                else:
                    self._networks.append((ipaddress.ip_network(e.value), e))

    def __bool__(self) -> bool:
        return bool(self._hosts or self._domains or self._ips or self._networks)

    def match_host(self, host: str) -> list[IntelEntry]:
        """Entries for ``host``, most specific first (exact host, then longest domain)."""
        out = list(self._hosts.get(host, ()))
        name = host
        while True:
            out.extend(self._domains.get(name, ()))
            dot = name.find(".")
            if dot < 0:
                break
            name = name[dot + 1 :]
        return out

    def match_ip(self, ip: str) -> list[IntelEntry]:
        out = list(self._ips.get(ip, ()))
        if self._networks:
            addr = ipaddress.ip_address(ip)
            nets = [(n, e) for n, e in self._networks if n.version == addr.version and addr in n]
            nets.sort(key=lambda t: -t[0].prefixlen)
            out.extend(e for _, e in nets)
        return out
