"""auditor's own YAML intel format (``version: 1``, ``source``, ``organisations``, ``entries``)."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from auditor.intel.ipdb import parse_ip
from auditor.intel.model import (
    IntelImportError,
    Organisation,
    Source,
)
from auditor.intel.schema import (
    ID_RE,
    IndicatorKind,
    IntelEntry,
    IntelFile,
    IntelFormat,
    Warnings,
    check_keys,
    finish_file,
    line_of,
    load_yaml,
    normalise_host,
    parse_categories,
    parse_organisation,
    parse_source,
    resolve_source,
    safe_text,
    text_field,
)

log = logging.getLogger(__name__)

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
    organisations: [{id: acme-ads, name: ..., country: FR, categories: [...]}]
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
            orgs.append(parse_organisation(item, known, default, allow_legacy=True))
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
    return finish_file(path, label, IntelFormat.YAML, default, entries, Warnings(), 0, orgs)


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
    if org is not None and (not isinstance(org, str) or not ID_RE.match(org)):
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
