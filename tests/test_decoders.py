import base64
import gzip
import html
import itertools
import json
import os
import time
import tracemalloc
import zlib
from urllib.parse import quote, unquote

import brotli
import pytest

from auditor.decoders import (
    MAX_MEMBERS,
    MAX_TEXT_LAYERS,
    TextView,
    decode,
    supported,
    text_views,
    zstd,
)

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


# ------------------------------------------------------------------ text escapes (text_views)


def _layers(text: str) -> list[TextView]:
    return [v for v in text_views(text) if v.layers[-1:] not in (("base64",), ("hex",))]


def test_each_escape_layer_is_what_the_standard_decoders_give() -> None:
    email = "jane.reporter@example.org"
    twice = quote(quote(email, safe=""), safe="")
    views = _layers(f"c={twice}")
    assert [v.text for v in views] == [f"c={twice}", f"c={unquote(twice)}", f"c={email}"]
    assert [v.layers for v in views] == [(), ("url",), ("url", "url")]
    escaped = r"jane.reporter\u0040example.org \/ \u00e9"
    assert _layers(escaped)[1].text == json.loads(f'"{escaped}"')
    entities = "jane.reporter&#64;example.org &amp;&#x41;&eacute;"
    assert _layers(entities)[1].text == html.unescape(entities)
    assert _layers("%C3%A9%FF%41")[1].text == "\u00e9\ufffdA"  # bad UTF-8: U+FFFD, not lost


def test_every_decoded_character_points_back_to_what_encoded_it() -> None:
    text = "a%2540b&#64;c\\u0040d%C3%A9e"
    for view in _layers(text):
        last = 0
        for i, ch in enumerate(view.text):
            start, end = view.origin(i, i + 1)
            assert last <= start < end <= len(text)
            last = start
            # undoing the same layers on the span gives the character back
            piece = text[start:end]
            for _ in view.layers:
                piece = html.unescape(
                    unquote(json.loads(f'"{piece}"') if "\\u" in piece else piece)
                )
            assert piece == ch, (view.layers, i, text[start:end])


def test_layers_stop_at_the_bound_and_never_grow() -> None:
    text = "x@y.example"
    for _ in range(MAX_TEXT_LAYERS + 1):
        text = quote(text, safe="")
    views = _layers(text)
    assert len(views) == MAX_TEXT_LAYERS + 1
    assert views[-1].text == quote("x@y.example", safe="")  # one layer left
    assert all(len(b.text) < len(a.text) for a, b in itertools.pairwise(views))
    assert _layers("nothing to undo, 100% plain") == _layers("nothing to undo, 100% plain")[:1]


def test_base64_and_hex_runs_are_decoded_at_every_alignment() -> None:
    value = b"Jane.Reporter@Example.ORG"
    for pad in (b"", b"x", b"xy"):
        for enc in (base64.b64encode, base64.urlsafe_b64encode):
            blob = enc(pad + b'{"e":"' + value + b'"}').decode().rstrip("=")
            text = f"d={blob}&t=1"
            views = [v for v in text_views(text) if v.layers == ("base64",)]
            hit = [v for v in views if value.decode("latin-1") in v.text]
            assert hit, (pad, enc)
            i = hit[0].text.index(value.decode())
            start, end = hit[0].origin(i, i + len(value))
            # the span holds the value's bits and no more than a character either side
            assert 2 <= start < end <= 2 + len(blob)
            assert abs((end - start) - len(value) * 4 / 3) <= 2
    hexed = f"h={value.hex().upper()}"
    views = [v for v in text_views(hexed) if v.layers == ("hex",)]
    assert any(v.text == value.decode() for v in views)
    assert next(v for v in views if v.text == value.decode()).origin(0, len(value)) == (
        2,
        len(hexed),
    )
    assert not [v for v in text_views(hexed, binary=False) if v.layers]
