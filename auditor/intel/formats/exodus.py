"""Exodus Privacy's tracker list: Android tracker SDKs, each with a code signature (Java
package names) and a network signature (a regular expression over host names).

The API's JSON (``https://reports.exodus-privacy.eu.org/api/trackers``): ``{"trackers":
{"<id>": {"id", "name", "description", "creation_date", "code_signature",
"network_signature", "website", "categories": [...]}}}``; ETIP's export, ``{"trackers":
[{"name", "code_signature", "network_signature", "website"}]}``, is read too.

A network signature is translated, not run: it is split on ``|`` and each alternative that
is an escaped host name (``app-measurement\\.com``, ``\\.adcolony\\.com``, ``^api\\.x\\.com$``)
becomes a rule; anything else (classes, quantifiers, groups, wildcards) is counted as skipped.
An alternative anchored at both ends is an exact host; the rest match the name and its
subdomains (the regex also matches ``notapp-measurement.com``; the rule does not).

Each tracker is its own entity (Exodus names no companies). Categories: Advertisement ->
``advertising``; Analytics, Crash reporting and Profiling -> ``analytics_tracker``;
Identification and Location none.
"""

from __future__ import annotations

import logging
import re
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
    "Advertisement": (Category.ADVERTISING,),
    "Analytics": (Category.ANALYTICS_TRACKER,),
    "Crash reporting": (Category.ANALYTICS_TRACKER,),
    "Profiling": (Category.ANALYTICS_TRACKER,),
}

# A label: letters, digits, "_", and "-" (escaped or not); labels joined by an escaped dot
# (or a bare one: a sloppy signature means the dot).
_LABEL = r"(?:[a-z0-9_]|\\-|-)+"
_SIMPLE = re.compile(rf"^(\^)?(?:\\\.|\.)?({_LABEL}(?:(?:\\\.|\.){_LABEL})+)(\$)?$")
MAX_SIGNATURE = 20_000


def signature_rules(signature: str) -> tuple[list[tuple[str, bool]], int]:
    """The (host, exact) rules of a network signature, and how many alternatives were not a
    plain host name (skipped)."""
    rules: list[tuple[str, bool]] = []
    skipped = 0
    for alt in signature.split("|"):
        alt = alt.strip()
        if not alt:
            continue
        m = _SIMPLE.match(alt.lower())
        if m is None:
            skipped += 1
            continue
        host = m.group(2).replace("\\.", ".").replace("\\-", "-")
        rules.append((host, bool(m.group(1) and m.group(3))))
    return rules, skipped


def read_exodus(data: bytes, *, where: str = "exodus") -> ParsedDataset:
    """Exodus's tracker list as its API (or ETIP's export) gives it."""
    warnings = Warnings()
    doc = parse_json(data, where)
    trackers: Any = doc.get("trackers") if isinstance(doc, dict) else None
    if isinstance(trackers, list):
        items = [
            (str(t.get("id", i)) if isinstance(t, dict) else str(i), t)
            for i, t in enumerate(trackers)
        ]
    elif isinstance(trackers, dict):
        items = [(str(k), v) for k, v in trackers.items()]
    else:
        raise IntelImportError(f"{where}: not an Exodus tracker list (no `trackers`)")
    rules = RuleBuilder(warnings)
    entities = []
    skipped = 0
    for key, raw in items:
        what = f"{where}: tracker {safe_text(key)}"
        if not isinstance(raw, dict):
            warnings.add(f"{what}: not an object")
            continue
        signature = raw.get("network_signature")
        if signature is None or signature == "":
            continue  # a tracker found by its code only
        if not isinstance(signature, str) or len(signature) > MAX_SIGNATURE:
            warnings.add(f"{what}: `network_signature` is not a text of at most {MAX_SIGNATURE}")
            continue
        cats_raw = raw.get("categories")
        cats: dict[Category, None] = {}
        for c in cats_raw if isinstance(cats_raw, list) else ():
            if isinstance(c, str):
                cats.update(dict.fromkeys(CATEGORIES.get(c, ())))
        found, bad = signature_rules(signature)
        skipped += bad
        added = 0
        for host, exact in found:
            if rules.add(host, key, exact=exact, categories=tuple(cats), where=what):
                added += 1
        if added:
            entities.append(
                DatasetEntity(
                    id=key,
                    name=clean_text(raw.get("name"), warnings, what) or key,
                    country=None,
                    parent=None,
                    categories=tuple(cats),
                    url=web_url(raw.get("website"), warnings, what),
                )
            )
    return finish(entities, rules, warnings, skipped=skipped)
