"""The compiled form of a data set: the small gzip'd JSON document that is bundled or stored
for an import (:func:`compile_dataset`, :func:`compiled_bytes`), and reading it back into a
:class:`LoadedDataset` ready for matching (:func:`load_compiled`), which checks what it reads:
a damaged or foreign file is an :class:`IntelImportError` naming it."""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from auditor.intel.archives import MAX_TREE_BYTES, gunzip
from auditor.intel.dataset_model import (
    CATEGORY_ORDER,
    DatasetEntity,
    DatasetInfo,
    DatasetMatch,
    ParsedDataset,
)
from auditor.intel.model import Category, IntelImportError
from auditor.intel.schema import safe_text

COMPILED_SCHEMA: Final = "auditor-dataset/1"
COMPILED_SUFFIX: Final = ".json.gz"

_CATEGORY_BITS: Final = 1 << 16  # room for 16 categories in a rule's packed value
assert len(Category) <= 16


def _mask(categories: Iterable[Category]) -> int:
    m = 0
    for c in categories:
        m |= 1 << CATEGORY_ORDER.index(c)
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
        "categories": [str(c) for c in CATEGORY_ORDER],
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


class LoadedDataset:
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

    def match(self, name: str, packed: int, *, exact: bool) -> DatasetMatch:
        """The match a rule's packed value stands for (``name`` is the rule's host)."""
        entity = self.entity_at(packed // _CATEGORY_BITS)
        cats = _unmask(packed % _CATEGORY_BITS, self.category_order) or entity.categories
        rule = f"full:{name}" if exact else f"domain:{name}"
        return DatasetMatch(self.info, entity, rule, exact, cats)


def load_compiled(data: bytes, where: str, *, bundled: bool, path: str | None) -> LoadedDataset:
    """A compiled data set; malformed content raises IntelImportError naming ``where``."""
    try:
        raw = gunzip(data, where, MAX_TREE_BYTES)
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
        info = DatasetInfo.from_json(
            {
                **meta,
                "sha256": hashlib.sha256(data).hexdigest() if bundled else meta["source_sha256"],
                "bundled": bundled,
                "path": path if bundled else meta.get("source"),
                "entities": n,
                "rules": len(tables[0]) + len(tables[1]),
            }
        )
        return LoadedDataset(info, cols, tables[1], tables[0], cats)
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
