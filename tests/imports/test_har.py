"""HAR files of HTTP Toolkit, Chrome and Charles (checked-in samples), broken ones, and fuzz."""

from __future__ import annotations

import base64
import copy
import gzip
import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditor.imports import ImportFileError, ImportFormat, ImportReport
from auditor.imports.har import DECODED_NOTE, MAX_TEXT, REBUILT_NOTE, har_records, load_har
from auditor.records import (
    EventRecord,
    HttpRecord,
    Record,
    TlsFailedRecord,
    WebSocketMessageRecord,
    dumps,
)
from auditor.session.bodies import BodyStore

SAMPLES = Path(__file__).parent / "samples"


def _import(
    data: bytes, store: BodyStore, name: str = "t.har"
) -> tuple[list[Record], ImportReport]:
    report = ImportReport(ImportFormat.HAR)
    records = list(har_records(load_har(data, name), store, report, "har-x"))
    return records, report


def _sample(name: str, store: BodyStore) -> tuple[dict[str, Record], ImportReport, dict[str, Any]]:
    data = (SAMPLES / name).read_bytes()
    records, report = _import(data, store, name)
    by_id: dict[str, Record] = {r.id: r for r in records if not isinstance(r, EventRecord)}
    doc: dict[str, Any] = json.loads(data)
    return by_id, report, doc


@pytest.fixture
def store(tmp_path: Path) -> BodyStore:
    return BodyStore(tmp_path / "bodies")


def _http(recs: dict[str, Record], i: int) -> HttpRecord:
    rec = recs[f"har-x-{i}"]
    assert isinstance(rec, HttpRecord)
    return rec


# ------------------------------------------------------------------------------ HTTP Toolkit


def test_httptoolkit_fields_times_and_headers_in_order(store: BodyStore) -> None:
    recs, report, _ = _sample("httptoolkit.har", store)
    r = _http(recs, 0)
    assert (r.method, r.scheme, r.host, r.port) == ("POST", "https", "data.mistat.xiaomi.com", 443)
    assert r.path == "/mistats/v3?app_id=2882303761517&r=CN"
    assert r.url == "https://data.mistat.xiaomi.com/mistats/v3?app_id=2882303761517&r=CN"
    assert r.http_version == "HTTP/1.1"
    assert [k for k, _ in r.request_headers] == [
        "host",
        "content-type",
        "content-encoding",
        "user-agent",
        "accept-encoding",
    ]
    # startedDateTime +01:00; blocked/dns/connect are -1; send 1.5, wait 170, receive 10 ms
    assert r.request_start == "2026-11-28T09:15:00.123000Z"
    assert r.request_end == "2026-11-28T09:15:00.124500Z"
    assert r.response_start == "2026-11-28T09:15:00.294500Z"
    assert r.response_end == "2026-11-28T09:15:00.304500Z"
    assert (r.status, r.reason) == (200, "OK")
    assert r.request_content_type == "application/json; charset=utf-8"
    assert r.response_content_type == "application/json;charset=UTF-8"
    assert r.error is None and r.server_ip is None
    assert report.counts == {"entries": 5, "http": 5, "websocket_message": 2, "tls_failed": 1}
    assert report.meta["creator"] == {"name": "HTTP Toolkit", "version": "1.19.3"}


def test_bodies_decoded_by_the_exporter_are_kept_as_given_and_flagged(store: BodyStore) -> None:
    recs, report, doc = _sample("httptoolkit.har", store)
    r = _http(recs, 0)
    entry = doc["log"]["entries"][0]
    assert r.request_body and r.response_body
    assert store.get(r.request_body.sha256) == entry["request"]["postData"]["text"].encode()
    assert store.get(r.response_body.sha256) == entry["response"]["content"]["text"].encode()
    # The headers say gzip, the HAR holds plain text: not the wire bytes, and said so.
    for ref, wire in ((r.request_body, 87), (r.response_body, 45)):
        assert ref.encoding is None
        assert ref.decode_error == DECODED_NOTE.format("gzip")
        assert ref.wire_size == wire and ref.decoded_size == ref.size
    assert report.notes["bodies_decoded_by_exporter"] == 2


def test_base64_bodies_and_httptoolkit_binary_request_content(store: BodyStore) -> None:
    recs, _, doc = _sample("httptoolkit.har", store)
    r = _http(recs, 1)
    entry = doc["log"]["entries"][1]
    png = base64.b64decode(entry["response"]["content"]["text"])
    proto = base64.b64decode(entry["request"]["_content"]["text"])
    assert png.startswith(b"\x89PNG") and proto.startswith(b"\x0a\x0f")
    assert r.request_body and store.get(r.request_body.sha256) == proto
    assert r.response_body and store.get(r.response_body.sha256) == png
    assert r.response_body.size == len(png) and r.response_body.decode_error is None
    assert r.http_version == "HTTP/2.0" and r.request_content_type == "application/x-protobuf"


def test_aborted_request_has_no_response(store: BodyStore) -> None:
    recs, _, _ = _sample("httptoolkit.har", store)
    r = _http(recs, 2)
    assert r.status is None and r.response_body is None and r.response_headers == ()
    assert r.error == "no response (HAR status 0)"
    assert r.response_start is None and r.response_end is None


def test_websocket_messages_become_records(store: BodyStore) -> None:
    recs, _, _ = _sample("httptoolkit.har", store)
    r = _http(recs, 3)
    assert r.status == 101 and r.scheme == "https" and r.url.startswith("wss://")
    m1, m2 = recs["har-x-3:1"], recs["har-x-3:2"]
    assert isinstance(m1, WebSocketMessageRecord) and isinstance(m2, WebSocketMessageRecord)
    assert (m1.flow_id, m1.from_client, m1.is_text) == ("har-x-3", True, True)
    assert (m2.from_client, m2.is_text) == (False, False)
    assert m1.ts == "2026-11-28T09:15:03.250000Z"
    assert m1.body and store.get(m1.body.sha256) == b'{"hello":"490154203237518"}'
    assert m2.body and store.get(m2.body.sha256) == b"\x00\x01\x02binary"


def test_form_text_wins_over_params(store: BodyStore) -> None:
    recs, _, _ = _sample("httptoolkit.har", store)
    r = _http(recs, 4)
    assert r.request_body and store.get(r.request_body.sha256) == (
        b"oaid=7f1c2e3d4b5a6978&lang=zh_CN&q=a+b%26c"
    )
    assert r.request_body.decode_error is None
    assert r.status == 204 and r.response_body is None


def test_httptoolkit_tls_errors(store: BodyStore) -> None:
    recs, _, _ = _sample("httptoolkit.har", store)
    t = recs["har-x-tls-0"]
    assert isinstance(t, TlsFailedRecord)
    assert (t.side, t.sni, t.client_ip, t.client_port) == (
        "client",
        "pinned.example-vendor.com",
        "192.168.1.23",
        51234,
    )
    assert t.ts == "2026-11-28T09:15:05.000000Z" and "cert-rejected" in t.error


# ------------------------------------------------------------------------------------ Chrome


def test_chrome_pseudo_headers_ipv6_server_and_timings(store: BodyStore) -> None:
    recs, report, _ = _sample("chrome.har", store)
    r = _http(recs, 0)
    assert not any(k.startswith(":") for k, _ in r.request_headers)
    assert [k for k, _ in r.request_headers][:2] == ["accept", "content-type"]
    assert r.server_ip == "2a00:1450:4001:82a::200e" and r.server_port == 443
    assert r.http_version == "HTTP/2.0"
    # blocked 2.1 + dns 10 + connect 30 (ssl is inside connect), then send/wait/receive
    assert r.request_start == "2026-11-28T09:15:10.143100Z"
    assert r.request_end == "2026-11-28T09:15:10.143600Z"
    assert r.response_start == "2026-11-28T09:15:10.183600Z"
    assert r.response_end == "2026-11-28T09:15:10.184040Z"
    assert r.request_body and store.get(r.request_body.sha256) == (
        b"v=2&tid=G-EXAMPLE123&cid=1234567890.1764321300&en=page_view"
    )
    assert report.details["connections"] == {"412893": ["har-x-0", "har-x-1"]}


def test_chrome_base64_image_and_text_in_its_charset(store: BodyStore) -> None:
    recs, _, doc = _sample("chrome.har", store)
    gif = _http(recs, 1)
    assert gif.response_body
    assert store.get(gif.response_body.sha256) == base64.b64decode(
        doc["log"]["entries"][1]["response"]["content"]["text"]
    )
    assert gif.server_ip == "142.250.185.78"
    page = _http(recs, 2)
    assert page.response_body
    # decoded by Chrome from br and from ISO-8859-1: stored in that charset, flagged
    assert store.get(page.response_body.sha256) == "<p>Bienvenue, été</p>".encode("latin-1")
    assert page.response_body.decode_error == DECODED_NOTE.format("br")
    assert page.response_body.wire_size == 23


def test_chrome_failed_request_keeps_its_error(store: BodyStore) -> None:
    recs, _, _ = _sample("chrome.har", store)
    r = _http(recs, 3)
    assert r.error == "net::ERR_NAME_NOT_RESOLVED" and r.status is None
    assert r.server_ip is None and r.http_version == ""


# ----------------------------------------------------------------------------------- Charles


def test_charles_raw_gzip_body_is_kept_encoded(store: BodyStore) -> None:
    recs, report, doc = _sample("charles.har", store)
    r = _http(recs, 0)
    raw = base64.b64decode(doc["log"]["entries"][0]["response"]["content"]["text"])
    assert r.response_body and store.get(r.response_body.sha256) == raw
    assert r.response_body.encoding == "gzip" and r.response_body.decode_error is None
    assert r.response_body.decoded_size == len(gzip.decompress(raw))
    assert r.server_ip == "161.117.97.219"
    assert r.request_start == "2026-11-28T10:15:00.532000Z"  # +10:00 in the file
    assert "bodies_decoded_by_exporter" not in report.notes


def test_charles_params_are_reencoded(store: BodyStore) -> None:
    recs, report, _ = _sample("charles.har", store)
    form = _http(recs, 0)
    assert form.request_body and store.get(form.request_body.sha256) == (
        b"android_id=9774d56d682e549c&events=%5B%7B%22e%22%3A%22open%22%7D%5D"
    )
    assert form.request_body.decode_error == REBUILT_NOTE
    multipart = _http(recs, 1)
    assert multipart.request_body
    assert store.get(multipart.request_body.sha256) == (
        b"------CharlesBoundary42\r\n"
        b'Content-Disposition: form-data; name="meta"\r\n\r\n{"v":1}\r\n'
        b"------CharlesBoundary42\r\n"
        b'Content-Disposition: form-data; name="log"; filename="app.log"\r\n'
        b"Content-Type: text/plain\r\n\r\nline1\nline2\r\n"
        b"------CharlesBoundary42--\r\n"
    )
    assert report.notes["bodies_rebuilt_from_params"] == 2


def test_charles_entry_without_timings_or_server_ip(store: BodyStore) -> None:
    recs, _, _ = _sample("charles.har", store)
    r = _http(recs, 1)
    assert r.port == 8443 and r.host == "upload.example-vendor.com"
    assert r.request_start == "2026-11-28T10:15:01.000000Z"
    assert r.request_end is None and r.response_start is None
    assert r.response_end == "2026-11-28T10:15:01.012000Z"  # startedDateTime + time
    assert r.server_ip is None and r.server_port is None


# --------------------------------------------------------------------------------- malformed


def test_three_malformed_entries_of_ten(store: BodyStore) -> None:
    records, report = _import((SAMPLES / "malformed_3_of_10.har").read_bytes(), store)
    assert [r.id for r in records if isinstance(r, HttpRecord)] == [
        f"har-x-{i}" for i in (0, 1, 3, 4, 6, 7, 9)
    ]
    assert len(records) == 7
    assert report.skipped_total == 3 and report.counts["http"] == 7
    assert [(s.where, s.reason) for s in report.skipped] == [
        ("entry 2", "request.url is missing"),
        ("entry 5", "response.content.text is not valid base64"),
        ("entry 8", "startedDateTime 'yesterday' is not an ISO 8601 date"),
    ]


@pytest.mark.parametrize(
    "sample,message",
    [
        ("not_json.har", r"not_json\.har: not a HAR file: not JSON"),
        ("wrong_structure.har", r'wrong_structure\.har: not a HAR file: no "log" object'),
    ],
)
def test_not_a_har_is_a_clear_error(sample: str, message: str) -> None:
    with pytest.raises(ImportFileError, match=message):
        load_har((SAMPLES / sample).read_bytes(), sample)


@pytest.mark.parametrize(
    "data,message",
    [
        (b"", "not JSON"),
        (b"[1, 2]", "the top level is a list"),
        (b'{"log": {"entries": {}}}', "log.entries is an object, not a list"),
        (b'{"log": {"version": "1.2"}}', "log.entries is missing"),
        (b"[" * 100_000, "not a HAR file"),
        (b'{"log": {"entries": [' + b"9" * 5000 + b"]}}", "not JSON"),
        (b"\xff\xfe\x00\xd8", "not JSON"),
    ],
)
def test_broken_top_levels(data: bytes, message: str) -> None:
    with pytest.raises(ImportFileError, match=message) as exc:
        load_har(data, "x.har")
    assert str(exc.value).startswith("x.har: ") and len(str(exc.value)) < 300


def test_utf8_bom_and_utf16_hars_are_read(store: BodyStore) -> None:
    text = (SAMPLES / "charles.har").read_text()
    for data in (b"\xef\xbb\xbf" + text.encode(), text.encode("utf-16")):
        records, _ = _import(data, store)
        assert len(records) == 2


def _entry() -> dict[str, Any]:
    doc = json.loads((SAMPLES / "malformed_3_of_10.har").read_bytes())
    return copy.deepcopy(doc["log"]["entries"][0])


def _set(entry: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    *parents, last = path.split(".")
    node: Any = entry
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node[p]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return entry


@pytest.mark.parametrize(
    "path,value,reason",
    [
        ("request", "GET /", "request is a string, not an object"),
        ("request.method", 7, "request.method is a number, not a string"),
        ("request.method", "GET /x", "is not an HTTP method"),
        ("request.url", "ftp://example.com/", "is not an http(s) or ws(s) URL"),
        ("request.url", "https:///nohost", "has no host"),
        ("request.url", "https://example.com:99999/", "Port out of range"),
        ("request.headers", {"Host": "x"}, "request.headers is an object, not a list"),
        ("request.headers.0", {"name": "Host", "value": 1}, "request.headers[0].value"),
        ("response.status", "200", "response.status is a string, not a number"),
        ("response.status", 42, "response.status 42 is not an HTTP status"),
        ("response.content.text", 12, "response.content.text is a number"),
        ("timings.wait", "slow", "timings.wait is a string, not a number"),
        ("timings.wait", 1e300, "not a finite number of a sane size"),
        ("startedDateTime", "9999-12-31T23:59:59Z", None),
        ("startedDateTime", "1969-12-31T23:59:59Z", "out of range"),
        ("time", True, "time is a boolean, not a number"),
    ],
)
def test_bad_fields_skip_the_entry_and_name_the_field(
    store: BodyStore, path: str, value: Any, reason: str | None
) -> None:
    entry = _set(_entry(), path, value)
    har = json.dumps({"log": {"entries": [_entry(), entry]}}).encode()
    records, report = _import(har, store)
    if reason is None:  # accepted, or skipped for running past year 9999: never a crash
        assert len(records) + report.skipped_total == 2
        return
    assert len(records) == 1 and report.skipped_total == 1
    assert report.skipped[0].where == "entry 1"
    assert reason in report.skipped[0].reason


def test_huge_strings_are_refused_with_a_short_message(store: BodyStore) -> None:
    huge = "https://example.com/?" + "a" * MAX_TEXT
    entry = _set(_entry(), "request.url", huge)
    records, report = _import(json.dumps({"log": {"entries": [entry]}}).encode(), store)
    assert records == [] and report.skipped_total == 1
    assert "characters long" in report.skipped[0].reason
    assert len(report.skipped[0].reason) < 200


def test_lone_surrogates_still_make_writable_records(store: BodyStore) -> None:
    entry = _entry()
    entry["request"]["headers"].append({"name": "X-Odd", "value": "\ud800!"})
    entry["response"]["content"]["text"] = "\udcff body"
    records, _ = _import(json.dumps({"log": {"entries": [entry]}}).encode(), store)
    (rec,) = records
    assert isinstance(rec, HttpRecord)
    dumps(rec).encode("utf-8")  # the session writer does exactly this
    assert rec.request_headers[-1] == ("X-Odd", "\ufffd!")


def test_many_skips_are_all_counted_but_listed_up_to_a_limit(store: BodyStore) -> None:
    har = json.dumps({"log": {"entries": [1] * 250}}).encode()
    records, report = _import(har, store)
    assert records == [] and report.skipped_total == 250 and len(report.skipped) == 100


# -------------------------------------------------------------------------------------- fuzz

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
_FUZZ_STORE = BodyStore(Path(tempfile.mkdtemp(prefix="har-fuzz-")) / "bodies")


def _no_crash(data: bytes) -> None:
    try:
        har = load_har(data, "fuzz.har")
    except ImportFileError:
        return
    report = ImportReport(ImportFormat.HAR)
    for rec in har_records(har, _FUZZ_STORE, report, "har-f"):
        dumps(rec).encode("utf-8")
    assert not [s for s in report.skipped if s.reason.startswith("internal error")]


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_random_bytes(data: bytes) -> None:
    _no_crash(data)


@settings(max_examples=150, deadline=None)
@given(_json)
def test_fuzz_random_json(value: Any) -> None:
    _no_crash(json.dumps(value).encode())
    _no_crash(json.dumps({"log": {"entries": [value]}}).encode())


_PATHS = [
    "startedDateTime",
    "time",
    "request",
    "request.method",
    "request.url",
    "request.httpVersion",
    "request.headers",
    "request.headers.0",
    "request.headers.0.name",
    "request.bodySize",
    "response",
    "response.status",
    "response.statusText",
    "response.headers",
    "response.content",
    "response.content.text",
    "response.content.encoding",
    "response.bodySize",
    "timings",
    "timings.send",
    "timings.blocked",
    "serverIPAddress",
    "connection",
    "_webSocketMessages",
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(st.sampled_from(_PATHS), _json), min_size=1, max_size=3),
    st.booleans(),
)
def test_fuzz_sound_entry_with_random_values(changes: list[tuple[str, Any]], post: bool) -> None:
    entry = _entry()
    if post:
        entry["request"]["postData"] = {"mimeType": "multipart/form-data; boundary=b", "params": []}
        changes = [(p.replace("request.headers", "request.postData.params"), v) for p, v in changes]
    for path, value in changes:
        try:
            _set(entry, path, value)
        except (KeyError, IndexError, TypeError, ValueError):
            continue
    _no_crash(json.dumps({"log": {"entries": [entry]}}).encode())


# ----------------------------------------------------------------------------------- Firefox


def test_firefox_ports_are_not_taken_for_connection_ids(store: BodyStore) -> None:
    recs, report, _ = _sample("firefox.har", store)
    r = _http(recs, 0)
    assert r.http_version == "HTTP/2.0" and r.server_ip == "34.120.208.123"
    assert r.request_start == "2026-11-28T09:20:00.271000Z"  # dns 1 + connect 20 (ssl inside)
    assert r.response_body and store.get(r.response_body.sha256) == b"ok"
    assert "connections" not in report.details
    assert report.meta["har_version"] == "1.1" and not report.warnings
    png = _http(recs, 1)
    assert png.response_body is None and report.notes == {"response_bodies_not_in_har": 1}
