"""``--format pdf``: report.html printed by a real headless Chromium, read back by poppler's
pdfinfo and pdftotext (independent readers) when they are installed, else by counting the
PDF's page objects. Every fold is open on paper, and each recipient starts a page."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from auditor.analysis.engine import analyze, write
from auditor.analysis.model import Analysis
from auditor.analysis.report import write_report
from auditor.analysis.report.story import build_story
from auditor.cli import main
from auditor.errors import AuditorError

from .cdp import CHROMIUM
from .report_material import REAL, hostile, import_session

PDFTOTEXT = shutil.which("pdftotext")
PDFINFO = shutil.which("pdfinfo")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (.ci/run installs it)"
)


def _pages(pdf: Path) -> int:
    """Page count from poppler when installed, else from the PDF's /Type /Page objects."""
    if PDFINFO:
        out = subprocess.run([PDFINFO, str(pdf)], capture_output=True, text=True, check=True)
        return int(re.search(r"^Pages:\s+(\d+)", out.stdout, re.M).group(1))  # type: ignore[union-attr]
    return len(re.findall(rb"/Type\s*/Page(?![a-zA-Z])", pdf.read_bytes()))


def _text(pdf: Path, page: int | None = None) -> str:
    assert PDFTOTEXT is not None
    rng = ["-f", str(page), "-l", str(page)] if page else []
    done = subprocess.run(
        [PDFTOTEXT, *rng, str(pdf), "-"], capture_output=True, text=True, check=True
    )
    return " ".join(done.stdout.split())


@pytest.fixture(scope="module")
def quicmitm(tmp_path_factory: pytest.TempPathFactory) -> tuple[Analysis, Path, Path]:
    """The analysis of a real capture, its report folder (report.pdf and summary.md when
    Chromium is installed) and its session folder."""
    path = REAL["quicmitm_capture"]
    if not path.exists():
        pytest.skip(f"{path} is absent")
    root = tmp_path_factory.mktemp("pdf")
    session = import_session(path, root)
    a = analyze([session])
    out = root / "report"
    if CHROMIUM is not None:
        write(a, out, ["pdf", "md"])
    return a, out, session


@needs_chromium
def test_pdf_of_a_real_capture(quicmitm: tuple[Analysis, Path, Path]) -> None:
    a, out, _ = quicmitm
    pdf = out / "report.pdf"
    assert pdf.read_bytes()[:5] == b"%PDF-"
    assert stat.S_IMODE(pdf.stat().st_mode) == 0o600
    # only what was asked for: the page printed from is not left behind
    assert sorted(p.name for p in out.iterdir()) == ["report.pdf", "summary.md"]
    story = build_story(a.doc)
    assert story.groups, "the capture has findings"
    pages = _pages(pdf)
    # one recipient per page: the summary and each group after the first start a page
    assert pages >= len(story.groups) + 1
    if not PDFTOTEXT:
        pytest.skip("pdftotext (poppler-utils) is not installed: text not checked")
    text = _text(pdf)
    for g in story.groups:
        assert g.name in text
        for item in g.items:
            # the label, the title and the folded description: every fold opened on paper
            assert item.label in text
            assert " ".join(str(item.finding["description"]).split())[:60] in text
    assert "What could not be inspected" in text
    first = " ".join(story.overview[0].text.split())
    assert first[:50] in text
    # every group after the first is at the top of its own page
    starts = [_text(pdf, n)[:200] for n in range(1, pages + 1)]
    for g in story.groups[1:]:
        assert any(s.startswith(g.name) for s in starts), (g.name, starts)
    if PDFINFO:
        info = subprocess.run([PDFINFO, str(pdf)], capture_output=True, text=True).stdout
        assert f"auditor report {a.doc['session']['id']}" in info


@needs_chromium
def test_pdf_of_a_hostile_document_shows_it_inert(tmp_path: Path) -> None:
    doc, flows = hostile()
    written = write_report(tmp_path / "r", doc, flows, ["html", "pdf"])
    assert [p.name for p in written] == ["report.html", "report.pdf"]
    pdf = tmp_path / "r" / "report.pdf"
    assert _pages(pdf) >= 3
    if PDFTOTEXT:
        text = _text(pdf)
        assert "<script>fetch(" in text  # shown as text
        assert "PWNED" not in _text(pdf, 1)[:80]
        assert "123,456,789" in text  # the skipped items' count, whole


def test_pdf_without_chromium_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.delenv("AUDITOR_CHROMIUM", raising=False)
    doc, flows = hostile()
    with pytest.raises(AuditorError, match=r"--format pdf needs Chromium"):
        write_report(tmp_path / "r", doc, flows, ["md", "html", "pdf"])
    assert not (tmp_path / "r").exists()  # refused before anything was written


def test_cli_format_pdf_without_chromium(
    quicmitm: tuple[Analysis, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    session = quicmitm[2]
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setenv("AUDITOR_CHROMIUM", str(tmp_path / "no-such-chromium"))
    res = CliRunner().invoke(
        main, ["analyze", str(session), "--out", str(tmp_path / "r"), "--format", "pdf"]
    )
    assert res.exit_code != 0
    assert "needs Chromium" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "r" / "report.pdf").exists()


def test_an_unknown_format_is_still_refused(tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["analyze", str(tmp_path), "--format", "html,docx"])
    assert res.exit_code != 0 and "unknown format(s): docx" in res.output


def test_page_count_fallback_agrees_with_pdfinfo(quicmitm: tuple[Analysis, Path, Path]) -> None:
    if CHROMIUM is None or PDFINFO is None:
        pytest.skip("needs chromium and pdfinfo")
    pdf = quicmitm[1] / "report.pdf"
    raw = len(re.findall(rb"/Type\s*/Page(?![a-zA-Z])", pdf.read_bytes()))
    assert raw == _pages(pdf) > 0
    assert os.path.getsize(pdf) > 5_000
