"""Session records: ``auditor.records.loads`` on hostile lines, and ``Session.records`` (with
the summary and flow table built from them) over arbitrary ``flows.jsonl`` bytes.

``loads`` raises only RecordFormatError, and a record it returns has the documented types (so
it writes back the same). ``Session.records`` raises nothing: bad lines become warnings."""

from __future__ import annotations

import json
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

from hypothesis import example
from hypothesis import strategies as st

from auditor.imports import ImportFormat, ImportReport
from auditor.imports.har import har_records, load_har
from auditor.records import (
    HttpRecord,
    RecordFormatError,
    TlsFailedRecord,
    dumps,
    loads,
    record_to_dict,
)
from auditor.session import FLOWS, MANIFEST, Session
from tests.fuzz.helpers import NullStore, assert_writable, fuzz, mutated, mutated_json, sample_paths
from tests.test_records import _samples

RECORD_KEYS = (
    "type",
    "id",
    "method",
    "scheme",
    "host",
    "port",
    "path",
    "url",
    "request_headers",
    "response_headers",
    "request_body",
    "response_body",
    "body",
    "answers",
    "alpn_offers",
    "status",
    "ts",
    "data",
    "sha256",
    "size",
    "wire_size",
    "client_port",
    "server_port",
)


@cache
def _dicts() -> list[dict[str, Any]]:
    """The JSON form of records of every type: the schema samples and real HAR imports."""
    recs = list(_samples())
    for path in sample_paths("imports/samples/*.har"):
        if path.name in ("not_json.har", "wrong_structure.har"):  # no records in these
            continue
        har = load_har(path.read_bytes(), path.name)
        recs += har_records(har, NullStore(), ImportReport(ImportFormat.HAR), "s")
    return [record_to_dict(r) for r in recs]


@cache
def _lines() -> list[bytes]:
    return [dumps(r).encode() for r in map(_from_dict, _dicts())]


def _from_dict(obj: dict[str, Any]) -> Any:
    return loads(json.dumps(obj))


def _load(line: str | bytes) -> None:
    try:
        rec = loads(line)
    except RecordFormatError:
        return
    assert_writable([rec])


_TOO_DEEP = b"[" * 100_000


@example(_TOO_DEEP)  # json's RecursionError escaped loads
@example(
    b'{"type":"http","id":"x","method":"GET","scheme":"http","host":"h","port":1,'
    b'"path":"/","url":"u","request_headers":[["a"]]}'
)  # IndexError
@fuzz(st.binary(max_size=500), share=0.15)
def test_random_lines(line: bytes) -> None:
    _load(line)


_HTTP = {
    "type": "http",
    "id": "x",
    "method": "GET",
    "scheme": "http",
    "host": "h",
    "port": 1,
    "path": "/",
    "url": "u",
}


@example(_HTTP | {"port": "80"})  # a str port was a record
@example(_HTTP | {"client_port": 2**63 + 1})  # past int64 (see the session test)
@fuzz(st.deferred(lambda: mutated_json(_dicts(), keys=RECORD_KEYS)), share=0.35)
def test_hostile_fields(obj: Any) -> None:
    _load(json.dumps(obj))


@fuzz(st.deferred(lambda: mutated(_lines())), share=0.15)
def test_mutated_lines(line: bytes) -> None:
    _load(line)


@cache
def _session_dir() -> Path:
    root = Path(tempfile.mkdtemp(prefix="auditor-fuzz-session-"))
    (root / MANIFEST).write_text(json.dumps({"session_id": "fuzz", "status": "complete"}))
    return root


def _read_session(data: bytes) -> None:
    root = _session_dir()
    (root / FLOWS).write_bytes(data)
    session = Session(root)
    records = list(session.records())
    assert_writable(records)
    summary = session.summary()
    assert summary.flows == sum(1 for r in records if r.TYPE.value == "http")
    flows = session.flows(records)
    assert len(flows) == sum(1 for r in records if isinstance(r, HttpRecord | TlsFailedRecord))


_files = st.one_of(
    st.binary(max_size=2000),
    st.lists(st.deferred(lambda: mutated(_lines(), max_ops=3)), max_size=8).map(b"\n".join),
    st.lists(
        st.deferred(lambda: mutated_json(_dicts(), keys=RECORD_KEYS)).map(
            lambda d: json.dumps(d).encode("utf-8", "surrogatepass")
        ),
        max_size=6,
    ).map(lambda lines: b"".join(line + b"\n" for line in lines)),
)


@example(
    b'{"type":"http","id":"x","method":"GET","scheme":"http","host":"h","port":1,"path":"/",'
    b'"url":"u","response_headers":[["\\udfff","x"]]}\n'
)
@example((json.dumps(_HTTP | {"client_port": 2**63 + 1}) + "\n").encode())  # Int64: OverflowError
@fuzz(_files, share=0.35)
def test_session_over_arbitrary_flows_jsonl(data: bytes) -> None:
    _read_session(data)


def test_flow_table_with_a_malformed_timestamp() -> None:
    """A record whose timestamp is not ISO 8601 (a hand-edited line) used to stop
    Session.flows (pandas.to_datetime raised ValueError); now the time is unknown, and said."""
    rec = HttpRecord(
        id="x", method="GET", scheme="http", host="h", port=1, path="/", url="u", request_start=" "
    )
    (_session_dir() / FLOWS).write_text(dumps(rec) + "\n")
    sess = Session(_session_dir())
    df = sess.flows()
    assert len(df) == 1 and df["start"].isna().all()
    assert any("unreadable start time" in w for w in sess.warnings)
