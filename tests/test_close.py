"""``auditor close``: a session left open by its recorder sealed late through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from auditor.cli import main
from auditor.evidence import custody
from auditor.evidence.verify import verify_session
from auditor.session import read_manifest
from tests.test_session import _left_open


def test_close_seals_an_open_session_and_verify_then_passes(session_dir: Path) -> None:
    path = _left_open(session_dir, clean=False)
    runner = CliRunner()
    before = runner.invoke(main, ["verify", str(path)])
    assert before.exit_code == 1 and "never closed" in before.output
    got = runner.invoke(main, ["close", str(path), "--by", "J. Doe", "--reason", "power cut"])
    assert got.exit_code == 0, got.output
    assert "file(s) hashed, status incomplete" in got.output and "by J. Doe" in got.output
    m = read_manifest(path)
    assert m["status"] == "incomplete" and m["sealed_late"]["reason"] == "power cut"
    assert verify_session(path).ok
    assert runner.invoke(main, ["verify", str(path)]).exit_code == 0
    _, entries, _ = custody.read_log(path / "custody.jsonl")
    closes = [e for e in entries if e["command"] == "close"]
    assert len(closes) == 1 and closes[0]["argv"][:2] == ["auditor", "close"]


def test_close_refuses_a_closed_session_and_escapes_who(session_dir: Path) -> None:
    path = _left_open(session_dir, clean=True)
    runner = CliRunner()
    got = runner.invoke(main, ["close", str(path), "--by", "x\x1b[2J\x1b]0;owned\x07", "--json"])
    assert got.exit_code == 0, got.output
    doc = json.loads(got.output)
    assert doc["status"] == "incomplete" and doc["stopped_cleanly"] is True
    assert "\x1b" not in got.output  # the JSON on a terminal escapes it
    again = runner.invoke(main, ["close", str(path)])
    assert again.exit_code == 1 and "already closed" in again.output
