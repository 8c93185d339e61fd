"""The payload walker: every encoding in every container, built with the standard library (and
the reference codecs and protobuf library), never with the scanner's own encoders."""

from __future__ import annotations

import base64
import binascii
import gzip
import hashlib
import json
import os
import random
import time
import tracemalloc
import urllib.parse
import zlib
from collections.abc import Callable
from email import policy
from email.mime.application import MIMEApplication
from email.mime.multipart import MIMEMultipart
from email.mime.nonmultipart import MIMENonMultipart
from pathlib import Path

import brotli
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditor.analysis.identifiers import Encoding
from auditor.analysis.patterns import PayloadClass, characterise
from auditor.analysis.payload import (
    Body,
    IdentifierMatch,
    Location,
    Part,
    ScanLimits,
    Scanner,
    ScanResult,
    WarningKind,
    decoded_view,
    parse_protobuf,
    scan_flow,
    scan_payload,
)
from auditor.decoders import zstd
from auditor.records import HttpRecord
from auditor.session import Session, SessionWriter

E = Encoding
NAME = "serial"
VALUE = "Rf3:K~p?z>Q"  # needs URL-encoding, mixed case, base64 with '+', length % 3 != 0
DECOYS = {"imei": "490154203237518", "android_id": "9774d56d682e549c"}

ENCODERS: dict[Encoding, Callable[[bytes], bytes]] = {
    E.PLAIN: lambda b: b,
    E.URL: lambda b: urllib.parse.quote(b, safe="").encode("ascii"),
    E.BASE64: base64.b64encode,
    E.BASE64URL: base64.urlsafe_b64encode,
    E.BASE64_UNPADDED: lambda b: base64.b64encode(b).rstrip(b"="),
    E.HEX: binascii.hexlify,
    E.HEX_UPPER: lambda b: binascii.hexlify(b).upper(),
    E.MD5_HEX: lambda b: hashlib.md5(b).hexdigest().encode(),
    E.MD5_HEX_UPPER: lambda b: hashlib.md5(b).hexdigest().upper().encode(),
    E.MD5_BASE64: lambda b: base64.b64encode(hashlib.md5(b).digest()),
    E.SHA1_HEX: lambda b: hashlib.sha1(b).hexdigest().encode(),
    E.SHA1_HEX_UPPER: lambda b: hashlib.sha1(b).hexdigest().upper().encode(),
    E.SHA1_BASE64: lambda b: base64.b64encode(hashlib.sha1(b).digest()),
    E.SHA256_HEX: lambda b: hashlib.sha256(b).hexdigest().encode(),
    E.SHA256_HEX_UPPER: lambda b: hashlib.sha256(b).hexdigest().upper().encode(),
    E.SHA256_BASE64: lambda b: base64.b64encode(hashlib.sha256(b).digest()),
}
ORDER = list(ENCODERS)  # the documented preference when two forms are the same bytes


def canonical(value: bytes, seen: bytes) -> Encoding:
    """The name the scanner must give to ``seen``: the first form of ``value`` equal to it."""
    for enc in ORDER:
        if ENCODERS[enc](value) == seen:
            return enc
    raise AssertionError(f"{seen!r} is no form of {value!r}")


@pytest.fixture(scope="module")
def scanner() -> Scanner:
    return Scanner({NAME: VALUE, **DECOYS})


# ------------------------------------------------------------------------------ protobuf


def _protobuf_classes() -> tuple[type, type]:
    fdp = descriptor_pb2.FileDescriptorProto(name="t.proto", package="t", syntax="proto3")
    f = descriptor_pb2.FieldDescriptorProto
    inner = fdp.message_type.add(name="Inner")
    inner.field.add(name="note", number=1, type=f.TYPE_STRING, label=f.LABEL_OPTIONAL)
    inner.field.add(name="id", number=2, type=f.TYPE_BYTES, label=f.LABEL_OPTIONAL)
    inner.field.add(name="num", number=4, type=f.TYPE_UINT64, label=f.LABEL_OPTIONAL)
    outer = fdp.message_type.add(name="Outer")
    outer.field.add(name="seq", number=1, type=f.TYPE_INT32, label=f.LABEL_OPTIONAL)
    outer.field.add(
        name="inner", number=3, type=f.TYPE_MESSAGE, type_name=".t.Inner", label=f.LABEL_OPTIONAL
    )
    outer.field.add(name="blob", number=5, type=f.TYPE_BYTES, label=f.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return (
        message_factory.GetMessageClass(pool.FindMessageTypeByName("t.Outer")),
        message_factory.GetMessageClass(pool.FindMessageTypeByName("t.Inner")),
    )


Outer, Inner = _protobuf_classes()


def protobuf_with(encoded: bytes) -> bytes:
    msg = Outer(seq=7, inner=Inner(note="hello", id=encoded, num=12345), blob=b"\x00\x01")
    return bytes(msg.SerializeToString())


def multipart_with(encoded: bytes, *, base64_part: bool = False) -> tuple[bytes, str]:
    form = MIMEMultipart("form-data")
    other = MIMENonMultipart("text", "plain")
    other.set_payload("nothing to see")
    other.add_header("Content-Disposition", "form-data", name="comment")
    form.attach(other)
    part: MIMENonMultipart
    if base64_part:
        part = MIMEApplication(encoded)  # base64 transfer encoding
    else:
        part = MIMENonMultipart("text", "plain")
        part.set_payload(encoded.decode("ascii"))
    part.add_header("Content-Disposition", "form-data", name="did")
    form.attach(part)
    raw = form.as_bytes(policy=policy.HTTP)
    _, _, body = raw.partition(b"\r\n\r\n")
    return body, form["Content-Type"]


# ------------------------------------------------------------------------------ containers
# Each builds a flow that carries ``encoded`` and scans it; it returns the result and where the
# match must be: location, detail, the layers before the needle, and the bytes the needle sees.

Case = tuple[ScanResult, Location, str, tuple[Encoding, ...], bytes]


def _url_layer(raw: bytes, decoded: bytes) -> tuple[Encoding, ...]:
    return (E.URL,) if raw != decoded else ()


def c_query(s: Scanner, enc: bytes) -> Case:
    query = urllib.parse.urlencode({"v": "1", "did": enc})
    res = s.scan_flow(f"https://api.example.com/collect?{query}")
    quoted = urllib.parse.quote_plus(enc).encode()
    return res, Location.URL, "query:did", _url_layer(quoted, enc), enc


def c_header(s: Scanner, enc: bytes) -> Case:
    res = s.scan_flow(None, [("User-Agent", "Dalvik/2.1.0"), ("X-Device-Id", enc.decode())])
    return res, Location.HEADER, "x-device-id", (), enc


def c_cookie(s: Scanner, enc: bytes) -> Case:
    res = s.scan_flow(None, [("Cookie", f"lang=en; did={enc.decode()}; t=1")])
    seen = urllib.parse.unquote_to_bytes(enc)
    return res, Location.COOKIE, "did", _url_layer(enc, seen), seen


def c_json(s: Scanner, enc: bytes) -> Case:
    doc = {"v": 2, "deviceInfo": {"list": [0, {"props": {"id": enc.decode()}}]}}
    res = s.scan_flow(None, [], [Body(json.dumps(doc).encode(), None, "application/json")])
    return res, Location.BODY, "$.deviceInfo.list[1].props.id", (E.JSON,), enc


def c_form(s: Scanner, enc: bytes) -> Case:
    body = urllib.parse.urlencode({"v": "1", "did": enc}).encode()
    res = s.scan_payload(body, content_type="application/x-www-form-urlencoded")
    quoted = urllib.parse.quote_plus(enc).encode()
    return res, Location.BODY, "did", (E.FORM, *_url_layer(quoted, enc)), enc


def c_multipart(s: Scanner, enc: bytes) -> Case:
    body, ctype = multipart_with(enc)
    res = s.scan_payload(body, content_type=ctype)
    return res, Location.BODY, "did", (E.MULTIPART,), enc


def c_protobuf(s: Scanner, enc: bytes) -> Case:
    res = s.scan_payload(protobuf_with(enc), content_type="application/x-protobuf")
    return res, Location.BODY, "pb:3.2", (E.PROTOBUF,), enc


def _compressed(name: str, fn: Callable[[bytes], bytes], layer: Encoding) -> Callable[..., Case]:
    def case(s: Scanner, enc: bytes) -> Case:
        body = json.dumps({"events": [{"device": {"id": enc.decode()}}]}).encode()
        res = s.scan_payload(fn(body), content_encoding=name, content_type="application/json")
        return res, Location.BODY, "$.events[0].device.id", (layer, E.JSON), enc

    return case


def c_base64_in_json(s: Scanner, enc: bytes) -> Case:
    inner = json.dumps({"id": enc.decode()}).encode()
    doc = {"ts": 1700000000, "payload": base64.b64encode(inner).decode()}
    res = s.scan_payload(json.dumps(doc).encode(), content_type="application/json")
    return res, Location.BODY, "$.payload|$.id", (E.JSON, E.BASE64, E.JSON), enc


CONTAINERS: dict[str, Callable[[Scanner, bytes], Case]] = {
    "url-query": c_query,
    "header": c_header,
    "cookie": c_cookie,
    "json-deep": c_json,
    "form": c_form,
    "multipart": c_multipart,
    "protobuf-nested": c_protobuf,
    "gzip": _compressed("gzip", gzip.compress, E.GZIP),
    "deflate": _compressed("deflate", zlib.compress, E.DEFLATE),
    "br": _compressed("br", brotli.compress, E.BR),
    "zstd": _compressed("zstd", zstd.compress, E.ZSTD),
    "base64-in-json": c_base64_in_json,
}


def test_the_matrix_value_has_fifteen_distinct_forms() -> None:
    forms = [fn(VALUE.encode()) for fn in ENCODERS.values()]
    assert len(set(forms)) == len(forms)


@pytest.mark.parametrize("container", list(CONTAINERS))
@pytest.mark.parametrize("encoding", ORDER, ids=[e.value for e in ORDER])
def test_every_encoding_in_every_container(
    scanner: Scanner, container: str, encoding: Encoding
) -> None:
    value = VALUE.encode()
    encoded = ENCODERS[encoding](value)
    res, location, detail, layers, seen = CONTAINERS[container](scanner, encoded)
    want = (*layers, canonical(value, seen))
    got = {(m.location, m.detail, m.chain) for m in res.matches if m.identifier == NAME}
    assert (location, detail, want) in got, got
    assert res.identifiers == {NAME}
    assert not res.warnings


def test_a_base64_multipart_part(scanner: Scanner) -> None:
    body, ctype = multipart_with(VALUE.encode(), base64_part=True)
    res = scanner.scan_payload(body, content_type=ctype)
    assert (Location.BODY, "did", (E.MULTIPART, E.BASE64, E.PLAIN)) in {
        (m.location, m.detail, m.chain) for m in res.matches
    }


def test_protobuf_is_found_without_a_content_type(scanner: Scanner) -> None:
    res = scanner.scan_payload(protobuf_with(VALUE.encode()))
    assert [(m.detail, m.chain) for m in res.matches] == [("pb:3.2", (E.PROTOBUF, E.PLAIN))]


def test_a_numeric_identifier_as_a_protobuf_varint() -> None:
    imei = "490154203237518"
    res = Scanner({"imei": imei}).scan_payload(
        bytes(Outer(seq=1, inner=Inner(num=int(imei))).SerializeToString())
    )
    assert [(m.identifier, m.detail, m.chain) for m in res.matches] == [
        ("imei", "pb:3.4", (E.PROTOBUF, E.VARINT))
    ]


def test_a_whole_flow_and_its_json_form(scanner: Scanner) -> None:
    body = gzip.compress(json.dumps({"a": {"sn": VALUE}}).encode())
    res = scan_flow(
        scanner,
        f"https://t.example/{urllib.parse.quote(VALUE, safe='')}/x?h="
        + hashlib.sha256(VALUE.encode()).hexdigest(),
        [("Cookie", f"id={base64.b64encode(VALUE.encode()).decode()}")],
        [Body(body, "gzip", "application/json", Part.RESPONSE)],
    )
    got = {(m.part, m.location, m.detail, m.encoding) for m in res.matches}
    assert got == {
        (Part.REQUEST, Location.URL, "path", "url > plain"),
        (Part.REQUEST, Location.URL, "query:h", "sha256-hex"),
        (Part.REQUEST, Location.COOKIE, "id", "base64"),
        (Part.RESPONSE, Location.BODY, "$.a.sn", "gzip > json > plain"),
    }
    doc = json.loads(json.dumps(res.to_dict()))
    assert {m["encoding"] for m in doc["matches"]} == {e for *_, e in got}
    assert res.matches == tuple(sorted(res.matches, key=IdentifierMatch.sort_key))


def test_identical_matches_are_reported_once(scanner: Scanner) -> None:
    one = scanner.scan_flow(None, [("X-A", VALUE)])
    twice = scanner.scan_flow(None, [("X-A", VALUE), ("X-A", VALUE)])
    assert twice.matches == one.matches and len(one.matches) == 1


def test_escaped_json_outside_a_parse_and_percent_encoded_text(scanner: Scanner) -> None:
    escaped = json.dumps(VALUE, ensure_ascii=True).replace(":", "\\u003a").encode()
    text = b"log line: sn=" + escaped.strip(b'"') + b" (not json)"
    res = scanner.scan_payload(text, content_type="text/plain")
    assert [m.chain for m in res.matches] == [(E.UNESCAPE, E.PLAIN)]
    lower = urllib.parse.quote(VALUE, safe="").lower().encode()  # %3a: not the needle's %3A
    res = scanner.scan_payload(b"log line: sn=" + lower + b" end", content_type="text/plain")
    assert [m.chain for m in res.matches] == [(E.URL, E.PLAIN)]


def test_gson_style_escapes_are_read_through(scanner: Scanner) -> None:
    # Gson escapes '=' as \u003d by default, which hides a padded base64 from the raw pass
    b64 = base64.b64encode(VALUE.encode()).decode()
    body = json.dumps({"a": 1, "id": b64}).replace("=", "\\u003d").encode()
    assert b"=" not in body
    res = scanner.scan_payload(body, content_type="application/json")
    assert [(m.detail, m.chain) for m in res.matches] == [("$.id", (E.JSON, E.BASE64))]


def test_json_inside_a_json_string_and_ndjson(scanner: Scanner) -> None:
    doc = {"config": json.dumps({"device": [VALUE]})}
    res = scanner.scan_payload(json.dumps(doc).encode())
    assert [m.detail for m in res.matches] == ["$.config|$.device[0]"]
    lines = b"\n".join(
        json.dumps({"n": i, "sn": VALUE if i == 2 else "x"}).encode() for i in range(4)
    )
    res = scanner.scan_payload(lines)
    assert [m.detail for m in res.matches] == ["line3:$.sn"]


def test_gzip_embedded_in_a_binary_blob_and_base64_gzip_in_json(scanner: Scanner) -> None:
    packed = gzip.compress(json.dumps({"sn": VALUE}).encode())
    res = scanner.scan_payload(os.urandom(100) + packed)
    assert any(m.chain == (E.GZIP, E.JSON, E.PLAIN) for m in res.matches), res.matches
    doc = json.dumps({"data": base64.b64encode(packed).decode()}).encode()
    res = scanner.scan_payload(doc)
    assert [(m.detail, m.chain) for m in res.matches] == [
        ("$.data|$.sn", (E.JSON, E.BASE64, E.GZIP, E.JSON, E.PLAIN))
    ]


# ------------------------------------------------------------------------------ hypothesis

_KEYS = st.from_regex(r"[a-z][a-z0-9_]{0,7}", fullmatch=True)
_VALUES = st.text(
    alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=8, max_size=40
)
_FILLER = st.one_of(st.integers(-1000, 1000), st.sampled_from(["a", "bb", "ok", "null"]))


@st.composite
def nested(draw: st.DrawFn) -> tuple[list[str | int], Callable[[object], object]]:
    steps = draw(st.lists(st.one_of(_KEYS, st.integers(0, 3)), min_size=0, max_size=12))

    def build(leaf: object) -> object:
        node = leaf
        for step in reversed(steps):
            if isinstance(step, int):
                node = [draw(_FILLER) for _ in range(step)] + [node]
            else:
                siblings = {k: draw(_FILLER) for k in draw(st.lists(_KEYS, max_size=3))}
                siblings.pop(step, None)
                node = {**siblings, step: node}
        return node

    return steps, build


def _path(steps: list[str | int]) -> str:
    return "$" + "".join(f"[{s}]" if isinstance(s, int) else f".{s}" for s in steps)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=_VALUES, shape=nested(), encoding=st.sampled_from(ORDER))
def test_random_values_at_random_json_depths(
    value: str, shape: tuple[list[str | int], Callable[[object], object]], encoding: Encoding
) -> None:
    steps, build = shape
    encoded = ENCODERS[encoding](value.encode())
    doc = build(encoded.decode())
    res = Scanner({"custom": value}).scan_payload(json.dumps(doc).encode())
    want = (_path(steps), (E.JSON, canonical(value.encode(), encoded)))
    assert want in {(m.detail, m.chain) for m in res.matches}


# ------------------------------------------------------------------------------ negatives


def _near_miss(value: str) -> str:
    i = len(value) // 2
    return value[:i] + str((int(value[i]) + 3) % 10) + value[i + 1 :]


@pytest.mark.parametrize("container", list(CONTAINERS))
def test_near_miss_values_match_nothing(container: str) -> None:
    imei = "356938035643809"
    s = Scanner({"imei": imei})
    other = _near_miss(imei).encode()
    for encoding in ORDER:
        res = CONTAINERS[container](s, ENCODERS[encoding](other))[0]
        assert not res.matches, (encoding, res.matches)


@settings(max_examples=40, deadline=None)
@given(data=st.binary(min_size=0, max_size=4096), ctype=st.sampled_from([None, "application/json"]))
def test_random_payloads_match_nothing(data: bytes, ctype: str | None) -> None:
    res = _SHARED.scan_payload(data, content_type=ctype)
    assert not res.matches


_SHARED = Scanner({NAME: VALUE, **DECOYS})


def test_large_random_and_text_payloads_match_nothing(scanner: Scanner) -> None:
    rnd = random.Random(7)
    blob = rnd.randbytes(4 * 1024 * 1024)
    words = " ".join(
        rnd.choice(["device", "event", "id", "42", "Zm9v", "ok"]) for _ in range(50000)
    )
    for data in (blob, words.encode(), base64.b64encode(blob[:100000])):
        assert not scanner.scan_payload(data).matches


# ------------------------------------------------------------------------------ bombs


GB = 1024 * 1024 * 1024


@pytest.fixture(scope="module")
def bombs() -> dict[str, bytes]:
    chunk = bytes(16 * 1024 * 1024)
    n = GB // len(chunk)
    gz = zlib.compressobj(1, zlib.DEFLATED, 31)
    br = brotli.Compressor(quality=1)
    zs = zstd.ZstdCompressor(level=1)
    parts: dict[str, list[bytes]] = {"gzip": [], "br": [], "zstd": []}
    for _ in range(n):
        parts["gzip"].append(gz.compress(chunk))
        parts["br"].append(br.process(chunk))
        parts["zstd"].append(zs.compress(chunk))
    parts["gzip"].append(gz.flush())
    parts["br"].append(br.finish())
    parts["zstd"].append(zs.flush())
    return {k: b"".join(v) for k, v in parts.items()}


@pytest.mark.parametrize("encoding", ["gzip", "br", "zstd"])
def test_a_one_gigabyte_bomb_stops_at_the_limit(bombs: dict[str, bytes], encoding: str) -> None:
    limit = 32 * 1024 * 1024
    s = Scanner({NAME: VALUE}, limits=ScanLimits(decode_limit=limit))
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        res = s.scan_payload(bombs[encoding], content_encoding=encoding)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    elapsed = time.perf_counter() - t0
    assert res.count(WarningKind.DECODE_LIMIT) == 1
    assert s.warning_counts[WarningKind.DECODE_LIMIT] == 1
    assert res.bytes_scanned <= limit
    assert peak < 5 * limit, peak
    assert elapsed < 10, elapsed


def test_a_bomb_inside_base64_inside_json_is_bounded_too() -> None:
    bomb = zlib.compressobj(9, zlib.DEFLATED, 31)
    packed = b"".join(bomb.compress(bytes(1 << 20)) for _ in range(256)) + bomb.flush()
    payload = VALUE.encode() + b" " + base64.b64encode(packed)
    s = Scanner({NAME: VALUE}, limits=ScanLimits(decode_limit=8 << 20, decode_budget=16 << 20))
    res = s.scan_payload(payload, content_type="text/plain")
    assert res.identifiers == {NAME}
    assert res.count(WarningKind.DECODE_LIMIT) == 1


def test_a_truncated_gzip_body_is_searched_as_far_as_it_goes(scanner: Scanner) -> None:
    body = json.dumps({"sn": VALUE, "pad": random.Random(1).randbytes(30000).hex()}).encode()
    cut = gzip.compress(body)[:-200]
    res = scanner.scan_payload(cut, content_encoding="gzip")
    assert res.identifiers == {NAME}
    assert res.count(WarningKind.DECODE_ERROR) == 1
    garbage = scanner.scan_payload(os.urandom(5000), content_encoding="gzip")
    assert not garbage.matches and garbage.count(WarningKind.DECODE_ERROR) == 1
    odd = scanner.scan_payload(VALUE.encode(), content_encoding="compress")
    assert odd.identifiers == {NAME} and odd.count(WarningKind.DECODE_ERROR) == 1


def test_deeply_nested_json_does_not_crash(scanner: Scanner) -> None:
    deep = b"[" * 200_000 + json.dumps(VALUE).encode() + b"]" * 200_000
    res = scanner.scan_payload(deep, content_type="application/json")
    assert res.identifiers == {NAME}  # searched as text when it cannot be parsed
    wide = json.dumps({"k": [[VALUE] * 3] * 100_000}).encode()
    res = Scanner({NAME: VALUE}, limits=ScanLimits(max_nodes=10_000)).scan_payload(wide)
    assert res.identifiers == {NAME} and res.count(WarningKind.NODE_LIMIT) == 1


def test_protobuf_bombs_are_bounded(scanner: Scanner) -> None:
    msg = Inner(id=VALUE.encode()).SerializeToString()
    for _ in range(2000):  # 2000 levels of nesting
        msg = Outer(seq=1, blob=msg).SerializeToString()
    t0 = time.perf_counter()
    res = scanner.scan_payload(bytes(msg), content_type="application/x-protobuf")
    assert time.perf_counter() - t0 < 5
    assert res.identifiers == {NAME}
    many = b"\x08\x01" * 300_000 + bytes(Inner(id=VALUE.encode()).SerializeToString())
    res = scanner.scan_payload(many)
    assert res.identifiers == {NAME} and res.count(WarningKind.NODE_LIMIT) == 1
    assert parse_protobuf(b"\x0a\xff\xff\xff\xff\x0f") is None  # length past the end


@settings(max_examples=150, deadline=None)
@given(data=st.binary(max_size=600), ctype=st.sampled_from([None, "application/x-protobuf"]))
def test_hostile_bytes_never_crash(data: bytes, ctype: str | None) -> None:
    payload = VALUE.encode() + data
    for enc in (None, "gzip", "br", "deflate", "zstd"):
        scan_payload(_SHARED, payload, content_type=ctype, content_encoding=enc)
    scan_payload(_SHARED, gzip.compress(payload)[: len(data) + 10], content_encoding="gzip")


def test_many_hits_are_capped() -> None:
    s = Scanner({NAME: VALUE}, limits=ScanLimits(max_hits=100))
    res = s.scan_payload((VALUE + " ").encode() * 1000, content_type="text/plain")
    assert len(res.matches) == 100 and res.count(WarningKind.HIT_LIMIT) == 1


# ------------------------------------------------------------------------------ sessions


def test_scan_record_reads_a_saved_session(tmp_path: Path) -> None:
    w = SessionWriter.create(tmp_path)
    body = w.bodies.put(gzip.compress(json.dumps({"sn": VALUE}).encode()), "gzip")
    w.write(
        HttpRecord(
            id="f1",
            method="POST",
            scheme="https",
            host="t.example",
            port=443,
            path="/c",
            url="https://t.example/c?x=1",
            request_headers=(("X-Sn", VALUE),),
            request_content_type="application/json",
            request_body=body,
        )
    )
    path = w.path
    w.close()
    sess = Session(path)
    (rec,) = list(sess.http())
    res = Scanner({NAME: VALUE}).scan_record(rec, sess.bodies)
    assert {(m.location, m.detail, m.encoding) for m in res.matches} == {
        (Location.HEADER, "x-sn", "plain"),
        (Location.BODY, "$.sn", "gzip > json > plain"),
    }


def test_a_magic_number_by_coincidence_does_not_hide_the_rest(scanner: Scanner) -> None:
    fake = zlib.compress(b"hello world")[:6] + b" sn=" + VALUE.encode()  # zlib header, cut
    assert fake[:2] == b"x\x9c"
    assert scanner.scan_payload(fake).identifiers == {NAME}


# ------------------------------------------------------------------------------ decoded view
# Issue 14: the judgements that need the whole content read every layer undone. Built and
# read back with the standard library's email package (an independent multipart reader),
# gzip, zlib and the protobuf library.


def _crash_upload(minidump: bytes) -> tuple[bytes, str]:
    """A Crashpad-style multipart upload: the minidump part gzip'd, a JSON metadata part."""
    boundary = "---MultipartBoundary-q1ZsJYx4---"
    body = b""
    for name, data in (
        ("upload_file_minidump", gzip.compress(minidump, mtime=0)),
        ("metadata", json.dumps({"imei": "490154203237518"}).encode()),
    ):
        body += (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n"
            ).encode()
            + data
            + b"\r\n"
        )
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def _email_parts(body: bytes, ctype: str) -> dict[str, bytes]:
    """What the email package reads as the parts of the same body."""
    import email

    msg = email.message_from_bytes(
        f"Content-Type: {ctype}\r\n\r\n".encode() + body, policy=policy.HTTP
    )
    return {
        str(p.get_param("name", header="content-disposition")): p.get_payload(decode=True)
        for p in msg.iter_parts()
    }


def test_the_decoded_view_undoes_multipart_and_gzip_parts() -> None:
    text = (Path(__file__).read_bytes() * 3)[:40_000]
    body, ctype = _crash_upload(text)
    view = decoded_view(body, content_type=ctype)
    parts = _email_parts(body, ctype)
    assert gzip.decompress(parts["upload_file_minidump"]) == text
    dump = [lf for lf in view.leaves if lf.path == "upload_file_minidump"]
    assert [(lf.encoding, lf.data) for lf in dump] == [("multipart > gzip", text)]
    imei = [lf for lf in view.leaves if lf.path == "metadata|$.imei"]
    assert [(lf.name, lf.encoding, lf.data) for lf in imei] == [
        ("imei", "multipart > json", b"490154203237518")
    ]


def test_base64_in_json_and_protobuf_strings_are_read() -> None:
    inner = protobuf_with(b"9774d56d682e549c")
    doc = json.dumps({"payload": base64.b64encode(gzip.compress(inner, mtime=0)).decode()})
    view = decoded_view(doc.encode(), content_type="application/json")
    leaves = {(lf.path, lf.encoding): lf.data for lf in view.leaves}
    assert leaves[("$.payload|pb:3.2", "json > base64 > gzip > protobuf")] == b"9774d56d682e549c"
    assert leaves[("$.payload|pb:3.1", "json > base64 > gzip > protobuf")] == b"hello"


def test_the_decoded_view_is_bounded() -> None:
    bomb = gzip.compress(b"\0" * (64 * 1024 * 1024), mtime=0)  # 64 MiB from ~64 KiB
    t0 = time.perf_counter()
    view = decoded_view(bomb, limits=ScanLimits(decode_limit=1 << 20, decode_budget=4 << 20))
    assert time.perf_counter() - t0 < 5
    assert view.decoded <= 4 << 20 and any("expands past" in w for w in view.warnings)
    nested = b"x" * 100
    for _ in range(12):
        nested = gzip.compress(nested, mtime=0)
    view = decoded_view(nested, limits=ScanLimits(max_depth=4))
    assert any("nested layers" in w for w in view.warnings)
    many = json.dumps(list(range(5000))).encode()
    view = decoded_view(many, limits=ScanLimits(max_nodes=100))
    assert len(view.leaves) < 200 and any("fields" in w for w in view.warnings)


def test_only_opaque_parts_make_a_body_encrypted() -> None:
    from auditor.analysis.scanning import character_of

    text = (Path(__file__).read_bytes() * 3)[:40_000]
    body, ctype = _crash_upload(text)
    assert characterise(body).klass is PayloadClass.ENCRYPTED_OR_RANDOM  # the old judgement
    ch = character_of(body, decoded_view(body, content_type=ctype))
    assert ch["class"] == "plaintext" and ch["opaque"] == []
    sealed, ctype = _crash_upload(b"")
    sealed = sealed.replace(gzip.compress(b"", mtime=0), os.urandom(8000))
    ch = character_of(sealed, decoded_view(sealed, content_type=ctype))
    assert ch["class"] == "encrypted_or_random"
    assert [(o["path"], o["encoding"], o["size"]) for o in ch["opaque"]] == [
        ("upload_file_minidump", "multipart", 8000)
    ]
    small = json.dumps({"sig": base64.b64encode(os.urandom(96)).decode(), "a": "b" * 400})
    ch = character_of(small.encode(), decoded_view(small.encode()))
    assert ch["class"] == "plaintext"  # a signature in a readable body is not an upload
    wrapped = json.dumps({"data": base64.b64encode(os.urandom(4000)).decode()}).encode()
    assert character_of(wrapped, decoded_view(wrapped))["class"] == "encrypted_or_random"
