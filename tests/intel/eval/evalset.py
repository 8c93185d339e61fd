"""Loader and scorer for the endpoint-attribution evaluation set.

The evaluation set (``hosts.csv`` beside this file) lists host names a phone
contacts together with the organisation that operates each one, as stated by
a primary source that a reader can check (see ``SOURCES.md``).  No row takes
its owner from the data sets the product itself uses for attribution.

Standard library only, so that it can be used from any test without the
product installed.

    rows = load_rows()
    result = score(rows, lambda host: my_family_for(host))
    print(result.recall, result.wrong_rate)

``predict(host)`` returns the predicted *family* slug (the ultimate parent
organisation, e.g. ``"alphabet"`` for a Google host) or ``None`` when it names
nobody.  The string ``"unknown"`` is treated like ``None``.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_CSV = HERE / "hosts.csv"
DEFAULT_SOURCES = HERE / "SOURCES.md"

HEADER = ("host", "owner", "family", "owner_name", "source_id", "where", "quote")
UNKNOWN = "unknown"

_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
HOST_RE = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})+$")
SLUG_RE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
SOURCE_HEADING_RE = re.compile(r"^###\s+`([a-z0-9][a-z0-9._-]*)`")


@dataclass(frozen=True)
class Row:
    host: str
    owner: str
    family: str
    owner_name: str
    source_id: str
    where: str
    quote: str


def normalise_host(host: str) -> str:
    """Lower-case, strip blanks and one trailing dot."""
    host = host.strip().lower()
    return host[:-1] if host.endswith(".") else host


def is_valid_host(host: str) -> bool:
    """A literal DNS host name (no wildcard, no port, no scheme, not an IP literal)."""
    if not HOST_RE.match(host):
        return False
    return not all(label.isdigit() for label in host.split("."))


def source_ids(path: str | Path | None = None) -> set[str]:
    """The source ids defined in SOURCES.md: every ``### `id` `` heading."""
    text = Path(path or DEFAULT_SOURCES).read_text(encoding="utf-8")
    return {m.group(1) for line in text.splitlines() if (m := SOURCE_HEADING_RE.match(line))}


def load_rows(path: str | Path | None = None, sources: str | Path | None = None) -> list[Row]:
    """Read and validate the evaluation set.

    Raises ValueError naming the line for: a header that is not exactly
    ``HEADER``; a row with the wrong number of fields or an empty field; a host
    that is not a normalised (lower-case, no trailing dot) literal host name; an
    owner or family that is not a slug; a source_id not defined in SOURCES.md;
    a host listed twice.
    """
    csv_path = Path(path or DEFAULT_CSV)
    known_sources = source_ids(sources or csv_path.with_name("SOURCES.md"))
    rows: list[Row] = []
    seen: dict[str, int] = {}
    with csv_path.open(encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None or tuple(header) != HEADER:
            raise ValueError(f"{csv_path}:1: header must be {','.join(HEADER)}, got {header!r}")
        for fields in reader:
            line = reader.line_num
            where = f"{csv_path}:{line}"
            if not fields:
                continue
            if len(fields) != len(HEADER):
                raise ValueError(f"{where}: expected {len(HEADER)} fields, got {len(fields)}")
            row = Row(*fields)
            for name, value in zip(HEADER, fields, strict=True):
                if not value.strip():
                    raise ValueError(f"{where}: empty {name}")
            if normalise_host(row.host) != row.host or not is_valid_host(row.host):
                raise ValueError(f"{where}: host {row.host!r} is not a normalised literal host")
            for name in ("owner", "family"):
                if not SLUG_RE.match(getattr(row, name)):
                    raise ValueError(f"{where}: {name} {getattr(row, name)!r} is not a slug")
            if (row.owner == UNKNOWN) != (row.family == UNKNOWN):
                raise ValueError(f"{where}: owner and family must both be, or both not be, unknown")
            if row.source_id not in known_sources:
                raise ValueError(
                    f"{where}: source_id {row.source_id!r} is not defined in SOURCES.md"
                )
            if row.host in seen:
                raise ValueError(
                    f"{where}: host {row.host!r} already listed on line {seen[row.host]}"
                )
            seen[row.host] = line
            rows.append(row)
    return rows


@dataclass(frozen=True)
class FamilyScore:
    """Counts for the rows whose expected family is ``family``."""

    family: str
    n: int = 0
    named: int = 0
    correct: int = 0
    wrong: int = 0


@dataclass(frozen=True)
class Miss:
    """A row the predictor named wrongly: ``predicted`` is the family it gave."""

    row: Row
    predicted: str


@dataclass(frozen=True)
class Score:
    n: int
    named: int
    correct: int
    wrong: int
    positives: int
    recall: float
    wrong_rate: float
    per_family: dict[str, FamilyScore] = field(default_factory=dict)
    wrong_rows: tuple[Miss, ...] = ()


def _prediction(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip().lower()
    return None if value in ("", UNKNOWN) else value


def score(rows: Iterable[Row], predict: Callable[[str], str | None]) -> Score:
    """Score ``predict`` (host -> family slug or None) against ``rows``.

    * named: rows for which a family was predicted;
    * correct: the predicted family equals the row's family (never for
      ``unknown`` rows, where naming anybody is wrong);
    * wrong: named but not correct;
    * recall = correct / rows whose family is not ``unknown``;
    * wrong_rate = wrong / named.
    """
    counts: dict[str, list[int]] = {}
    misses: list[Miss] = []
    n = named = correct = wrong = positives = 0
    for row in rows:
        n += 1
        if row.family != UNKNOWN:
            positives += 1
        fam = counts.setdefault(row.family, [0, 0, 0, 0])
        fam[0] += 1
        predicted = _prediction(predict(row.host))
        if predicted is None:
            continue
        named += 1
        fam[1] += 1
        if row.family != UNKNOWN and predicted == row.family:
            correct += 1
            fam[2] += 1
        else:
            wrong += 1
            fam[3] += 1
            misses.append(Miss(row, predicted))
    per_family = {name: FamilyScore(name, *values) for name, values in sorted(counts.items())}
    return Score(
        n=n,
        named=named,
        correct=correct,
        wrong=wrong,
        positives=positives,
        recall=correct / positives if positives else 0.0,
        wrong_rate=wrong / named if named else 0.0,
        per_family=per_family,
        wrong_rows=tuple(misses),
    )
