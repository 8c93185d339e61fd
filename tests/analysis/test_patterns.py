"""Shapes of personal data, app lists, payload character and keyword lists."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import os
import random
import string
import zlib

import brotli
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auditor.analysis.patterns import (
    ContentKind,
    PatternKind,
    PayloadClass,
    characterise,
    entropy,
    field_name_before,
    find_app_list,
    find_keyword_lists,
    find_patterns,
    named_shapes,
    shape_context,
    sniff,
)

ENGLISH = (
    "It is a truth universally acknowledged, that a single man in possession of a good fortune, "
    "must be in want of a wife. However little known the feelings or views of such a man may be "
    "on his first entering a neighbourhood, this truth is so well fixed in the minds of the "
    "surrounding families, that he is considered as the rightful property of some one or other "
    "of their daughters. "
)


def luhn_digit(body: str) -> str:
    """The check digit that makes ``body + digit`` pass Luhn (written here from the spec)."""
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d // 10 + d % 10
    return str((10 - total % 10) % 10)


def imei(rnd: random.Random, rbi: str = "35") -> str:
    body = rbi + "".join(rnd.choice(string.digits) for _ in range(12))
    return body + luhn_digit(body)


def kinds(data: bytes, kind: PatternKind) -> list[str]:
    return [m.value for m in find_patterns(data) if m.kind is kind]


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**32))
def test_luhn_valid_imeis_are_found_and_invalid_ones_not(seed: int) -> None:
    rnd = random.Random(seed)
    good = imei(rnd)
    bad = good[:-1] + str((int(good[-1]) + rnd.randint(1, 9)) % 10)
    data = json.dumps({"imei": good, "imei2": bad, "ts": 1700000000123}).encode()
    assert kinds(data, PatternKind.IMEI) == [good]


def test_imeis_inside_longer_digit_runs_are_not_imeis() -> None:
    rnd = random.Random(3)
    good = imei(rnd)
    assert kinds(f"x{good}y".encode(), PatternKind.IMEI) == [good]
    assert kinds(f"1{good}".encode(), PatternKind.IMEI) == []
    assert kinds(f"{good}0".encode(), PatternKind.IMEI) == []
    assert kinds(b"000000000000000", PatternKind.IMEI) == []  # Luhn-valid, meaningless
    (m,) = find_patterns(imei(rnd, rbi="86").encode())
    assert m.detail == "allocated-rbi"


def test_mac_addresses() -> None:
    data = b'{"wifi":"a4:5e:60:c1:22:9f","bt":"A4-5E-60-C1-22-A0","fake":"02:00:00:00:00:00"}'
    assert kinds(data, PatternKind.MAC) == ["a4:5e:60:c1:22:9f", "A4-5E-60-C1-22-A0"]
    assert kinds(b"a4:5e-60:c1:22:9f a4:5e:60:c1:22:9f:00", PatternKind.MAC) == []


@pytest.mark.parametrize(
    ("data", "want"),
    [
        (b'{"lat": 39.9042, "lng": 116.4074}', ["39.9042,116.4074"]),
        (b'{"location":{"latitude":"-33.8688","longitude":"151.2093"}}', ["-33.8688,151.2093"]),
        (b"lat=48.8584&lon=2.2945&x=1", ["48.8584,2.2945"]),
        (b"see geo:51.5007,-0.1246 here", ["51.5007,-0.1246"]),
        (b'{"lat": 95.12, "lng": 10.55}', []),  # out of range
        (b'{"lat": 0.00, "lng": 0.00}', []),
        (b'{"lat": 39.9042}', []),  # no pair
        (b'{"flat": 39.9042, "along": 116.4074}', []),  # not the keys
    ],
)
def test_gps_coordinates(data: bytes, want: list[str]) -> None:
    assert kinds(data, PatternKind.GPS) == want


def test_phone_numbers_and_emails() -> None:
    data = b"tel=%2B8613800138000&alt=+447911123456&n=12+3456789012&mail=jane.doe%40example.co.uk"
    assert kinds(data, PatternKind.PHONE) == ["+8613800138000", "+447911123456"]
    assert kinds(data, PatternKind.EMAIL) == ["jane.doe@example.co.uk"]
    assert kinds(b'{"e":"a_b+tag@mail.example.com","x":"@home","y":"x@y"}', PatternKind.EMAIL) == [
        "a_b+tag@mail.example.com"
    ]


PACKAGES = [
    "com.android.chrome",
    "com.tencent.mm",
    "com.whatsapp",
    "org.mozilla.firefox",
    "com.miui.home",
    "com.xiaomi.market",
    "net.openvpn.openvpn",
]


def test_installed_app_lists() -> None:
    doc = {"apps": [{"pkg": p, "ver": i} for i, p in enumerate(PACKAGES * 2)]}
    found = find_app_list(json.dumps(doc).encode())
    assert found is not None
    assert found.count == len(PACKAGES)
    assert found.sample == tuple(PACKAGES)
    assert found.names == tuple(sorted(PACKAGES))
    assert find_app_list(json.dumps(PACKAGES[:4]).encode()) is None
    noise = b"www.google.com index.html com.foo.Bar java.lang.String a.b co.uk com.cn"
    assert find_app_list(noise, threshold=1) is None


def test_entropy_is_shannons() -> None:
    assert entropy(b"") == 0.0
    assert entropy(b"aaaa") == 0.0
    assert entropy(bytes(range(256)) * 64) == pytest.approx(8.0)
    assert entropy(b"ab" * 5000) == pytest.approx(1.0)


def test_payload_classes() -> None:
    rnd_words = random.Random(5)
    text = " ".join(rnd_words.choice(ENGLISH.split()) for _ in range(20000)).encode()
    rnd = os.urandom(200_000)
    cases = {
        "random": (rnd, PayloadClass.ENCRYPTED_OR_RANDOM, ContentKind.BINARY),
        "zlib": (zlib.compress(text), PayloadClass.COMPRESSED, ContentKind.ZLIB),
        "raw deflate": (zlib.compress(text)[2:-4], PayloadClass.COMPRESSED, ContentKind.BINARY),
        "small deflate": (
            zlib.compress(ENGLISH.encode() * 50)[2:-4],
            PayloadClass.COMPRESSED,
            ContentKind.BINARY,
        ),
        "gzip": (gzip.compress(text), PayloadClass.COMPRESSED, ContentKind.GZIP),
        "brotli": (brotli.compress(text), PayloadClass.COMPRESSED, ContentKind.BINARY),
        "english": (text, PayloadClass.PLAINTEXT, ContentKind.TEXT),
        "json": (json.dumps({"a": ENGLISH}).encode(), PayloadClass.PLAINTEXT, ContentKind.JSON),
    }
    for name, (data, klass, kind) in cases.items():
        c = characterise(data)
        assert (c.klass, c.kind) == (klass, kind), name
        assert c.size == len(data)
    assert characterise(rnd).entropy > 7.9 and characterise(rnd).ratio > 0.99
    assert characterise(text).entropy < 5 and characterise(text).ratio < 0.5
    # compressors the classifier has no decoder for look like ciphertext: documented limit
    assert characterise(lzma.compress(rnd[:10] + text)).klass is not PayloadClass.PLAINTEXT
    assert characterise(bz2.compress(text)).klass is not PayloadClass.PLAINTEXT


def test_sniffing() -> None:
    assert sniff(b"") is ContentKind.EMPTY
    assert sniff(b"\x89PNG\r\n\x1a\n....") is ContentKind.PNG
    assert sniff(b"\xff\xd8\xff\xe0") is ContentKind.JPEG
    assert sniff(b"\x28\xb5\x2f\xfd....") is ContentKind.ZSTD
    assert sniff(b"<?xml version='1.0'?><a/>") is ContentKind.XML
    assert sniff(b"\x08\x96\x01\x12\x07testing\x1a\x03\x08\x01\x10") is ContentKind.PROTOBUF
    assert sniff(b'{"a": [1, 2') is ContentKind.TEXT  # not valid JSON


def test_a_censorship_keyword_list_under_a_blacklist_key() -> None:
    rnd = random.Random(449)
    words = [
        " ".join(
            "".join(rnd.choice(string.ascii_lowercase) for _ in range(rnd.randint(2, 9)))
            for _ in range(rnd.randint(1, 3))
        )
        for _ in range(449)
    ]
    doc = {
        "code": 0,
        "data": {"configs": [{"key": "MiAdBlackListConfig", "MiAdBlackListConfig": words}]},
        "other": ["a", "b"],
    }
    (found,) = find_keyword_lists(json.dumps(doc).encode())
    assert found.path == "$.data.configs[0].MiAdBlackListConfig"
    assert found.count == 449
    assert found.sample == tuple(words[:10])
    assert found.entries == tuple(words)
    assert set(found.reasons) == {"many-short-strings", "key:MiAdBlackListConfig"}
    assert json.loads(json.dumps(found.to_dict()))["count"] == 449


def test_keyword_lists_in_strings_and_embedded_json() -> None:
    inner = json.dumps({"keywordFilter": ",".join(f"word{i}" for i in range(20))})
    (found,) = find_keyword_lists(json.dumps({"cfg": inner}).encode())
    assert found.path == "$.cfg|$.keywordFilter"
    assert found.count == 20 and found.reasons == ("key:keywordFilter",)
    many = [f"item number {i}" for i in range(60)]
    (plain,) = find_keyword_lists({"list": many})
    assert plain.reasons == ("many-short-strings",)


def test_ordinary_json_is_no_keyword_list() -> None:
    long_strings = ["x" * 60 + str(i) for i in range(80)]
    assert find_keyword_lists({"items": long_strings, "few": ["a", "b"]}) == ()
    assert find_keyword_lists(json.dumps({"n": list(range(100))}).encode()) == ()
    assert find_keyword_lists(b"not json") == ()
    assert find_keyword_lists(b"[" * 100_000) == ()


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=2000))
def test_hostile_bytes_never_crash(data: bytes) -> None:
    characterise(data)
    find_patterns(data)
    find_app_list(data)
    find_keyword_lists(data)


# ------------------------------------------------------------------------------- context


def test_a_luhn_valid_correlator_has_no_context() -> None:
    """Issue 14: DoubleClick's correlator (a random number per ad request) passed the Luhn
    check and was reported as an IMEI. The shape is checked on the worked example of the
    Luhn check digit in Wikipedia's "International Mobile Equipment Identity" article
    (49015420323751, check digit 8) and on the correlator of the control HAR."""
    url = b"/gampad/ads?iu=/21775744923/external/single_ad_samples&env=vp&correlator="
    (m,) = find_patterns(url + b"419772853168473")
    assert m.kind is PatternKind.IMEI
    assert field_name_before(url + b"419772853168473", m.offset) == "correlator"
    assert shape_context(m, "correlator") == ()
    assert shape_context(m, "imei") == ("name:imei",)
    assert shape_context(m, "deviceId") == ("name:deviceId",)
    assert shape_context(m, "x", {"imei": "41977285316847-3"}) == ("device:imei",)
    # a second IMEI of the same model (same type allocation code, 8 digits) is context too
    assert shape_context(m, "x", {"imei2": "419772859999990"}) == ("tac:41977285 (imei2)",)
    assert shape_context(m, "x", {"serial": "419772859999990"}) == ()
    (known,) = find_patterns(b"490154203237518")
    assert known.kind is PatternKind.IMEI


def test_field_names_before_a_value_in_flat_text() -> None:
    text = b'{"deviceInfo": {"mac_addr": "3c:5a:b4:01:02:03"}}'
    (m,) = find_patterns(text)
    assert field_name_before(text, m.offset) == "mac_addr"
    assert shape_context(m, field_name_before(text, m.offset)) == ("name:mac_addr",)
    assert field_name_before(b"seen 3c:5a:b4:01:02:03", 5) == ""


def test_coordinates_are_read_under_their_names() -> None:
    (m,) = find_patterns(b"lat=52.5200&lng=13.4050")
    assert shape_context(m, "") == ("name:lat/lng",)


def test_an_android_id_is_only_reported_under_its_name() -> None:
    assert named_shapes("android_id", b"9774d56d682e549c")[0].kind is PatternKind.ANDROID_ID
    assert named_shapes("trace_id", b"9774d56d682e549c") == ()
    assert named_shapes("androidId", b"9774d56d682e549c-x") == ()
    assert named_shapes("android_id", b"0000000000000000") == ()
