"""The virtual Xiaomi's vendor job encrypts with a key that docs/examples/decrypt-xiaomi-sim.yaml
names: with the rules the scanner finds the identifiers inside, without them it does not."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from auditor.analysis import decrypt
from auditor.analysis.payload import Body, Scanner
from vhandset.payloads import build_body, facts_from_profile
from vhandset.profiles import load_profile
from vhandset.traffic import load_plan

RULES = Path(__file__).parents[2] / "docs" / "examples" / "decrypt-xiaomi-sim.yaml"


@pytest.fixture(scope="module")
def upload() -> tuple[str, bytes, dict[str, str], dict[str, str]]:
    facts = facts_from_profile(load_profile("xiaomi-mi10t"))
    (job,) = [j for j in load_plan("xiaomi-mi10t").jobs if j.name == "mistat-aes-cbc-statistics"]
    assert job.request is not None
    body, headers = build_body(job.request.body, job.request.kind, None, facts)
    ids = {k: str(facts[k]) for k in ("imei", "android_id")}
    return job.request.url, body, headers, ids


def test_the_rules_file_reads_the_handsets_upload(upload) -> None:
    url, body, headers, ids = upload
    scanner = Scanner(ids, decrypt=decrypt.load_rules(RULES))
    res = scanner.scan_flow(url, [], [Body(body, None, headers["Content-Type"])], method="POST")
    assert {(m.identifier, m.detail) for m in res.matches} == {
        ("imei", "decrypted:xiaomi-sim-mistat|$.imei"),
        ("android_id", "decrypted:xiaomi-sim-mistat|$.android_id"),
    }
    assert [d.rule for d in res.decrypted] == ["xiaomi-sim-mistat"]
    plain = Scanner(ids).scan_flow(url, [], [Body(body, None, headers["Content-Type"])])
    assert not plain.matches


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
def test_openssl_decrypts_the_handsets_upload_with_the_named_key(upload) -> None:
    """The handset's encryption checked by an independent decryptor."""
    _, body, _, ids = upload
    raw = subprocess.run(
        ["openssl", "base64", "-d", "-A"], input=body, capture_output=True, check=True
    ).stdout
    (rule,) = decrypt.load_rules(RULES).rules
    out = subprocess.run(
        ["openssl", "enc", "-d", "-aes-128-cbc", "-K", rule.key.hex(), "-iv", raw[:16].hex()],
        input=raw[16:],
        capture_output=True,
        check=True,
    ).stdout
    assert ids["imei"].encode() in out
