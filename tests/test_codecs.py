import gzip
import os
import time
import tracemalloc
import zlib

import brotli
import pytest

from auditor.codecs import MAX_MEMBERS, decode, supported, zstd

DATA = b'{"imei": "490154203237518"}' * 200

ENCODED = {
    "gzip": gzip.compress(DATA),
    "deflate": zlib.compress(DATA),
    "br": brotli.compress(DATA),
    "zstd": zstd.compress(DATA),
}


@pytest.mark.parametrize("enc", sorted(ENCODED))
def test_decodes(enc: str) -> None:
    res = decode(ENCODED[enc], enc)
    assert res.data == DATA and res.size == len(DATA) and not res.exceeded and not res.error


@pytest.mark.parametrize("enc", sorted(ENCODED))
def test_truncated_stream_is_an_error_not_an_exception(enc: str) -> None:
    res = decode(ENCODED[enc][: len(ENCODED[enc]) // 2], enc)
    assert res.error
    assert DATA.startswith(res.data)


@pytest.mark.parametrize("enc", sorted(ENCODED))
def test_garbage(enc: str) -> None:
    res = decode(b"\x00\x01garbage" * 10, enc)
    assert res.error and not res.exceeded


def test_raw_deflate_and_stacked_encodings() -> None:
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    raw = c.compress(DATA) + c.flush()
    assert decode(raw, "deflate").data == DATA
    stacked = brotli.compress(gzip.compress(DATA))
    assert decode(stacked, "gzip, br").data == DATA
    assert decode(DATA, "identity").data == DATA
    assert decode(DATA, "x-unknown").error
    assert supported("gzip, br") and not supported("compress")


def test_concatenated_members() -> None:
    assert decode(gzip.compress(b"a") + gzip.compress(b"b"), "gzip").data == b"ab"
    assert decode(zstd.compress(b"a") + zstd.compress(b"b"), "zstd").data == b"ab"


@pytest.mark.parametrize("enc", sorted(ENCODED))
def test_bombs_stop_at_the_limit(enc: str) -> None:
    big = b"\0" * (64 * 1024 * 1024)
    bomb = {
        "gzip": gzip.compress,
        "deflate": zlib.compress,
        "br": lambda b: brotli.compress(b, quality=1),
        "zstd": zstd.compress,
    }[enc](big)
    assert len(bomb) < 1024 * 1024
    res = decode(bomb, enc, limit=1024 * 1024)
    assert res.exceeded and res.size == 1024 * 1024 and len(res.data) == 1024 * 1024
    counted = decode(bomb, enc, limit=1024 * 1024, keep=False)
    assert counted.exceeded and counted.data == b""
    # Counting holds no output: memory stays small even for a limit of tens of MiB (br and
    # zstd once produced the whole limit in one piece, only to drop it).
    tracemalloc.start()
    try:
        counted = decode(bomb, enc, limit=32 * 1024 * 1024, keep=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert counted.exceeded and counted.size == 32 * 1024 * 1024
    assert peak < 4 * 1024 * 1024


def test_members_past_the_first_chunk_are_all_decoded() -> None:
    # Two members larger than the decoder's input chunk, then a third: the third starts
    # far past the chunk in which the first one ended.
    big = [os.urandom(300_000), os.urandom(300_000), b"tail"]
    res = decode(b"".join(gzip.compress(b) for b in big), "gzip")
    assert res.error is None and res.data == b"".join(big)
    frames = b"".join(zstd.compress(b) for b in big)
    assert decode(frames, "zstd").data == b"".join(big)


@pytest.mark.parametrize("enc", ["gzip", "zstd"])
def test_many_members_are_bounded(enc: str) -> None:
    # Thousands of tiny members used to recurse once per gzip member (RecursionError), and
    # empty zstd frames cost time quadratic in their number (each copied the rest).
    one = {"gzip": gzip.compress, "zstd": zstd.compress}[enc]
    res = decode(one(b"x") * 5000, enc)
    assert res.error and "members" in res.error and res.data == b"x" * MAX_MEMBERS
    started = time.monotonic()
    res = decode(one(b"") * 200_000, enc, keep=False)
    assert res.error and "members" in res.error
    assert time.monotonic() - started < 2
