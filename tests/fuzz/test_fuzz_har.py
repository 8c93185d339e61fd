"""HAR (``load_har``, ``har_records``): random bytes, mutated real exports, and valid-ish HAR
JSON whose fields are hostile. Only ImportFileError may escape; an entry that cannot become a
record is skipped with a reason (never an "internal error"), and every record written can be
read back."""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from hypothesis import example
from hypothesis import strategies as st

from auditor.imports import ImportFileError, ImportFormat, ImportReport
from auditor.imports.har import har_records, load_har
from auditor.records import Record
from tests.fuzz.helpers import (
    HOSTILE_STRINGS,
    NullStore,
    assert_report_writable,
    assert_writable,
    fuzz,
    hostile_scalars,
    json_bytes,
    json_values,
    mutated,
    mutated_json,
    sample_paths,
)

#: Names worth adding to an entry: the HAR 1.2 fields and the tools' extensions.
HAR_KEYS = (
    "log",
    "entries",
    "version",
    "creator",
    "_tlsErrors",
    "startedDateTime",
    "request",
    "response",
    "method",
    "url",
    "httpVersion",
    "headers",
    "name",
    "value",
    "postData",
    "mimeType",
    "text",
    "encoding",
    "params",
    "fileName",
    "contentType",
    "_content",
    "_requestBodyStatus",
    "bodySize",
    "status",
    "statusText",
    "content",
    "size",
    "_error",
    "timings",
    "time",
    "blocked",
    "dns",
    "connect",
    "send",
    "wait",
    "receive",
    "serverIPAddress",
    "connection",
    "_webSocketMessages",
    "type",
    "opcode",
    "data",
    "clientIPAddress",
    "clientPort",
    "hostname",
    "cause",
)


@cache
def _sample_bytes() -> list[bytes]:
    return [p.read_bytes() for p in sample_paths("imports/samples/*.har")]


@cache
def _sample_docs() -> list[Any]:
    docs = []
    for data in _sample_bytes():
        try:
            docs.append(json.loads(data))
        except ValueError:
            continue
    return docs


def _import(data: bytes) -> list[Record] | None:
    """The records of ``data``, or None when it is refused as a whole (ImportFileError)."""
    report = ImportReport(ImportFormat.HAR)
    try:
        har = load_har(data, "fuzz.har")
    except ImportFileError as exc:
        assert str(exc).startswith("fuzz.har: ")
        return None
    records = list(har_records(har, NullStore(), report, "har-f"))
    internal = [s for s in report.skipped if "internal error" in s.reason]
    assert not internal, internal
    assert report.skipped_total >= len(report.skipped)
    assert_writable(records)
    assert_report_writable(report)
    return records


@fuzz(st.binary(max_size=2000), share=0.1)
def test_random_bytes(data: bytes) -> None:
    _import(data)


@fuzz(st.deferred(lambda: mutated(_sample_bytes())), share=0.2)
def test_mutated_real_exports(data: bytes) -> None:
    _import(data)


_HUGE_TIME = {
    "log": {
        "entries": [
            {
                "startedDateTime": "2026-11-28T10:15:00Z",
                "time": 10**400,
                "request": {"method": "GET", "url": "http://a/"},
            }
        ]
    }
}


@example(_HUGE_TIME)  # an int of 401 digits overflowed math.isfinite(): "internal error"
@fuzz(st.deferred(lambda: mutated_json(_sample_docs(), keys=HAR_KEYS)), share=0.35)
def test_hostile_fields_in_real_exports(doc: Any) -> None:
    _import(json_bytes(doc))


# A HAR built from scratch: every field is either plausible or hostile.


def _either(plausible: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(plausible, plausible, hostile_scalars, json_values)


_urls = st.one_of(
    st.sampled_from(["http://a.example/", "https://b.example:8443/p?q=1", "wss://c/x"]),
    st.builds(
        "{}://{}{}/{}".format,
        st.sampled_from(["http", "https", "ws", "wss", "HTTP", "ftp", ""]),
        st.text(max_size=20),
        st.sampled_from(["", ":0", ":65535", ":65536", ":x", ":-1"]),
        st.text(max_size=20),
    ),
    st.sampled_from(HOSTILE_STRINGS),
)
_headers = st.lists(
    st.one_of(
        st.fixed_dictionaries({"name": _either(st.text(max_size=20)), "value": _either(st.text())}),
        st.lists(st.text(max_size=10), min_size=2, max_size=2),
        st.fixed_dictionaries(
            {
                "name": st.sampled_from(["content-encoding", "content-type", ":path"]),
                "value": st.sampled_from(
                    [
                        "gzip",
                        "br",
                        "zstd, gzip",
                        "deflate",
                        "identity",
                        "text/html; charset=utf-16",
                        "x",
                    ]
                ),
            }
        ),
    ),
    max_size=5,
)
_content = st.fixed_dictionaries(
    {},
    optional={
        "text": _either(st.text()),
        "encoding": _either(st.sampled_from(["base64", "", "utf-8"])),
        "mimeType": _either(st.sampled_from(["application/json", "text/plain; charset=latin-1"])),
        "size": _either(st.integers()),
    },
)
_timings = st.dictionaries(
    st.sampled_from(["blocked", "dns", "connect", "ssl", "send", "wait", "receive"]),
    _either(st.one_of(st.integers(-1, 10**6), st.floats())),
)
_ws = st.fixed_dictionaries(
    {
        "type": _either(st.sampled_from(["send", "receive"])),
        "time": _either(st.floats(0, 2e9)),
        "opcode": _either(st.sampled_from([1, 2])),
        "data": _either(st.text()),
    }
)
_entry = st.fixed_dictionaries(
    {
        "startedDateTime": _either(
            st.sampled_from(["2026-11-28T10:15:00.123+01:00", "2026-11-28T10:15:00Z"])
        ),
        "request": _either(
            st.fixed_dictionaries(
                {"method": _either(st.sampled_from(["GET", "POST", "CONNECT"])), "url": _urls},
                optional={
                    "httpVersion": _either(st.sampled_from(["HTTP/1.1", "h2", "h3"])),
                    "headers": _either(_headers),
                    "postData": _either(
                        st.fixed_dictionaries(
                            {},
                            optional={
                                "text": _either(st.text()),
                                "encoding": _either(st.just("base64")),
                                "mimeType": _either(
                                    st.sampled_from(
                                        [
                                            "multipart/form-data; boundary=b",
                                            "application/x-www-form-urlencoded",
                                        ]
                                    )
                                ),
                                "params": _either(
                                    st.lists(
                                        _either(
                                            st.fixed_dictionaries(
                                                {
                                                    "name": _either(st.text()),
                                                    "value": _either(st.text()),
                                                },
                                                optional={
                                                    "fileName": _either(st.text()),
                                                    "contentType": _either(st.text()),
                                                },
                                            )
                                        )
                                    )
                                ),
                            },
                        )
                    ),
                    "_content": _either(_content),
                    "bodySize": _either(st.integers()),
                    "_requestBodyStatus": _either(st.just("discarded:too-large")),
                },
            )
        ),
    },
    optional={
        "response": _either(
            st.fixed_dictionaries(
                {"status": _either(st.sampled_from([0, 200, 404, 99, 1000]))},
                optional={
                    "headers": _either(_headers),
                    "content": _either(_content),
                    "statusText": _either(st.text()),
                    "_error": _either(st.text()),
                    "bodySize": _either(st.integers()),
                },
            )
        ),
        "timings": _either(_timings),
        "time": _either(st.floats()),
        "serverIPAddress": _either(st.sampled_from(["[2001:db8::1]", "::ffff:10.0.0.1", "1.2.3"])),
        "connection": _either(st.text()),
        "_webSocketMessages": _either(st.lists(_either(_ws), max_size=3)),
    },
)
_tls_error = st.fixed_dictionaries(
    {"startedDateTime": _either(st.just("2026-11-28T10:15:00Z"))},
    optional={
        "clientIPAddress": _either(st.text()),
        "clientPort": _either(st.integers()),
        "hostname": _either(st.text()),
        "cause": _either(st.text()),
    },
)
_har = st.fixed_dictionaries(
    {
        "log": st.fixed_dictionaries(
            {"entries": st.lists(_entry, max_size=4)},
            optional={
                "version": _either(st.sampled_from(["1.2", "2.0"])),
                "creator": _either(st.fixed_dictionaries({"name": _either(st.text())})),
                "_tlsErrors": _either(st.lists(_tls_error, max_size=2)),
            },
        )
    }
)


# JSON false is a Python int: the TLS record got client_port False, which is not a port
@example(
    {
        "log": {
            "entries": [],
            "_tlsErrors": [{"startedDateTime": "2026-11-28T10:15:00Z", "clientPort": False}],
        }
    },
    False,
)
@fuzz(_har, st.booleans(), share=0.35)
def test_generated_hars_with_hostile_fields(doc: Any, ascii_only: bool) -> None:
    _import(json_bytes(doc, ascii_only=ascii_only))
