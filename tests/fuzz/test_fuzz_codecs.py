"""Bounded decoding of content encodings (``auditor.decoders.decode``): random bytes under any
encoding list, real compressed streams damaged, many concatenated members, and bombs under a
small limit. ``decode`` never raises; its output never passes the limit."""

from __future__ import annotations

import gzip
import zlib
from functools import cache

import brotli
from hypothesis import strategies as st

from auditor.decoders import decode, split_encodings, supported, zstd
from tests.fuzz.helpers import fuzz, mutated

ENCODINGS = ("gzip", "x-gzip", "deflate", "br", "zstd", "identity")
_encodings = st.one_of(
    st.sampled_from(ENCODINGS),
    st.lists(st.sampled_from(ENCODINGS), max_size=3).map(", ".join),
    st.sampled_from(["", " ", ",", "GZIP", "gzip,,br", "compress", "br;q=1", "\x00"]),
    st.text(max_size=12),
)
_limits = st.one_of(st.sampled_from([0, 1, 100, 4096, 1 << 20]), st.integers(0, 1 << 20))


def _compress(kind: str, data: bytes) -> bytes:
    if kind == "gzip":
        return gzip.compress(data, mtime=0)  # no clock: hypothesis replays inputs
    if kind == "deflate":
        return zlib.compress(data)
    if kind == "raw-deflate":
        c = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        return c.compress(data) + c.flush()
    if kind == "br":
        return bytes(brotli.compress(data))
    return bytes(zstd.compress(data))


_KINDS = {
    "gzip": "gzip",
    "deflate": "deflate",
    "raw-deflate": "deflate",
    "br": "br",
    "zstd": "zstd",
}


@cache
def _streams() -> list[bytes]:
    plain = [b"", b"a", b"telemetry " * 50, bytes(range(256)) * 8, b"\0" * 100_000]
    return [_compress(k, p) for k in _KINDS for p in plain]


def _decode(raw: bytes, encoding: str | None, limit: int, keep: bool) -> None:
    res = decode(raw, encoding, limit, keep=keep)
    assert res.size >= 0
    if keep:
        assert len(res.data) <= max(limit, len(raw)) or not split_encodings(encoding)
    if res.exceeded:
        assert res.size == limit and len(res.data) <= limit
    supported(encoding or "")


@fuzz(st.binary(max_size=600), _encodings, _limits, st.booleans(), share=0.25)
def test_random_bytes(raw: bytes, encoding: str, limit: int, keep: bool) -> None:
    _decode(raw, encoding, limit, keep)


@fuzz(st.sampled_from(sorted(_KINDS)), st.data(), _limits, st.booleans(), share=0.35)
def test_damaged_streams(kind: str, data: st.DataObject, limit: int, keep: bool) -> None:
    seeds = [s for s in _streams() if s]
    raw = data.draw(mutated(seeds), label="raw")
    _decode(raw, _KINDS[kind], limit, keep)


@fuzz(
    st.sampled_from(sorted(_KINDS)),
    st.lists(st.binary(max_size=30), min_size=1, max_size=6),
    st.integers(1, 5000),
    st.binary(max_size=20),
    _limits,
    share=0.2,
)
def test_concatenated_members(
    kind: str, parts: list[bytes], repeat: int, tail: bytes, limit: int
) -> None:
    raw = b"".join(_compress(kind, p) for p in parts) * repeat + tail
    _decode(raw, _KINDS[kind], limit, False)


@fuzz(
    st.lists(st.sampled_from(["gzip", "deflate", "br", "zstd"]), min_size=1, max_size=4),
    st.integers(0, 1 << 22),
    st.integers(0, 1 << 16),
    st.booleans(),
    share=0.2,
)
def test_nested_bombs(chain: list[str], size: int, limit: int, keep: bool) -> None:
    raw = b"\0" * size
    for kind in chain:
        raw = _compress(kind, raw)
    _decode(raw, ", ".join(chain), limit, keep)  # listed in the order applied
