"""--decrypt rules (auditor.analysis.decrypt) and their use by the payload Scanner, on
ciphertexts made by the ``cryptography`` package directly and by ``openssl enc``."""

from __future__ import annotations

import base64
import gzip
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from auditor.analysis import decrypt
from auditor.analysis.payload import Body, Part, Scanner, WarningKind
from auditor.errors import AuditorError

ROOT = Path(__file__).parents[2]
IMEI = "358240051111110"
PLAIN = json.dumps({"imei": IMEI, "events": [{"e": "screen_on"}]}).encode()
KEY = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
KEY256 = bytes(range(100, 132))
URL = "https://stats.vendor.example/v2/upload?n=1"


def _cbc(plain: bytes, key: bytes, iv: bytes) -> bytes:
    p = padding.PKCS7(128).padder()
    enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return enc.update(p.update(plain) + p.finalize()) + enc.finalize()


def _ecb(plain: bytes, key: bytes) -> bytes:
    p = padding.PKCS7(128).padder()
    enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()  # noqa: S305
    return enc.update(p.update(plain) + p.finalize()) + enc.finalize()


def _rules(**rule: object) -> decrypt.Rules:
    base: dict[str, object] = {"name": "r", "host": "stats.vendor.example"}
    return decrypt.parse_rules(json.dumps({"rules": [{**base, **rule}]}))


def _found(rules: decrypt.Rules, body: Body, headers=(), url: str = URL):
    scanner = Scanner({"imei": IMEI}, decrypt=rules)
    res = scanner.scan_flow(url, headers, [body], method="POST")
    return {(m.identifier, m.detail) for m in res.matches}, res, scanner


def test_cbc_with_the_iv_in_front_base64() -> None:
    iv = os.urandom(16)
    body = base64.b64encode(iv + _cbc(PLAIN, KEY, iv))
    rules = _rules(
        cipher="aes-cbc",
        key={"hex": KEY.hex()},
        iv={"prefix": 16},
        body="base64",
        citation="a write-up",
    )
    found, res, _ = _found(rules, Body(body, None, "text/plain"))
    assert found == {("imei", "decrypted:r|$.imei")}
    (d,) = res.decrypted
    assert d.to_dict() == {
        "part": "request",
        "rule": "r",
        "cipher": "aes-cbc",
        "citation": "a write-up",
        "plaintext_bytes": len(PLAIN),
    }
    assert not res.warnings


def test_cbc_iv_in_a_header_or_query_gzip_content_encoding() -> None:
    iv = os.urandom(16)
    wire = gzip.compress(_cbc(PLAIN, KEY256, iv))
    rules = _rules(
        cipher="aes-cbc",
        key="base64:" + base64.b64encode(KEY256).decode(),
        iv={"header": "X-Iv", "encoding": "hex"},
    )
    found, _, _ = _found(rules, Body(wire, "gzip"), headers=[["X-IV", iv.hex()]])
    assert found == {("imei", "decrypted:r|$.imei")}
    rules = _rules(
        cipher="aes-cbc",
        key={"base64": base64.b64encode(KEY256).decode()},
        iv={"query": "iv", "encoding": "base64"},
    )
    url = URL + "&iv=" + base64.urlsafe_b64encode(iv).decode().rstrip("=")
    found, _, _ = _found(rules, Body(wire, "gzip"), url=url)
    assert found == {("imei", "decrypted:r|$.imei")}


def test_ecb_hex_in_a_form_field_and_a_json_key() -> None:
    ct = _ecb(PLAIN, KEY).hex()
    rules = _rules(cipher="aes-ecb", key={"hex": KEY.hex()}, body="hex", field="d")
    form = Body(f"v=2&d={ct}".encode(), None, "application/x-www-form-urlencoded")
    found, _, _ = _found(rules, form)
    assert found == {("imei", "decrypted:r|$.imei")}
    found, _, _ = _found(rules, Body(json.dumps({"v": 2, "d": ct}).encode()))
    assert found == {("imei", "decrypted:r|$.imei")}
    _, res, _ = _found(rules, Body(b"v=2&e=00"))
    assert "no field 'd'" in res.warnings[0].message


def test_gcm_nonce_in_front_tag_behind_with_aad() -> None:
    nonce = os.urandom(12)
    sealed = AESGCM(KEY256).encrypt(nonce, PLAIN, b"v1")
    rules = _rules(cipher="aes-gcm", key={"hex": KEY256.hex()}, aad={"text": "v1"})
    found, _, _ = _found(rules, Body(nonce + sealed))
    assert found == {("imei", "decrypted:r|$.imei")}
    # the nonce in a header instead
    rules = _rules(
        cipher="aes-gcm",
        key={"hex": KEY256.hex()},
        aad="text:v1",
        nonce={"header": "X-Nonce", "encoding": "base64"},
    )
    hdr = [["x-nonce", base64.b64encode(nonce).decode()]]
    found, _, _ = _found(rules, Body(sealed), headers=hdr)
    assert found == {("imei", "decrypted:r|$.imei")}


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda: base64.b64encode(os.urandom(16) + _cbc(PLAIN, bytes(16), b"\0" * 16)), "wrong"),
        (lambda: base64.b64encode(os.urandom(16) + _cbc(PLAIN, KEY, b"\0" * 16)[:-3]), "blocks"),
        (lambda: b"not base64 at all!", "not base64"),
    ],
)
def test_wrong_key_padding_or_layout_is_a_counted_warning(make, message) -> None:
    rules = _rules(cipher="aes-cbc", key={"hex": KEY.hex()}, iv={"prefix": 16}, body="base64")
    plain_id = json.dumps({"imei": IMEI}).encode()
    scanner = Scanner({"imei": IMEI}, decrypt=rules)
    res = scanner.scan_flow(
        URL, [], [Body(make()), Body(plain_id, part=Part.RESPONSE)], method="POST"
    )
    (w,) = res.warnings
    assert w.kind is WarningKind.DECRYPT_ERROR and w.detail == "decrypted:r"
    assert message in w.message and "scanned as captured" in w.message
    assert scanner.warning_counts[WarningKind.DECRYPT_ERROR] == 1
    assert res.decrypted == ()
    # the analysis goes on: the other body of the flow is still scanned
    assert {(m.part, m.detail) for m in res.matches} == {(Part.RESPONSE, "$.imei")}


def test_gcm_with_a_wrong_tag_is_a_warning() -> None:
    nonce = os.urandom(12)
    sealed = bytearray(AESGCM(KEY256).encrypt(nonce, PLAIN, None))
    sealed[-1] ^= 1
    rules = _rules(cipher="aes-gcm", key={"hex": KEY256.hex()})
    _, res, _ = _found(rules, Body(nonce + bytes(sealed)))
    assert [w.kind for w in res.warnings] == [WarningKind.DECRYPT_ERROR]
    assert "tag does not verify" in res.warnings[0].message


def test_rules_match_by_host_glob_url_method_and_part() -> None:
    k = KEY.hex()
    rules = decrypt.parse_rules(
        f"""
rules:
  - {{name: a, host: "*.vendor.example", method: POST, cipher: aes-ecb, key: "hex:{k}"}}
  - {{name: b, url: "^https://other\\\\.example/up", part: both, cipher: aes-ecb, key: "hex:{k}"}}
"""
    )
    assert rules.rule_for(URL, "POST").name == "a"
    assert rules.rule_for(URL, "GET") is None
    assert rules.rule_for(URL, "POST", "response") is None
    assert rules.rule_for("https://vendor.example.evil/x", "POST") is None
    assert rules.rule_for("https://other.example/up/1", None, "response").name == "b"
    assert rules.rule_for("https://x.test/?u=https://other.example/up") is None


@pytest.mark.parametrize(
    "rule,message",
    [
        ({"cipher": "aes-ecb", "key": "hex:00"}, "needs a name"),
        ({"name": "x", "cipher": "aes-ecb", "key": "hex:" + KEY.hex()}, "host or a url"),
        ({"name": "x", "host": "h", "cipher": "des", "key": "hex:" + KEY.hex()}, "cipher is"),
        ({"name": "x", "host": "h", "cipher": "aes-ecb", "key": "hex:0011"}, "2 bytes"),
        ({"name": "x", "host": "h", "cipher": "aes-ecb", "key": "hex:zz"}, "not hex"),
        ({"name": "x", "host": "h", "cipher": "aes-cbc", "key": "hex:" + KEY.hex()}, "needs an iv"),
        (
            {
                "name": "x",
                "host": "h",
                "cipher": "aes-ecb",
                "key": "hex:" + KEY.hex(),
                "iv": {"prefix": 16},
            },
            "takes no iv",
        ),
        (
            {
                "name": "x",
                "host": "h",
                "cipher": "aes-ecb",
                "key": "hex:" + KEY.hex(),
                "colour": "red",
            },
            "unknown setting",
        ),
        (
            {
                "name": "x",
                "host": "h",
                "cipher": "aes-ecb",
                "key": "hex:" + KEY.hex(),
                "url": "(unclosed",
            },
            "rule 1",
        ),
    ],
)
def test_malformed_rules_name_the_rule(rule, message) -> None:
    with pytest.raises(decrypt.DecryptRulesError, match="rule 1") as exc:
        decrypt.parse_rules(json.dumps({"rules": [rule]}), "f.yaml")
    assert message in str(exc.value)
    assert isinstance(exc.value, AuditorError)


def test_rules_file_errors(tmp_path: Path) -> None:
    with pytest.raises(decrypt.DecryptRulesError, match="cannot read"):
        decrypt.load_rules(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules: [")
    with pytest.raises(decrypt.DecryptRulesError, match="not YAML at line 1, column 9") as exc:
        decrypt.load_rules(bad)
    assert "\n" not in str(exc.value)  # one line, where the file goes wrong
    bad.write_text("rules: []")
    with pytest.raises(decrypt.DecryptRulesError, match="non-empty list"):
        decrypt.load_rules(bad)
    rule = {"name": "x", "host": "h", "cipher": "aes-ecb", "key": "hex:" + KEY.hex()}
    bad.write_text(json.dumps({"rules": [rule, rule]}))
    with pytest.raises(decrypt.DecryptRulesError, match="used twice"):
        decrypt.load_rules(bad)


def test_the_key_never_shows() -> None:
    rules = _rules(cipher="aes-ecb", key={"hex": KEY.hex()}, citation="c")
    assert KEY.hex() not in repr(rules) and "key" not in rules.rules[0].describe()


openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")


@openssl
def test_openssl_enc_cbc_and_ecb_ciphertexts() -> None:
    """An independent encryptor: the OpenSSL command line."""
    iv = os.urandom(16)
    cbc = subprocess.run(
        ["openssl", "enc", "-aes-256-cbc", "-K", KEY256.hex(), "-iv", iv.hex(), "-base64", "-A"],
        input=PLAIN,
        capture_output=True,
        check=True,
    ).stdout
    rules = _rules(
        cipher="aes-cbc",
        key={"hex": KEY256.hex()},
        body="base64",
        iv={"query": "iv", "encoding": "hex"},
    )
    found, _, _ = _found(rules, Body(cbc), url=URL + "&iv=" + iv.hex())
    assert found == {("imei", "decrypted:r|$.imei")}
    ecb = subprocess.run(
        ["openssl", "enc", "-aes-128-ecb", "-K", KEY.hex()],
        input=PLAIN,
        capture_output=True,
        check=True,
    ).stdout
    rules = _rules(cipher="aes-ecb", key={"hex": KEY.hex()})
    found, _, _ = _found(rules, Body(ecb, None, "application/octet-stream"))
    assert found == {("imei", "decrypted:r|$.imei")}


@openssl
def test_the_published_netease_rule_reads_an_openssl_ciphertext() -> None:
    """docs/examples/decrypt-published.yaml: gzip of base64 of AES-128-ECB, the layout its
    source describes, made here by openssl with the published key."""
    rules = decrypt.load_rules(ROOT / "docs" / "examples" / "decrypt-published.yaml")
    (rule,) = rules.rules
    assert "5992bd2b7bfe9822b24bf838bb31c727ecc97729" in rule.citation
    b64 = subprocess.run(
        ["openssl", "enc", "-aes-128-ecb", "-K", b"neteasemobiledat".hex(), "-base64", "-A"],
        input=json.dumps([{"i": {"imei": IMEI}}]).encode(),
        capture_output=True,
        check=True,
    ).stdout
    scanner = Scanner({"imei": IMEI}, decrypt=rules)
    res = scanner.scan_flow(
        "https://m.analytics.126.net/news/c", [], [Body(gzip.compress(b64))], method="POST"
    )
    assert {m.detail for m in res.matches} == {"decrypted:netease-mobile-analytics|$[0].i.imei"}
    assert res.decrypted[0].citation == rule.citation


def test_no_rules_no_change() -> None:
    iv = os.urandom(16)
    body = base64.b64encode(iv + _cbc(PLAIN, KEY, iv))
    res = Scanner({"imei": IMEI}).scan_flow(URL, [], [Body(body)])
    assert not res.matches and not res.decrypted and not res.warnings


def test_gcm_with_a_short_tag_decrypts_and_other_sizes_are_refused() -> None:
    """A 12-byte GCM tag (as the rule says, behind the ciphertext), sealed by ``cryptography``
    itself: read. Tag sizes GCM does not allow are refused when the file is read, and a
    number that is not one (YAML's .inf) is a one-line error, not a traceback."""
    nonce = os.urandom(12)
    enc = Cipher(algorithms.AES(KEY256), modes.GCM(nonce)).encryptor()
    sealed = enc.update(PLAIN) + enc.finalize()
    rules = _rules(cipher="aes-gcm", key={"hex": KEY256.hex()}, tag={"suffix": 12})
    found, _, _ = _found(rules, Body(nonce + sealed + enc.tag[:12]))
    assert found == {("imei", "decrypted:r|$.imei")}
    for size in (3, 17, 64):
        with pytest.raises(decrypt.DecryptRulesError, match="4 to 16"):
            _rules(cipher="aes-gcm", key={"hex": KEY256.hex()}, tag={"suffix": size})
    with pytest.raises(decrypt.DecryptRulesError, match="number of bytes"):
        decrypt.parse_rules(
            "rules:\n  - {name: r, host: h, cipher: aes-cbc, key: {hex: "
            + KEY.hex()
            + "}, iv: {prefix: .inf}}\n"
        )
