import base64
import gzip
import hashlib
import json
from urllib.parse import parse_qs

import pytest

from auditor.decoders import decode
from vhandset.payloads import (
    TemplateError,
    build_body,
    facts_from_profile,
    protobuf,
    render,
    serialise,
)
from vhandset.profiles import load_profile

FACTS = {"imei": "864132058957347", "android_id": "5093efbfa90f7649", "packages": ["a.b", "c.d"]}


@pytest.mark.parametrize(
    "template,expected",
    [
        ("{{imei}}", "864132058957347"),
        ("id={{imei|url}}", "id=864132058957347"),
        ("{{imei|b64}}", base64.b64encode(b"864132058957347").decode()),
        ("{{imei|b64raw}}", base64.urlsafe_b64encode(b"864132058957347").decode().rstrip("=")),
        ("{{android_id|HEX}}", b"5093efbfa90f7649".hex().upper()),
        ("{{imei|md5}}", hashlib.md5(b"864132058957347").hexdigest()),
        ("{{imei|sha256}}", hashlib.sha256(b"864132058957347").hexdigest()),
        ("{{imei|md5|upper}}", hashlib.md5(b"864132058957347").hexdigest().upper()),
        ("{{packages}}", ["a.b", "c.d"]),
        ("{{packages|json|b64}}", base64.b64encode(b'["a.b", "c.d"]').decode()),
    ],
)
def test_placeholders_and_filters(template, expected) -> None:
    assert render(template, FACTS) == expected


def test_nested_and_errors() -> None:
    out = render({"d": {"{{android_id}}": ["{{imei|sha1}}", 3]}}, FACTS)
    assert out == {"d": {"5093efbfa90f7649": [hashlib.sha1(b"864132058957347").hexdigest(), 3]}}
    with pytest.raises(TemplateError):
        render("{{nope}}", FACTS)
    with pytest.raises(TemplateError):
        render("{{imei|rot13}}", FACTS)


def test_bodies_and_encodings() -> None:
    body, headers = build_body({"imei": "{{imei}}"}, "json", "gzip", FACTS)
    assert headers == {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    assert json.loads(gzip.decompress(body)) == {"imei": "864132058957347"}
    for enc in ("deflate", "br", "zstd"):
        body, _ = build_body({"imei": "{{imei}}"}, "json", enc, FACTS)
        assert b"864132058957347" in decode(body, enc).data
    form, h = serialise({"a": "1 2", "l": [1]}, "form")
    assert parse_qs(form.decode()) == {"a": ["1 2"], "l": ["[1]"]}
    mp, h = serialise({"x": "{}"}, "multipart")
    assert h.startswith("multipart/form-data; boundary=") and b'name="x"' in mp


def test_protobuf_wire_format() -> None:
    assert protobuf({"a": 150}) == b"\x08\x96\x01"
    assert protobuf({"a": "hi"}) == b"\x0a\x02hi"
    assert protobuf({"a": {"b": 1}}) == b"\x0a\x02\x08\x01"


def test_encrypted_is_high_entropy_and_hides_the_identifier() -> None:
    body, h = serialise({"imei": FACTS["imei"], "events": list(range(200))}, "encrypted")
    assert FACTS["imei"].encode() not in body
    assert len(set(body)) > 200 and h == "application/octet-stream"


def test_facts_from_shipped_profile() -> None:
    facts = facts_from_profile(load_profile("xiaomi-mi10t"))
    assert facts["imei"] and facts["android_id"] and "com.miui.analytics" in facts["packages"]
    assert facts["model"] == "M2007J3SG"
