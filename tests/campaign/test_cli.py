"""``auditor campaign``'s command: help, and one clear line for each mistake, before any
handset is touched or any folder made (a real, empty adb server answers)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from auditor.campaign.cli import campaign
from tests.vhandset.adb_fixtures import AdbServer


@pytest.fixture(scope="module")
def empty_server(adb_server: AdbServer) -> Iterator[AdbServer]:
    assert adb_server.states() == {}
    yield adb_server


def invoke(out: Path, *args: str) -> Result:
    return CliRunner().invoke(campaign, [*args, "--out", str(out)], catch_exceptions=False)


def test_help_has_examples() -> None:
    res = CliRunner().invoke(campaign, ["--help"])
    assert res.exit_code == 0
    assert "Example:" in res.output and "auditor campaign --all --scenario idle" in res.output
    for option in ("--serial", "--all", "--scenario", "--duration", "--out", "--json"):
        assert option in res.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--all", "--scenario", "no-such-scenario"], "error: no scenario 'no-such-scenario'"),
        (["--scenario", "idle"], "error: name the handsets with --serial S"),
        (["--all", "--serial", "x", "--scenario", "idle"], "error: give --serial or --all"),
        (["--all", "--scenario", "idle"], "error: no devices online"),
        (
            ["--serial", "emulator-5999", "--scenario", "idle"],
            "error: unknown serial 'emulator-5999': the adb server sees none",
        ),
        (
            ["--serial", "a", "--serial", "a", "--scenario", "idle"],
            "error: handset named twice: a",
        ),
    ],
)
def test_mistakes_are_one_line(
    empty_server: AdbServer, tmp_path: Path, args: list[str], message: str
) -> None:
    res = invoke(tmp_path / "out", *args)
    assert res.exit_code == 1, res.output
    assert res.stdout == ""
    (line,) = res.stderr.splitlines()
    assert line.startswith(message), line
    assert not (tmp_path / "out").exists()  # nothing made


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--all", "--scenario", "idle", "--duration", "soon"],
            "Error: Invalid value for '--duration': not a duration: 'soon'",
        ),
        (
            ["--all", "--scenario", "idle", "--packets", "iface:eth0"],
            "Error: Invalid value for '--packets': use auto, off or adb-tcpdump",
        ),
    ],
)
def test_bad_options_are_usage_errors(
    empty_server: AdbServer, tmp_path: Path, args: list[str], message: str
) -> None:
    res = invoke(tmp_path / "out", *args)
    assert res.exit_code == 2, res.output
    assert message in res.stderr
    assert not (tmp_path / "out").exists()
