"""``report.pdf``: ``report.html`` printed by headless Chromium (``--print-to-pdf``) with the
page's own print stylesheet (every fold open, tables whole, one recipient per page).

The page runs no script and loads nothing (its CSP); Chromium is started with a
throw-away profile, and no network of its own (background services disabled). Chromium is
found on the PATH (``chromium``, ``chromium-browser``, ``google-chrome``) or named by
``AUDITOR_CHROMIUM``; without it, asking for a PDF is a clear error.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from auditor.errors import AuditorError
from auditor.fsutil import write_private

log = logging.getLogger(__name__)

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
TIMEOUT_S = 180


def find_chromium() -> str | None:
    named = os.environ.get("AUDITOR_CHROMIUM")
    if named:
        return shutil.which(named) or (named if os.access(named, os.X_OK) else None)
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def require_chromium() -> str:
    """The Chromium to print with, or a clear error saying how to get one."""
    exe = find_chromium()
    if exe is None:
        raise AuditorError(
            "--format pdf needs Chromium to print the report, and none was found (looked for "
            f"{', '.join(CANDIDATES)} on PATH and AUDITOR_CHROMIUM); install it (Debian: "
            "apt-get install chromium) or leave pdf out of --format"
        )
    return exe


def print_pdf(page: Path, target: Path, *, chromium: str | None = None) -> Path:
    """Print ``page`` (an HTML file) to ``target`` (owner-only, written whole)."""
    exe = chromium or require_chromium()
    target = Path(target)
    with tempfile.TemporaryDirectory(prefix="auditor-pdf-") as tmp:
        out = Path(tmp) / "report.pdf"
        args = [
            exe, "--headless", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-extensions",
            f"--user-data-dir={Path(tmp) / 'profile'}", "--no-pdf-header-footer",
            f"--print-to-pdf={out}", Path(page).resolve().as_uri(),
        ]  # fmt: skip
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            args.insert(2, "--no-sandbox")  # Chromium refuses to run as root with its sandbox
        try:
            done = subprocess.run(
                args, capture_output=True, text=True, errors="replace", timeout=TIMEOUT_S
            )
        except subprocess.TimeoutExpired as exc:
            raise AuditorError(f"Chromium did not print the report in {TIMEOUT_S} s") from exc
        except OSError as exc:
            raise AuditorError(f"Chromium could not be started ({exe}): {exc}") from exc
        if not out.is_file() or out.stat().st_size == 0 or out.read_bytes()[:5] != b"%PDF-":
            tail = " ".join(done.stderr.strip().splitlines()[-3:])[-400:]
            raise AuditorError(
                f"Chromium did not print the report (exit status {done.returncode}): {tail}"
            )
        write_private(target, out.read_bytes())
    log.info("report printed to %s", target)
    return target
