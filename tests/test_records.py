import dataclasses
import json
from pathlib import Path

import pytest

from auditor import records as r

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _samples() -> list[r.Record]:
    body = r.BodyRef(sha256="ab" * 32, size=10, wire_size=10, encoding="gzip", decoded_size=30)
    return [
        r.HttpRecord(
            id="f1",
            method="POST",
            scheme="https",
            host="api.ad.xiaomi.com",
            port=443,
            path="/u?a=1",
            url="https://api.ad.xiaomi.com/u?a=1",
            request_headers=(("Host", "api.ad.xiaomi.com"), ("X-Id", "ü")),
            request_body=body,
            status=200,
            response_headers=(("Content-Type", "application/json"),),
            sni="api.ad.xiaomi.com",
        ),
        r.TlsFailedRecord(
            id="t1",
            ts="2026-01-01T00:00:00.000000Z",
            side="client",
            client_ip="127.0.0.1",
            client_port=5,
            sni="pinned.example",
            error="unknown ca",
            alpn_offers=("h2",),
        ),
        r.WebSocketMessageRecord(
            id="w1:1",
            flow_id="w1",
            ts="2026-01-01T00:00:00.000000Z",
            from_client=True,
            is_text=True,
            host="h",
            url="wss://h/",
            body=body,
        ),
        r.DnsRecord(
            id="d1",
            ts="2026-01-01T00:00:00.000000Z",
            qname="tracking.miui.com",
            qtype="A",
            answers=(r.DnsAnswer("tracking.miui.com", "A", "203.0.113.5", 60),),
        ),
        r.EventRecord(ts="2026-01-01T00:00:00.000000Z", kind="step", data={"n": 1}),
        r.TlsServerRecord(
            id="s1",
            ts="2026-01-01T00:00:00.000000Z",
            host="api.ad.xiaomi.com",
            port=443,
            server_ip="203.0.113.5",
            server_port=443,
            sni="api.ad.xiaomi.com",
            tls_version="TLSv1.3",
            alpn="h2",
            cipher="TLS_AES_128_GCM_SHA256",
            certificates=(LEAF, r.CertificateInfo(sha256="cd" * 32, subject_cn="Root", error="x")),
            chain_length=3,
        ),
    ]


LEAF = r.CertificateInfo(
    sha256="ab" * 32,
    subject_o="Xiaomi Inc.",
    subject_cn="*.ad.xiaomi.com",
    subject_c="CN",
    dns_names=("*.ad.xiaomi.com", "ad.xiaomi.com"),
    issuer_o="DigiCert Inc",
    issuer_cn="DigiCert Global G2 TLS RSA SHA256 2020 CA1",
    not_before="2025-01-01T00:00:00.000000Z",
    not_after="2026-01-31T23:59:59.000000Z",
)


@pytest.mark.parametrize("rec", _samples(), ids=lambda x: x.TYPE.value)
def test_round_trip(rec: r.Record) -> None:
    line = r.dumps(rec)
    assert "\n" not in line
    assert json.loads(line)["type"] == rec.TYPE.value
    assert r.loads(line) == rec


def test_unknown_keys_are_ignored_and_missing_required_fails() -> None:
    obj = r.record_to_dict(_samples()[0]) | {"added_later": 1}
    assert r.record_from_dict(obj) == _samples()[0]
    with pytest.raises(r.RecordFormatError):
        r.record_from_dict({"type": "http", "id": "x"})
    with pytest.raises(r.RecordFormatError):
        r.loads('{"type": "nonsense"}')
    with pytest.raises(r.RecordFormatError):
        r.loads("{not json")
    with pytest.raises(r.RecordFormatError):
        r.loads("[1, 2]")


def test_header_bytes_keep_every_byte() -> None:
    assert r.decode_header_bytes("é".encode()) == "é"
    raw = b"\xff\xfe\x80abc"
    assert r.decode_header_bytes(raw).encode("latin-1") == raw


def test_schema_documents_every_field() -> None:
    schema = json.loads((DOCS / "records.schema.json").read_text())
    defs = schema["$defs"]
    for type_name, cls in r.RECORD_CLASSES.items():
        d = defs[type_name]
        documented = set(d["properties"]) - {"type"}
        actual = {f.name for f in dataclasses.fields(cls)}
        assert documented == actual, type_name
    assert set(defs["body"]["properties"]) == set(r.BodyRef.__dataclass_fields__)
    assert set(defs["dns_answer"]["properties"]) == set(r.DnsAnswer.__dataclass_fields__)
    assert set(defs["certificate"]["properties"]) == set(r.CertificateInfo.__dataclass_fields__)
    assert {x["$ref"].rsplit("/", 1)[1] for x in schema["oneOf"]} == set(r.RECORD_CLASSES)


def test_a_line_written_before_server_certificates_still_reads() -> None:
    """Sessions recorded before ``tls_server`` and ``server_conn_id`` existed (this line is
    one, as the recorder of that time wrote it)."""
    old = (
        '{"type":"http","id":"f","method":"GET","scheme":"https","host":"h","port":443,'
        '"path":"/","url":"https://h/","sni":"h","proxy_mode":"regular"}'
    )
    rec = r.loads(old)
    assert isinstance(rec, r.HttpRecord) and rec.server_conn_id is None
    failed = r.loads(
        '{"type":"tls_failed","id":"t","ts":"2026-01-01T00:00:00.000000Z","side":"client",'
        '"client_ip":null,"client_port":null,"sni":"p","error":"e"}'
    )
    assert isinstance(failed, r.TlsFailedRecord) and failed.server_conn_id is None


def test_certificates_are_checked_like_the_record_itself() -> None:
    line = json.loads(r.dumps(_samples()[-1]))
    assert r.record_from_dict(line).certificates[0] == LEAF  # type: ignore[union-attr]
    line["certificates"][0]["dns_names"] = ["ok", 5]
    with pytest.raises(r.RecordFormatError, match="dns_names"):
        r.record_from_dict(line)
    line["certificates"][0] = {"subject_o": "no hash"}
    with pytest.raises(r.RecordFormatError, match="sha256"):
        r.record_from_dict(line)
    bad = dataclasses.replace(LEAF, subject_o=7)  # type: ignore[arg-type]
    with pytest.raises(r.RecordFormatError, match="subject_o"):
        r.validate(dataclasses.replace(_samples()[-1], certificates=(bad,)))  # type: ignore[arg-type]


def test_samples_validate_against_schema() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((DOCS / "records.schema.json").read_text())
    for rec in _samples():
        jsonschema.validate(r.record_to_dict(rec), schema)
