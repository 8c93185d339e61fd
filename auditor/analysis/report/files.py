"""Writing report files: the findings JSON and the CSV and Parquet exports, with every CSV cell
made safe for a spreadsheet. Files are owner-only and written whole (:mod:`auditor.fsutil`)."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from auditor import columns
from auditor.analysis.escape import csv_cell
from auditor.fsutil import replacing


def dumps_findings(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, ensure_ascii=False, sort_keys=False, default=str) + "\n"


def write_csv(path: Path, rows: Iterable[Mapping[Any, Any]], fields: list[str]) -> None:
    with replacing(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for row in rows:
            w.writerow({k: csv_cell(row.get(k)) for k in fields})


def flows_for_export(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    for col in (columns.START, columns.END):
        if col not in out:
            continue
        out[col] = out[col].map(
            lambda t: t.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if not pd.isna(t) else None
        )
    keys = [c for c in (columns.START, columns.FLOW_ID) if c in out]
    return out.sort_values(keys, na_position="last").reset_index(drop=True) if keys else out


def evidence_text(ev: dict[str, Any]) -> str:
    """``dataset (v2fly: domain:umeng.com): Umeng``: one rung of the evidence, in words."""
    detail = ev.get("detail") or ev.get("matched") or ""
    return f"{ev.get('basis')} ({detail}): {ev.get('name')}"


ENDPOINT_FIELDS = [
    "host", "ip", "organisation", "organisation_id", "parent", "country", "basis",
    "confidence", "conflicts", "hosted_by", "server_country", "categories",
    "state_control", "legal_exposure", "state_linked", "flows", "bytes_up",
    "bytes_down", "first_seen", "last_seen", "apps",
]  # fmt: skip


def write_csv_tables(out: Path, doc: dict[str, Any], exp: pd.DataFrame) -> list[Path]:
    """``flows.csv`` (``exp``: the flows as :func:`flows_for_export` gives them) and
    ``endpoints.csv``."""
    write_csv(out / "flows.csv", exp.to_dict("records"), list(exp.columns))
    write_csv(
        out / "endpoints.csv",
        (
            {
                **e,
                "categories": ";".join(e["categories"]),
                "apps": ";".join(e["apps"]),
                "conflicts": "; ".join(evidence_text(x) for x in e.get("conflicts") or []),
                "state_control": "; ".join(f["statement"] for f in e.get("state_control") or []),
                "legal_exposure": "; ".join(x["basis"] for x in e.get("legal_exposure") or []),
            }
            for e in doc.get("endpoints") or []
        ),
        ENDPOINT_FIELDS,
    )
    return [out / "flows.csv", out / "endpoints.csv"]


def write_parquet(out: Path, doc: dict[str, Any], exp: pd.DataFrame) -> list[Path]:
    """``flows.parquet`` (``exp`` as for :func:`write_csv_tables`); when it cannot be written,
    a warning in ``doc`` instead."""
    try:
        safe = exp.astype({c: "string" for c in exp.columns if exp[c].dtype == object})
        with replacing(out / "flows.parquet") as fh:
            safe.to_parquet(fh, index=False)
        return [out / "flows.parquet"]
    except (ImportError, ValueError) as exc:  # pragma: no cover - pyarrow is a dependency
        doc.setdefault("warnings", []).append(f"flows.parquet not written: {exc}")
        return []
