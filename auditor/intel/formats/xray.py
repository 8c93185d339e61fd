"""The X-Ray tracker company list (Binns et al., "Third Party Tracking in the Mobile
Ecosystem", WebSci 2018), as TrackerControl ships it in ``app/src/main/assets/
xray-blacklist.json``: ``[{"owner_name", "doms": [domains], "country", "parent",
"root_parent", "necessary"?}]``.

Each owner is an entity with its country (lower-case in the file; ``uk`` read as ``GB``) and
its parent (an entity of its own, created when the list does not describe it). Each domain
matches itself and its subdomains. The list gives no categories.
"""

from __future__ import annotations

import logging

from auditor.intel.datasets import (
    DatasetEntity,
    ParsedDataset,
    RuleBuilder,
    clean_text,
    country_code,
    finish,
    parse_json,
)
from auditor.intel.model import IntelImportError
from auditor.intel.schema import Warnings, safe_text

log = logging.getLogger(__name__)


def read_xray(data: bytes, *, where: str = "xray") -> ParsedDataset:
    """TrackerControl's ``xray-blacklist.json``."""
    warnings = Warnings()
    doc = parse_json(data, where)
    if not isinstance(doc, list):
        raise IntelImportError(f"{where}: not the X-Ray list (a JSON array of owners)")
    entities: dict[str, DatasetEntity] = {}
    rules = RuleBuilder(warnings)
    for i, raw in enumerate(doc):
        what = f"{where}: owner #{i + 1}"
        if not isinstance(raw, dict):
            warnings.add(f"{what}: not an object")
            continue
        eid = clean_text(raw.get("owner_name"), warnings, what)
        if eid is None:
            warnings.add(f"{what}: no `owner_name`")
            continue
        what = f"{where}: {safe_text(eid)}"
        parent = clean_text(raw.get("parent"), warnings, what)
        parent = parent if parent != eid else None
        country = country_code(raw.get("country"))
        old = entities.get(eid)
        if old is not None and (old.country, old.parent) != (country, parent):
            warnings.add(f"{what}: listed twice with different country or parent; kept the first")
        elif old is None:
            entities[eid] = DatasetEntity(eid, eid, country, parent, (), None)
        doms = raw.get("doms")
        if not isinstance(doms, list):
            warnings.add(f"{what}: `doms` is not a list")
            continue
        for d in doms:
            rules.add(d, eid, where=what)
    for e in list(entities.values()):  # parents the list names but does not describe
        if e.parent is not None and e.parent not in entities:
            entities[e.parent] = DatasetEntity(e.parent, e.parent, None, None, (), None)
    return finish(entities.values(), rules, warnings)
