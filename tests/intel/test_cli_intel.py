"""The ``auditor intel`` commands as a user meets them: real processes for the cold-start
lookup (standard input, JSON lines, the index in the cache folder), and the import of a data
set that every later lookup then uses."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

SAMPLES = Path(__file__).with_name("samples") / "datasets"
AUDITOR = str(Path(sys.executable).with_name("auditor"))


def _run(
    args: list[str], env: dict[str, str], stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [AUDITOR, *args], env=env, input=stdin, text=True, capture_output=True, timeout=120
    )


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "AUDITOR_DATA_DIR": str(tmp_path / "data"),
        "AUDITOR_CACHE_DIR": str(tmp_path / "cache"),
    }


def test_many_hosts_on_stdin_give_one_json_line_each(env: dict[str, str], tmp_path: Path) -> None:
    hosts = [
        "tracking.miui.com",
        "store.steampowered.com",
        "d1.cloudfront.net",
        "8.8.8.8",
        "\x1b[2Jx",
    ]
    res = _run(["intel", "lookup", "-", "--json"], env, "\n".join(hosts) + "\n")
    assert res.returncode == 0, res.stderr
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert len(rows) == len(hosts)
    assert rows[0]["organisation"] == "xiaomi" and rows[0]["basis"] == "kb-host"
    # v2fly's steam list, bundled and not aliased: shown as evidence, names no recipient
    assert rows[1]["basis"] == "none" and rows[1]["organisation"] is None
    assert rows[1]["evidence"][0]["basis"] == "dataset"
    assert rows[1]["evidence"][0]["source"]["note"].startswith("data set, licence MIT")
    assert rows[2]["organisation"] is None and rows[2]["hosting"]["organisation"] == "aws"
    assert rows[3]["ip"] == "8.8.8.8" and rows[3]["organisation"] is None
    assert rows[4]["note"] == "not a valid host name" and "\x1b" not in res.stdout
    # the index was written owner-only, and is read by the next process
    (index,) = (tmp_path / "cache").glob("intel-index-*.pickle")
    assert stat.S_IMODE(index.stat().st_mode) == 0o600
    assert stat.S_IMODE(index.parent.stat().st_mode) == 0o700
    again = _run(["intel", "lookup", "tracking.miui.com"], env)
    assert again.returncode == 0 and "recipient:     Xiaomi Corporation" in again.stdout
    assert list((tmp_path / "cache").glob("intel-index-*.pickle")) == [index]


def test_text_output_escapes_what_it_prints(env: dict[str, str]) -> None:
    res = _run(["intel", "lookup", "evil\x1b]0;title\x07.example"], env)
    assert res.returncode == 0 and "\x1b" not in res.stdout and "\x07" not in res.stdout


def test_an_index_that_others_may_write_is_not_read(env: dict[str, str], tmp_path: Path) -> None:
    assert _run(["intel", "lookup", "tracking.miui.com"], env).returncode == 0
    (index,) = (tmp_path / "cache").glob("intel-index-*.pickle")
    index.write_bytes(b"not a pickle")  # tampered...
    os.chmod(index, 0o666)  # noqa: S103 - writable by others: it must never be unpickled
    res = _run(["intel", "lookup", "tracking.miui.com", "--json"], env)
    assert res.returncode == 0 and json.loads(res.stdout)["organisation"] == "xiaomi"
    assert "not owner-only" in res.stderr


def test_an_imported_data_set_is_used_by_later_lookups_and_named(
    env: dict[str, str], tmp_path: Path
) -> None:
    src = next(p for p in sorted((SAMPLES / "ghostery").iterdir()) if p.suffix == ".json")
    before = _run(["intel", "datasets", "--json"], env)
    ids_before = {d["id"] for d in json.loads(before.stdout)}
    res = _run(["intel", "import", "ghostery", str(src), "--json"], env)
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    assert info["entities"] > 0 and len(info["sha256"]) == 64 and not info["bundled"]
    listed = {d["id"] for d in json.loads(_run(["intel", "datasets", "--json"], env).stdout)}
    assert listed == ids_before | {info["id"]}
    removed = _run(["intel", "remove", info["id"]], env)
    assert removed.returncode == 0
    gone = _run(["intel", "remove", info["id"]], env)
    assert gone.returncode != 0 and gone.stderr.startswith("error:")


@pytest.mark.parametrize("garbage", [b"\x80\x05X\x01\x00\x00\x00\xff.", b"\x80\x34.", b""])
def test_a_damaged_owner_only_index_is_rebuilt(
    env: dict[str, str], tmp_path: Path, garbage: bytes
) -> None:
    assert _run(["intel", "lookup", "tracking.miui.com"], env).returncode == 0
    (index,) = (tmp_path / "cache").glob("intel-index-*.pickle")
    index.write_bytes(garbage)  # still owner-only: read, found damaged, rebuilt
    res = _run(["intel", "lookup", "tracking.miui.com", "--json"], env)
    assert res.returncode == 0 and "Traceback" not in res.stderr
    assert json.loads(res.stdout)["organisation"] == "xiaomi"
    assert index.read_bytes() != garbage


def test_error_lines_escape_what_they_quote(env: dict[str, str], tmp_path: Path) -> None:
    """The error quotes the path as given; a bidi control in it is shown escaped."""
    res = _run(["intel", "import", "ghostery", str(tmp_path / "no\u202esuch.json")], env)
    assert res.returncode != 0 and res.stderr.startswith("error:")
    assert "\u202e" not in res.stderr and "no\\u202esuch.json" in res.stderr
