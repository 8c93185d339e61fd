"""The fleet dataset: many analysed audits in one Parquet dataset, and the reports and SQL
that answer questions across them (which vendor's builds send which identifiers to whom,
how often, since which build). ``docs/fleet.md`` describes the dataset and the commands.

- :mod:`auditor.fleet.schema`: the tables, their columns and the schema version;
- :mod:`auditor.fleet.dataset`: the folder, its partitions and its committed files;
- :mod:`auditor.fleet.export`: report folders and sessions appended to a dataset;
- :mod:`auditor.fleet.engines`: the aggregations on DuckDB, pandas or dask.distributed;
- :mod:`auditor.fleet.report`: the fleet report (HTML, JSON, CSV) from those aggregations;
- :mod:`auditor.fleet.cli`: ``auditor export`` and ``auditor fleet``.
"""
