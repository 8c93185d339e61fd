"""Evidence bundles: what goes in, that the same input gives the same bytes, that every kind of
tampering is named, that hostile archives are refused, that a bundle unpacks to a session
which analyses to the same findings, and the custody log the CLI keeps."""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import tarfile
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from auditor.cli import main
from auditor.evidence import EvidenceError
from auditor.evidence.archive import ArchiveLimits, UnsafeArchiveError
from auditor.evidence.bundle import (
    BUNDLE_JSON,
    BUNDLE_SIG,
    build_bundle,
    unpack_bundle,
    verify_bundle,
)
from auditor.evidence.custody import parse_log
from auditor.evidence.signing import (
    KeyPair,
    SignatureStatus,
    generate_keypair,
    load_private_key,
    load_public_key,
)
from auditor.evidence.verify import verify_session
from auditor.imports.session import import_files
from auditor.session import CUSTODY, FLOWS, MANIFEST, read_manifest
from tests.evidence.conftest import (
    IMEI,
    SCENARIO,
    analyse_to,
    file_member,
    make_session,
    rewrite_bundle,
)

SAMPLES = Path(__file__).parents[1] / "imports" / "samples"
ENV: dict[str, Any] = {
    "versions": {"auditor": "test"},
    "knowledge_base": {"kb_version": "test"},
    "ip_database": [],
}


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def _bundle(session: Path, report: Path | None, key: KeyPair | None, out: Path) -> Path:
    build_bundle(
        session,
        out,
        report=report,
        key=load_private_key(key.private) if key else None,
        operator="Jane Doe",
        created_at="2026-11-28T12:00:00.000000Z",
        environment=ENV,
    )
    return out


@pytest.fixture
def signed(session: Path, report: Path, keypair: KeyPair, tmp_path: Path) -> Path:
    return _bundle(session, report, keypair, tmp_path / "b.tar.gz")


def _root(session: Path) -> str:
    return f"captures/{session.name}"


# ------------------------------------------------------------------------------------- making


def test_bundle_contents(session: Path, report: Path, keypair: KeyPair, tmp_path: Path) -> None:
    res = run(
        "bundle", session, "--report", report, "--sign", keypair.private,
        "--out", tmp_path / "b.tar.gz", "--operator", "Jane Doe", "--json",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    bundle = tmp_path / "b.tar.gz"
    assert out["sha256"] == hashlib.sha256(bundle.read_bytes()).hexdigest()
    assert out["signed_by"] == keypair.fingerprint
    assert stat.S_IMODE(bundle.stat().st_mode) == 0o600
    with tarfile.open(bundle) as tf:
        members = {ti.name: tf.extractfile(ti).read() for ti in tf.getmembers()}  # type: ignore[union-attr]
        infos = tf.getmembers()
    assert [ti.name for ti in infos[:2]] == [BUNDLE_JSON, BUNDLE_SIG]
    assert all(ti.isreg() and ti.mode == 0o600 and ti.uid == 0 for ti in infos)
    doc = json.loads(members[BUNDLE_JSON])
    root = _root(session)
    manifest = read_manifest(session)
    # every file of the bundle is listed with its hash and size, and nothing else
    listed = {f["path"]: f for f in doc["files"]}
    assert set(listed) == set(members) - {BUNDLE_JSON, BUNDLE_SIG}
    for name, f in listed.items():
        assert f["sha256"] == hashlib.sha256(members[name]).hexdigest()
        assert f["size"] == len(members[name])
    # the whole session: manifest, every artifact it lists, the custody log
    want = {f"{root}/{MANIFEST}"} | {f"{root}/{a['path']}" for a in manifest["artifacts"]}
    assert want <= set(listed)
    assert members[f"{root}/{FLOWS}"] == (session / FLOWS).read_bytes()
    # and the report, artifacts included
    assert f"reports/{session.name}/findings.json" in listed
    assert any(n.startswith(f"reports/{session.name}/artifacts/") for n in listed)
    # how it was made
    assert doc["operator"] == "Jane Doe"
    assert doc["scenario"] == SCENARIO and doc["device"]["identifiers"][0]["value"] == IMEI
    assert doc["session"]["id"] == session.name and doc["session"]["path"] == root
    for dist in ("auditor", "python", "mitmproxy", "scapy", "adbutils", "pandas", "numpy"):
        assert doc["versions"][dist], dist
    assert doc["versions"]["cryptography"] != "not installed"
    assert re.fullmatch(r"\d{4}\.\d+\.\d+", doc["knowledge_base"]["kb_version"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\d", doc["ip_database"][0]["date"])
    assert doc["bundled_by"]["argv"][:2] == ["auditor", "bundle"]
    # the signature names its key
    sig = json.loads(members[BUNDLE_SIG])
    assert sig["algorithm"] == "ed25519" and sig["fingerprint"] == keypair.fingerprint


def test_same_input_same_bytes(
    session: Path, report: Path, keypair: KeyPair, tmp_path: Path
) -> None:
    for suffix in (".tar.gz", ".tar"):
        a = _bundle(session, report, keypair, tmp_path / f"a{suffix}")
        b = _bundle(session, report, keypair, tmp_path / f"b{suffix}")
        assert a.read_bytes() == b.read_bytes()
    assert tarfile.is_tarfile(tmp_path / "a.tar")
    assert (tmp_path / "a.tar.gz").read_bytes()[:2] == b"\x1f\x8b"


def test_bundle_refuses(session: Path, tmp_path: Path) -> None:
    _bundle(session, None, None, tmp_path / "b.tar.gz")
    with pytest.raises(EvidenceError, match="already exists"):
        _bundle(session, None, None, tmp_path / "b.tar.gz")
    with pytest.raises(EvidenceError, match=r"\.tar\.gz, \.tgz or \.tar"):
        _bundle(session, None, None, tmp_path / "b.zip")
    # a report of another session
    other = make_session(tmp_path / "other")
    other_report = analyse_to(other, tmp_path / "other-report")
    with pytest.raises(EvidenceError, match="not made from this session"):
        build_bundle(session, tmp_path / "c.tar", report=other_report, environment=ENV)
    # a session that does not verify is not sealed
    flows = session / FLOWS
    flows.write_bytes(flows.read_bytes() + b"\n")
    res = run("bundle", session, "--out", tmp_path / "d.tar")
    assert res.exit_code == 1
    assert "does not verify: changed flows.jsonl" in res.stderr
    assert not (tmp_path / "d.tar").exists()
    # nor an open one
    from auditor.session import SessionWriter

    w = SessionWriter.create(tmp_path / "open")
    w.detach()
    with pytest.raises(EvidenceError, match="never closed"):
        build_bundle(w.path, tmp_path / "e.tar", environment=ENV)
    assert not list(tmp_path.glob(".*.partial"))


# ------------------------------------------------------------------------------------ checking


def test_verify_ok_signed(signed: Path, keypair: KeyPair) -> None:
    res = run("verify", signed, "--pubkey", keypair.public)
    assert res.exit_code == 0, res.output
    assert f"SIGNATURE valid: signed by {keypair.fingerprint}" in res.stdout
    assert res.stdout.rstrip().splitlines()[-1].startswith("OK: ")
    # without --pubkey: checked with the key it names, and said to be self-asserted
    res = run("verify", signed, "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["ok"] and doc["signature"]["status"] == "self-asserted"
    assert doc["signature"]["fingerprint"] == keypair.fingerprint
    artifacts = read_manifest(signed.parent / "captures" / doc["session_id"])["artifacts"]
    assert doc["session"]["checked"] == len(artifacts) > 2 and doc["session"]["changed"] == []


def test_verify_unsigned(session: Path, tmp_path: Path, keypair: KeyPair) -> None:
    b = _bundle(session, None, None, tmp_path / "u.tar")
    res = run("verify", b)
    assert res.exit_code == 0 and "SIGNATURE absent" in res.stdout
    res = run("verify", b, "--pubkey", keypair.public)
    assert res.exit_code == 1 and "not signed" in res.stdout


def _flip(name: str) -> Any:
    def edit(members: list[tuple[tarfile.TarInfo, bytes]]) -> list[tuple[tarfile.TarInfo, bytes]]:
        out = []
        for ti, data in members:
            if ti.name == name:
                data = bytes([data[0] ^ 1]) + data[1:]
            out.append((ti, data))
        return out

    return edit


def test_flipped_byte_is_named(signed: Path, session: Path, tmp_path: Path) -> None:
    name = f"{_root(session)}/{FLOWS}"
    bad = rewrite_bundle(signed, tmp_path / "bad.tar.gz", _flip(name))
    res = run("verify", bad)
    assert res.exit_code == 1
    assert f"CHANGED   {name}\n" in res.stdout
    assert f"CHANGED   {name}  (differs from the session manifest)" in res.stdout
    assert "FAILED" in res.stdout
    check = verify_bundle(bad)
    assert check.changed == (name,) and check.session_changed == (name,)
    assert not check.missing and not check.unlisted


def test_flipped_byte_in_report(signed: Path, session: Path, tmp_path: Path) -> None:
    name = f"reports/{session.name}/findings.json"
    check = verify_bundle(rewrite_bundle(signed, tmp_path / "bad.tar.gz", _flip(name)))
    assert not check.ok and check.changed == (name,) and not check.session_changed


def test_deleted_member_is_named(signed: Path, session: Path, tmp_path: Path) -> None:
    body = next(n for n in tarfile.open(signed).getnames() if "/bodies/" in n)
    bad = rewrite_bundle(
        signed, tmp_path / "bad.tar.gz", lambda ms: [m for m in ms if m[0].name != body]
    )
    res = run("verify", bad, "--json")
    assert res.exit_code == 1
    doc = json.loads(res.stdout)
    assert doc["missing"] == [body] and doc["session"]["missing"] == [body]
    assert doc["changed"] == [] and doc["unlisted"] == []


def test_added_member_is_unlisted(signed: Path, session: Path, tmp_path: Path) -> None:
    extra = f"{_root(session)}/bodies/planted.zst"
    bad = rewrite_bundle(
        signed,
        tmp_path / "bad.tar.gz",
        lambda ms: [*ms, file_member(extra, b"x"), file_member("README", b"hi")],
    )
    res = run("verify", bad)
    assert res.exit_code == 1
    assert f"UNLISTED  {extra}\n" in res.stdout and "UNLISTED  README\n" in res.stdout
    assert f"UNLISTED  {extra}  (not in the session manifest)" in res.stdout


def test_wrong_pubkey_fails(signed: Path, tmp_path: Path) -> None:
    other = generate_keypair(tmp_path / "other.key")
    res = run("verify", signed, "--pubkey", other.public, "--json")
    assert res.exit_code == 1
    sig = json.loads(res.stdout)["signature"]
    assert sig["status"] == SignatureStatus.WRONG_KEY.value and not sig["ok"]
    assert other.fingerprint in sig["detail"]


def test_tampered_bundle_json_breaks_signature(
    signed: Path, session: Path, keypair: KeyPair, tmp_path: Path
) -> None:
    # The adversary changes a file and makes bundle.json agree with it: the hashes match,
    # but the signature over bundle.json no longer does.
    name = f"reports/{session.name}/summary.md"

    def edit(ms: list[tuple[tarfile.TarInfo, bytes]]) -> list[tuple[tarfile.TarInfo, bytes]]:
        new = b"nothing to see here\n"
        doc = json.loads(dict((ti.name, d) for ti, d in ms)[BUNDLE_JSON])
        for f in doc["files"]:
            if f["path"] == name:
                f["sha256"], f["size"] = hashlib.sha256(new).hexdigest(), len(new)
        out = []
        for ti, data in ms:
            if ti.name == name:
                data = new
            elif ti.name == BUNDLE_JSON:
                data = json.dumps(doc, indent=2, sort_keys=True).encode()
            out.append((ti, data))
        return out

    bad = rewrite_bundle(signed, tmp_path / "bad.tar.gz", edit)
    for args in ([], ["--pubkey", str(keypair.public)]):
        res = run("verify", bad, *args)
        assert res.exit_code == 1, args
        assert "CHANGED" not in res.stdout
        assert "SIGNATURE INVALID" in res.stdout
    check = verify_bundle(bad, load_public_key(keypair.public))
    assert check.signature.status is SignatureStatus.INVALID


def test_removed_bundle_json(signed: Path, tmp_path: Path) -> None:
    bad = rewrite_bundle(
        signed, tmp_path / "bad.tar.gz", lambda ms: [m for m in ms if m[0].name != BUNDLE_JSON]
    )
    res = run("verify", bad)
    assert res.exit_code == 1 and f"PROBLEM   {BUNDLE_JSON} is missing" in res.stdout


def _hostile(signed: Path, tmp_path: Path, ti: tarfile.TarInfo, data: bytes = b"") -> Path:
    return rewrite_bundle(signed, tmp_path / "hostile.tar.gz", lambda ms: [*ms, (ti, data)])


@pytest.mark.parametrize(
    "name,kind,why",
    [
        ("../x", tarfile.REGTYPE, "'..'"),
        ("captures/../../x", tarfile.REGTYPE, "'..'"),
        ("/etc/cron.d/x", tarfile.REGTYPE, "absolute path"),
        ("link", tarfile.SYMTYPE, "symbolic link"),
        ("hard", tarfile.LNKTYPE, "hard link"),
        ("dev", tarfile.CHRTYPE, "device"),
        ("fifo", tarfile.FIFOTYPE, "FIFO"),
    ],
)
def test_hostile_members_refused(
    signed: Path, tmp_path: Path, name: str, kind: bytes, why: str
) -> None:
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.linkname = "/etc/passwd" if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE) else ""
    bad = _hostile(signed, tmp_path, ti, b"pwned" if kind == tarfile.REGTYPE else b"")
    res = run("verify", bad)
    assert res.exit_code == 1
    assert res.stderr.startswith("error: archive member") and why in res.stderr
    assert name in res.stderr and len(res.stderr.strip().splitlines()) == 1
    out = tmp_path / "unpacked"
    res = run("unbundle", bad, "--out", out)
    assert res.exit_code == 1 and why in res.stderr
    assert not out.exists() and not list(tmp_path.glob(".unpacked.*"))
    assert not (tmp_path.parent / "x").exists()


def test_duplicate_and_oversized_members_refused(signed: Path, tmp_path: Path) -> None:
    dup = rewrite_bundle(
        signed, tmp_path / "dup.tar.gz", lambda ms: [*ms, file_member(ms[-1][0].name, b"x")]
    )
    with pytest.raises(UnsafeArchiveError, match="appears twice"):
        verify_bundle(dup)
    with pytest.raises(UnsafeArchiveError, match="over the 1000 limit"):
        verify_bundle(signed, limits=ArchiveLimits(max_member_size=1000))
    with pytest.raises(UnsafeArchiveError, match="more than 3 members"):
        verify_bundle(signed, limits=ArchiveLimits(max_members=3))
    with pytest.raises(UnsafeArchiveError, match="exceeds 600"):  # a long PAX name header
        verify_bundle(signed, limits=ArchiveLimits(max_header=600))


def test_not_an_archive(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"\x1f\x8b" + os.urandom(200))
    res = run("verify", junk)
    assert res.exit_code == 1 and res.stderr.startswith("error: ")
    assert "not a readable tar archive" in res.stderr


# ---------------------------------------------------------------------------------- unpacking


def test_unbundle(signed: Path, session: Path, keypair: KeyPair, tmp_path: Path) -> None:
    out = tmp_path / "case"
    res = run("unbundle", signed, "--out", out, "--pubkey", keypair.public)
    assert res.exit_code == 0, res.output
    sess = out / _root(session)
    assert res.stdout.strip() == str(sess)
    assert verify_session(sess).ok
    assert (out / "reports" / session.name / "findings.json").is_file()
    for p in out.rglob("*"):
        assert stat.S_IMODE(p.stat().st_mode) == (0o700 if p.is_dir() else 0o600), p
    # the unpacked session's custody log goes on from the bundled one
    entries, problems = parse_log((sess / CUSTODY).read_bytes())
    assert not problems and entries[-1]["command"] == "unbundle"
    # an existing, non-empty folder is never written into
    res = run("unbundle", signed, "--out", out)
    assert res.exit_code == 1 and "not an empty folder" in res.stderr


def test_unbundle_refuses_what_does_not_verify(signed: Path, session: Path, tmp_path: Path) -> None:
    bad = rewrite_bundle(signed, tmp_path / "bad.tar.gz", _flip(f"{_root(session)}/{FLOWS}"))
    res = run("unbundle", bad, "--out", tmp_path / "case")
    assert res.exit_code == 1 and "nothing unpacked" in res.stderr
    assert "CHANGED" in res.stderr and not (tmp_path / "case").exists()
    assert not list(tmp_path.glob(".case.*"))
    # --force unpacks it for inspection, still failing
    res = run("unbundle", bad, "--out", tmp_path / "case", "--force")
    assert res.exit_code == 1 and (tmp_path / "case" / _root(session) / FLOWS).is_file()


def test_reanalysis_is_reproducible(tmp_path: Path) -> None:
    """Analyse a session, bundle it, unpack it elsewhere, analyse the copy: findings.json is
    byte-identical but for generated_at."""
    session = make_session(tmp_path / "one" / "captures")
    first = tmp_path / "one" / "reports" / session.name
    res = run("analyze", session, "--out", first, "--format", "json,md")
    assert res.exit_code == 0, res.output
    bundle = tmp_path / "one" / "b.tar.gz"
    assert run("bundle", session, "--report", first, "--out", bundle).exit_code == 0
    other = tmp_path / "elsewhere" / "deeper"
    res = run("unbundle", bundle, "--out", other)
    assert res.exit_code == 0, res.output
    copy = Path(res.stdout.strip())
    again = tmp_path / "again"
    res = run("analyze", copy, "--out", again, "--format", "json,md")
    assert res.exit_code == 0, res.output

    def neutral(p: Path) -> bytes:
        data = p.read_bytes()
        out, n = re.subn(rb'"generated_at": "[^"]*"', b'"generated_at": ""', data)
        assert n == 1
        return out

    a, b = neutral(first / "findings.json"), neutral(again / "findings.json")
    assert json.loads(a)["findings"], "the session must have findings to compare"
    assert a == b
    # the bundled report is the first one, byte for byte
    assert (other / "reports" / session.name / "findings.json").read_bytes() == (
        first / "findings.json"
    ).read_bytes()


def test_findings_name_no_local_paths(session: Path, report: Path) -> None:
    text = (report / "findings.json").read_text()
    assert not re.findall(r'"(/[^"]*)"', text)


# ------------------------------------------------------------------------------------ custody


def test_custody_log_from_cli_and_verify_still_passes(tmp_path: Path) -> None:
    captures = tmp_path / "captures"
    res = run("import", SAMPLES / "chrome.har", "--out", captures, "--json")
    assert res.exit_code == 0, res.output
    session = Path(json.loads(res.stdout)["session"])
    assert run("verify", session).exit_code == 0
    res = run("analyze", session, "--out", tmp_path / "r", "--format", "json")
    assert res.exit_code == 0, res.output
    assert run("bundle", session, "--out", tmp_path / "b.tar").exit_code == 0
    assert run("verify", tmp_path / "b.tar").exit_code == 0  # a bundle: no session log
    (session / "stray.txt").write_text("x")
    assert run("verify", session).exit_code == 1
    (session / "stray.txt").unlink()
    res = run("verify", session)
    assert res.exit_code == 0 and "WARNING" not in res.stdout

    entries, problems = parse_log((session / CUSTODY).read_bytes())
    assert not problems
    assert [e["command"] for e in entries] == [
        "import", "verify", "analyze", "bundle", "verify", "verify",
    ]  # fmt: skip
    assert [e["exit_code"] for e in entries] == [0, 0, 0, 0, 1, 0]
    assert entries[4]["outcome"] == "failed"
    assert entries[0]["argv"][:2] == ["auditor", "import"]
    assert entries[2]["argv"] == [
        "auditor", "analyze", str(session), "--out", str(tmp_path / "r"), "--format", "json",
    ]  # fmt: skip
    for e in entries:
        assert e["ts"].endswith("Z") and e["user"] and e["host"] and e["auditor_version"]
    assert (
        entries[3]["details"]["bundle_sha256"]
        == hashlib.sha256((tmp_path / "b.tar").read_bytes()).hexdigest()
    )
    assert stat.S_IMODE((session / CUSTODY).stat().st_mode) == 0o600
    # the bundle sealed the log as it was, and holds its entries
    doc = json.loads(tarfile.open(tmp_path / "b.tar").extractfile(BUNDLE_JSON).read())  # type: ignore[union-attr]
    assert [e["command"] for e in doc["custody"]["entries"]] == ["import", "verify", "analyze"]


def test_tampered_custody_log_is_a_warning(session: Path) -> None:
    assert run("verify", session).exit_code == 0
    assert run("verify", session).exit_code == 0
    log = session / CUSTODY
    lines = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(lines[1])  # the first line removed
    res = run("verify", session)
    assert res.exit_code == 0
    assert "WARNING   custody.jsonl: line 1 follows a line that is no longer there" in res.stdout


def test_custody_failure_warns_and_never_aborts(session: Path) -> None:
    (session / CUSTODY).mkdir()  # cannot be opened as a file
    res = run("verify", session)
    assert res.exit_code == 0
    assert "warning: custody log of" in res.stderr and "OK:" in res.stdout
    res = run("verify", session / "nope")
    assert res.exit_code == 1 and "warning" not in res.stderr


def test_failed_command_is_logged_with_its_exit_code(session: Path) -> None:
    res = run("analyze", session, "--format", "docx")
    assert res.exit_code == 1
    (entry,) = parse_log((session / CUSTODY).read_bytes())[0]
    assert entry["command"] == "analyze" and entry["exit_code"] == 1


# ------------------------------------------------------------------------------------- keygen


def test_keygen(tmp_path: Path) -> None:
    key = tmp_path / "k" / "signing.key"
    key.parent.mkdir()
    old = os.umask(0)  # even so the private key is never readable by others
    try:
        res = run("keygen", "--out", key)
    finally:
        os.umask(old)
    assert res.exit_code == 0, res.output
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(Path(f"{key}.pub").stat().st_mode) == 0o600
    assert b"BEGIN PRIVATE KEY" in key.read_bytes()
    assert b"BEGIN PUBLIC KEY" in Path(f"{key}.pub").read_bytes()
    fp = res.stdout.strip()
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", fp)
    from auditor.evidence.signing import fingerprint

    assert fingerprint(load_public_key(Path(f"{key}.pub"))) == fp
    assert fingerprint(load_private_key(key)) == fp
    before = key.read_bytes()
    res = run("keygen", "--out", key)
    assert res.exit_code == 1 and "refusing to overwrite" in res.stderr
    assert key.read_bytes() == before


def test_an_encrypted_key_signs_with_its_passphrase_only(
    session: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """keygen --encrypt: the PEM is encrypted (the key is not in it), the passphrase comes
    from AUDITOR_KEY_PASSPHRASE (never an argument), and bundle --sign needs the right one."""
    from auditor.evidence.signing import PASSPHRASE_ENV, fingerprint, is_encrypted_key

    key = tmp_path / "enc.key"
    monkeypatch.setenv(PASSPHRASE_ENV, "correct horse battery staple")
    res = run("keygen", "--out", key, "--encrypt")
    assert res.exit_code == 0, res.output
    fp = res.stdout.strip()
    assert is_encrypted_key(key) and b"BEGIN ENCRYPTED PRIVATE KEY" in key.read_bytes()
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    with pytest.raises(EvidenceError, match="the key is encrypted"):
        load_private_key(key)
    with pytest.raises(EvidenceError, match="wrong passphrase"):
        load_private_key(key, b"wrong")
    assert fingerprint(load_private_key(key, b"correct horse battery staple")) == fp

    out = tmp_path / "b.tar.gz"
    res = run("bundle", session, "--sign", key, "--out", out)
    assert res.exit_code == 0, res.output
    res = run("verify", out, "--pubkey", f"{key}.pub")
    assert res.exit_code == 0 and "SIGNATURE valid" in res.output
    monkeypatch.setenv(PASSPHRASE_ENV, "wrong")
    res = run("bundle", session, "--sign", key, "--out", tmp_path / "c.tar.gz")
    assert res.exit_code == 1 and "wrong passphrase" in res.stderr
    assert not (tmp_path / "c.tar.gz").exists()
    monkeypatch.delenv(PASSPHRASE_ENV)  # no terminal here to ask on
    res = run("bundle", session, "--sign", key, "--out", tmp_path / "c.tar.gz")
    assert res.exit_code == 1 and PASSPHRASE_ENV in res.stderr
    monkeypatch.setenv(PASSPHRASE_ENV, "")
    res = run("keygen", "--out", tmp_path / "empty.key", "--encrypt")
    assert res.exit_code == 1 and not (tmp_path / "empty.key").exists()


def test_import_of_har_bundles_and_verifies(tmp_path: Path, keypair: KeyPair) -> None:
    res = import_files([SAMPLES / "firefox.har"], tmp_path / "captures")
    b = _bundle(res.session, None, keypair, tmp_path / "f.tgz")
    check = verify_bundle(b, load_public_key(keypair.public))
    assert check.ok and check.signature.status is SignatureStatus.VALID
    with tarfile.open(b) as tf:
        names = tf.getnames()
    assert f"captures/{res.session.name}/original/firefox.har" in names


def test_unpack_api_refuses_a_file_as_out(signed: Path, tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(EvidenceError, match="not an empty folder"):
        unpack_bundle(signed, tmp_path / "f")


def test_second_session_smuggled_in(signed: Path, session: Path, tmp_path: Path) -> None:
    manifest = (session / MANIFEST).read_bytes()
    bad = rewrite_bundle(
        signed,
        tmp_path / "bad.tar.gz",
        lambda ms: [*ms, file_member("captures/other/manifest.json", manifest)],
    )
    check = verify_bundle(bad)
    assert not check.ok and check.unlisted == ("captures/other/manifest.json",)
    assert any("more than one session" in p for p in check.problems)
    assert check.session == _root(session)  # bundle.json names the real one


# --------------------------------------------------------------------------------- reanalysis


def _analysed_bundle(tmp_path: Path, *analyze_args: str, edit: Any = None) -> Path:
    session = make_session(tmp_path / "captures")
    report = tmp_path / "reports" / session.name
    res = run("analyze", session, "--out", report, "--format", "json,md", *analyze_args)
    assert res.exit_code == 0, res.output
    if edit is not None:
        doc = json.loads((report / "findings.json").read_text())
        edit(doc)
        (report / "findings.json").write_text(json.dumps(doc, indent=2))
    bundle = tmp_path / "b.tar.gz"
    assert run("bundle", session, "--report", report, "--out", bundle).exit_code == 0
    return bundle


def test_verify_reanalyze_reproduces_the_bundled_findings(tmp_path: Path) -> None:
    bundle = _analysed_bundle(tmp_path)
    res = run("verify", bundle, "--reanalyze")
    assert res.exit_code == 0, res.output
    assert "REPRODUCED" in res.output and "only generated_at differs" in res.output
    last = res.stdout.strip().splitlines()[-1]  # the verdict: the report, not only findings
    assert last.startswith("OK: ") and ", report reproduced (" in last, last
    res = run("verify", bundle, "--reanalyze", "--json")
    doc = json.loads(res.stdout)
    assert doc["ok"] and doc["reanalysis"]["status"] == "reproduced"
    assert doc["reanalysis"]["findings"]["bundled"] == doc["reanalysis"]["findings"]["reanalysed"]
    assert doc["reanalysis"]["findings"]["bundled"] > 0


def test_verify_reanalyze_catches_findings_edited_before_bundling(tmp_path: Path) -> None:
    """The hashes are all right (the report was edited before it was bundled), but the
    session does not give that report: the difference is named."""

    def drop_last(doc: dict[str, Any]) -> None:
        doc["findings"].pop()

    bundle = _analysed_bundle(tmp_path, edit=drop_last)
    assert run("verify", bundle).exit_code == 0  # every hash matches
    res = run("verify", bundle, "--reanalyze")
    assert res.exit_code == 1
    assert "DIFFERS" in res.output and "$.findings (" in res.output
    last = res.stdout.strip().splitlines()[-1]
    assert last.startswith("FAILED: ") and ", report DIFFERS (" in last, last


def test_verify_reanalyze_says_what_it_needs(tmp_path: Path) -> None:
    """A report made with inputs that are not in the bundle is not checked, and says which;
    given them, it is reproduced."""
    policy = tmp_path / "strict.yaml"
    policy.write_text(
        (Path(__file__).resolve().parents[2] / "auditor/analysis/policies/eu-gdpr.yaml").read_text()
    )
    bundle = _analysed_bundle(tmp_path, "--policy", str(policy))
    res = run("verify", bundle, "--reanalyze")
    assert res.exit_code == 1
    assert "NOT CHECKED" in res.output and "give it with --policy" in res.output
    res = run("verify", bundle, "--reanalyze", "--policy", str(policy))
    assert res.exit_code == 0, res.output
    assert "REPRODUCED" in res.output
    # options that only make sense with --reanalyze are refused without it
    res = run("verify", bundle, "--policy", str(policy))
    assert res.exit_code != 0 and "go with --reanalyze" in res.output


@pytest.mark.parametrize(
    "hostile",
    [
        b"[" * 100_000 + b"]" * 100_000,  # nesting past json's recursion limit
        json.dumps({"method": [], "findings": {}, "identifiers_searched": [[1]]}).encode(),
        json.dumps(
            {"method": {"policy": "x", "knowledge_base": {"intel_files": [1, None]}}}
        ).encode(),
        b'{"findings": [{"a": ' + b"[" * 200 + b"1" + b"]" * 200 + b"}]}",  # deep, not too deep
        b"\xff\xfe not UTF-8",
    ],
)
def test_verify_reanalyze_reads_a_hostile_findings_json(tmp_path: Path, hostile: bytes) -> None:
    """A bundle is anyone's: its findings.json (hashes made to match) is read without a
    traceback, and the verdict is that the findings were not reproduced."""
    import hashlib as _h

    bundle = _analysed_bundle(tmp_path)

    def swap(members: list[tuple[tarfile.TarInfo, bytes]]) -> list[tuple[tarfile.TarInfo, bytes]]:
        name = next(ti.name for ti, _ in members if ti.name.endswith("/findings.json"))
        out = []
        for ti, data in members:
            if ti.name == name:
                data = hostile
            elif ti.name == "bundle.json":
                doc = json.loads(data)
                for f in doc["files"]:
                    if f["path"] == name:
                        f["sha256"], f["size"] = _h.sha256(hostile).hexdigest(), len(hostile)
                data = json.dumps(doc, indent=2).encode()
            out.append((ti, data))
        return out

    bad = rewrite_bundle(bundle, tmp_path / "hostile.tar.gz", swap)
    res = run("verify", bad, "--reanalyze", "--json")
    assert res.exit_code == 1, res.output
    # CliRunner keeps an escaping exception in res.exception; a clean exit is a SystemExit
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    doc = json.loads(res.stdout)
    assert doc["ok"], "the hashes match: only the re-analysis may fail"
    assert doc["reanalysis"]["status"] in ("differs", "not_checked")
