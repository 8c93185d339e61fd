"""The custody log: one chained JSON line per command; breaks in the chain are found where
they are; concurrent writers keep the chain whole; writing needs a session folder."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import stat
from pathlib import Path

import pytest

from auditor.evidence.custody import (
    CustodyEntry,
    append,
    check_log,
    parse_log,
    read_log,
    record,
)
from auditor.evidence.verify import verify_session
from auditor.session import CUSTODY, SessionWriter


@pytest.fixture
def sess(tmp_path: Path) -> Path:
    w = SessionWriter.create(tmp_path)
    w.close()
    return w.path


def test_append_chains_lines(sess: Path) -> None:
    for i in range(3):
        append(sess, CustodyEntry(f"cmd{i}", ("auditor", f"cmd{i}"), i))
    log = sess / CUSTODY
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    lines = log.read_bytes().splitlines()
    objs = [json.loads(x) for x in lines]
    assert objs[0]["prev_sha256"] is None
    assert objs[1]["prev_sha256"] == hashlib.sha256(lines[0]).hexdigest()
    assert objs[2]["prev_sha256"] == hashlib.sha256(lines[1]).hexdigest()
    assert [o["outcome"] for o in objs] == ["ok", "failed", "failed"]
    assert check_log(log) == []
    # the log is no artifact: the closed session still verifies
    assert verify_session(sess).ok


def test_chain_breaks_are_located(sess: Path) -> None:
    for i in range(4):
        append(sess, CustodyEntry("verify", ("auditor", "verify", str(i)), 0))
    lines = (sess / CUSTODY).read_bytes().splitlines(keepends=True)
    edited = lines[1].replace(b'"verify","argv"', b'"bundle","argv"')
    assert edited != lines[1]
    assert parse_log(b"".join([lines[0], edited, *lines[2:]]))[1] == [
        "line 3 does not follow line 2 (hash chain broken: a line was edited, removed or inserted)"
    ]
    assert "line 2 does not follow line 1" in parse_log(b"".join([lines[0], *lines[2:]]))[1][0]
    _, problems = parse_log(b"".join(lines)[:-5])
    assert problems == ["line 4 is truncated (no newline)", "line 4 is not JSON"]


def test_torn_tail_is_mended(sess: Path) -> None:
    append(sess, CustodyEntry("a", ("auditor", "a"), 0))
    with open(sess / CUSTODY, "ab") as fh:
        fh.write(b'{"torn": ')
    append(sess, CustodyEntry("b", ("auditor", "b"), 0))
    _, entries, problems = read_log(sess / CUSTODY)
    assert [e.get("command") for e in entries] == ["a", "b"]
    assert problems == ["line 2 is not JSON"]  # the chain itself goes on through the torn line


def test_record_only_writes_into_sessions(sess: Path, tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    warnings = record([sess, sess, plain, tmp_path / "missing"], "x", ["auditor", "x"], 0)
    assert warnings == []
    assert len((sess / CUSTODY).read_bytes().splitlines()) == 1  # named twice, logged once
    assert not (plain / CUSTODY).exists()


def test_record_warns_when_it_cannot_write(sess: Path, tmp_path: Path) -> None:
    (sess / CUSTODY).symlink_to(tmp_path / "elsewhere")
    (warning,) = record([sess], "x", ["auditor", "x"], 0)
    assert "custody log of" in warning and "not written" in warning
    assert not (tmp_path / "elsewhere").exists()


def _appender(args: tuple[str, int]) -> None:
    path, n = args
    for i in range(n):
        append(Path(path), CustodyEntry("verify", ("auditor", "verify", str(i)), 0))


def test_concurrent_appends_keep_the_chain(sess: Path) -> None:
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        pool.map(_appender, [(str(sess), 25)] * 4)
    _, entries, problems = read_log(sess / CUSTODY)
    assert len(entries) == 100 and problems == []
