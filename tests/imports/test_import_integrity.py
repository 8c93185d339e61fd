"""An import or an analysis cut short by a full disk leaves nothing that claims to be whole.

The import records each source's size and SHA-256 before copying it into ``original/``; a
copy that does not match (a write fault, a file size limit, a source that changed) is removed
and the session says no copy was made, and ``auditor verify`` names a sealed copy that is not
the source. The limits are real: ``ulimit -f`` in a bash subprocess (EFBIG; Python ignores
SIGXFSZ), or RLIMIT_FSIZE in this process for the report writer.
"""

from __future__ import annotations

import hashlib
import resource
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mitmproxy import io as mio
from mitmproxy.test import tflow

from auditor.analysis.report.files import write_csv
from auditor.evidence.verify import verify_session
from auditor.fsutil import write_private
from auditor.imports import ImportFileError
from auditor.imports import session as driver
from auditor.imports.session import ORIGINAL, import_files
from auditor.session import MANIFEST, manifest_digest, read_manifest, sha256_file, write_json_atomic

SAMPLES = Path(__file__).parent / "samples"
HAR = SAMPLES / "httptoolkit.har"  # 10.5 kB, the import tests' HAR in HTTP Toolkit's form
AUDITOR = Path(sys.executable).parent / "auditor"


def _limited(kib: int, *args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``auditor ARGS`` under a real ``ulimit -f`` (in 1 KiB blocks)."""
    return subprocess.run(
        ["bash", "-c", f'ulimit -f {kib} && exec "$@"', "bash", str(AUDITOR), *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _hidden_files(root: Path) -> list[Path]:
    return [p for p in root.rglob(".*")] if root.exists() else []


def _sessions(out: Path) -> list[Path]:
    return sorted(p for p in out.iterdir() if p.is_dir()) if out.exists() else []


def _check_nothing_claims_a_whole_copy(out: Path, source: Path) -> None:
    assert _hidden_files(out) == [], "a temporary file was left"
    for session in _sessions(out):
        m = read_manifest(session)
        assert m["status"] == "incomplete" and "File too large" in m["import_failed"]
        (entry,) = m["capture"]["import"]["files"]
        assert entry["original"] is None and entry["not_copied"]
        assert entry["size"] == source.stat().st_size  # recorded before the copy
        assert entry["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
        assert not any((session / ORIGINAL).iterdir()), "a partial copy was left"
        assert verify_session(session).ok


@pytest.mark.parametrize(
    ("source", "kib"),
    [
        (HAR, 4),  # the copy fails; the session is closed, saying no copy was made
        (HAR, 1),  # the closing manifest does not fit either: the session is removed
    ],
    ids=["har-4k", "har-1k"],
)
def test_an_import_cut_short_by_a_file_size_limit_claims_no_copy(
    tmp_path: Path, source: Path, kib: int
) -> None:
    out = tmp_path / "captures"
    res = _limited(kib, "import", source, "--out", out, cwd=tmp_path)
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "File too large" in lines[0] and "Traceback" not in res.stderr
    _check_nothing_claims_a_whole_copy(out, source)
    if kib == 1:
        assert _sessions(out) == [] and "removed" in lines[0]
    else:
        assert len(_sessions(out)) == 1 and "closed as incomplete" in lines[0]


def test_verify_names_a_sealed_copy_that_is_not_the_imported_file(tmp_path: Path) -> None:
    """A session sealed over a truncated copy (as imports cut short were, before): every
    artifact hash matches, yet the copy is not what the import read."""
    res = import_files([HAR], tmp_path / "captures")
    copy = res.session / ORIGINAL / HAR.name
    assert verify_session(res.session).ok
    copy.write_bytes(copy.read_bytes()[:4096])
    m = read_manifest(res.session)
    for art in m["artifacts"]:
        if art["path"] == f"{ORIGINAL}/{HAR.name}":
            art.update(size=4096, sha256=sha256_file(copy))
    m["seal"]["sha256"] = manifest_digest(m)
    write_json_atomic(res.session / MANIFEST, m)
    check = verify_session(res.session)
    assert not check.ok and not check.changed and not check.missing
    (problem,) = check.problems
    assert problem.startswith(f"{ORIGINAL}/{HAR.name}: not the file the import read")
    assert "4096 bytes" in problem and str(HAR.stat().st_size) in problem


@pytest.fixture
def grows_after_check(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A flow file (copied from disk, unlike a HAR, which is copied from the bytes checked)
    that mitmdump goes on appending to between the check and the copy."""
    src = tmp_path / "live.mitm"
    with open(src, "wb") as fh:
        mio.FlowWriter(fh).add(tflow.tflow(resp=True))
    real = driver._check_all

    def check_then_grow(paths: list[Path]) -> Any:
        sources = real(paths)
        with open(src, "ab") as fh:
            fh.write(b"\n" * 10)
        return sources

    monkeypatch.setattr(driver, "_check_all", check_then_grow)
    return src


def test_a_source_that_changes_while_imported_leaves_no_copy(
    tmp_path: Path, grows_after_check: Path
) -> None:
    out = tmp_path / "captures"
    with pytest.raises(ImportFileError, match="changed while it was being imported"):
        import_files([grows_after_check], out)
    (session,) = _sessions(out)
    assert not any((session / ORIGINAL).iterdir())
    (entry,) = read_manifest(session)["capture"]["import"]["files"]
    assert entry["original"] is None and verify_session(session).ok


# -------------------------------------------------------------------- the report folder


@pytest.fixture
def fsize_limit() -> Iterator[Any]:
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)

    def limit(n: int) -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (n, hard))

    try:
        yield limit
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def test_a_report_file_cut_short_leaves_the_old_one_and_no_temporary(
    tmp_path: Path, fsize_limit: Any
) -> None:
    target = tmp_path / "summary.md"
    target.write_text("the previous report\n")
    fsize_limit(1000)
    with pytest.raises(OSError, match="File too large") as err:
        write_private(target, "x" * 5000)
    with pytest.raises(OSError, match="File too large"):
        write_csv(tmp_path / "flows.csv", ({"a": "y" * 100} for _ in range(100)), ["a"])
    fsize_limit(resource.RLIM_INFINITY)
    assert err.value.filename == str(target)  # the error names the file
    assert target.read_text() == "the previous report\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.md"]


def test_a_full_disk_during_analyze_leaves_no_temporary_file(tmp_path: Path) -> None:
    session = import_files([HAR], tmp_path / "captures").session
    report = tmp_path / "report"
    res = _limited(8, "analyze", session, "--out", report, cwd=tmp_path)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "File too large" in res.stderr or "file too large" in res.stderr
    assert _hidden_files(report) == []
    # the report's files are moved into place only once all are written: none is there
    written = {"findings.json", "summary.md", "report.html", "flows.csv", "flows.parquet"}
    assert not written & {p.name for p in report.iterdir()}
