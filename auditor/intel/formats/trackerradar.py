"""DuckDuckGo Tracker Radar: entities (companies and the domains they control) and third-party
domains (each with its owner and categories), as the repository holds them, or the compiled
tracker data set (TDS) that DuckDuckGo's apps and TrackerControl ship.

Repository (``docs/DATA_MODEL.md``): ``entities/<name>.json`` is ``{"name", "displayName",
"properties": [domains], "prevalence"}``; ``domains/<region>/<domain>.json`` (or
``domains/<domain>.json`` in older snapshots) is ``{"domain", "owner": {"name",
"displayName", "url", "privacyPolicy"}, "categories": [...], ...}`` with ``owner: {}`` when
nobody is known. TDS: ``{"trackers": {domain: {"owner": {...}, "categories": [...]}},
"entities": {name: {"domains": [...], "displayName"}}, "domains": {domain: name}}``.

Every domain matches itself and its subdomains. The entity id is the entity's legal name
(``Google LLC``), its name the ``displayName``. A domain with no owner is counted as skipped.
Categories: Advertising and Ad Motivated Tracking -> ``advertising``; Analytics, Audience
Measurement, Third-Party Analytics Marketing, Session Replay and Action Pixels ->
``analytics_tracker``; CDN -> ``cdn_cloud``; the rest none.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from auditor.intel.datasets import (
    DatasetEntity,
    ParsedDataset,
    RuleBuilder,
    clean_text,
    finish,
    parse_json,
    web_url,
)
from auditor.intel.model import Category, IntelImportError
from auditor.intel.schema import Warnings, safe_text

log = logging.getLogger(__name__)

CATEGORIES: dict[str, tuple[Category, ...]] = {
    "Advertising": (Category.ADVERTISING,),
    "Ad Motivated Tracking": (Category.ADVERTISING,),
    "Analytics": (Category.ANALYTICS_TRACKER,),
    "Audience Measurement": (Category.ANALYTICS_TRACKER,),
    "Third-Party Analytics Marketing": (Category.ANALYTICS_TRACKER,),
    "Session Replay": (Category.ANALYTICS_TRACKER,),
    "Action Pixels": (Category.ANALYTICS_TRACKER,),
    "CDN": (Category.CDN_CLOUD,),
}


@dataclass(frozen=True, slots=True)
class _Tracker:
    domain: object
    owner: str
    owner_name: str | None
    owner_url: str | None
    categories: tuple[Category, ...]
    where: str


class _Collect:
    def __init__(self, warnings: Warnings) -> None:
        self.warnings = warnings
        self.entities: dict[str, DatasetEntity] = {}
        self.properties: list[tuple[object, str, str]] = []  # (domain, entity, where)
        self.trackers: list[_Tracker] = []
        self.no_owner = 0

    def entity(self, eid: str, name: str | None, url: str | None) -> None:
        old = self.entities.get(eid)
        if old is None:
            self.entities[eid] = DatasetEntity(eid, name or eid, None, None, (), url)
        elif old.url is None and url is not None:
            self.entities[eid] = DatasetEntity(eid, old.name, None, None, (), url)

    def tracker(self, raw: Mapping[str, Any], domain: object, where: str) -> None:
        owner = raw.get("owner")
        oname = owner.get("name") if isinstance(owner, dict) else None
        eid = clean_text(oname, self.warnings, where)
        if eid is None:
            self.no_owner += 1  # a tracker nobody is known to own
            return
        cats = _categories(raw.get("categories"))
        assert isinstance(owner, dict)
        display = clean_text(owner.get("displayName"), self.warnings, where)
        url = web_url(owner.get("url"), self.warnings, where)
        self.trackers.append(_Tracker(domain, eid, display, url, cats, where))


def _categories(value: object) -> tuple[Category, ...]:
    if not isinstance(value, list):
        return ()
    out: dict[Category, None] = {}
    for c in value:
        if isinstance(c, str):
            out.update(dict.fromkeys(CATEGORIES.get(c, ())))
    return tuple(out)


def _relevant(path: str) -> bool:
    if not path.endswith(".json"):
        return False
    parts = path.split("/")
    return len(parts) == 1 or "entities" in parts[:-1] or "domains" in parts[:-1]


def read_trackerradar(files: Mapping[str, bytes], *, where: str = "tracker-radar") -> ParsedDataset:
    """A Tracker Radar checkout (``entities/`` and ``domains/``, either may be missing) or a TDS
    JSON file. Files are read once each, in the order given (an archive's own order)."""
    warnings = Warnings()
    got = _Collect(warnings)
    seen_any = False
    for path in files:
        if not _relevant(path):
            continue
        at = f"{where}/{path}"
        try:
            doc = parse_json(files[path], at)
        except IntelImportError as exc:
            warnings.add(str(exc))  # one bad file out of thousands spoils only itself
            continue
        if not isinstance(doc, dict):
            warnings.add(f"{at}: not a JSON object")
            continue
        if isinstance(doc.get("trackers"), dict) or (
            isinstance(doc.get("entities"), dict) and isinstance(doc.get("domains"), dict)
        ):
            seen_any = True
            _tds(doc, at, got)
        elif "properties" in doc and "name" in doc:
            seen_any = True
            _entity_file(doc, at, got)
        elif "domain" in doc and "owner" in doc:
            seen_any = True
            got.tracker(doc, doc.get("domain"), at)
    if not seen_any:
        raise IntelImportError(
            f"{where}: no Tracker Radar entity or domain file, nor a TDS file, in it"
        )
    rules = RuleBuilder(warnings)
    for domain, eid, at in got.properties:
        rules.add(domain, eid, where=at)
    for t in got.trackers:
        got.entity(t.owner, t.owner_name, t.owner_url)
        rules.add(t.domain, t.owner, categories=t.categories, where=t.where)
    used = {r.entity for r in rules.rules()}
    return finish(
        (e for e in got.entities.values() if e.id in used),
        rules,
        warnings,
        skipped=got.no_owner,
    )


def _entity_file(doc: Mapping[str, Any], at: str, got: _Collect) -> None:
    eid = clean_text(doc.get("name"), got.warnings, at)
    if eid is None:
        got.warnings.add(f"{at}: an entity without a name")
        return
    got.entity(eid, clean_text(doc.get("displayName"), got.warnings, at), None)
    props = doc.get("properties")
    if not isinstance(props, list):
        got.warnings.add(f"{at}: `properties` is not a list")
        return
    for d in props:
        got.properties.append((d, eid, at))


def _tds(doc: Mapping[str, Any], at: str, got: _Collect) -> None:
    entities = doc.get("entities")
    if isinstance(entities, dict):
        for name, raw in entities.items():
            what = f"{at}: entity {safe_text(name)!r}"
            eid = clean_text(name, got.warnings, what)
            if eid is None or not isinstance(raw, dict):
                got.warnings.add(f"{what}: not an entity")
                continue
            got.entity(eid, clean_text(raw.get("displayName"), got.warnings, what), None)
            domains = raw.get("domains")
            for d in domains if isinstance(domains, list) else ():
                got.properties.append((d, eid, what))
    index = doc.get("domains")
    if isinstance(index, dict):
        for domain, name in index.items():
            eid = clean_text(name, got.warnings, at)
            if eid is None or eid not in got.entities:
                got.warnings.add(f"{at}: domain {safe_text(domain)!r} names an unknown entity")
                continue
            got.properties.append((domain, eid, f"{at}: domains"))
    trackers = doc.get("trackers")
    if isinstance(trackers, dict):
        for domain, raw in trackers.items():
            what = f"{at}: tracker {safe_text(domain)!r}"
            if not isinstance(raw, dict):
                got.warnings.add(f"{what}: not an object")
                continue
            got.tracker(raw, domain, what)
