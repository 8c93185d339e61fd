"""What the data set readers of :mod:`auditor.intel.formats` share: decoding text and JSON
with errors that name the file and line, bounding untrusted names and URLs, country codes,
and :class:`RuleBuilder` / :func:`finish`, which turn what a reader found into a
:class:`ParsedDataset` (hosts normalised, conflicts and dangling parents counted as warnings).

A rule is a host name and a flag: exact (that host only) or not (the name and every host
under it). Keyword and regular-expression rules are counted as skipped, never scanned.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any, Final

from auditor.intel.dataset_model import CATEGORY_ORDER, DatasetEntity, DatasetRule, ParsedDataset
from auditor.intel.model import Category, IntelImportError
from auditor.intel.schema import MAX_FILE_BYTES, Warnings, normalise_host, safe_text, utf8_text

MAX_NAME_CHARS: Final = 1024
"""Entity names and URLs are cut to this length (with a counted warning)."""
# The WhoTracks.me category names Ghostery's TrackerDB uses and AdGuard's companiesdb took
# from it, and what each says of what a tracker does
WHOTRACKSME_CATEGORIES: Final[dict[str, tuple[Category, ...]]] = {
    "advertising": (Category.ADVERTISING,),
    "pornvertising": (Category.ADVERTISING,),
    "site_analytics": (Category.ANALYTICS_TRACKER,),
    "mobile_analytics": (Category.ANALYTICS_TRACKER,),
    "telemetry": (Category.ANALYTICS_TRACKER,),
    "cdn": (Category.CDN_CLOUD,),
    "hosting": (Category.CDN_CLOUD,),
}

MAX_RULES: Final = 20_000_000
"""More rules than this (after include expansion, for instance) spoil the whole file."""


def decode_text(data: bytes, where: str) -> str:
    """UTF-8 text (a BOM dropped), or an error naming the file and line."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise IntelImportError(f"{where}:{line}: not UTF-8 text (byte {exc.start})") from None


def parse_json(data: bytes, where: str) -> Any:
    """A JSON document, or an error naming the file and line."""
    if len(data) > MAX_FILE_BYTES:
        raise IntelImportError(f"{where}: {len(data)} bytes, over the {MAX_FILE_BYTES} limit")
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
        cats = tuple(c for c in CATEGORY_ORDER if c in given) if given else ()  # one order
        old = self._rules.get(key)
        if old is None:
            if len(self._rules) >= MAX_RULES:
                raise IntelImportError(f"{where}: over {MAX_RULES} rules")
            self._rules[key] = (entity, cats)
        elif old[0] == entity:
            if cats and not set(cats) <= set(old[1]):
                both = set(old[1]) | set(cats)
                self._rules[key] = (entity, tuple(c for c in CATEGORY_ORDER if c in both))
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
