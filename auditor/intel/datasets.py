"""The field's open tracker and ownership data sets: which organisation a host belongs to,
according to v2fly's domain-list-community, NextDNS's native tracking domains, AdGuard's
companiesdb, Ghostery's trackerdb, DuckDuckGo's Tracker Radar, Exodus Privacy and X-Ray.

Each data set is read by one reader in :mod:`auditor.intel.formats` (a tree of files or one
file in, a :class:`ParsedDataset` of entities and rules out), compiled into a small gzip'd JSON
document and matched by :class:`DatasetIndex`. The snapshots whose licences allow it (MIT) are
bundled under ``auditor/intel/data/datasets/`` (built by ``scripts/build_datasets``); the others
are imported by the user from a copy they downloaded (:func:`import_dataset`) and stored under
``<data dir>/intel/datasets/<id>/``. Only this module touches the file system. docs/datasets.md
says what each data set gives, under which licence, and why it is bundled or not.

A rule is a host name and a flag: exact (that host only) or not (the name and every host
under it). Keyword and regular-expression rules are counted as skipped, never scanned.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib
import io
import ipaddress
import json
import logging
import lzma
import os
import re
import shutil
import stat
import tarfile
import tempfile
import time
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any, Final

from auditor.intel.model import Category, IntelImportError
from auditor.intel.schema import (
    ID_RE,
    MAX_FILE_BYTES,
    Warnings,
    normalise_host,
    safe_text,
    utf8_text,
)

log = logging.getLogger(__name__)

BUNDLED_DIR: Final = Path(__file__).resolve().parent / "data" / "datasets"
"""Where ``scripts/build_datasets`` writes the bundled snapshots."""

COMPILED_SCHEMA: Final = "auditor-dataset/1"
COMPILED_SUFFIX: Final = ".json.gz"

MAX_MEMBER_BYTES: Final = MAX_FILE_BYTES
"""Larger files (or archive members, once expanded) are refused."""
MAX_TREE_BYTES: Final = 4 * 1024**3
"""A data set's files together, expanded: Tracker Radar's domain files are large."""
MAX_TREE_FILES: Final = 500_000
MAX_NAME_CHARS: Final = 1024
"""Entity names and URLs are cut to this length (with a counted warning)."""
MAX_RULES: Final = 20_000_000
"""More rules than this (after include expansion, for instance) spoil the whole file."""

_CATEGORY_BITS: Final = 1 << 16  # room for 16 categories in a rule's packed value
assert len(Category) <= 16
_CATEGORY_ORDER: Final[tuple[Category, ...]] = tuple(Category)


# --- records ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DatasetInfo:
    """Which data set, which version, under which licence: carried into every report."""

    id: str  # slug: "v2fly", "nextdns-native", "adguard-companiesdb", ...
    name: str
    format: str  # a key of FORMATS
    version: str | None  # the snapshot's commit or the data set's own version
    date: str | None  # ISO date of the snapshot/commit, when known
    licence: str  # SPDX identifier
    url: str
    sha256: str  # of what was read: the bundled file, or the user's source
    bundled: bool
    path: str | None  # the bundled file, or the source the user imported
    entities: int
    rules: int
    skipped: int  # rules that cannot be matched by host suffix (keyword, regexp, TLD...)
    warnings: int

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "format": self.format,
            "version": self.version,
            "date": self.date,
            "licence": self.licence,
            "url": self.url,
            "sha256": self.sha256,
            "bundled": self.bundled,
            "path": self.path,
            "entities": self.entities,
            "rules": self.rules,
            "skipped": self.skipped,
            "warnings": self.warnings,
        }


@dataclass(frozen=True, slots=True)
class DatasetEntity:
    """An owner as the data set names it (a v2fly list, a Ghostery organisation...)."""

    id: str  # the data set's own id
    name: str  # display name
    country: str | None  # ISO 3166-1 alpha-2, only when the data set says so
    parent: str | None  # parent entity id, when the data set says so
    categories: tuple[Category, ...]  # what the data set implies; () when unclear
    url: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "country": self.country,
            "parent": self.parent,
            "categories": [str(c) for c in self.categories],
            "url": self.url,
        }


@dataclass(frozen=True, slots=True)
class DatasetMatch:
    """One data set's most specific rule for a host."""

    dataset: DatasetInfo
    entity: DatasetEntity
    rule: str  # "domain:umeng.com" or "full:api.x.com"
    exact: bool  # an exact-host rule (not the domain and its subdomains)
    categories: tuple[Category, ...]  # the rule's own (v2fly @ads...), else the entity's

    def to_json(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset.id,
            "entity": self.entity.to_json(),
            "rule": self.rule,
            "exact": self.exact,
            "categories": [str(c) for c in self.categories],
        }


@dataclass(frozen=True, slots=True)
class DatasetRule:
    """What a reader gives: ``host`` (normalised) belongs to ``entity``."""

    host: str
    exact: bool
    entity: str  # an entity id of the same data set
    categories: tuple[Category, ...] = ()


@dataclass(frozen=True, slots=True)
class ParsedDataset:
    """A reader's output: entities, rules, and what could not be used."""

    entities: tuple[DatasetEntity, ...]
    rules: tuple[DatasetRule, ...]
    skipped: int  # rules the host matcher cannot use (counted, not kept)
    warnings: tuple[str, ...]  # the first warnings' text
    warning_count: int
    version: str | None = None  # what the data says about itself (AdGuard's timeUpdated...)
    date: str | None = None
    notes: tuple[str, ...] = ()  # what was dropped by policy, for PROVENANCE and the log


Reader = Callable[..., ParsedDataset]


@dataclass(frozen=True, slots=True)
class DatasetFormat:
    """A data set format: its reader, default id, upstream and licence."""

    name: str  # the FORMAT argument of ``auditor intel import``
    id: str  # the data set id an import gets unless ``--name`` says otherwise
    title: str
    licence: str  # SPDX identifier
    url: str
    bundled: bool  # a snapshot ships with auditor
    tree: bool  # the reader takes a mapping of relative path -> bytes (else one file's bytes)
    module: str
    function: str
    file_patterns: tuple[str, ...] = ()  # for a one-file format found in a folder or archive

    def reader(self) -> Reader:
        fn: Reader = getattr(importlib.import_module(self.module), self.function)
        return fn


_F = "auditor.intel.formats."
FORMATS: Final[dict[str, DatasetFormat]] = {
    f.name: f
    for f in (
        DatasetFormat(
            "v2fly",
            "v2fly",
            "v2fly domain-list-community",
            "MIT",
            "https://github.com/v2fly/domain-list-community",
            True,
            True,
            _F + "v2fly",
            "read_v2fly",
        ),
        DatasetFormat(
            "nextdns",
            "nextdns-native",
            "NextDNS native tracking domains",
            "MIT",
            "https://github.com/nextdns/native-tracking-domains",
            True,
            True,
            _F + "nextdns",
            "read_nextdns",
        ),
        DatasetFormat(
            "adguard",
            "adguard-companiesdb",
            "AdGuard companiesdb",
            "CC-BY-SA-4.0",
            "https://github.com/AdguardTeam/companiesdb",
            False,
            True,
            _F + "adguard",
            "read_adguard",
        ),
        DatasetFormat(
            "ghostery",
            "ghostery-trackerdb",
            "Ghostery Tracker Database",
            "CC-BY-NC-SA-4.0",
            "https://github.com/ghostery/trackerdb",
            False,
            True,
            _F + "ghostery",
            "read_ghostery",
        ),
        DatasetFormat(
            "trackerradar",
            "tracker-radar",
            "DuckDuckGo Tracker Radar",
            "CC-BY-NC-SA-4.0",
            "https://github.com/duckduckgo/tracker-radar",
            False,
            True,
            _F + "trackerradar",
            "read_trackerradar",
        ),
        DatasetFormat(
            "exodus",
            "exodus",
            "Exodus Privacy trackers",
            "ODbL-1.0",
            "https://reports.exodus-privacy.eu.org/api/trackers",
            False,
            False,
            _F + "exodus",
            "read_exodus",
            ("trackers.json", "*.json"),
        ),
        DatasetFormat(
            "xray",
            "xray",
            "X-Ray tracker company list (as shipped by TrackerControl)",
            "GPL-3.0-only",
            "https://github.com/TrackerControl/tracker-control-android",
            False,
            False,
            _F + "xray",
            "read_xray",
            ("xray-blacklist.json", "*.json"),
        ),
    )
}


# --- helpers the readers share ------------------------------------------------------------------


def decode_text(data: bytes, where: str) -> str:
    """UTF-8 text (a BOM dropped), or an error naming the file and line."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise IntelImportError(f"{where}:{line}: not UTF-8 text (byte {exc.start})") from None


def parse_json(data: bytes, where: str) -> Any:
    """A JSON document, or an error naming the file and line."""
    if len(data) > MAX_MEMBER_BYTES:
        raise IntelImportError(f"{where}: {len(data)} bytes, over the {MAX_MEMBER_BYTES} limit")
    text = decode_text(data, where)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise IntelImportError(f"{where}:{exc.lineno}: not valid JSON: {exc.msg}") from None
    except RecursionError:
        raise IntelImportError(f"{where}: not valid JSON: nested too deeply") from None
    except ValueError as exc:  # e.g. an integer with too many digits
        raise IntelImportError(f"{where}: not valid JSON: {safe_text(str(exc))}") from None


def clean_text(value: object, warnings: Warnings, what: str) -> str | None:
    """Untrusted text kept as it is (markup and control characters included), but
    UTF-8-writable, blank-trimmed and bounded; None for anything that is not text."""
    if not isinstance(value, str):
        return None
    text = utf8_text(value).strip()
    if not text:
        return None
    if len(text) > MAX_NAME_CHARS:
        warnings.add(f"{what}: cut to {MAX_NAME_CHARS} characters")
        text = text[:MAX_NAME_CHARS]
    return text


_COUNTRY_RE = re.compile(r"^[A-Za-z]{2}$")
_COUNTRY_ALIASES = {"UK": "GB", "EL": "GR"}  # the codes the EU and the UK use for themselves


def country_code(value: object) -> str | None:
    """An ISO 3166-1 alpha-2 code from a data set's country field, else None."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    if not _COUNTRY_RE.match(text):
        return None
    code = text.upper()
    return _COUNTRY_ALIASES.get(code, code)


def web_url(value: object, warnings: Warnings, what: str) -> str | None:
    text = clean_text(value, warnings, what)
    if text is None or not re.match(r"^https?://\S+$", text):
        return None
    return text


def is_ip_literal(host: str) -> bool:
    """An IPv4 literal (normalised host names hold no IPv6 ones)."""
    if not host.replace(".", "").isdigit():
        return False
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class RuleBuilder:
    """Collects a reader's rules: normalises hosts (an invalid one is a counted warning),
    merges a host's categories when one entity claims it twice, and keeps the first entity
    (with a counted warning) when two claim the same host."""

    def __init__(self, warnings: Warnings) -> None:
        self.warnings = warnings
        self._rules: dict[tuple[bool, str], tuple[str, tuple[Category, ...]]] = {}
        self.skipped = 0

    def add(
        self,
        raw: object,
        entity: str,
        *,
        exact: bool = False,
        categories: Iterable[Category] = (),
        where: str,
    ) -> bool:
        host = normalise_host(raw) if isinstance(raw, str) else None
        if host is None:
            self.warnings.add(f"{where}: not a host name: {safe_text(raw)!r}")
            return False
        if is_ip_literal(host):
            self.skipped += 1  # an address is looked up as an address, not as a name
            return False
        key = (exact, host)
        given = set(categories)
        cats = tuple(c for c in _CATEGORY_ORDER if c in given) if given else ()  # one order
        old = self._rules.get(key)
        if old is None:
            if len(self._rules) >= MAX_RULES:
                raise IntelImportError(f"{where}: over {MAX_RULES} rules")
            self._rules[key] = (entity, cats)
        elif old[0] == entity:
            if cats and not set(cats) <= set(old[1]):
                both = set(old[1]) | set(cats)
                self._rules[key] = (entity, tuple(c for c in _CATEGORY_ORDER if c in both))
        else:
            self.warnings.add(
                f"{where}: {host} is claimed by {safe_text(old[0])!r} and "
                f"{safe_text(entity)!r}; kept the first"
            )
        return True

    def has(self, host: str, exact: bool = False) -> bool:
        return (exact, host) in self._rules

    def rules(self) -> tuple[DatasetRule, ...]:
        return tuple(
            DatasetRule(host, exact, entity, cats)
            for (exact, host), (entity, cats) in sorted(self._rules.items())
        )


def finish(
    entities: Iterable[DatasetEntity],
    rules: RuleBuilder,
    warnings: Warnings,
    *,
    skipped: int = 0,
    version: str | None = None,
    date: str | None = None,
    notes: Sequence[str] = (),
) -> ParsedDataset:
    """The reader's result: entities sorted by id, rules by host. A parent the data set
    does not describe, or a parent chain that loops, is dropped with a counted warning."""
    ents = _parents_checked(sorted(entities, key=lambda e: e.id), warnings)
    known = {e.id for e in ents}
    kept = tuple(r for r in rules.rules() if r.entity in known)
    if len(kept) != len(rules.rules()):  # a reader bug, not the data's fault
        raise AssertionError("a rule names an entity the reader did not give")
    return ParsedDataset(
        entities=ents,
        rules=kept,
        skipped=skipped + rules.skipped,
        warnings=tuple(warnings.kept),
        warning_count=warnings.count,
        version=version,
        date=date,
        notes=tuple(notes),
    )


def _parents_checked(
    entities: list[DatasetEntity], warnings: Warnings
) -> tuple[DatasetEntity, ...]:
    by_id = {e.id: e for e in entities}
    for e in entities:
        if e.parent is not None and (e.parent not in by_id or e.parent == e.id):
            warnings.add(f"entity {safe_text(e.id)!r}: parent {safe_text(e.parent)!r} unknown")
            by_id[e.id] = replace(by_id[e.id], parent=None)
    for start in sorted(by_id):
        seen = [start]
        cur = by_id[start].parent
        while cur is not None:
            if cur in seen:
                warnings.add(f"entity {safe_text(start)!r}: parent chain loops at {cur!r}")
                by_id[start] = replace(by_id[start], parent=None)
                break
            seen.append(cur)
            cur = by_id[cur].parent
    return tuple(by_id[e.id] for e in entities)


def iso_date(value: object) -> str | None:
    """The ISO date at the start of a timestamp (``2026-07-20T11:02:11Z`` -> 2026-07-20)."""
    if isinstance(value, str) and re.match(r"^\d{4}-\d{2}-\d{2}", value):
        return value[:10]
    return None


# --- the compiled form --------------------------------------------------------------------------


def _mask(categories: Iterable[Category]) -> int:
    m = 0
    for c in categories:
        m |= 1 << _CATEGORY_ORDER.index(c)
    return m


def compile_dataset(
    parsed: ParsedDataset,
    *,
    id: str,
    name: str,
    format: str,
    licence: str,
    url: str,
    version: str | None,
    date: str | None,
    sha256: str,
    source: str | None,
) -> dict[str, Any]:
    """The stored form of a parsed data set: entities as columns, rules as newline-joined host
    names with packed values (entity index * 65536 + category bit mask), so that loading is a
    ``json.loads`` and two ``dict(zip(...))``.

    Category bits refer to the document's own ``categories`` list, so a change of the
    :class:`Category` enum does not shift them."""
    index = {e.id: i for i, e in enumerate(parsed.entities)}
    ents = parsed.entities
    columns = {
        "id": [e.id for e in ents],
        "name": [e.name for e in ents],
        "country": [e.country for e in ents],
        "parent": [e.parent for e in ents],
        "categories": [_mask(e.categories) for e in ents],
        "url": [e.url for e in ents],
    }
    tables: dict[str, dict[str, Any]] = {}
    for kind, exact in (("domain", False), ("exact", True)):
        rules = [r for r in parsed.rules if r.exact is exact]
        tables[kind] = {
            "hosts": "\n".join(r.host for r in rules),
            "values": [index[r.entity] * _CATEGORY_BITS + _mask(r.categories) for r in rules],
        }
    return {
        "schema": COMPILED_SCHEMA,
        "info": {
            "id": id,
            "name": name,
            "format": format,
            "version": version,
            "date": date,
            "licence": licence,
            "url": url,
            "source_sha256": sha256,
            "source": source,
            "entities": len(ents),
            "rules": len(parsed.rules),
            "skipped": parsed.skipped,
            "warnings": parsed.warning_count,
        },
        "categories": [str(c) for c in _CATEGORY_ORDER],
        "entities": columns,
        "domain": tables["domain"],
        "exact": tables["exact"],
        "warnings": list(parsed.warnings),
        "notes": list(parsed.notes),
    }


def compiled_bytes(doc: Mapping[str, Any]) -> bytes:
    """The compiled document as deterministic gzip'd JSON (no timestamp, sorted keys)."""
    raw = json.dumps(doc, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return gzip.compress(raw.encode("utf-8"), compresslevel=9, mtime=0)


class _Loaded:
    """A data set ready for matching. Its entities are built when first asked for: a
    report touches a few hundred of a data set's thousands."""

    __slots__ = ("_built", "_cols", "category_order", "domain", "exact", "index_of", "info")

    def __init__(
        self,
        info: DatasetInfo,
        cols: Mapping[str, list[Any]],
        exact: dict[str, int],
        domain: dict[str, int],
        category_order: tuple[Category | None, ...],
    ) -> None:
        self.info = info
        self._cols = cols
        self._built: list[DatasetEntity | None] = [None] * len(cols["id"])
        self.index_of = dict(zip(cols["id"], range(len(cols["id"])), strict=True))
        self.exact = exact
        self.domain = domain
        self.category_order = category_order

    def entity_at(self, i: int) -> DatasetEntity:
        e = self._built[i]
        if e is None:
            c = self._cols
            e = DatasetEntity(
                id=c["id"][i],
                name=c["name"][i],
                country=c["country"][i],
                parent=c["parent"][i],
                categories=_unmask(c["categories"][i], self.category_order),
                url=c["url"][i],
            )
            self._built[i] = e
        return e

    def by_id(self, entity_id: str) -> DatasetEntity | None:
        i = self.index_of.get(entity_id)
        return self.entity_at(i) if i is not None else None

    def entities(self) -> tuple[DatasetEntity, ...]:
        return tuple(self.entity_at(i) for i in range(len(self._built)))


def _load_compiled(data: bytes, where: str, *, bundled: bool, path: str | None) -> _Loaded:
    """A compiled data set; malformed content raises IntelImportError naming ``where``."""
    try:
        raw = _gunzip(data, where, MAX_TREE_BYTES)
        doc = json.loads(raw)
        if not isinstance(doc, dict) or doc.get("schema") != COMPILED_SCHEMA:
            raise ValueError(f"not an {COMPILED_SCHEMA} document")
        meta = doc["info"]
        cats = tuple(_category_or_none(c) for c in doc["categories"])
        cols = {k: doc["entities"][k] for k in _ENTITY_COLUMNS}
        n = len(cols["id"])
        if not all(isinstance(col, list) and len(col) == n for col in cols.values()):
            raise ValueError("entity columns differ in length")
        if not all(set(map(type, cols[k])) <= {str} for k in ("id", "name")):
            raise ValueError("an entity id or name is not text")
        if not all(set(map(type, cols[k])) <= {str, type(None)} for k in _OPTIONAL):
            raise ValueError("an entity country, parent or url is not text")
        if not set(map(type, cols["categories"])) <= {int}:
            raise ValueError("an entity's categories are not a number")
        tables = []
        for kind in ("domain", "exact"):
            hosts_text = doc[kind]["hosts"]
            values = doc[kind]["values"]
            hosts = hosts_text.split("\n") if hosts_text else []
            if len(hosts) != len(values):
                raise ValueError(f"{kind} hosts and values differ in length")
            if values and not (0 <= min(values) and max(values) < n * _CATEGORY_BITS):
                raise ValueError(f"{kind} values out of range")
            tables.append(dict(zip(hosts, values, strict=True)))
        info = DatasetInfo(
            id=str(meta["id"]),
            name=str(meta["name"]),
            format=str(meta["format"]),
            version=meta.get("version"),
            date=meta.get("date"),
            licence=str(meta["licence"]),
            url=str(meta["url"]),
            sha256=hashlib.sha256(data).hexdigest() if bundled else str(meta["source_sha256"]),
            bundled=bundled,
            path=path if bundled else meta.get("source"),
            entities=n,
            rules=len(tables[0]) + len(tables[1]),
            skipped=int(meta["skipped"]),
            warnings=int(meta["warnings"]),
        )
        return _Loaded(info, cols, tables[1], tables[0], cats)
    except IntelImportError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, RecursionError) as exc:
        raise IntelImportError(f"{where}: not a compiled data set: {safe_text(str(exc))}") from None


_ENTITY_COLUMNS = ("id", "name", "country", "parent", "categories", "url")
_OPTIONAL = ("country", "parent", "url")


def _category_or_none(value: object) -> Category | None:
    try:
        return Category(str(value))
    except ValueError:
        return None


def _unmask(mask: int, order: Sequence[Category | None]) -> tuple[Category, ...]:
    if not mask:
        return ()
    return tuple(c for i, c in enumerate(order) if mask >> i & 1 and c is not None)


# --- matching -----------------------------------------------------------------------------------


class DatasetIndex:
    """The data sets in use, indexed for matching host names by their suffixes.

    ``match_host`` looks each data set's exact-host table up once, then its domain table once
    per suffix of the host, longest first: a few dict lookups per data set, no scan."""

    def __init__(self, loaded: Sequence[_Loaded] = ()) -> None:
        self._sets = tuple(loaded)
        self.datasets: tuple[DatasetInfo, ...] = tuple(x.info for x in self._sets)
        self._by_id = {x.info.id: x for x in self._sets}

    @classmethod
    def build(cls, items: Sequence[tuple[DatasetInfo, ParsedDataset]]) -> DatasetIndex:
        """An index of parsed data sets, without storing them (tests, one-off lookups)."""
        loaded = []
        for info, parsed in items:
            doc = compile_dataset(
                parsed,
                id=info.id,
                name=info.name,
                format=info.format,
                licence=info.licence,
                url=info.url,
                version=info.version,
                date=info.date,
                sha256=info.sha256,
                source=info.path,
            )
            loaded.append(
                _load_compiled(compiled_bytes(doc), info.id, bundled=False, path=info.path)
            )
        return cls(loaded)

    def __bool__(self) -> bool:
        return bool(self._sets)

    def __len__(self) -> int:
        return len(self._sets)

    def match_host(self, host: str) -> list[DatasetMatch]:
        """Each data set's most specific rule for ``host`` (normalised, lower case): an exact
        rule, else the longest matching domain; bundled data sets first, then the user's,
        each group by id."""
        suffixes = [host]
        dot = host.find(".")
        while dot >= 0:
            suffixes.append(host[dot + 1 :])
            dot = host.find(".", dot + 1)
        out: list[DatasetMatch] = []
        for ds in self._sets:
            packed = ds.exact.get(host)
            if packed is not None:
                out.append(_match(ds, host, packed, exact=True))
                continue
            domain = ds.domain
            for name in suffixes:
                packed = domain.get(name)
                if packed is not None:
                    out.append(_match(ds, name, packed, exact=False))
                    break
        return out

    def entity(self, dataset_id: str, entity_id: str) -> DatasetEntity | None:
        ds = self._by_id.get(dataset_id)
        return ds.by_id(entity_id) if ds is not None else None

    def entities(self, dataset_id: str) -> tuple[DatasetEntity, ...]:
        ds = self._by_id.get(dataset_id)
        return ds.entities() if ds is not None else ()


def _match(ds: _Loaded, name: str, packed: int, *, exact: bool) -> DatasetMatch:
    entity = ds.entity_at(packed // _CATEGORY_BITS)
    cats = _unmask(packed % _CATEGORY_BITS, ds.category_order) or entity.categories
    rule = f"full:{name}" if exact else f"domain:{name}"
    return DatasetMatch(ds.info, entity, rule, exact, cats)


# --- loading ------------------------------------------------------------------------------------


def user_data_dir() -> Path:
    """auditor's per-user data: ``$AUDITOR_DATA_DIR``, else ``$XDG_DATA_HOME/auditor``, else
    ``~/.local/share/auditor``."""
    explicit = os.environ.get("AUDITOR_DATA_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_DATA_HOME")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "auditor"
    return Path.home() / ".local" / "share" / "auditor"


def _datasets_dir(data_dir: Path | None) -> Path:
    return (data_dir if data_dir is not None else user_data_dir()) / "intel" / "datasets"


@cache
def _bundled() -> tuple[_Loaded, ...]:
    """The bundled snapshots, read once per process."""
    out = []
    if BUNDLED_DIR.is_dir():
        for path in sorted(BUNDLED_DIR.glob(f"*{COMPILED_SUFFIX}")):
            out.append(
                _load_compiled(path.read_bytes(), str(path), bundled=True, path=_shown(path))
            )
    return tuple(out)


def _shown(path: Path) -> str:
    """A bundled file's path relative to the package's parent (``auditor/intel/data/...``)."""
    root = Path(__file__).resolve().parents[2]
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


_user_cache: dict[str, tuple[tuple[int, int], _Loaded]] = {}


def _load_user(path: Path) -> _Loaded:
    st = path.stat()
    key = (st.st_mtime_ns, st.st_size)
    hit = _user_cache.get(str(path))
    if hit is not None and hit[0] == key:
        return hit[1]
    loaded = _load_compiled(path.read_bytes(), str(path), bundled=False, path=None)
    _user_cache[str(path)] = (key, loaded)
    return loaded


def _user_files(data_dir: Path | None) -> list[Path]:
    root = _datasets_dir(data_dir)
    if not root.is_dir():
        return []
    return sorted(
        p / f"dataset{COMPILED_SUFFIX}"
        for p in root.iterdir()
        if ID_RE.match(p.name) and (p / f"dataset{COMPILED_SUFFIX}").is_file()
    )


def load_datasets(
    *, data_dir: Path | None = None, include_bundled: bool = True, include_user: bool = True
) -> DatasetIndex:
    """The bundled snapshots and the user's imports, ready for matching.

    A user import with the id of a bundled data set replaces it (a newer snapshot). A user
    import that cannot be read is logged and left out; a bundled one that cannot be read is
    an error (the package is broken)."""
    start = time.perf_counter()
    sets: dict[str, _Loaded] = {}
    if include_bundled:
        for ds in _bundled():
            sets[ds.info.id] = ds
    users: list[_Loaded] = []
    if include_user:
        for path in _user_files(data_dir):
            try:
                ds = _load_user(path)
            except (OSError, IntelImportError) as exc:
                log.warning("data set %s left out: %s", path.parent.name, exc)
                continue
            if ds.info.id in sets:
                log.info("data set %s: the user's import replaces the bundled one", ds.info.id)
                del sets[ds.info.id]
            users.append(ds)
    ordered = sorted(sets.values(), key=lambda d: d.info.id) + sorted(
        users, key=lambda d: d.info.id
    )
    log.debug("data sets loaded in %.1f ms", (time.perf_counter() - start) * 1000)
    return DatasetIndex(ordered)


def list_datasets(*, data_dir: Path | None = None) -> list[DatasetInfo]:
    """Every data set: the bundled snapshots, then the user's imports (by id)."""
    out = [ds.info for ds in _bundled()]
    for path in _user_files(data_dir):
        info_path = path.with_name("info.json")
        try:
            meta = json.loads(info_path.read_text(encoding="utf-8"))
            out.append(_info_from_json(meta))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("data set %s: unreadable info.json: %s", path.parent.name, exc)
    return out


def _info_from_json(meta: Mapping[str, Any]) -> DatasetInfo:
    return DatasetInfo(
        id=str(meta["id"]),
        name=str(meta["name"]),
        format=str(meta["format"]),
        version=meta.get("version"),
        date=meta.get("date"),
        licence=str(meta["licence"]),
        url=str(meta["url"]),
        sha256=str(meta["sha256"]),
        bundled=bool(meta["bundled"]),
        path=meta.get("path"),
        entities=int(meta["entities"]),
        rules=int(meta["rules"]),
        skipped=int(meta["skipped"]),
        warnings=int(meta["warnings"]),
    )


# --- reading what the user downloaded -----------------------------------------------------------


def _gunzip(data: bytes, where: str, limit: int) -> bytes:
    """A gzip stream (or several members) expanded to at most ``limit`` bytes."""
    out = bytearray()
    while data:
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            out += d.decompress(data, limit - len(out) + 1)
        except zlib.error as exc:
            raise IntelImportError(f"{where}: damaged gzip data: {exc}") from None
        if len(out) > limit or d.unconsumed_tail:
            raise IntelImportError(f"{where}: expands to over {limit} bytes")
        if not d.eof:
            raise IntelImportError(f"{where}: gzip data cut short")
        data = d.unused_data
    return bytes(out)


_STREAM_ERRORS = (OSError, EOFError, zlib.error, lzma.LZMAError)
"""What a damaged compressed stream raises (bz2 raises OSError)."""


class _Budget:
    """Bytes and files read from one source, capped: an archive bomb stops here."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.bytes = 0

    def take(self, size: int, name: str) -> None:
        if size > MAX_MEMBER_BYTES:
            raise IntelImportError(f"{self.where}/{name}: over {MAX_MEMBER_BYTES} bytes")
        self.bytes += size
        if self.bytes > MAX_TREE_BYTES:
            raise IntelImportError(f"{self.where}: expands to over {MAX_TREE_BYTES} bytes")


class _Tree(Mapping[str, bytes]):
    """Relative path -> bytes of a folder or an archive, read when asked for (in the order
    listed, which for a tar archive is its own order), within one :class:`_Budget`."""

    def __init__(self, names: Sequence[str], read: Callable[[str], bytes]) -> None:
        self._names = list(dict.fromkeys(names))
        self._set = set(self._names)
        self._read = read

    def __getitem__(self, key: str) -> bytes:
        if key not in self._set:
            raise KeyError(key)
        return self._read(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


def _clean_member(name: str) -> str | None:
    p = PurePosixPath(name.replace("\\", "/"))
    parts = [x for x in p.parts if x not in ("", ".", "/")]
    if not parts or ".." in parts:
        return None
    return "/".join(parts)


def _strip_top(names: Sequence[str]) -> dict[str, str]:
    """Shown name -> member name, without a top folder that every member shares (GitHub's
    ``repo-main/``)."""
    tops = {n.split("/", 1)[0] for n in names}
    if len(tops) == 1 and all("/" in n for n in names):
        return {n.split("/", 1)[1]: n for n in names}
    return {n: n for n in names}


def _dir_tree(path: Path, budget: _Budget) -> _Tree:
    names: list[str] = []
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for f in sorted(files):
            full = Path(root) / f
            if f.startswith(".") or full.is_symlink() or not full.is_file():
                continue
            names.append(full.relative_to(path).as_posix())
            if len(names) > MAX_TREE_FILES:
                raise IntelImportError(f"{path}: over {MAX_TREE_FILES} files")

    def read(name: str) -> bytes:
        full = path / name
        try:
            budget.take(full.stat().st_size, name)
            with full.open("rb") as f:
                data = f.read(MAX_MEMBER_BYTES + 1)
        except OSError as exc:
            raise IntelImportError(f"{path}/{name}: cannot read: {exc.strerror or exc}") from None
        budget.take(len(data) - min(len(data), MAX_MEMBER_BYTES), name)
        return data

    return _Tree(names, read)


def _zip_tree(fileobj: io.BufferedReader, where: str, budget: _Budget) -> _Tree:
    try:
        zf = zipfile.ZipFile(fileobj)
        infos = [i for i in zf.infolist() if not i.is_dir()]
    except (zipfile.BadZipFile, ValueError, NotImplementedError, *_STREAM_ERRORS) as exc:
        raise IntelImportError(f"{where}: damaged zip archive: {exc}") from None
    if len(infos) > MAX_TREE_FILES:
        raise IntelImportError(f"{where}: over {MAX_TREE_FILES} files")
    members: dict[str, zipfile.ZipInfo] = {}
    for info in infos:
        name = _clean_member(info.filename)
        if name is not None:
            members.setdefault(name, info)
    shown = _strip_top(list(members))

    def read(name: str) -> bytes:
        info = members[shown[name]]
        try:
            with zf.open(info) as f:
                out = f.read(MAX_MEMBER_BYTES + 1)
        except (zipfile.BadZipFile, NotImplementedError, ValueError, *_STREAM_ERRORS) as exc:
            raise IntelImportError(f"{where}/{name}: damaged zip member: {exc}") from None
        except RuntimeError as exc:  # an encrypted member
            raise IntelImportError(f"{where}/{name}: {exc}") from None
        budget.take(len(out), name)
        return out

    return _Tree(list(shown), read)


def _tar_tree(fileobj: io.BufferedReader, where: str, budget: _Budget) -> _Tree:
    members: dict[str, tarfile.TarInfo] = {}
    try:
        tf = tarfile.open(fileobj=fileobj, mode="r:*")
        count = total = 0
        for m in tf:  # reading the headers expands the stream: sizes are capped first
            count += 1
            if count > MAX_TREE_FILES:
                raise IntelImportError(f"{where}: over {MAX_TREE_FILES} files")
            if not m.isfile():
                continue
            if m.size > MAX_MEMBER_BYTES:
                raise IntelImportError(f"{where}/{m.name}: over {MAX_MEMBER_BYTES} bytes")
            total += m.size
            if total > MAX_TREE_BYTES:
                raise IntelImportError(f"{where}: expands to over {MAX_TREE_BYTES} bytes")
            name = _clean_member(m.name)
            if name is not None:
                members.setdefault(name, m)
    except (tarfile.TarError, ValueError, *_STREAM_ERRORS) as exc:
        raise IntelImportError(f"{where}: damaged tar archive: {exc}") from None
    shown = _strip_top(list(members))

    def read(name: str) -> bytes:
        m = members[shown[name]]
        try:
            f = tf.extractfile(m)
            out = f.read(MAX_MEMBER_BYTES + 1) if f is not None else b""
        except (tarfile.TarError, ValueError, *_STREAM_ERRORS) as exc:
            raise IntelImportError(f"{where}/{name}: damaged tar member: {exc}") from None
        budget.take(len(out), name)
        return out

    return _Tree(list(shown), read)


def _is_tar(head: bytes) -> bool:
    return len(head) > 262 and head[257:262] == b"ustar"


def _gunzip_head(data: bytes) -> bytes:
    try:
        return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data, 512)
    except zlib.error:
        return b""


def read_source(path: Path) -> tuple[bytes | _Tree, str]:
    """What the user downloaded, as one file's bytes or a tree of files, and its SHA-256.

    A folder (its files; hidden ones left out, symlinks not followed), a zip or tar archive
    (gzip, bzip2 or xz compressed or not; a top folder that every member shares is dropped),
    a gzip'd file, or a plain file. Archives are read from disk as needed, every member and
    the whole capped. The SHA-256 is the file's, or for a folder the SHA-256 of its sorted
    ``sha256  relative/path`` lines (what ``sha256sum`` prints for each file)."""
    where = str(path)
    budget = _Budget(where)
    try:
        if path.is_dir():
            tree = _dir_tree(path, budget)
            lines = "".join(
                f"{hashlib.sha256(tree[name]).hexdigest()}  {name}\n" for name in sorted(tree)
            )
            budget.bytes = 0
            return tree, hashlib.sha256(lines.encode("utf-8")).hexdigest()
        size = path.stat().st_size
        if size > MAX_TREE_BYTES:
            raise IntelImportError(f"{where}: {size} bytes, over the {MAX_TREE_BYTES} limit")
        digest = hashlib.sha256()
        with path.open("rb") as f:
            head = f.read(1024)
            digest.update(head)
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        archive = head[:4] in (b"PK\x03\x04", b"PK\x05\x06") or _is_tar(head)
        archive = archive or head[:3] in (b"BZh", b"\xfd7z")
        if head[:2] == b"\x1f\x8b" and _is_tar(_gunzip_head(head)):
            archive = True
        if archive:
            fileobj = path.open("rb")  # the tree reads from it later
            if head[:2] == b"PK":
                return _zip_tree(fileobj, where, budget), digest.hexdigest()
            return _tar_tree(fileobj, where, budget), digest.hexdigest()
        if size > MAX_MEMBER_BYTES and head[:2] != b"\x1f\x8b":
            raise IntelImportError(f"{where}: {size} bytes, over the {MAX_MEMBER_BYTES} limit")
        data = path.read_bytes()
    except OSError as exc:
        raise IntelImportError(f"{where}: cannot read: {exc.strerror or exc}") from None
    except ValueError as exc:  # a NUL in the path
        raise IntelImportError(f"{safe_text(where)}: cannot read: {exc}") from None
    if data[:2] == b"\x1f\x8b":
        data = _gunzip(data, where, MAX_MEMBER_BYTES)
    return data, digest.hexdigest()


def _one_file(tree: Mapping[str, bytes], fmt: DatasetFormat, where: str) -> tuple[bytes, str]:
    """The one file of a one-file format found in a folder or archive."""
    names = list(tree)
    for pattern in fmt.file_patterns:
        found = [n for n in names if PurePosixPath(n).match(pattern)]
        if len(found) == 1:
            return tree[found[0]], f"{where}/{found[0]}"
        if len(found) > 1:
            shown = ", ".join(sorted(found)[:5])
            raise IntelImportError(f"{where}: several files could be the {fmt.name} list: {shown}")
    raise IntelImportError(
        f"{where}: no {fmt.name} file in it (looked for {', '.join(fmt.file_patterns)})"
    )


def parse_source(fmt: str, path: Path) -> tuple[DatasetFormat, ParsedDataset, str]:
    """Read ``path`` with the reader of ``fmt``: (format, parsed data set, SHA-256)."""
    spec = FORMATS.get(fmt)
    if spec is None:
        raise IntelImportError(f"unknown data set format {fmt!r} (one of: {', '.join(FORMATS)})")
    source, digest = read_source(path)
    where = str(path)
    if spec.tree:
        tree: Mapping[str, bytes] = (
            source if isinstance(source, _Tree) else {_single_name(path): source}
        )
        parsed = spec.reader()(tree, where=where)
    else:
        if isinstance(source, _Tree):
            data, where = _one_file(source, spec, where)
        else:
            data = source
        parsed = spec.reader()(data, where=where)
    return spec, parsed, digest


def _single_name(path: Path) -> str:
    name = path.name
    for suffix in (".gz", ".gzip"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


# --- imports ------------------------------------------------------------------------------------


def import_dataset(
    fmt: str, path: Path, *, name: str | None = None, data_dir: Path | None = None
) -> DatasetInfo:
    """Parse the copy of a data set the user downloaded, compile it and store it under
    ``<data dir>/intel/datasets/<id>/`` (folders 0700, files 0600), replacing an earlier
    import of the same id. ``name`` is the id (a lower-case slug) instead of the format's."""
    spec = FORMATS.get(fmt)
    if spec is None:
        raise IntelImportError(f"unknown data set format {fmt!r} (one of: {', '.join(FORMATS)})")
    dataset_id = name if name is not None else spec.id
    if not ID_RE.match(dataset_id):
        raise IntelImportError(f"data set id {safe_text(dataset_id)!r} must be a lower-case slug")
    spec, parsed, digest = parse_source(fmt, path)
    if not parsed.rules:
        raise IntelImportError(f"{path}: no usable rule in it (is it a {fmt} data set?)")
    source = str(path.resolve())
    doc = compile_dataset(
        parsed,
        id=dataset_id,
        name=spec.title,
        format=spec.name,
        licence=spec.licence,
        url=spec.url,
        version=parsed.version,
        date=parsed.date,
        sha256=digest,
        source=source,
    )
    info = DatasetInfo(
        id=dataset_id,
        name=spec.title,
        format=spec.name,
        version=parsed.version,
        date=parsed.date,
        licence=spec.licence,
        url=spec.url,
        sha256=digest,
        bundled=False,
        path=source,
        entities=len(parsed.entities),
        rules=len(parsed.rules),
        skipped=parsed.skipped,
        warnings=parsed.warning_count,
    )
    root = _datasets_dir(data_dir)
    _private_dirs(root)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dataset_id}.", dir=root))
    try:
        _write_private(tmp / f"dataset{COMPILED_SUFFIX}", compiled_bytes(doc))
        meta = json.dumps(info.to_json(), ensure_ascii=False, indent=1, sort_keys=True) + "\n"
        _write_private(tmp / "info.json", meta.encode("utf-8"))
        if parsed.warnings:
            text = "".join(f"{w}\n" for w in parsed.warnings)
            _write_private(tmp / "warnings.txt", text.encode("utf-8"))
        final = root / dataset_id
        old = None
        if final.exists():
            old = root / f".{dataset_id}.old-{os.getpid()}"
            final.rename(old)
        tmp.rename(final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise IntelImportError(f"{root}: cannot store the data set: {exc}") from None
    log.info(
        "data set %s: %d entities, %d rules, %d skipped, %d warnings from %s",
        dataset_id,
        info.entities,
        info.rules,
        info.skipped,
        info.warnings,
        path,
    )
    for note in parsed.notes:
        log.info("data set %s: %s", dataset_id, note)
    return info


def _private_dirs(root: Path) -> None:
    """``root`` and the folders up to ``intel`` created owner-only (0700)."""
    for d in (root.parent, root):
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
        if stat.S_IMODE(d.stat().st_mode) & 0o077:
            d.chmod(0o700)


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def remove_dataset(dataset_id: str, *, data_dir: Path | None = None) -> bool:
    """Remove the user's import ``dataset_id``; False when there is none (a bundled data set
    cannot be removed, only replaced by an import of the same id)."""
    if not ID_RE.match(dataset_id):
        return False
    target = _datasets_dir(data_dir) / dataset_id
    if not target.is_dir() or target.is_symlink():
        return False
    shutil.rmtree(target)
    _user_cache.pop(str(target / f"dataset{COMPILED_SUFFIX}"), None)
    return True


# Fields of a DatasetInfo, for documentation and tests.
INFO_FIELDS: Final[tuple[str, ...]] = tuple(DatasetInfo.__dataclass_fields__)

__all__ = [
    "FORMATS",
    "DatasetEntity",
    "DatasetFormat",
    "DatasetIndex",
    "DatasetInfo",
    "DatasetMatch",
    "DatasetRule",
    "ParsedDataset",
    "RuleBuilder",
    "import_dataset",
    "list_datasets",
    "load_datasets",
    "remove_dataset",
    "user_data_dir",
]
