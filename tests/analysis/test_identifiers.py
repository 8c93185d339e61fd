"""Needles (every encoded form of an identifier) and the one-pass matcher."""

from __future__ import annotations

import base64
import hashlib
import os
import random
import urllib.parse

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from hypothesis import given, settings
from hypothesis import strategies as st

from auditor.analysis.identifiers import (
    Encoding,
    Matcher,
    Needle,
    Variant,
    base64_cores,
    build_needles,
    parse_identifier,
)

E = Encoding
BACKENDS = ["hyperscan", "aho-corasick"]


def _patterns(identifiers: dict[str, str]) -> dict[tuple[tuple[Encoding, ...], Variant], bytes]:
    return {(n.chain, n.variant): n.pattern for n in build_needles(identifiers).needles}


def test_every_listed_form_is_a_needle() -> None:
    value = b"Rf3:K~p?z>Q"  # all forms distinct: URL-encoding needed, '+' in its base64
    ns = build_needles({"serial": value.decode()})
    got = {(n.chain, n.pattern) for n in ns.needles if n.variant is Variant.AS_IS}
    md5, sha1, sha256 = (h(value).digest() for h in (hashlib.md5, hashlib.sha1, hashlib.sha256))
    want = {
        E.PLAIN: value,
        E.URL: urllib.parse.quote(value, safe="").encode(),
        E.BASE64: base64.b64encode(value),
        E.BASE64URL: base64.urlsafe_b64encode(value),
        E.BASE64_UNPADDED: base64.b64encode(value).rstrip(b"="),
        E.BASE64URL_UNPADDED: base64.urlsafe_b64encode(value).rstrip(b"="),
        E.HEX: value.hex().encode(),
        E.HEX_UPPER: value.hex().upper().encode(),
        E.MD5_HEX: md5.hex().encode(),
        E.MD5_HEX_UPPER: md5.hex().upper().encode(),
        E.MD5_BASE64: base64.b64encode(md5),
        E.MD5_RAW: md5,
        E.SHA1_HEX: sha1.hex().encode(),
        E.SHA1_HEX_UPPER: sha1.hex().upper().encode(),
        E.SHA1_BASE64: base64.b64encode(sha1),
        E.SHA256_HEX: sha256.hex().encode(),
        E.SHA256_HEX_UPPER: sha256.hex().upper().encode(),
        E.SHA256_BASE64: base64.b64encode(sha256),
    }
    assert len(set(want.values())) == len(want)
    for enc, pattern in want.items():
        assert ((enc,), pattern) in got, enc
    variants = {n.variant: n.pattern for n in ns.needles if n.chain == (E.PLAIN,)}
    assert variants == {
        Variant.AS_IS: value,
        Variant.LOWER: value.lower(),
        Variant.UPPER: value.upper(),
    }


def test_a_form_equal_to_an_earlier_one_is_kept_once_under_the_earlier_name() -> None:
    ns = build_needles({"imei": "490154203237518"})  # digits: hex == hex-upper, no +/ in base64
    labels = {n.pattern: n.chain for n in ns.needles if n.variant is Variant.AS_IS}
    assert labels[b"490154203237518".hex().encode()] == (E.HEX,)
    assert labels[base64.b64encode(b"490154203237518")] == (E.BASE64,)
    assert len(labels) == len(ns.needles)


def test_case_and_separator_variants_of_a_mac() -> None:
    got = {
        p for (c, _), p in _patterns({"wifi_mac": "A4:5E:60:C1:22:9F"}).items() if c == (E.PLAIN,)
    }
    assert got == {
        b"A4:5E:60:C1:22:9F",
        b"a4:5e:60:c1:22:9f",
        b"a4-5e-60-c1-22-9f",
        b"A4-5E-60-C1-22-9F",
        b"a45e60c1229f",
        b"A45E60C1229F",
    }
    sha = {p for (c, _), p in _patterns({"wifi_mac": "A4:5E:60:C1:22:9F"}).items()}
    assert hashlib.sha256(b"a45e60c1229f").hexdigest().encode() in sha


def test_uuid_phone_and_numeric_identifiers() -> None:
    uuid = "38400000-8cf0-11bd-b23e-10b96e40000d"
    assert uuid.replace("-", "").upper().encode() in _patterns({"advertising_id": uuid}).values()
    phone = _patterns({"phone_number": "+8613800138000"})
    assert phone[((E.PLAIN,), Variant.NO_PLUS)] == b"8613800138000"
    assert phone[((E.URL,), Variant.AS_IS)] == b"%2B8613800138000"
    # the varint needle is what a protobuf library writes for the number
    fdp = descriptor_pb2.FileDescriptorProto(name="v.proto", package="v", syntax="proto3")
    m = fdp.message_type.add(name="M")
    m.field.add(name="n", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_UINT64)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    cls = message_factory.GetMessageClass(pool.FindMessageTypeByName("v.M"))
    imei = "490154203237518"
    wire = bytes(cls(n=int(imei)).SerializeToString())
    assert wire == b"\x08" + _patterns({"imei": imei})[((E.VARINT,), Variant.AS_IS)]


def test_short_and_empty_values_are_dropped_and_reported() -> None:
    ns = build_needles({"pin": "1234", "empty": " ", "ok": "abcdefgh"})
    assert all(len(n.pattern) >= 6 for n in ns.needles)
    dropped = {(d.identifier, d.chain) for d in ns.dropped}
    assert ("pin", (E.PLAIN,)) in dropped
    assert ("empty", (E.PLAIN,)) in dropped
    assert any(n.identifier == "pin" and n.chain == (E.MD5_HEX,) for n in ns.needles)
    assert ns.summary()["dropped"]
    assert not [d for d in ns.dropped if d.identifier == "ok" and d.chain == (E.PLAIN,)]


def test_parse_identifier() -> None:
    assert parse_identifier("imei=352099001234567") == ("imei", "352099001234567")
    assert parse_identifier(" x = a=b ") == ("x", "a=b")
    for bad in ("imei", "=1", "imei="):
        with pytest.raises(ValueError, match="NAME=VALUE"):
            parse_identifier(bad)


@settings(max_examples=200, deadline=None)
@given(prefix=st.binary(max_size=7), value=st.binary(min_size=6, max_size=40), suffix=st.binary())
def test_a_base64_core_survives_any_surroundings(
    prefix: bytes, value: bytes, suffix: bytes
) -> None:
    for urlsafe, enc in ((False, base64.b64encode), (True, base64.urlsafe_b64encode)):
        blob = enc(prefix + value + suffix)
        assert any(core in blob for core in base64_cores(value, urlsafe=urlsafe))


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_pass_finds_overlapping_needles_of_several_identifiers(backend: str) -> None:
    ns = build_needles({"a": "ABCDEF123", "b": "DEF123XYZ", "c": "\x00raw\x00bytes"})
    m = Matcher(ns, backend=backend, markers=(b"\x1f\x8b\x08",))
    data = b"..ABCDEF123XYZ..\x00raw\x00bytes..\x1f\x8b\x08"
    found = m.find(data)
    spans = {(h.needle.identifier, h.start, h.end, h.needle.chain) for h in found.hits}
    assert ("a", 2, 11, (E.PLAIN,)) in spans
    assert ("b", 5, 14, (E.PLAIN,)) in spans
    assert ("c", 16, 26, (E.PLAIN,)) in spans
    assert found.markers == ((len(data) - 3, 0),)
    assert m.any(data) and not m.any(b"nothing here at all")


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_hit_inside_a_longer_hit_of_the_same_identifier_is_dropped(backend: str) -> None:
    m = Matcher(build_needles({"phone": "+8613800138000", "v": "abcdefg"}), backend=backend)
    hits = m.find(b"tel=+8613800138000;b=" + base64.b64encode(b"abcdefg")).hits
    assert [(h.needle.identifier, h.needle.chain, h.needle.variant) for h in hits] == [
        ("phone", (E.PLAIN,), Variant.AS_IS),
        ("v", (E.BASE64,), Variant.AS_IS),  # not its unpadded prefix, nor a base64 core
    ]


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32))
def test_both_backends_agree(seed: int) -> None:
    rnd = random.Random(seed)
    ids = {f"id{i}": rnd.randbytes(rnd.randint(6, 20)).hex() for i in range(3)}
    ns = build_needles(ids)
    needles = [n.pattern for n in ns.needles]
    parts = [os.urandom(rnd.randint(0, 50)) + rnd.choice(needles) for _ in range(20)]
    data = b"".join(parts)
    a, b = (Matcher(ns, backend=k).find(data) for k in BACKENDS)
    assert a.hits == b.hits
    assert len(a.hits) >= 1


def test_max_hits_truncates() -> None:
    m = Matcher([Needle("x", b"abcdef", (E.PLAIN,))], max_hits=10)
    found = m.find(b"abcdef" * 50)
    assert found.truncated and len(found.hits) == 10


def test_unknown_backend() -> None:
    with pytest.raises(ValueError, match="backend"):
        Matcher(build_needles({"x": "abcdefgh"}), backend="grep")
