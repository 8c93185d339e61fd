"""Ghostery's Tracker Database: organisations (name, country, website) and patterns (a
tracker's domains, category and organisation).

Two forms are read: the ``trackerdb.json`` Ghostery publishes with each release
(``{"organizations": {key: {name, country, website_url...}}, "patterns": {key: {name,
category, organization, alias, domains: [...], filters}}, "domains": {domain: pattern}}``,
as ``scripts/export-json`` writes it), and the repository's own ``db/organizations/*.eno`` and
``db/patterns/*.eno`` (the subset of the eno format those files use: ``key: value`` fields,
``--- key`` ... ``--- key`` blocks, ``|`` and ``\\`` continuations, ``>`` comments).

A pattern's domain matches the domain and its subdomains (the engine's ``||domain^``). The
entity is the pattern's organisation (a pattern without one, or whose ``alias`` pattern has
none, is its own entity ``pattern:<key>``). Categories: advertising and pornvertising ->
``advertising``; site_analytics -> ``analytics_tracker``; hosting -> ``cdn_cloud``; the rest
(utilities, customer_interaction, social_media, audio_video_player, consent, misc...) none.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from auditor.intel.datasets import (
    WHOTRACKSME_CATEGORIES,
    DatasetEntity,
    ParsedDataset,
    RuleBuilder,
    clean_text,
    country_code,
    decode_text,
    finish,
    iso_date,
    parse_json,
    web_url,
)
from auditor.intel.model import Category, IntelImportError
from auditor.intel.schema import Warnings, safe_text

log = logging.getLogger(__name__)

CATEGORIES = WHOTRACKSME_CATEGORIES

_KEY_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_. -]{0,127}$")
_BLOCK_RE = re.compile(r"^(-{2,})\s*(\S.*?)\s*$")
_FIELD_RE = re.compile(r"^([A-Za-z0-9_][A-Za-z0-9_ .-]*?)\s*:\s?(.*)$")
_STEM_RE = re.compile(r"^[^\x00-\x1f\x7f/:]{1,200}$")
_EMPTY_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_ .-]{0,127}$")  # an eno empty element (a flag)


def read_ghostery(files: Mapping[str, bytes], *, where: str = "ghostery") -> ParsedDataset:
    """``trackerdb.json`` (a release asset), or the repository's ``db/`` folder of .eno files."""
    warnings = Warnings()
    json_paths = sorted(p for p in files if p.endswith(".json"))
    named = [p for p in json_paths if p.rsplit("/", 1)[-1] == "trackerdb.json"]
    if named or (json_paths and not _eno_paths(files, "patterns")):
        path = (named or json_paths)[0]
        orgs, patterns, extra, version = _from_json(files[path], f"{where}/{path}", warnings)
        at = f"{where}/{path}"
    else:
        orgs, patterns = _from_eno(files, where, warnings)
        extra, version, at = {}, None, f"{where}/db/patterns"
    return _build(orgs, patterns, extra, version, at, warnings)


# --- the JSON release asset ---------------------------------------------------------------------


def _from_json(
    data: bytes, at: str, warnings: Warnings
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]], dict[str, Any], str | None]:
    doc = parse_json(data, at)
    if not isinstance(doc, dict):
        raise IntelImportError(f"{at}: not a trackerdb.json (a JSON object)")
    orgs, patterns = doc.get("organizations"), doc.get("patterns")
    if not isinstance(orgs, dict) or not isinstance(patterns, dict):
        raise IntelImportError(f"{at}: not a trackerdb.json (no `organizations` and `patterns`)")
    index = doc.get("domains")
    extra: dict[str, Any] = index if isinstance(index, dict) else {}
    version = next(
        (v for k in ("version", "updated", "timeUpdated") if isinstance(v := doc.get(k), str)),
        None,
    )
    return (
        {k: v for k, v in orgs.items() if _object(v, f"{at}: organization {k!r}", warnings)},
        {k: v for k, v in patterns.items() if _object(v, f"{at}: pattern {k!r}", warnings)},
        extra,
        version[:64] if version else None,
    )


def _object(value: object, what: str, warnings: Warnings) -> bool:
    if isinstance(value, dict):
        return True
    warnings.add(f"{safe_text(what, 200)}: not an object")
    return False


# --- the .eno source ----------------------------------------------------------------------------


def _eno_paths(files: Mapping[str, bytes], kind: str) -> list[str]:
    return sorted(p for p in files if p.endswith(".eno") and p.rsplit("/", 2)[-2:-1] == [kind])


def _from_eno(
    files: Mapping[str, bytes], where: str, warnings: Warnings
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    pattern_paths = _eno_paths(files, "patterns")
    if not pattern_paths:
        raise IntelImportError(
            f"{where}: neither a trackerdb.json nor db/patterns/*.eno files in it"
        )
    out: list[dict[str, dict[str, Any]]] = []
    for kind, paths in (
        ("organizations", _eno_paths(files, "organizations")),
        ("patterns", pattern_paths),
    ):
        specs: dict[str, dict[str, Any]] = {}
        for path in paths:
            stem = path.rsplit("/", 1)[-1][: -len(".eno")]
            at = f"{where}/{path}"
            if not _STEM_RE.match(stem):
                warnings.add(f"{at}: not a {kind[:-1]} key: {safe_text(stem)!r}")
                continue
            spec = parse_eno(decode_text(files[path], at), at, warnings)
            if spec is not None:
                entry: dict[str, Any] = dict(spec)
                if kind == "patterns":
                    entry["domains"] = (spec.get("domains") or "").splitlines()
                specs[stem] = entry
        out.append(specs)
    return out[0], out[1]


def parse_eno(text: str, at: str, warnings: Warnings) -> dict[str, str] | None:
    """The fields of one Ghostery .eno file; None (and a counted warning) when it cannot be
    read whole."""
    fields: dict[str, str] = {}
    last: str | None = None
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        i += 1
        if not line or line.startswith(">"):
            continue
        block = _BLOCK_RE.match(line)
        if block:
            dashes, key = block.groups()
            end = f"{dashes} {key}"
            body: list[str] = []
            while i < len(lines) and lines[i].strip() not in (end, f"{dashes}{key}"):
                body.append(lines[i])
                i += 1
            if i >= len(lines):
                warnings.add(f"{at}:{i}: block {safe_text(key)!r} is never closed")
                return None
            i += 1
            fields[key] = "\n".join(body)
            last = None
            continue
        if line.startswith(("|", "\\")) and last is not None:
            joiner = "\n" if line[0] == "|" else " "
            fields[last] = f"{fields[last]}{joiner}{line[1:].strip()}"
            continue
        if _EMPTY_RE.match(line):
            fields[line] = ""
            last = None
            continue
        match = _FIELD_RE.match(line)
        if match is None or not _KEY_RE.match(match.group(1)):
            warnings.add(f"{at}:{i}: not an eno field: {safe_text(line)!r}")
            last = None
            continue
        last = match.group(1)
        fields[last] = match.group(2).strip()
    return fields


# --- entities and rules -------------------------------------------------------------------------


def _build(
    orgs: Mapping[str, Mapping[str, Any]],
    patterns: Mapping[str, Mapping[str, Any]],
    extra: Mapping[str, Any],
    version: str | None,
    at: str,
    warnings: Warnings,
) -> ParsedDataset:
    entities: dict[str, DatasetEntity] = {}
    for key, raw in orgs.items():
        what = f"{at}: organization {safe_text(key)!r}"
        entities[key] = DatasetEntity(
            id=key,
            name=clean_text(raw.get("name"), warnings, what) or key,
            country=country_code(raw.get("country")),
            parent=None,
            categories=(),
            url=web_url(raw.get("website_url"), warnings, what),
        )
    rules = RuleBuilder(warnings)
    owners: dict[str, tuple[str, tuple[Category, ...]]] = {}
    for key in sorted(patterns):
        raw = patterns[key]
        what = f"{at}: pattern {safe_text(key)!r}"
        org = raw.get("organization")
        alias = raw.get("alias")
        if not _text(org) and isinstance(alias, str) and isinstance(patterns.get(alias), Mapping):
            org = patterns[alias].get("organization")
        category = raw.get("category")
        cats = CATEGORIES.get(category, ()) if isinstance(category, str) else ()
        if isinstance(org, str) and org.strip():
            eid = org.strip()
            if eid not in entities:
                warnings.add(f"{what}: unknown organization {safe_text(eid)!r}")
                entities[eid] = DatasetEntity(eid, eid, None, None, (), None)
        else:
            eid = f"pattern:{key}"
            entities[eid] = DatasetEntity(
                id=eid,
                name=clean_text(raw.get("name"), warnings, what) or key,
                country=None,
                parent=None,
                categories=cats,
                url=web_url(raw.get("website_url"), warnings, what),
            )
        owners[key] = (eid, cats)
        domains = raw.get("domains")
        if domains is None:
            continue
        if not isinstance(domains, list):
            warnings.add(f"{what}: `domains` is not a list")
            continue
        for d in domains:
            if isinstance(d, str) and not d.strip():
                continue
            rules.add(d.strip() if isinstance(d, str) else d, eid, categories=cats, where=what)
    for domain, key in extra.items():  # the top-level index: domains no pattern lists
        found = owners.get(key) if isinstance(key, str) else None
        if found is None:
            warnings.add(f"{at}: domain {safe_text(domain)!r} names an unknown pattern")
            continue
        host = domain.strip().lower()
        if not rules.has(host):
            rules.add(host, found[0], categories=found[1], where=f"{at}: domains")
    used = {r.entity for r in rules.rules()}
    return finish(
        (e for e in entities.values() if e.id in used),
        rules,
        warnings,
        version=version,
        date=iso_date(version),
    )


def _text(value: object) -> bool:
    return isinstance(value, str) and bool(value.strip())
