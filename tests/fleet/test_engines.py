"""auditor.fleet.engines: DuckDB, pandas and a real dask.distributed cluster give equal
aggregates; SQL runs read-only over the dataset's views."""

from __future__ import annotations

import socket
from pathlib import Path

import pandas as pd
import pytest

from auditor.fleet.dataset import Dataset, FleetError
from auditor.fleet.engines import DaskEngine, aggregates, engine, query
from auditor.fleet.report import build_report
from tests.fleet.conftest import Audit

FIXED = "2000-01-01T00:00:00Z"


def test_pandas_equals_duckdb(dataset: Path) -> None:
    ds = Dataset.open(dataset)
    duck, pand = aggregates(ds, "duckdb"), aggregates(ds, "pandas")
    for name in ("builds", "recipients", "hosts", "identifiers", "encodings"):
        pd.testing.assert_frame_equal(getattr(duck, name), getattr(pand, name))
    assert len(duck.recipients) > 5 and len(duck.identifiers) > 5


def test_dask_on_a_local_cluster_equals_duckdb(dataset: Path) -> None:
    distributed = pytest.importorskip("distributed")
    ds = Dataset.open(dataset)
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        silence_logs=40,
    )
    try:
        with distributed.Client(cluster) as client:
            assert len(client.scheduler_info()["workers"]) == 2
        got = aggregates(ds, "dask", cluster.scheduler_address)
    finally:
        cluster.close()
    want = aggregates(ds, "duckdb")
    for name in ("builds", "recipients", "hosts", "identifiers", "encodings"):
        pd.testing.assert_frame_equal(getattr(got, name), getattr(want, name))
    assert build_report(got, generated_at=FIXED) == build_report(want, generated_at=FIXED)


def test_dask_needs_a_reachable_scheduler(dataset: Path) -> None:
    with pytest.raises(FleetError, match="needs --scheduler"):
        engine("dask")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    with pytest.raises(FleetError, match=r"dask scheduler tcp://127\.0\.0\.1"):
        DaskEngine(f"tcp://127.0.0.1:{port}", timeout=1.0).aggregates(Dataset.open(dataset))


def test_query_reads_the_tables(fleet: dict[str, Audit], dataset: Path) -> None:
    ds = Dataset.open(dataset)
    flows = sum(len(pd.read_parquet(a.report / "flows.parquet")) for a in fleet.values())
    assert query(ds, "SELECT count(*) AS n FROM flows")["n"].iloc[0] == flows
    got = query(
        ds,
        "WITH s AS (SELECT vendor, count(*) AS n FROM sessions GROUP BY vendor) "
        "SELECT * FROM s ORDER BY vendor",
    )
    assert got.to_dict("records") == [{"vendor": "OnePlus", "n": 1}, {"vendor": "Xiaomi", "n": 2}]
    names = set(query(ds, "SHOW TABLES")["name"])
    assert names >= {"flows", "endpoints", "findings", "identifiers", "sessions"}


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("COPY flows TO 'out.csv'", "only queries are allowed, not COPY"),
        ("DROP VIEW flows", "only queries are allowed, not DROP"),
        ("SELECT 1; CREATE TABLE t (x INT)", "only queries are allowed, not CREATE"),
        ("SELECT * FROM read_csv('/etc/passwd')", "Permission Error"),
        ("SET enable_external_access = true", "only queries are allowed"),
        ("SELEC 1", "Parser Error"),
        ("SELECT nope FROM flows", "Binder Error"),
        ("", "no statement"),
    ],
)
def test_query_is_read_only_and_errors_are_one_line(dataset: Path, sql: str, message: str) -> None:
    with pytest.raises(FleetError, match=message) as info:
        query(Dataset.open(dataset), sql)
    assert "\n" not in str(info.value)
