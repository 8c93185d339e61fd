"""mitmproxy flow files (``check_flow_file``, ``flow_records``) and the import format sniffer
(``auditor.imports.detect_format``): random bytes, byte-mutated flow files, and flow files
whose tnetstring states carry hostile values. Only ImportFileError may escape; a flow that
cannot become records is never an "internal error", and every record can be read back."""

from __future__ import annotations

import io
import json
from functools import cache
from typing import Any

from hypothesis import example
from hypothesis import strategies as st
from mitmproxy import io as mio
from mitmproxy.io import tnetstring
from mitmproxy.test import tflow

from auditor.imports import ImportFileError, ImportFormat, ImportReport, detect_format
from auditor.imports.mitmflows import check_flow_file, flow_records
from auditor.records import Record
from tests.fuzz.helpers import (
    HOSTILE_NUMBERS,
    HOSTILE_STRINGS,
    NullStore,
    assert_report_writable,
    assert_writable,
    fuzz,
    mutated,
    sample_paths,
    shared_captures,
)


@cache
def _flows() -> list[Any]:
    http = tflow.tflow(resp=True)
    http.request.content = b"telemetry"
    http.request.headers["content-encoding"] = "gzip"
    return [
        http,
        tflow.tflow(err=True),
        tflow.tflow(),
        tflow.twebsocketflow(),
        tflow.tdnsflow(resp=True),
        tflow.tdnsflow(err=True),
        tflow.ttcpflow(),
        tflow.tudpflow(err=True),
    ]


@cache
def _states() -> list[Any]:
    return [f.get_state() | {"version": _version()} for f in _flows()]


@cache
def _version() -> int:
    state = tnetstring.load(io.BytesIO(_seeds()[0]))
    assert isinstance(state, dict)
    return int(state["version"])


@cache
def _seeds() -> list[bytes]:
    """Flow files of every kind of flow, one and several flows each."""
    files = []
    for flows in ([f] for f in _flows()):
        buf = io.BytesIO()
        writer = mio.FlowWriter(buf)
        for f in flows:
            writer.add(f)
        files.append(buf.getvalue())
    files.append(b"".join(files))
    return files


def _import(data: bytes) -> list[Record] | None:
    report = ImportReport(ImportFormat.MITMPROXY)
    fo = io.BytesIO(data)
    try:
        check_flow_file(fo, "fuzz.mitm")
    except ImportFileError:
        checked = False
    else:
        checked = True
    fo.seek(0)
    try:
        records = list(flow_records(fo, NullStore(), report, "fuzz.mitm", len(data)))
    except ImportFileError as exc:
        assert str(exc).startswith("fuzz.mitm: ")
        assert not checked, "check_flow_file accepted what flow_records refuses"
        return None
    assert checked, "check_flow_file refused what flow_records reads"
    internal = [s for s in report.skipped if "internal error" in s.reason]
    assert not internal, internal
    assert_writable(records)
    assert_report_writable(report)
    return records


def _sniff(data: bytes) -> None:
    fmt = detect_format(data)
    assert fmt is None or isinstance(fmt, ImportFormat)
    if fmt is ImportFormat.PCAP:
        assert len(data) >= 4
    # a prefix of a file is how the importer calls it: it must not raise either
    detect_format(data[: len(data) // 2])


@fuzz(st.binary(max_size=2000), share=0.1)
def test_random_bytes(data: bytes) -> None:
    _sniff(data)
    _import(data)


@fuzz(st.deferred(lambda: mutated(_seeds())), share=0.3)
def test_mutated_flow_files(data: bytes) -> None:
    _sniff(data)
    _import(data)


# Hostile values of the types tnetstring carries.
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from(HOSTILE_NUMBERS),
    st.integers(),
    st.floats(),
    st.sampled_from(HOSTILE_STRINGS),
    st.text(max_size=30),
    st.binary(max_size=30),
    st.sampled_from([b"", b"\xff\xfe", b"GET", b"HTTP/9", b"\x00" * 8, b"x" * 5000]),
)
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.one_of(st.text(max_size=8), st.binary(max_size=8)), inner, max_size=4)
    ),
    max_leaves=10,
)


def _same_type(value: Any) -> st.SearchStrategy[Any]:
    if isinstance(value, bool) or value is None:
        return _scalars
    if isinstance(value, int | float):
        return st.one_of(st.sampled_from(HOSTILE_NUMBERS), st.integers(), st.floats())
    if isinstance(value, bytes):
        return st.one_of(st.binary(max_size=40), _scalars)
    if isinstance(value, str):
        return st.one_of(st.text(max_size=40), st.sampled_from(HOSTILE_STRINGS))
    if isinstance(value, list):
        return st.lists(_values, max_size=4)
    return st.dictionaries(st.text(max_size=8), _values, max_size=4)


def _paths(doc: Any, here: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [here]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*here, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*here, i))
    return out


@st.composite
def _hostile_state(draw: st.DrawFn) -> Any:
    state = _copy(draw(st.sampled_from(_states())))
    for _ in range(draw(st.integers(1, 3))):  # more, and mitmproxy refuses nearly all
        path = draw(st.sampled_from(_paths(state)[1:]))
        parent = state
        for key in path[:-1]:
            parent = parent[key]
        key = path[-1]
        op = draw(st.sampled_from([0, 0, 1, 2, 3]))
        if op == 0:
            parent[key] = draw(_same_type(parent[key]))
        elif op == 1:
            parent[key] = draw(_values)
        elif op == 2:
            del parent[key]
        elif isinstance(parent[key], dict):
            parent[key][draw(st.text(max_size=8))] = draw(_values)
    return state


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_copy(v) for v in value]
    return value


def _dump(state: Any) -> bytes:
    try:
        return tnetstring.dumps(state)
    except (ValueError, TypeError):  # what tnetstring cannot write, no file holds
        return b""


def _tcp_with_content(content: Any) -> Any:
    state = _copy(next(s for s in _states() if s["type"] == "tcp"))
    state["messages"][0][1] = content
    return state


def _http_path(path: bytes) -> Any:
    state = _copy(next(s for s in _states() if s["type"] == "http"))
    state["request"]["path"] = path
    return state


def _http_started_at(ts: float) -> Any:
    state = _copy(next(s for s in _states() if s["type"] == "http"))
    state["request"]["timestamp_start"] = ts
    return state


# mitmproxy took a TCP message's content of any type; joining the payloads raised TypeError;
# a timestamp past the platform's range raised OSError (EOVERFLOW) in datetime.fromtimestamp
@example([_http_started_at(1e18)])
@example([_http_path(b"/\x80path")])  # surrogateescape'd path: the record was not UTF-8
@example([_tcp_with_content(None)])
@example([_tcp_with_content({})])
@fuzz(st.lists(_hostile_state(), min_size=1, max_size=3), share=0.45)
def test_flow_states_with_hostile_values(states: list[Any]) -> None:
    data = b"".join(_dump(s) for s in states)
    _import(data)


@cache
def _sniffer_seeds() -> list[bytes]:
    """Heads of files of every format the importer takes, and of a UTF-16 JSON file."""
    files = [p.read_bytes()[:4096] for p in sample_paths("imports/samples/*.har")]
    files += [p.read_bytes()[:4096] for p in shared_captures()[:2]]
    files += _seeds()
    files.append(json.dumps({"log": {"entries": []}}).encode("utf-16"))
    return files


@fuzz(
    st.one_of(
        st.deferred(lambda: mutated(_sniffer_seeds())),
        st.binary(max_size=300).map(lambda b: b"\xef\xbb\xbf" + b),
        st.binary(max_size=300).map(lambda b: b"\xff\xfe" + b),
        st.builds(lambda n, b: f"{n}:".encode() + b, st.integers(0, 10**13), st.binary()),
    ),
    share=0.15,
)
def test_format_sniffer(head: bytes) -> None:
    _sniff(head)
