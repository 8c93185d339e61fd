"""report.html laid out by a real headless Chromium at a desktop width (1400 px) and a
phone's (390 px, mobile viewport), and as printed: the page never scrolls sideways, no label
or number is cut, numbers stay on one line, every fold opens in print.

One Chromium for the whole module, driven over its DevTools pipe (tests/analysis/cdp.py);
the page itself runs no script, the measurements run in DevTools' own world. The reports
are those of real captures (report_material.REAL) and a hostile document.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from auditor.analysis.engine import write
from auditor.analysis.report import write_report

from .cdp import CHROMIUM, Browser
from .report_material import REAL, analyse, hostile

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (.ci/run installs it)"
)

WIDTHS = {"desktop": (1400, False), "phone": (390, True)}
PRINT_WIDTH = 703  # A4 less the print stylesheet's 12 mm margins, in CSS pixels

LAYOUT_JS = (Path(__file__).parent / "report_layout.js").read_text(encoding="utf-8")
OPEN_FOLDS = "document.querySelectorAll('details').forEach(d => d.open = true); true"
BREAKS = "[...document.querySelectorAll('.recipient')].map(s => getComputedStyle(s).breakBefore)"


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("layout")
    out: dict[str, Path] = {}
    for name, path in REAL.items():
        if not path.exists():
            continue
        write(analyse(path, root / name), root / name / "report", ["html"])
        out[name] = root / name / "report" / "report.html"
    doc, flows = hostile()
    write_report(root / "hostile", doc, flows, ["html"])
    out["hostile"] = root / "hostile" / "report.html"
    return out


@pytest.fixture(scope="module")
def measured(
    pages: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[tuple[str, str], dict[str, Any]]]:
    """Every page at every width (folds as they come, then all open) and printed."""
    root = tmp_path_factory.mktemp("chromium")
    results: dict[tuple[str, str], dict[str, Any]] = {}
    with Browser(root / "profile") as b:
        for name, page in pages.items():
            results[(name, "details")] = page.read_text(encoding="utf-8").count("<details")
            for label, (width, mobile) in WIDTHS.items():
                b.media("screen")
                b.load(page.as_uri(), width, 900, mobile=mobile)
                closed = b.evaluate(LAYOUT_JS)
                closed["requests"] = b.requests()
                shot = root / f"{name}-{width}.png"
                b.screenshot(shot)
                closed["screenshot"] = shot
                b.evaluate(OPEN_FOLDS)
                results[(name, label)] = closed
                results[(name, label + "-open")] = b.evaluate(LAYOUT_JS)
                print(f"{name} at {width} px: scrollWidth {closed['scrollWidth']}")
            b.media("print")
            b.load(page.as_uri(), PRINT_WIDTH, 1000)
            printed = b.evaluate(LAYOUT_JS)
            printed["breaks"] = b.evaluate(BREAKS)
            results[(name, "print")] = printed
        b.media("screen")
        yield results


CASES = [(n, w) for n in [*REAL, "hostile"] for w in WIDTHS]


@pytest.mark.parametrize(("name", "width"), CASES)
def test_no_sideways_scrolling_and_nothing_cut(
    measured: dict[tuple[str, str], dict[str, Any]], name: str, width: str
) -> None:
    if (name, width) not in measured:
        pytest.skip(f"{name}: its capture is absent")
    for state in (width, width + "-open"):
        m = measured[(name, state)]
        assert m["viewport"] == WIDTHS[width][0], m["viewport"]  # the phone's viewport holds
        assert m["scrollWidth"] <= m["viewport"], (state, m["scrollWidth"], m["outside"][:5])
        assert m["outside"] == [], state
        assert m["clipped"] == [], state
        assert m["wrapped"] == [], state
        assert m["labels"] > 0 and m["numbers"] > 0
    # the folds are closed on screen, and all open once opened
    assert measured[(name, width)]["hiddenFolds"] == measured[(name, width)]["folds"]
    assert measured[(name, width)]["folds"] == measured[(name, "details")]
    assert measured[(name, width + "-open")]["hiddenFolds"] == 0
    m = measured[(name, width)]
    assert len(m["requests"]) == 1 and m["requests"][0].startswith("file://"), m["requests"]
    shot = m["screenshot"].read_bytes()
    assert shot[:8] == b"\x89PNG\r\n\x1a\n" and len(shot) > 10_000


@pytest.mark.parametrize("name", [*REAL, "hostile"])
def test_wide_tables_scroll_in_their_box_only_on_a_phone(
    measured: dict[tuple[str, str], dict[str, Any]], name: str
) -> None:
    if (name, "desktop") not in measured:
        pytest.skip(f"{name}: its capture is absent")
    desktop, phone = measured[(name, "desktop")], measured[(name, "phone")]
    assert desktop["scrollBoxes"] == phone["scrollBoxes"] > 0
    if name != "hostile":  # its 40-digit AS numbers may not fit anywhere
        assert desktop["scrolling"] == 0, "a real report's tables fit a desktop screen"


@pytest.mark.parametrize("name", [*REAL, "hostile"])
def test_printed_every_fold_is_open_and_nothing_is_cut(
    measured: dict[tuple[str, str], dict[str, Any]], name: str
) -> None:
    if (name, "print") not in measured:
        pytest.skip(f"{name}: its capture is absent")
    m = measured[(name, "print")]
    assert m["folds"] == measured[(name, "details")] and m["hiddenFolds"] == 0
    assert m["scrollWidth"] <= PRINT_WIDTH, (m["scrollWidth"], m["outside"][:5])
    assert m["outside"] == [] and m["clipped"] == []
    assert m["wrapped"] == []
    # one recipient per page: every group after the first starts a new page
    assert m["breaks"][1:] == ["page"] * (len(m["breaks"]) - 1)


def test_the_layout_check_sees_a_cut_label_and_a_wide_page(tmp_path: Path) -> None:
    """The check can fail: the old report's fixed 720 px bar chart, whose value labels ran
    past the SVG's edge, and a wide unbroken line."""
    if CHROMIUM is None:  # pragma: no cover - the module is skipped
        pytest.skip("chromium")
    page = tmp_path / "old.html"
    page.write_text(
        "<!DOCTYPE html><meta name='viewport' content='width=device-width'><body>"
        '<svg xmlns="http://www.w3.org/2000/svg" width="720" height="30">'
        '<text x="655" y="13" font-size="10">103,960 up / 345,045 down</text></svg>'
        "<p><span class='num'>1,234,567</span></p><p style='white-space:nowrap'>"
        + "x" * 300
        + "</p></body>"
    )
    with Browser(tmp_path / "profile") as b:
        b.load(page.as_uri(), 390, 600, mobile=True)
        m = b.evaluate(LAYOUT_JS)
    assert m["scrollWidth"] > 390
    assert any(x.startswith("svg text") for x in m["clipped"]), m["clipped"]
    assert m["outside"] and m["wrapped"] == []
