"""Google's protobuf uploads read by schema (auditor.analysis.gproto, and its use by the payload
walker), tested on bodies the protobuf library encoded from the UPSTREAM definitions
(tests/data/gproto/PROVENANCE.md), plus truncated and mutated copies of them."""

from __future__ import annotations

import gzip
import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2
from google.protobuf.internal.encoder import _VarintBytes  # the library's own varint writer

from auditor.analysis import gproto
from auditor.analysis.payload import Body, Part, Scanner, WarningKind, decoded_view

DATA = Path(__file__).parents[1] / "data" / "gproto"
EXPECTED = json.loads((DATA / "expected.json").read_text())
CLEARCUT = "https://play.googleapis.com/log/batch"
CHECKIN = "https://android.clients.google.com/checkin"
MEASUREMENT = "https://app-measurement.com/a"
URLS = {
    "checkin.bin": CHECKIN,
    "clearcut.bin": CLEARCUT,
    "clearcut_batched.bin": CLEARCUT,
    "measurement.bin": MEASUREMENT,
}
IDS = {
    "imei": "358240051111110",
    "android_id": "3f2a9c41d07be815",
    "serial": "28161FDH2001Q7",
    "wifi_mac": "A4:C3:F0:E1:B2:D9",
    "advertising_id": "6d1c4b2e-0f3a-4e8b-9c7d-2a5b8e1f4c90",
}


@pytest.fixture(scope="module")
def scanner() -> Scanner:
    return Scanner(IDS)


def _body(name: str) -> bytes:
    return (DATA / name).read_bytes()


def _decode(name: str) -> gproto.Decoded:
    ep = gproto.endpoint_for(URLS[name])
    assert ep is not None
    return gproto.decode(_body(name), ep.messages)


@pytest.mark.parametrize("name", sorted(URLS))
def test_upstream_encoded_bodies_read_into_named_fields(name: str) -> None:
    got = _decode(name)
    want = EXPECTED[name]
    assert got.message == want["message"]
    values = {f.path: f.value.decode() for f in got.fields if f.kind is not gproto.FieldKind.BYTES}
    for path, value in want["fields"].items():
        assert values.get(path) == value, path
    assert got.unknown == 0  # the upstream definitions name nothing auditor's do not


def test_log_source_names_of_a_batch() -> None:
    assert _decode("clearcut.bin").values("log_source_name") == ["ANDROID_OTA"]
    assert _decode("clearcut_batched.bin").values("log_source_name") == [
        "ANDROID_OTA",
        "GMS_CORE_PEOPLE",
    ]


def test_endpoints() -> None:
    assert (
        gproto.endpoint_for("https://play.googleapis.com/log/batch?format=raw").name == "clearcut"
    )
    assert gproto.endpoint_for("https://region1.app-measurement.com/a").name == (
        "firebase-analytics"
    )
    assert gproto.endpoint_for("https://app-measurement.com/config/app/1") is None
    assert gproto.endpoint_for("https://evil-app-measurement.com/a") is None
    assert gproto.endpoint_for("https://android.clients.google.com/fdfe/sync") is None
    assert gproto.endpoint_for("http://[::1") is None


def test_unknown_fields_stay_visible_by_number() -> None:
    """GMS's Clearcut client sends fields Google's published subset does not name (an
    AndroidClientInfo field 1 holding a number, say): they show as pb:N where they sit."""
    aci = gproto.message_class("auditor.gproto.clearcut.AndroidClientInfo")(model="Pixel 7")
    inner = aci.SerializeToString() + b"\x08" + _VarintBytes(0x3F2A9C41D07BE815)
    info = b"\x12" + _VarintBytes(len(inner)) + inner
    extra = b"\xca\x06" + _VarintBytes(5) + b"hello"  # field 105, length-delimited
    body = b"\x0a" + _VarintBytes(len(info)) + info + _body("clearcut.bin") + extra
    got = gproto.decode(body, gproto.endpoint_for(CLEARCUT).messages)
    by_path = {f.path: f for f in got.fields}
    assert by_path["client_info.android_client_info.pb:1"].integer == 0x3F2A9C41D07BE815
    assert by_path["pb:105"].value == b"hello"
    assert got.unknown == 2
    res = Scanner(IDS).scan_flow(CLEARCUT, [], [Body(body)])
    assert "client_info.android_client_info.pb:1 (hex)" in {m.detail for m in res.matches}


def test_scanner_names_the_fields_identifiers_sit_in(scanner: Scanner) -> None:
    where: dict[str, set[tuple[str, str]]] = {}
    for name, url in URLS.items():
        res = scanner.scan_flow(url, [], [Body(gzip.compress(_body(name)), "gzip")])
        assert not res.warnings
        assert [d.message for d in res.decoded] == [EXPECTED[name]["message"]]
        where[name] = {(m.identifier, m.detail) for m in res.matches}
    assert where["checkin.bin"] == {
        ("imei", "imei"),
        ("android_id", "android_id (hex)"),
        ("serial", "serial"),
        ("wifi_mac", "mac_address[0]"),
    }
    assert where["clearcut.bin"] == {("advertising_id", "log_event[0].source_extension|pb:3")}
    assert ("advertising_id", "log_request[0].log_event[0].source_extension|pb:3") in where[
        "clearcut_batched.bin"
    ]
    assert where["measurement.bin"] == {("advertising_id", "bundle[0].resettable_device_id")}


def test_reading_is_listed_with_its_citation(scanner: Scanner) -> None:
    res = scanner.scan_flow(CLEARCUT, [], [Body(_body("clearcut_batched.bin"))])
    (reading,) = res.decoded
    d = reading.to_dict()
    assert d["log_sources"] == ["ANDROID_OTA", "GMS_CORE_PEOPLE"]
    assert "google_cct.proto" in d["citation"]
    assert d["unknown_fields"] == 0
    assert {"path": "log_request[1].log_source_name", "kind": "string"}.items() <= {
        **next(s for s in d["sample"] if s["path"] == "log_request[1].log_source_name")
    }.items()
    assert res.to_dict()["decoded"] == [d]


def test_response_bodies_and_other_hosts_are_not_read_by_schema(scanner: Scanner) -> None:
    body = _body("checkin.bin")
    res = scanner.scan_flow(CHECKIN, [], [Body(body, part=Part.RESPONSE)])
    assert res.decoded == ()
    res = scanner.scan_flow("https://example.org/checkin", [], [Body(body)])
    assert res.decoded == ()
    assert {m.detail for m in res.matches} >= {"pb:1", "pb:16"}  # the schema-less names


def test_json_to_a_protobuf_endpoint_is_read_as_json(scanner: Scanner) -> None:
    body = json.dumps({"adid": IDS["advertising_id"]}).encode()
    res = scanner.scan_flow(CLEARCUT, [], [Body(body, None, "application/json")])
    assert not res.warnings and not res.decoded
    assert {m.detail for m in res.matches} == {"$.adid"}


@pytest.mark.parametrize("name", sorted(URLS))
def test_truncated_bodies_warn_and_still_find(name: str) -> None:
    """A cut inside a field is a counted warning and a schema-less walk; a cut that happens to
    fall between fields leaves a shorter valid message (protobuf cannot tell)."""
    body = _body(name)
    scanner = Scanner(IDS)
    cuts = (1, 3, 5, len(body) // 3, len(body) // 2)
    for cut in cuts:
        res = scanner.scan_flow(URLS[name], [], [Body(body[:-cut])])
        assert [w.kind for w in res.warnings] in ([], [WarningKind.SCHEMA_DECODE]), cut
        assert len(res.decoded) + res.count(WarningKind.SCHEMA_DECODE) == 1
        if res.warnings:
            assert "read without its definition" in res.warnings[0].message
    assert scanner.warning_counts[WarningKind.SCHEMA_DECODE] >= 3
    # what sits before the cut is still found (schema-less, or as raw bytes)
    whole = {m.identifier for m in scanner.scan_flow(URLS[name], [], [Body(body)]).matches}
    part = {m.identifier for m in scanner.scan_flow(URLS[name], [], [Body(body[:-1])]).matches}
    assert whole and whole - part <= {"android_id"}  # an int64 only a schema reading shows


def test_mutated_bodies_never_crash() -> None:
    rng = random.Random(18)
    scanner = Scanner(IDS)
    for name, url in URLS.items():
        body = bytearray(_body(name))
        for _ in range(60):
            mutated = bytearray(body)
            for _ in range(rng.randint(1, 4)):
                mutated[rng.randrange(len(mutated))] = rng.randrange(256)
            res = scanner.scan_flow(url, [], [Body(bytes(mutated))])
            assert len(res.decoded) + res.count(WarningKind.SCHEMA_DECODE) == 1
            decoded_view(bytes(mutated), url=url)
    assert scanner.warning_counts[WarningKind.SCHEMA_DECODE] > 0


def test_field_budget_is_a_schema_warning() -> None:
    ep = gproto.endpoint_for(CHECKIN)
    with pytest.raises(gproto.SchemaError, match="field budget"):
        gproto.decode(_body("checkin.bin"), ep.messages, max_fields=10)


def test_deeply_nested_unknown_groups_do_not_crash() -> None:
    body = b"\x0b" * 5000 + b"\x0c" * 5000  # field 1 start-group nested 5000 deep
    res = Scanner(IDS).scan_flow(CLEARCUT, [], [Body(body)])
    assert res.count(WarningKind.SCHEMA_DECODE) + len(res.decoded) == 1


def test_decoded_view_names_leaves_by_schema() -> None:
    view = decoded_view(
        gzip.compress(_body("measurement.bin")), content_encoding="gzip", url=MEASUREMENT
    )
    leaves = {leaf.path: leaf for leaf in view.leaves}
    assert leaves["bundle[0].app_instance_id"].data == b"2f0c8d5a9e1b4c7d8a3f6e0b1c2d3e4f"
    assert leaves["bundle[0].app_instance_id"].name == "app_instance_id"
    assert leaves["bundle[0].app_instance_id"].encoding == "gzip > protobuf"
    assert leaves["bundle[0].event[0].param[1].int_value"].data == b"1709251200"
    assert not view.warnings
    bad = decoded_view(_body("measurement.bin")[:-3], url=MEASUREMENT)
    assert any("read without its definition" in w for w in bad.warnings)


def test_descriptor_set_matches_the_proto_files() -> None:
    """schemas.desc is what protoc makes of protos/ (docs/protobuf.md says how)."""
    if shutil.which("protoc") is None:
        try:
            import grpc_tools  # noqa: F401
        except ImportError:
            pytest.skip("neither protoc nor grpcio-tools is installed")
        cmd = [sys.executable, "-m", "grpc_tools.protoc"]
    else:
        cmd = ["protoc"]
    pkg = Path(gproto.__file__).parent
    protos = sorted(p.name for p in (pkg / "protos").glob("*.proto"))
    out = subprocess.run(
        [*cmd, "-I", str(pkg / "protos"), "--descriptor_set_out=/dev/stdout", *protos],
        capture_output=True,
        check=True,
    ).stdout
    fresh = descriptor_pb2.FileDescriptorSet.FromString(out)
    shipped = descriptor_pb2.FileDescriptorSet.FromString((pkg / "schemas.desc").read_bytes())
    assert {f.name: f for f in fresh.file} == {f.name: f for f in shipped.file}


def test_a_missing_definition_is_a_schema_error_not_a_crash() -> None:
    with pytest.raises(gproto.SchemaError, match="not available"):
        gproto.decode(_body("checkin.bin"), ["auditor.gproto.checkin.Missing"])


def test_a_string_field_that_is_not_utf8_is_walked_as_bytes(scanner: Scanner) -> None:
    """A proto2 ``string`` field holding bytes that are not UTF-8 (gzip of JSON in a
    LogRequest's log_source_name, field 6, as a hostile app could send it): the schema reading
    walks its bytes as the schema-less walk does, so the IMEI inside is found there too, under
    the field's name, and never scanned as a Python repr."""
    inner = gzip.compress(json.dumps({"imei": IDS["imei"]}).encode())
    body = bytes([6 << 3 | 2]) + _VarintBytes(len(inner)) + inner + b"\x10\x05"
    got = {}
    for url in (CLEARCUT, "https://example.com/log/batch"):
        res = scanner.scan_flow(url, [], [Body(body, content_type="application/x-protobuf")])
        got[url] = {(m.identifier, m.detail, m.encoding) for m in res.matches}
    assert got[CLEARCUT] == {("imei", "log_source_name|$.imei", "protobuf > gzip > json > plain")}
    assert got["https://example.com/log/batch"] == {
        ("imei", "pb:6|$.imei", "protobuf > gzip > json > plain")
    }
