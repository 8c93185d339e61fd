"""The fleet dataset's tables and columns, defined once (``docs/fleet.md`` lists them).

Every table carries the session's key and its partition values (vendor, model, build,
month) as columns of its own, so a file read on its own says where it belongs; the folder
names of the partitions are only a layout (see :func:`auditor.fleet.dataset.partition_dir`).
"""

from __future__ import annotations

from typing import Final

import pyarrow as pa

FLEET_SCHEMA_VERSION: Final = 1
UNKNOWN_RECIPIENT: Final = "(unknown operator)"  # as findings.json's verdicts and the diff
UNKNOWN: Final = "unknown"  # a partition value the report did not give

# partition and key columns, in every table
SESSION_KEY: Final = "session_key"
VENDOR: Final = "vendor"
MODEL: Final = "model"
BUILD: Final = "build"
MONTH: Final = "month"
PARTITION_KEYS: Final = (VENDOR, MODEL, BUILD, MONTH)

RECIPIENT: Final = "recipient"
HOST: Final = "host"
IDENTIFIER: Final = "identifier"
ENCODINGS: Final = "encodings"
FLOWS: Final = "flows"
BYTES_UP: Final = "bytes_up"
BYTES_DOWN: Final = "bytes_down"
STARTED: Final = "started"
DURATION: Final = "duration_seconds"

TS = pa.timestamp("us", tz="UTC")
_STRS = pa.list_(pa.string())

_COMMON = [
    pa.field(SESSION_KEY, pa.string(), nullable=False),
    pa.field(VENDOR, pa.string(), nullable=False),
    pa.field(MODEL, pa.string(), nullable=False),
    pa.field(BUILD, pa.string(), nullable=False),
    pa.field(MONTH, pa.string(), nullable=False),
]

SESSIONS = pa.schema(
    [
        *_COMMON,
        pa.field("session_ids", _STRS),
        pa.field("manifest_sha256", _STRS),
        pa.field("source", pa.string()),  # the folder's name, as given to export
        pa.field("input", pa.string()),  # report | session
        pa.field("manufacturer", pa.string()),
        pa.field("brand", pa.string()),
        pa.field("device", pa.string()),
        pa.field("android_release", pa.string()),
        pa.field("fingerprint", pa.string()),
        pa.field("security_patch", pa.string()),
        pa.field(STARTED, TS),
        pa.field(DURATION, pa.float64()),
        pa.field(FLOWS, pa.int64()),
        pa.field("findings", pa.int64()),
        pa.field("findings_schema_version", pa.int64()),
        pa.field("auditor_version", pa.string()),
        pa.field("generated_at", pa.string()),
    ]
)

FLOWS_T = pa.schema(
    [
        *_COMMON,
        pa.field("session_id", pa.string()),
        pa.field("flow_id", pa.string()),
        pa.field("start", TS),
        pa.field(HOST, pa.string(), nullable=False),  # the destination's name ("" if none)
        pa.field(RECIPIENT, pa.string(), nullable=False),
        pa.field("organisation_id", pa.string()),
        pa.field("country", pa.string()),  # the recipient's headquarters
        pa.field("server_country", pa.string()),  # where the server stood (hosting)
        pa.field("hosting", pa.string()),
        pa.field("transport", pa.string()),
        pa.field("scheme", pa.string()),
        pa.field("method", pa.string()),
        pa.field("status", pa.int64()),
        pa.field(BYTES_UP, pa.int64(), nullable=False),
        pa.field(BYTES_DOWN, pa.int64(), nullable=False),
        pa.field("seen_by", pa.string()),
        pa.field("bypass", pa.bool_()),
        pa.field("idle", pa.bool_()),
        pa.field("apps", pa.string()),
    ]
)

ENDPOINTS = pa.schema(
    [
        *_COMMON,
        pa.field(HOST, pa.string()),
        pa.field("ip", pa.string()),
        pa.field(RECIPIENT, pa.string(), nullable=False),
        pa.field("organisation_id", pa.string()),
        pa.field("parent", pa.string()),
        pa.field("country", pa.string()),
        pa.field("basis", pa.string()),
        pa.field("confidence", pa.string()),
        pa.field("hosted_by", pa.string()),
        pa.field("server_country", pa.string()),
        pa.field("categories", _STRS),
        pa.field("legal_exposure", _STRS),  # countries whose laws can compel access
        pa.field("state_control", pa.bool_()),
        pa.field(FLOWS, pa.int64()),
        pa.field(BYTES_UP, pa.int64()),
        pa.field(BYTES_DOWN, pa.int64()),
        pa.field("first_seen", TS),
        pa.field("last_seen", TS),
        pa.field("apps", _STRS),
    ]
)

FINDINGS = pa.schema(
    [
        *_COMMON,
        pa.field("finding_id", pa.string()),
        pa.field("rule", pa.string()),
        pa.field("severity", pa.string()),
        pa.field("title", pa.string()),
        pa.field(HOST, pa.string()),
        pa.field(RECIPIENT, pa.string(), nullable=False),
        pa.field("country", pa.string()),
        pa.field("identifiers", _STRS),
        pa.field(ENCODINGS, _STRS),
        pa.field(FLOWS, pa.int64()),
        pa.field("flow_ids", _STRS),
    ]
)

IDENTIFIERS = pa.schema(
    [
        *_COMMON,
        pa.field(RECIPIENT, pa.string(), nullable=False),
        pa.field(IDENTIFIER, pa.string(), nullable=False),
        pa.field(ENCODINGS, _STRS),
        pa.field("hosts", _STRS),
        pa.field("rules", _STRS),
        pa.field(FLOWS, pa.int64()),
        pa.field("flow_ids", _STRS),
    ]
)

# table name (also its folder and its SQL view) -> schema; sessions last: its file commits
# the others of the same part (see auditor.fleet.dataset)
TABLES: Final[dict[str, pa.Schema]] = {
    "flows": FLOWS_T,
    "endpoints": ENDPOINTS,
    "findings": FINDINGS,
    "identifiers": IDENTIFIERS,
    "sessions": SESSIONS,
}
COMMIT_TABLE: Final = "sessions"
