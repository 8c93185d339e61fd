"""The fleet report's aggregations, on three engines that must agree.

- ``duckdb`` (the default): DuckDB in this process, over the dataset's Parquet files;
- ``dask``: the same aggregations on a dask.distributed cluster (``--scheduler ADDRESS``),
  for fleets one machine cannot hold; every worker must read the dataset at the same path;
- ``pandas``: plain pandas in this process, the baseline the benchmark measures against.

Each gives the same :class:`Aggregates`: small tables the report is written from
(:mod:`auditor.fleet.report`). The heavy part is one pass over the flows, grouped two
ways: by build, recipient and session (how many sessions contacted a recipient), and by
build, recipient and host. Neither grows with the flows, and the first only with the
sessions times their recipients. Every count and sum is an integer, so the engines'
results are equal, not close. Durations are summed in whole milliseconds
(floored) for the same reason.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from auditor.fleet import schema
from auditor.fleet.dataset import Dataset, FleetError

log = logging.getLogger(__name__)

ENGINES = ("duckdb", "dask", "pandas")
BUILD_KEYS = [schema.VENDOR, schema.MODEL, schema.BUILD]
RECIPIENT_KEYS = [*BUILD_KEYS, schema.RECIPIENT]
HOST_KEYS = [*RECIPIENT_KEYS, schema.HOST]
IDENT_KEYS = [*RECIPIENT_KEYS, schema.IDENTIFIER]
FLOW_COLUMNS = [*HOST_KEYS, schema.SESSION_KEY, schema.BYTES_UP, schema.BYTES_DOWN]
SESSION_COLUMNS = [*BUILD_KEYS, schema.SESSION_KEY, schema.STARTED, schema.DURATION]
IDENT_COLUMNS = [*IDENT_KEYS, schema.SESSION_KEY, schema.FLOWS, schema.ENCODINGS]


@dataclass
class Aggregates:
    """What the report is made of. Every table is sorted by its key columns."""

    builds: pd.DataFrame  # BUILD_KEYS, sessions, first_started, last_started, milliseconds
    recipients: pd.DataFrame  # RECIPIENT_KEYS, sessions, flows, bytes_up, bytes_down
    hosts: pd.DataFrame  # HOST_KEYS, flows
    identifiers: pd.DataFrame  # IDENT_KEYS, sessions, flows
    encodings: pd.DataFrame  # IDENT_KEYS, encoding


_SHAPES: dict[str, tuple[list[str], list[str]]] = {
    "builds": (BUILD_KEYS, ["sessions", "first_started", "last_started", "milliseconds"]),
    "recipients": (RECIPIENT_KEYS, ["sessions", schema.FLOWS, schema.BYTES_UP, schema.BYTES_DOWN]),
    "hosts": (HOST_KEYS, [schema.FLOWS]),
    "identifiers": (IDENT_KEYS, ["sessions", schema.FLOWS]),
    "encodings": ([*IDENT_KEYS, "encoding"], []),
}


def normalised(name: str, df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with the columns of table ``name`` in order, plain dtypes, sorted by its keys:
    what every engine returns, so that results compare equal."""
    keys, values = _SHAPES[name]
    out = pd.DataFrame(
        {k: df[k].astype(object).map(str).to_numpy() if len(df) else [] for k in keys}
    )
    for v in values:
        col = df[v] if len(df) else pd.Series([], dtype=object)
        if v.endswith("_started"):
            out[v] = pd.to_datetime(col, utc=True).astype("datetime64[us, UTC]").to_numpy()
        else:
            out[v] = np.asarray(col, dtype=np.int64)
    out = out.sort_values(keys, kind="stable").reset_index(drop=True)
    return out


class Engine(Protocol):
    def aggregates(self, ds: Dataset) -> Aggregates: ...


def engine(name: str, scheduler: str | None = None) -> Engine:
    if name == "duckdb":
        return DuckDBEngine()
    if name == "pandas":
        return PandasEngine()
    if name == "dask":
        if not scheduler:
            raise FleetError("--engine dask needs --scheduler ADDRESS (tcp://host:8786)")
        return DaskEngine(scheduler)
    raise FleetError(f"unknown engine {name!r} (one of {', '.join(ENGINES)})")


# ---------------------------------------------------------------- DuckDB


def _sql_text(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def duckdb_connection(
    ds: Dataset, *, sandbox: bool = True, tables: Sequence[str] = tuple(schema.TABLES)
) -> Any:
    """An in-memory DuckDB with one view per table (``flows``, ``endpoints``, ``findings``,
    ``identifiers``, ``sessions``) over the dataset's committed files. With ``sandbox``,
    DuckDB may then read only the dataset's folder, and its settings are locked."""
    import duckdb

    con = duckdb.connect(":memory:")
    con.execute("SET TimeZone='UTC'")
    con.execute("SET parquet_metadata_cache = true")
    for table in tables:
        table_schema = schema.TABLES[table]
        files = ds.files(table)
        if files:
            listed = ", ".join(_sql_text(str(f.resolve())) for f in files)
            source = _sql("read_parquet([", listed, "], hive_partitioning = false)")
        else:
            con.register(f"_empty_{table}", table_schema.empty_table())
            source = "_empty_" + table
        con.execute(_sql("CREATE VIEW", table, "AS SELECT * FROM", source))
    if sandbox:
        root = str(ds.root.resolve()).rstrip("/") + "/"
        con.execute(f"SET allowed_directories=[{_sql_text(root)}]")
        con.execute("SET enable_external_access=false")
        con.execute("SET lock_configuration=true")
    return con


def _connect(ds: Dataset, tables: Sequence[str] = tuple(schema.TABLES)) -> Any:
    """:func:`duckdb_connection`, a file it cannot read (a damaged part) a FleetError."""
    try:
        return duckdb_connection(ds, tables=tables)
    except _duck_errors() as exc:
        raise FleetError(f"{ds.root}: {_first_line(exc)}") from None


def _duck_errors() -> tuple[type[BaseException], ...]:
    import duckdb

    return (duckdb.Error,)


class DuckDBEngine:
    def aggregates(self, ds: Dataset) -> Aggregates:
        con = _connect(ds, ("flows", "sessions", "identifiers"))
        try:
            return _duck_aggregates(con)
        except _duck_errors() as exc:
            raise FleetError(f"{ds.root}: {_first_line(exc)}") from None
        finally:
            con.close()


def _sql(*parts: str) -> str:
    """A statement from fixed words and the column constants of auditor.fleet.schema:
    nothing a user or a capture wrote goes into it."""
    return " ".join(parts)


def _duck_aggregates(con: Any) -> Aggregates:
    b, r, h, i = (", ".join(k) for k in (BUILD_KEYS, RECIPIENT_KEYS, HOST_KEYS, IDENT_KEYS))
    sums = "CAST(sum(flows) AS BIGINT) AS flows"
    # one scan of the flows, two small groupings: per session and recipient (for the
    # sessions that contacted a recipient), and per host; nothing per session and host, so
    # memory follows the sessions times the recipients, not the flows
    con.execute(
        _sql(
            "CREATE TEMP TABLE parts AS SELECT", r, ", session_key, host,",
            "grouping(session_key) AS by_host, count(*) AS flows,",
            "CAST(sum(bytes_up) AS BIGINT) AS bytes_up,",
            "CAST(sum(bytes_down) AS BIGINT) AS bytes_down",
            "FROM flows GROUP BY GROUPING SETS ((", r, ", session_key), (", h, "))",
        )
    )  # fmt: skip
    q = {
        "builds": _sql(
            "SELECT", b, ", count(*) AS sessions, min(started) AS first_started,",
            "max(started) AS last_started,",
            "CAST(coalesce(sum(floor(duration_seconds * 1000)), 0) AS BIGINT) AS milliseconds",
            "FROM sessions GROUP BY", b,
        ),
        "recipients": _sql(
            "SELECT", r, ", count(*) AS sessions,", sums, ",",
            "CAST(sum(bytes_up) AS BIGINT) AS bytes_up,",
            "CAST(sum(bytes_down) AS BIGINT) AS bytes_down FROM parts WHERE by_host = 0",
            "GROUP BY", r,
        ),
        "hosts": _sql("SELECT", h, ",", sums, "FROM parts WHERE by_host = 1 GROUP BY", h),
        "identifiers": _sql(
            "SELECT", i, ", count(*) AS sessions,", sums, "FROM identifiers GROUP BY", i
        ),
        "encodings": _sql(
            "SELECT DISTINCT", i, ", encoding FROM (SELECT", i,
            ", unnest(encodings) AS encoding FROM identifiers) WHERE encoding IS NOT NULL",
        ),
    }  # fmt: skip
    got = {name: normalised(name, con.execute(sql).fetchdf()) for name, sql in q.items()}
    return Aggregates(**got)


# ---------------------------------------------------------------- pandas (the baseline)


def _read(files: Sequence[Path], columns: list[str], schema_table: str) -> pd.DataFrame:
    if not files:
        return schema.TABLES[schema_table].empty_table().select(columns).to_pandas()
    try:
        return pd.concat([pd.read_parquet(f, columns=columns) for f in files], ignore_index=True)
    except (OSError, ValueError) as exc:
        raise FleetError(f"cannot read the dataset: {_first_line(exc)}") from None


def _frame_aggregates(
    flows: Any, sessions: Any, idents: Any, encoded: Any, *, dask: bool = False
) -> dict[str, Any]:
    """The aggregations written once for pandas and dask.dataframe (the same API). Only
    one-function-per-column sums, minima and maxima: dask's named aggregations give
    frames its optimiser cannot shuffle again (a KeyError in dask 2026.8)."""
    ones = {"n": 1}

    def sums(frame: Any, keys: list[str], how: dict[str, str]) -> Any:
        return frame.groupby(keys, observed=True, sort=False).agg(how).reset_index()

    flows = flows[FLOW_COLUMNS].assign(**ones)
    per_session = sums(
        flows.drop(columns=[schema.HOST]),
        [*RECIPIENT_KEYS, schema.SESSION_KEY],
        {"n": "sum", schema.BYTES_UP: "sum", schema.BYTES_DOWN: "sum"},
    )
    recipients = sums(
        per_session.drop(columns=[schema.SESSION_KEY])
        .rename(columns={"n": schema.FLOWS})
        .assign(**ones),
        RECIPIENT_KEYS,
        {"n": "sum", schema.FLOWS: "sum", schema.BYTES_UP: "sum", schema.BYTES_DOWN: "sum"},
    )
    hosts = sums(flows[HOST_KEYS].assign(**{schema.FLOWS: 1}), HOST_KEYS, {schema.FLOWS: "sum"})
    dur = sessions[schema.DURATION].fillna(0.0) * 1000.0
    builds = sums(
        sessions[[*BUILD_KEYS, schema.STARTED]].assign(
            last_started=sessions[schema.STARTED],
            ms=dur.map_partitions(np.floor) if dask else np.floor(dur),
            **ones,
        ),
        BUILD_KEYS,
        {"n": "sum", schema.STARTED: "min", "last_started": "max", "ms": "sum"},
    )
    identifiers = sums(
        idents[[*IDENT_KEYS, schema.FLOWS]].assign(**ones),
        IDENT_KEYS,
        {"n": "sum", schema.FLOWS: "sum"},
    )
    # ``encoded``: the identifiers table with one row per encoding (exploded where it is
    # read: dask turns a column of lists into text when it moves it)
    encodings = encoded.dropna(subset=[schema.ENCODINGS]).drop_duplicates()
    return {
        "builds": builds,
        "recipients": recipients,
        "hosts": hosts,
        "identifiers": identifiers,
        "encodings": encodings,
    }


_NAMES = {
    "n": "sessions",
    schema.STARTED: "first_started",
    "ms": "milliseconds",
    schema.ENCODINGS: "encoding",
}


def _named(name: str, df: pd.DataFrame) -> pd.DataFrame:
    """A computed frame of :func:`_frame_aggregates` named as :class:`Aggregates` names it."""
    return normalised(name, df.rename(columns=_NAMES))


class PandasEngine:
    def aggregates(self, ds: Dataset) -> Aggregates:
        flows = _read(ds.files("flows"), FLOW_COLUMNS, "flows")
        sessions = _read(ds.files("sessions"), SESSION_COLUMNS, "sessions")
        idents = _read(ds.files("identifiers"), IDENT_COLUMNS, "identifiers")
        encoded = idents[[*IDENT_KEYS, schema.ENCODINGS]].explode(schema.ENCODINGS)
        got = _frame_aggregates(flows, sessions, idents, encoded)
        return Aggregates(**{k: _named(k, v) for k, v in got.items()})


# ---------------------------------------------------------------- dask.distributed

BATCH_BYTES = 16 * 1024 * 1024  # Parquet bytes read by one dask task


def batched(files: Sequence[Path], limit: int = BATCH_BYTES) -> list[list[str]]:
    """The files in runs of about ``limit`` bytes: one dask partition each. A part per
    partition and export makes many small files; a task per file cost dask ~0.15 s each."""
    out: list[list[str]] = []
    size = limit
    for f in files:
        n = f.stat().st_size
        if size + n > limit:
            out.append([])
            size = 0
        out[-1].append(str(f.resolve()))
        size += n
    return out


def read_files(paths: list[str], columns: list[str], explode: str | None = None) -> pd.DataFrame:
    """One dask partition: ``paths`` read by pyarrow (on a worker: the paths must be there),
    the list column ``explode`` made one row per item."""
    import pyarrow.parquet as pq

    df = pq.read_table(paths, columns=columns, partitioning=None).to_pandas()
    if explode:
        df = df.explode(explode).astype({explode: df[columns[0]].dtype})
    return df


class DaskEngine:
    def __init__(self, scheduler: str, timeout: float = 30.0):
        self.scheduler = scheduler
        self.timeout = timeout

    def aggregates(self, ds: Dataset) -> Aggregates:
        try:
            import dask
            import dask.dataframe as dd
            from distributed import Client
        except ImportError:
            raise FleetError(
                "--engine dask needs dask.distributed: pip install 'auditor[fleet]'"
            ) from None

        def frame(table: str, columns: list[str], explode: str | None = None) -> Any:
            meta = _read([], columns, table)
            if explode:
                meta = meta.explode(explode).astype({explode: meta[columns[0]].dtype})
            batches = batched(ds.files(table))
            if not batches:
                return dd.from_pandas(meta, npartitions=1)
            return dd.from_map(read_files, batches, columns=columns, explode=explode, meta=meta)

        try:
            client = Client(self.scheduler, timeout=self.timeout, set_as_default=False)
        except (OSError, TimeoutError, ValueError) as exc:
            raise FleetError(f"dask scheduler {self.scheduler}: {_first_line(exc)}") from None
        try:
            with dask.config.set(scheduler=client.get):
                lazy = _frame_aggregates(
                    frame("flows", FLOW_COLUMNS),
                    frame("sessions", SESSION_COLUMNS),
                    frame("identifiers", [*IDENT_KEYS, schema.SESSION_KEY, schema.FLOWS]),
                    frame("identifiers", [*IDENT_KEYS, schema.ENCODINGS], explode=schema.ENCODINGS),
                    dask=True,
                )
                names = list(lazy)
                done = dask.compute(*(lazy[n] for n in names))
        except (OSError, ValueError) as exc:
            raise FleetError(f"dask: {_first_line(exc)}") from None
        finally:
            client.close()
        return Aggregates(**{n: _named(n, d) for n, d in zip(names, done, strict=True)})


def aggregates(ds: Dataset, name: str = "duckdb", scheduler: str | None = None) -> Aggregates:
    return engine(name, scheduler).aggregates(ds)


def equal(a: Aggregates, b: Aggregates) -> bool:
    return all(getattr(a, f.name).equals(getattr(b, f.name)) for f in fields(Aggregates))


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


# ---------------------------------------------------------------- SQL


READ_ONLY = {"SELECT", "EXPLAIN"}


def query(ds: Dataset, sql: str) -> pd.DataFrame:
    """``sql`` (DuckDB's dialect) over the dataset's views; only SELECT (WITH, DESCRIBE,
    SHOW, EXPLAIN) statements, and the last one's rows are returned."""
    import duckdb

    con = _connect(ds)
    try:
        try:
            statements = con.extract_statements(sql)
        except duckdb.Error as exc:
            raise FleetError(f"SQL: {_first_line(exc)}") from None
        if not statements:
            raise FleetError("SQL: no statement")
        for st in statements:
            kind = str(getattr(st.type, "name", st.type))
            if kind not in READ_ONLY:
                raise FleetError(f"SQL: only queries are allowed, not {kind}")
        try:
            for st in statements[:-1]:
                con.execute(st)
            result: pd.DataFrame = con.execute(statements[-1]).fetchdf()
        except duckdb.Error as exc:
            raise FleetError(f"SQL: {_first_line(exc)}") from None
        return result
    finally:
        con.close()
