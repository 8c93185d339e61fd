"""The promises of docs/evidence.md tried as an adversary would: one who bundles (and signs
with their own key) a report that says less than its findings, or who hands over a hostile
archive. Each attack is a test; docs/evidence.md lists them, held or fixed.

The bundle is made once for the module; each attack rewrites a copy of it (``forge``): edit
the members, list them again in bundle.json and sign it again with the key given, as the
holder of that key can."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from auditor.cli import main
from auditor.errors import AuditorError
from auditor.evidence import custody
from auditor.evidence.archive import UnsafeArchiveError
from auditor.evidence.bundle import (
    BUNDLE_JSON,
    BUNDLE_SIG,
    build_bundle,
    unpack_bundle,
    verify_bundle,
)
from auditor.evidence.reanalyze import format_reanalysis, reanalyze_bundle
from auditor.evidence.signing import (
    KeyPair,
    SignatureStatus,
    generate_keypair,
    load_private_key,
    load_public_key,
    sign,
)
from auditor.evidence.verify import verify_session
from auditor.session import CUSTODY, FLOWS, MANIFEST
from tests.evidence.conftest import analyse_to, make_session

ENV: dict[str, Any] = {
    "versions": {"auditor": "test"},
    "knowledge_base": {"kb_version": "test"},
    "ip_database": [],
}
DEEP = b"[" * 100_000 + b"]" * 100_000  # past json's recursion limit
NOTHING_SENT = b"# auditor report\n\ninfo: nothing sent\n"

Members = list[tuple[tarfile.TarInfo, bytes]]


@dataclass(frozen=True)
class Case:
    base: Path
    session: Path
    report: Path
    bundle: Path  # signed by the bundler
    bundler: KeyPair
    other: KeyPair

    @property
    def root(self) -> str:
        return f"captures/{self.session.name}"

    @property
    def reports(self) -> str:
        return f"reports/{self.session.name}"


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> Case:
    base = tmp_path_factory.mktemp("attacks")
    session = make_session(base / "captures")
    report = analyse_to(session, base / "reports" / session.name)  # json, csv, md, html
    for command in ("import", "analyze"):
        custody.record([session], command, ["auditor", command, str(session)], 0)
    (base / "keys").mkdir(mode=0o700)
    bundler = generate_keypair(base / "keys" / "bundler.key")
    other = generate_keypair(base / "keys" / "other.key")
    bundle = base / "genuine.tar.gz"
    build_bundle(
        session,
        bundle,
        report=report,
        key=load_private_key(bundler.private),
        operator="Jane Doe",
        created_at="2026-11-28T12:00:00.000000Z",
        environment=ENV,
    )
    return Case(base, session, report, bundle, bundler, other)


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def no_traceback(res: Result) -> None:
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)


def members_of(bundle: Path) -> Members:
    with tarfile.open(bundle, "r:*") as tf:
        return [(ti, tf.extractfile(ti).read() if ti.isreg() else b"") for ti in tf.getmembers()]  # type: ignore[union-attr]


def write_tar(dst: Path, members: Members) -> Path:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for ti, data in members:
            ti.size = len(data) if ti.isreg() else 0
            tf.addfile(ti, io.BytesIO(data) if ti.isreg() else None)
    dst.write_bytes(raw.getvalue())
    return dst


def member(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    ti = tarfile.TarInfo(name)
    ti.size, ti.mode = len(data), 0o600
    return ti, data


def forge(
    case: Case,
    edit: Callable[[Members], Members] = lambda ms: ms,
    *,
    key: KeyPair | None = None,
    describe: Callable[[dict[str, Any]], Any] | None = None,
    raw_json: bytes | None = None,
    raw_sig: bytes | None = None,
    name: str = "forged.tar.gz",
) -> Path:
    """The genuine bundle with ``edit`` applied to its members, bundle.json listing them again
    (then changed by ``describe``), signed again by ``key`` (the bundler's by default)."""
    ms = [(ti, d) for ti, d in members_of(case.bundle)]
    doc = json.loads(next(d for ti, d in ms if ti.name == BUNDLE_JSON))
    body = edit([(ti, d) for ti, d in ms if ti.name not in (BUNDLE_JSON, BUNDLE_SIG)])
    doc["files"] = sorted(
        (
            {"path": ti.name, "sha256": hashlib.sha256(d).hexdigest(), "size": len(d)}
            for ti, d in body
            if ti.isreg()
        ),
        key=lambda f: f["path"],
    )
    if describe is not None:
        doc = describe(doc) or doc
    signer = load_private_key((key or case.bundler).private)
    head = [member(BUNDLE_JSON, raw_json or json.dumps(doc, indent=2).encode())]
    if raw_sig is not None:
        head.append(member(BUNDLE_SIG, raw_sig))
    elif raw_json is None:
        head.append(member(BUNDLE_SIG, json.dumps(sign(doc, signer, BUNDLE_JSON)).encode()))
    return write_tar(case.base / name, head + body)


def replace(name: str, data: bytes) -> Callable[[Members], Members]:
    def edit(ms: Members) -> Members:
        return [(ti, data if ti.name == name else d) for ti, d in ms]

    return edit


def add(*extra: tuple[tarfile.TarInfo, bytes]) -> Callable[[Members], Members]:
    return lambda ms: [*ms, *extra]


def bundler_key(case: Case) -> Any:
    return load_public_key(case.bundler.public)


def nothing_written(case: Case, out: Path) -> None:
    assert not out.exists() and not list(out.parent.glob(f".{out.name}.*"))


# ------------------------------------------------------- reports that say less than findings


def test_genuine_bundle_reproduces_every_report_file(case: Case) -> None:
    again = reanalyze_bundle(case.bundle, bundler_key(case))
    assert again.status == "reproduced", format_reanalysis(again)
    want = {"findings.json", "summary.md", "report.html", "flows.csv", "flows.parquet"}
    want |= {"endpoints.csv"}
    assert {n.rsplit("/", 1)[-1] for n in again.same} >= want
    assert any("/artifacts/" in n for n in again.same)
    assert not again.differ and not again.not_checked


def test_reports_rewritten_over_genuine_findings_are_not_reproduced(case: Case) -> None:
    """The bundler keeps the genuine findings.json (critical findings) but replaces
    summary.md and report.html with 'info: nothing sent', adds a PDF and a note, and signs
    with their own key: the signature is valid and every hash matches, but re-analysis names
    the rewritten files and the ones it could not check."""
    html = b"<html><body><h1>auditor report</h1><p>info: nothing sent</p></body></html>"
    forged = forge(
        case,
        lambda ms: add(
            member(f"{case.reports}/report.pdf", b"%PDF-1.4 nothing sent"),
            member(f"{case.reports}/notes.txt", NOTHING_SENT),
        )(replace(f"{case.reports}/report.html", html)(
            replace(f"{case.reports}/summary.md", NOTHING_SENT)(ms)
        )),
    )  # fmt: skip
    check = verify_bundle(forged, bundler_key(case))
    assert check.ok and check.signature.status is SignatureStatus.VALID
    again = reanalyze_bundle(forged, bundler_key(case))
    assert again.status == "differs" and not again.ok
    # the check of the very bytes that were re-analysed
    assert again.check is not None and again.check.ok
    assert again.check.signature.status is SignatureStatus.VALID
    assert set(again.differ) == {f"{case.reports}/summary.md", f"{case.reports}/report.html"}
    assert f"{case.reports}/findings.json" in again.same
    assert set(again.not_checked) == {f"{case.reports}/report.pdf", f"{case.reports}/notes.txt"}
    lines = format_reanalysis(again)
    assert lines[-1].startswith("NOT REPRODUCED") and f"{case.reports}/summary.md" in lines[-1]
    assert any(x.startswith(f"NOT CHECKED {case.reports}/report.pdf") for x in lines)
    # the same through the command, as a verifier runs it
    res = run("verify", forged, "--pubkey", case.bundler.public, "--reanalyze", "--json")
    no_traceback(res)
    assert res.exit_code == 1
    doc = json.loads(res.stdout)
    assert doc["ok"] and doc["reanalysis"]["status"] == "differs"
    assert f"{case.reports}/summary.md" in doc["reanalysis"]["differ"]


def test_an_unrenderable_file_alone_leaves_the_report_not_checked(case: Case) -> None:
    forged = forge(case, add(member(f"{case.reports}/report.pdf", b"%PDF-1.4 nothing sent")))
    again = reanalyze_bundle(forged, bundler_key(case))
    assert again.status == "incomplete" and not again.ok
    assert list(again.not_checked) == [f"{case.reports}/report.pdf"]
    assert format_reanalysis(again)[-1].startswith("NOT CHECKED in full")


def test_a_generation_time_that_is_not_a_time(case: Case) -> None:
    """generated_at is the one thing normalised; it must be a UTC time, or it could carry
    words into report.html's heading."""
    name = f"{case.reports}/findings.json"
    doc = json.loads((case.report / "findings.json").read_bytes())
    doc["generated_at"] = "2026-11-28; NOTE: nothing sent"
    forged = forge(case, replace(name, json.dumps(doc, indent=2).encode()))
    again = reanalyze_bundle(forged, bundler_key(case))
    assert again.status == "differs" and name in again.differ
    assert "$.generated_at (not a time in UTC)" in again.differences


# ------------------------------------------------------------ JSON nested past the parser


def test_deep_bundle_json(case: Case) -> None:
    forged = forge(case, raw_json=DEEP)
    check = verify_bundle(forged)
    assert not check.ok and any("nested more than" in p for p in check.problems)
    res = run("verify", forged)
    no_traceback(res)
    assert res.exit_code == 1
    out = case.base / "deep-json"
    res = run("unbundle", forged, "--out", out)
    no_traceback(res)
    assert res.exit_code == 1
    nothing_written(case, out)


def test_deep_bundle_sig(case: Case) -> None:
    forged = forge(case, raw_sig=DEEP)
    check = verify_bundle(forged, bundler_key(case))
    assert check.signature.status is SignatureStatus.MALFORMED and not check.ok
    assert "nested more than" in check.signature.detail
    no_traceback(run("verify", forged))


def test_deep_session_manifest_in_a_bundle(case: Case) -> None:
    forged = forge(case, replace(f"{case.root}/{MANIFEST}", DEEP))
    check = verify_bundle(forged, bundler_key(case))
    assert not check.ok
    assert any("unreadable session manifest" in p and "nested" in p for p in check.problems)
    out = case.base / "deep-manifest"
    res = unpack_bundle(forged, out, trusted=bundler_key(case))
    assert not res.unpacked
    nothing_written(case, out)


def test_deep_custody_line_in_a_session(case: Case, tmp_path: Path) -> None:
    session = make_session(tmp_path / "captures")
    with open(session / CUSTODY, "ab") as fh:
        fh.write(DEEP + b"\n")
    res = verify_session(session)
    assert any("nested more than" in w for w in res.warnings), res.warnings
    out = tmp_path / "b.tar.gz"
    build_bundle(session, out, environment=ENV)
    doc = json.loads(dict((ti.name, d) for ti, d in members_of(out))[BUNDLE_JSON])
    assert any("nested" in p for p in doc["custody"]["problems"])
    assert verify_bundle(out).ok


def test_deep_findings_in_the_report_to_bundle(case: Case, tmp_path: Path) -> None:
    report = tmp_path / "report"
    report.mkdir()
    (report / "findings.json").write_bytes(DEEP)
    with pytest.raises(AuditorError, match="nested"):
        build_bundle(case.session, tmp_path / "b.tar.gz", report=report, environment=ENV)
    res = run("bundle", case.session, "--report", report, "--out", tmp_path / "c.tar.gz")
    no_traceback(res)
    assert res.exit_code == 1 and "nested" in res.stderr
    assert not (tmp_path / "c.tar.gz").exists()


def test_odd_types_in_a_signed_bundle_json(case: Case) -> None:
    """bundle.json is the signer's: any JSON value where an object is expected is a problem,
    never a traceback."""

    def odd(doc: dict[str, Any]) -> dict[str, Any]:
        doc.update(custody=[1], session="x", report=5, operator={"a": [1]})
        return doc

    check = verify_bundle(forge(case, describe=odd), bundler_key(case))
    assert not check.ok and check.signature.ok
    assert any("no valid session path" in p for p in check.problems)


# -------------------------------------------------------------- names a file system refuses


@pytest.mark.parametrize("name", ["n" * 300, "/".join(["d" * 250] * 20)])
def test_names_too_long_for_a_file_system(case: Case, name: str) -> None:
    forged = forge(case, add(member(f"{case.root}/{name}", b"x")))
    with pytest.raises(UnsafeArchiveError, match="longer than"):
        verify_bundle(forged)
    out = case.base / "long"
    res = run("unbundle", forged, "--out", out)
    no_traceback(res)
    assert res.exit_code == 1 and "longer than" in res.stderr
    assert len(res.stderr) < 1000  # the name is quoted in part
    nothing_written(case, out)


# ---------------------------------------------------------------- the promises of evidence.md


def test_signed_again_by_another_key(case: Case) -> None:
    forged = forge(case, replace(f"{case.reports}/summary.md", NOTHING_SENT), key=case.other)
    check = verify_bundle(forged, bundler_key(case))
    assert not check.ok and check.signature.status is SignatureStatus.WRONG_KEY
    # without --pubkey it is only what it claims to be: whoever holds that key signed it
    check = verify_bundle(forged)
    assert check.signature.status is SignatureStatus.SELF_ASSERTED
    assert check.signature.fingerprint == case.other.fingerprint


def test_signature_removed(case: Case) -> None:
    ms = [(ti, d) for ti, d in members_of(case.bundle) if ti.name != BUNDLE_SIG]
    stripped = write_tar(case.base / "stripped.tar.gz", ms)
    check = verify_bundle(stripped, bundler_key(case))
    assert check.signature.status is SignatureStatus.ABSENT and not check.ok
    assert verify_bundle(stripped).signature.status is SignatureStatus.ABSENT


def test_members_reordered(case: Case) -> None:
    """Order carries no meaning: the same members in any order give the same verdict."""
    ms = members_of(case.bundle)
    reordered = write_tar(case.base / "reordered.tar.gz", list(reversed(ms)))
    genuine, check = verify_bundle(case.bundle, bundler_key(case)), verify_bundle(reordered)
    assert verify_bundle(reordered, bundler_key(case)).ok
    assert check.checked == genuine.checked and check.session_checked == genuine.session_checked


def test_a_folder_and_a_file_of_one_name(case: Case) -> None:
    folder = tarfile.TarInfo(f"{case.root}/{FLOWS}")
    folder.type = tarfile.DIRTYPE
    with pytest.raises(UnsafeArchiveError, match="appears twice"):
        verify_bundle(forge(case, add((folder, b""))))


def test_a_file_where_a_folder_must_be(case: Case) -> None:
    """flows.jsonl is a file; a member under it cannot be written; nothing is left behind."""
    forged = forge(case, add(member(f"{case.root}/{FLOWS}/x", b"x")))
    assert not verify_bundle(forged).ok  # not in the session manifest
    out = case.base / "conflict"
    with pytest.raises(UnsafeArchiveError, match="conflicts with another"):
        unpack_bundle(forged, out, force=True)
    nothing_written(case, out)


@pytest.mark.parametrize("how", ["old GNU", "PAX 1.0"])
def test_sparse_members(case: Case, how: str) -> None:
    ti = tarfile.TarInfo(f"{case.root}/sparse")
    if how == "old GNU":
        ti.type = tarfile.GNUTYPE_SPARSE
        data = b""
        raw = ti.tobuf(tarfile.GNU_FORMAT)
        ms = members_of(case.bundle)
        path = write_tar(case.base / "sparse.tar", ms)
        # put the hand-made header before the end-of-archive blocks
        body = path.read_bytes().rstrip(b"\0")
        body += bytes(-len(body) % 512)
        path.write_bytes(body + raw + bytes(10240))
    else:
        ti.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0",
                          "GNU.sparse.name": ti.name, "GNU.sparse.realsize": "10"}  # fmt: skip
        data = b"1\n0\n10\n".ljust(512, b"\0")
        path = forge(case, add((ti, data)))
    with pytest.raises(UnsafeArchiveError, match="sparse file"):
        verify_bundle(path)


@pytest.mark.parametrize("size", ["-1", str(17 * 1024**3)])
def test_sizes_no_member_may_have(case: Case, size: str) -> None:
    ti = tarfile.TarInfo(f"{case.root}/big")
    ti.pax_headers = {"size": size}
    with pytest.raises(UnsafeArchiveError, match="bytes, over the"):
        verify_bundle(forge(case, add((ti, b""))))


def test_session_file_changed_and_listed_again(case: Case) -> None:
    """The bundler changes flows.jsonl and lists it again in a bundle.json they sign: the
    session manifest still names the original."""
    name = f"{case.root}/{FLOWS}"
    check = verify_bundle(forge(case, replace(name, b"{}\n")), bundler_key(case))
    assert check.signature.ok and not check.ok and check.session_changed == (name,)


def test_session_manifest_changed_with_it(case: Case) -> None:
    """... and the manifest too: bundle.json names the manifest it was made from."""
    name = f"{case.root}/{FLOWS}"
    manifest = json.loads((case.session / MANIFEST).read_bytes())
    for art in manifest["artifacts"]:
        if art["path"] == FLOWS:
            art["sha256"], art["size"] = hashlib.sha256(b"{}\n").hexdigest(), 3
    edit = replace(f"{case.root}/{MANIFEST}", json.dumps(manifest).encode())
    check = verify_bundle(forge(case, lambda ms: edit(replace(name, b"{}\n")(ms))))
    assert not check.ok and not check.session_changed
    assert any("names session manifest" in p for p in check.problems), check.problems


def test_a_manifest_that_lists_a_path_out_of_the_session(case: Case) -> None:
    manifest = json.loads((case.session / MANIFEST).read_bytes())
    manifest["artifacts"].append({"path": "../../etc/passwd", "sha256": "0" * 64, "size": 1})
    forged = forge(case, replace(f"{case.root}/{MANIFEST}", json.dumps(manifest).encode()))
    check = verify_bundle(forged)
    assert not check.ok and any("bad artifact entry" in p for p in check.problems)


def test_a_file_outside_the_session_and_the_report(case: Case) -> None:
    forged = forge(case, add(member("READ-ME-FIRST.txt", NOTHING_SENT)))
    check = verify_bundle(forged, bundler_key(case))
    assert check.signature.ok and not check.ok
    assert any("outside the session and the report" in p for p in check.problems)


def test_a_report_path_outside_reports(case: Case) -> None:
    def elsewhere(doc: dict[str, Any]) -> None:
        doc["report"] = {"path": case.root}

    check = verify_bundle(forge(case, describe=elsewhere), bundler_key(case))
    assert not check.ok and any("is not reports/<id>" in p for p in check.problems)


def test_members_hidden_after_the_end_of_the_archive(case: Case) -> None:
    """`tar --ignore-zeros` would extract what follows the end-of-archive blocks."""
    extra = io.BytesIO()
    with tarfile.open(fileobj=extra, mode="w") as tf:
        ti, data = member(f"{case.reports}/summary.md", NOTHING_SENT)
        tf.addfile(ti, io.BytesIO(data))
    hidden = case.base / "hidden.tar.gz"
    hidden.write_bytes(case.bundle.read_bytes() + __import__("gzip").compress(extra.getvalue()))
    with pytest.raises(UnsafeArchiveError, match="after the end of the archive"):
        verify_bundle(hidden)


def test_a_small_bundle_json_of_many_values(case: Case) -> None:
    """3 MB of '{},' parse into a million dicts (~80 MB); more values than a bundle of this
    many members can need are refused before parsing, and bad entries are named 20 at most."""
    many = b'{"kind": "auditor-evidence-bundle", "files": [' + b"{}," * 1_100_000 + b"{}]}"
    check = verify_bundle(forge(case, raw_json=many))
    assert not check.ok and any("values, more than" in p for p in check.problems)
    assert len(check.problems) < 10

    def junk(doc: dict[str, Any]) -> None:
        doc["files"] += [{"path": f"x{i}"} for i in range(1000)]

    check = verify_bundle(forge(case, describe=junk))
    assert sum("malformed file entry" in p for p in check.problems) == 20
    assert any("980 more bad file entries" in p for p in check.problems)


def test_custody_log_rewritten(case: Case) -> None:
    """bundle.json copies the custody log's entries: a bundler who edits the log (the chain
    breaks) and keeps bundle.json's clean copy, or rewrites the copy, is caught."""
    name = f"{case.root}/{CUSTODY}"
    log = dict((ti.name, d) for ti, d in members_of(case.bundle))[name]
    lines = log.splitlines(keepends=True)
    edited = lines[0].replace(b'"exit_code":', b'"note":"clean","exit_code":') + b"".join(lines[1:])
    check = verify_bundle(forge(case, replace(name, edited)), bundler_key(case))
    assert check.signature.ok and not check.ok
    assert any("custody entries or problems" in p for p in check.problems)
    assert any(w.startswith("custody log: line 2 does not follow") for w in check.warnings)

    def fabricate(doc: dict[str, Any]) -> None:
        doc["custody"]["entries"] = doc["custody"]["entries"][:1]

    check = verify_bundle(forge(case, describe=fabricate), bundler_key(case))
    assert not check.ok and any("custody entries or problems" in p for p in check.problems)


def test_unbundle_on_a_full_disk(case: Case) -> None:
    """A write that fails (here the file size limit, as `ulimit -f` sets it) is one error
    line naming the member, and nothing is left behind."""
    out = case.base / "full"
    script = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000))\n"
        "from auditor.cli import main\n"
        "main(['unbundle', sys.argv[1], '--out', sys.argv[2]])\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(case.bundle), str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parents[2],
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.startswith("error: cannot unpack archive member"), proc.stderr
    assert "File too large" in proc.stderr and "Traceback" not in proc.stderr
    nothing_written(case, out)


@pytest.mark.parametrize("source", ["policy:/dev/zero", "policy:../../x", "policy:"])
def test_a_report_that_names_a_file_as_its_policy(case: Case, source: str) -> None:
    """The policy a report names is taken only if auditor ships it: a path there would make
    the verifier's auditor read any file (/dev/zero never ends)."""
    doc = json.loads((case.report / "findings.json").read_bytes())
    doc["method"]["policy"]["source"] = source
    forged = forge(
        case, replace(f"{case.reports}/findings.json", json.dumps(doc, indent=2).encode())
    )
    again = reanalyze_bundle(forged, bundler_key(case))
    assert again.status == "not_checked"
    assert any("not a policy shipped with auditor" in r for r in again.reasons)


def test_a_large_report_file_is_compared_in_pieces(case: Case) -> None:
    """A bundled report file may be as large as a member may be (16 GiB of zeros compress
    to 16 MB): it is compared by size, then in pieces, never read whole."""
    big = bytes(8 * 1024 * 1024)
    again = reanalyze_bundle(forge(case, replace(f"{case.reports}/summary.md", big)))
    assert again.differ == [f"{case.reports}/summary.md"]
    assert any(f"{len(big)} bytes bundled" in d for d in again.differences)
