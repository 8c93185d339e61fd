"""The payload walkers (``auditor.analysis.payload``) over captured bodies: random bytes,
and identifiers wrapped in random layers (JSON, form, multipart, protobuf, base64, hex, URL
escapes, gzip/zstd/deflate), then damaged. Scanning never raises, ends in bounded time, and
its result can be written as JSON. ``parse_protobuf`` raises only BudgetExhausted."""

from __future__ import annotations

import base64
import binascii
import gzip
import json
import urllib.parse
import zlib
from collections.abc import Callable
from functools import cache

from hypothesis import strategies as st

from auditor.analysis.payload import (
    Body,
    BudgetExhausted,
    Part,
    ScanLimits,
    Scanner,
    ScanResult,
    parse_protobuf,
)
from auditor.decoders import zstd
from tests.fuzz.helpers import fuzz, json_values, mutated

IDENTIFIERS = {"serial": "Rf3:K~p?z>Q", "imei": "490154203237518", "android_id": "9774d56d682e549c"}


@cache
def _scanner() -> Scanner:
    # small limits, so that the fuzz reaches them
    limits = ScanLimits(decode_limit=1 << 20, decode_budget=4 << 20, max_nodes=20_000, max_blobs=64)
    return Scanner(IDENTIFIERS, limits=limits)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _protobuf(data: bytes, field: int) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(data)) + data + _varint(1 << 3) + _varint(7)


def _multipart(data: bytes, b64: bool) -> bytes:
    body = base64.b64encode(data) if b64 else data
    cte = b"Content-Transfer-Encoding: base64\r\n" if b64 else b""
    return (
        b'--bnd\r\nContent-Disposition: form-data; name="a"\r\n'
        + cte
        + b"\r\n"
        + body
        + b"\r\n--bnd--\r\n"
    )


LAYERS: dict[str, Callable[[bytes], bytes]] = {
    "json": lambda b: json.dumps({"k": [1, {"v": b.decode("latin-1")}]}).encode(),
    "json-in-string": lambda b: json.dumps({"s": json.dumps({"x": b.decode("latin-1")})}).encode(),
    "ndjson": lambda b: b'{"a":1}\n' + json.dumps({"b": b.decode("latin-1")}).encode() + b"\n",
    "form": lambda b: b"a=1&v=" + urllib.parse.quote_plus(b).encode() + b"&z=",
    "multipart": lambda b: _multipart(b, False),
    "multipart-b64": lambda b: _multipart(b, True),
    "protobuf": lambda b: _protobuf(b, 3),
    "base64": base64.b64encode,
    "base64url": base64.urlsafe_b64encode,
    "hex": binascii.hexlify,
    "url": lambda b: urllib.parse.quote(b, safe="").encode(),
    "escaped": lambda b: b.decode("latin-1").encode("unicode_escape"),
    "gzip": lambda b: gzip.compress(b, mtime=0),  # no clock: hypothesis replays inputs
    "deflate": zlib.compress,
    "zstd": lambda b: bytes(zstd.compress(b)),
}
CONTENT_TYPES = [
    None,
    "application/json",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=bnd",
    "multipart/form-data",
    "application/x-protobuf",
    "text/plain",
    "application/octet-stream",
    'multipart/form-data; boundary=""',
    "application/json; charset=utf-16",
]
ENCODINGS = [None, "gzip", "deflate", "br", "zstd", "gzip, zstd", "x-unknown", ""]


@st.composite
def _wrapped(draw: st.DrawFn) -> bytes:
    data = draw(st.sampled_from(sorted(IDENTIFIERS.values()))).encode()
    for name in draw(st.lists(st.sampled_from(sorted(LAYERS)), max_size=6)):
        data = LAYERS[name](data)
    return data


def _check(result: ScanResult) -> None:
    json.dumps(result.to_dict(), ensure_ascii=False).encode("utf-8", "surrogateescape")
    for m in result.matches:
        assert m.identifier in IDENTIFIERS


def _scan(data: bytes, ctype: str | None, encoding: str | None) -> None:
    _check(_scanner().scan_payload(data, content_type=ctype, content_encoding=encoding))


@fuzz(
    st.binary(max_size=2000), st.sampled_from(CONTENT_TYPES), st.sampled_from(ENCODINGS), share=0.15
)
def test_random_bytes(data: bytes, ctype: str | None, encoding: str | None) -> None:
    _scan(data, ctype, encoding)


@fuzz(_wrapped(), st.sampled_from(CONTENT_TYPES), share=0.3)
def test_identifiers_in_random_layers(data: bytes, ctype: str | None) -> None:
    _scan(data, ctype, None)


@fuzz(
    st.lists(_wrapped(), min_size=1, max_size=4),
    st.data(),
    st.sampled_from(CONTENT_TYPES),
    share=0.3,
)
def test_damaged_layers(seeds: list[bytes], data: st.DataObject, ctype: str | None) -> None:
    _scan(data.draw(mutated(seeds), label="data"), ctype, None)


_headers = st.lists(
    st.tuples(
        st.sampled_from(["cookie", "x-device", "user-agent", "authorization", "a"])
        | st.text(max_size=10),
        st.text(max_size=60) | _wrapped().map(lambda b: b.decode("latin-1")),
    ),
    max_size=5,
)


@fuzz(
    st.one_of(
        st.none(),
        st.text(max_size=100),
        _wrapped().map(lambda b: "https://h.example/p?q=" + b.decode("latin-1")),
    ),
    _headers,
    st.lists(
        st.builds(
            Body,
            _wrapped() | st.binary(max_size=300),
            st.sampled_from(ENCODINGS),
            st.sampled_from(CONTENT_TYPES),
            st.sampled_from(list(Part)),
        ),
        max_size=3,
    ),
    _headers,
    share=0.15,
)
def test_whole_flows(
    url: str | None, headers: list[tuple[str, str]], bodies: list[Body], resp: list[tuple[str, str]]
) -> None:
    _check(_scanner().scan_flow(url, headers, bodies, response_headers=resp))


@fuzz(
    st.one_of(
        st.binary(max_size=400),
        _wrapped(),
        json_values.map(lambda v: json.dumps(v).encode("utf-8", "surrogatepass")),
    ),
    share=0.1,
)
def test_parse_protobuf(data: bytes) -> None:
    try:
        parse_protobuf(data, budget=[1000])
    except BudgetExhausted:
        pass
