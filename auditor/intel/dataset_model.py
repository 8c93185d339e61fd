"""The records of the data-set layer and the registry of data set formats (:data:`FORMATS`):
what a data set is (:class:`DatasetInfo`), what it names (:class:`DatasetEntity`), what a
reader gives (:class:`DatasetRule`, :class:`ParsedDataset`) and what a lookup returns
(:class:`DatasetMatch`). docs/datasets.md documents each field's JSON form."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from auditor.intel.model import Category

CATEGORY_ORDER: Final[tuple[Category, ...]] = tuple(Category)
"""The order in which a record's categories are kept, and the compiled form numbers them."""


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

    @classmethod
    def from_json(cls, meta: Mapping[str, Any]) -> DatasetInfo:
        """The inverse of :meth:`to_json` (a stored import's ``info.json``, a compiled
        snapshot's header completed with what loading it found)."""
        return cls(
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


# Fields of a DatasetInfo, for documentation and tests.
INFO_FIELDS: Final[tuple[str, ...]] = tuple(DatasetInfo.__dataclass_fields__)
