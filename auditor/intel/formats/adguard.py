"""AdGuard companiesdb (``dist/companies.json`` and ``dist/trackers.json``): tracker domains,
the tracker each belongs to, and the company behind the tracker (whotracks.me's data with
AdGuard's additions).

``trackers.json``: ``{"timeUpdated", "categories": {id: name}, "trackers": {key: {name,
categoryId, url, companyId}}, "trackerDomains": {domain: tracker key}}``; ``companies.json``:
``{"timeUpdated", "companies": {id: {name, websiteUrl, description}}}``. A tracker domain
matches the domain and its subdomains (as AdGuard Home matches it). The entity is the company;
a tracker without one is its own entity (``tracker:<key>``). The tracker's category gives the
rule's: advertising and pornvertising -> ``advertising``; site_analytics, mobile_analytics and
telemetry -> ``analytics_tracker``; cdn and hosting -> ``cdn_cloud``; the rest none.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from auditor.intel.datasets import (
    WHOTRACKSME_CATEGORIES,
    DatasetEntity,
    ParsedDataset,
    RuleBuilder,
    clean_text,
    finish,
    iso_date,
    parse_json,
    web_url,
)
from auditor.intel.model import Category, IntelImportError
from auditor.intel.schema import Warnings, safe_text

log = logging.getLogger(__name__)

CATEGORIES = WHOTRACKSME_CATEGORIES
# AdGuard's documented category ids, for a trackers.json without its "categories" table.
_CATEGORY_IDS = {
    "3": "pornvertising",
    "4": "advertising",
    "6": "site_analytics",
    "9": "cdn",
    "10": "hosting",
    "15": "telemetry",
    "101": "mobile_analytics",
}


def _find(files: Mapping[str, bytes], base: str) -> str | None:
    found = sorted((p for p in files if p.rsplit("/", 1)[-1] == base), key=lambda p: p.count("/"))
    dist = [p for p in found if p.rsplit("/", 2)[-2:-1] == ["dist"]]
    best = dist or found
    return best[0] if best else None


def read_adguard(files: Mapping[str, bytes], *, where: str = "adguard") -> ParsedDataset:
    """companiesdb's ``dist/trackers.json`` (required) and ``dist/companies.json`` (for the
    companies' names; without it a company is known by its id, with a warning)."""
    warnings = Warnings()
    trackers_path = _find(files, "trackers.json")
    if trackers_path is None:
        raise IntelImportError(f"{where}: no trackers.json in it (dist/trackers.json)")
    at = f"{where}/{trackers_path}"
    doc = parse_json(files[trackers_path], at)
    if not isinstance(doc, dict) or not isinstance(doc.get("trackers"), dict):
        raise IntelImportError(f"{at}: not companiesdb's trackers.json (no `trackers` object)")
    domains = doc.get("trackerDomains")
    if not isinstance(domains, dict):
        raise IntelImportError(f"{at}: not companiesdb's trackers.json (no `trackerDomains`)")
    cat_names = doc.get("categories") if isinstance(doc.get("categories"), dict) else {}
    companies = _companies(files, where, warnings)

    entities: dict[str, DatasetEntity] = {}
    owner_of: dict[str, tuple[str, tuple[Category, ...]]] = {}
    for key, raw in doc["trackers"].items():
        what = f"{at}: tracker {safe_text(key)!r}"
        if not isinstance(raw, dict):
            warnings.add(f"{what}: not an object")
            continue
        cid = raw.get("companyId")
        if isinstance(cid, str) and cid.strip():
            eid = cid.strip()
            if eid not in entities:
                entities[eid] = companies.get(eid) or _unknown_company(
                    eid, warnings, at, listed=bool(companies)
                )
        else:
            eid = f"tracker:{key}"
            entities[eid] = DatasetEntity(
                id=eid,
                name=clean_text(raw.get("name"), warnings, what) or str(key),
                country=None,
                parent=None,
                categories=(),
                url=web_url(raw.get("url"), warnings, what),
            )
        category = raw.get("categoryId")
        name = cat_names.get(str(category)) if cat_names else None
        name = name if isinstance(name, str) else _CATEGORY_IDS.get(str(category))
        owner_of[key] = (eid, CATEGORIES.get(name or "", ()))
    rules = RuleBuilder(warnings)
    for domain, tracker in domains.items():
        found = owner_of.get(tracker) if isinstance(tracker, str) else None
        if found is None:
            warnings.add(
                f"{at}: {safe_text(domain)!r} names an unknown tracker {safe_text(tracker)!r}"
            )
            continue
        rules.add(domain, found[0], categories=found[1], where=f"{at}: {safe_text(domain)}")
    used = {r.entity for r in rules.rules()}
    stamp = doc.get("timeUpdated")
    version = stamp if isinstance(stamp, str) and len(stamp) < 64 else None
    return finish(
        (e for e in entities.values() if e.id in used),
        rules,
        warnings,
        version=version,
        date=iso_date(version),
    )


def _companies(
    files: Mapping[str, bytes], where: str, warnings: Warnings
) -> dict[str, DatasetEntity]:
    path = _find(files, "companies.json")
    if path is None:
        warnings.add(f"{where}: no companies.json beside trackers.json: companies are named by id")
        return {}
    at = f"{where}/{path}"
    doc: Any = parse_json(files[path], at)
    raw = doc.get("companies") if isinstance(doc, dict) else None
    if not isinstance(raw, dict):
        raise IntelImportError(f"{at}: not companiesdb's companies.json (no `companies` object)")
    out = {}
    for cid, item in raw.items():
        what = f"{at}: company {safe_text(cid)!r}"
        if not isinstance(item, dict):
            warnings.add(f"{what}: not an object")
            continue
        out[cid] = DatasetEntity(
            id=cid,
            name=clean_text(item.get("name"), warnings, what) or cid,
            country=None,
            parent=None,
            categories=(),
            url=web_url(item.get("websiteUrl"), warnings, what),
        )
    return out


def _unknown_company(cid: str, warnings: Warnings, at: str, *, listed: bool) -> DatasetEntity:
    if listed:
        warnings.add(f"{at}: company {safe_text(cid)!r} is not in companies.json")
    return DatasetEntity(id=cid, name=cid, country=None, parent=None, categories=(), url=None)
