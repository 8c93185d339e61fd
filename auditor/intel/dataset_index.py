"""Matching host names against the data sets in use (:class:`DatasetIndex`)."""

from __future__ import annotations

from collections.abc import Sequence

from auditor.intel.dataset_compiled import (
    LoadedDataset,
    compile_dataset,
    compiled_bytes,
    load_compiled,
)
from auditor.intel.dataset_model import DatasetEntity, DatasetInfo, DatasetMatch, ParsedDataset


class DatasetIndex:
    """The data sets in use, indexed for matching host names by their suffixes.

    ``match_host`` looks each data set's exact-host table up once, then its domain table once
    per suffix of the host, longest first: a few dict lookups per data set, no scan."""

    def __init__(self, loaded: Sequence[LoadedDataset] = ()) -> None:
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
                load_compiled(compiled_bytes(doc), info.id, bundled=False, path=info.path)
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
                out.append(ds.match(host, packed, exact=True))
                continue
            domain = ds.domain
            for name in suffixes:
                packed = domain.get(name)
                if packed is not None:
                    out.append(ds.match(name, packed, exact=False))
                    break
        return out

    def entity(self, dataset_id: str, entity_id: str) -> DatasetEntity | None:
        ds = self._by_id.get(dataset_id)
        return ds.by_id(entity_id) if ds is not None else None

    def entities(self, dataset_id: str) -> tuple[DatasetEntity, ...]:
        ds = self._by_id.get(dataset_id)
        return ds.entities() if ds is not None else ()
