import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from auditor import __version__
from auditor.cli import main, parse_size
from auditor.records import HttpRecord
from auditor.session import SessionWriter


def _all_commands(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
    out = []
    for name, cmd in sorted(group.commands.items()):
        out.append((f"{prefix}{name}", cmd))
        if isinstance(cmd, click.Group):
            out += _all_commands(cmd, f"{prefix}{name} ")
    return out


@pytest.mark.parametrize("name,cmd", _all_commands(main), ids=lambda x: str(x))
def test_every_command_has_help_with_an_example(name: str, cmd: click.Command) -> None:
    assert cmd.help and len(cmd.help.strip()) > 20, f"{name} has no help"
    if not isinstance(cmd, click.Group):
        assert "Example" in cmd.help, f"{name} help has no example"
    res = CliRunner().invoke(main, [*name.split(), "--help"])
    assert res.exit_code == 0 and "Usage:" in res.output


def test_version() -> None:
    res = CliRunner().invoke(main, ["--version"])
    assert res.exit_code == 0 and __version__ in res.output


def test_sessions_json_and_table(tmp_path: Path) -> None:
    w = SessionWriter.create(tmp_path, device={"manufacturer": "Xiaomi", "model": "M2007J3SG"})
    w.write(
        HttpRecord(
            id="1",
            method="GET",
            scheme="http",
            host="h",
            port=80,
            path="/",
            url="http://h/",
            request_start="2026-01-01T00:00:00.000000Z",
        )
    )
    w.close()
    res = CliRunner().invoke(main, ["sessions", str(tmp_path), "--json"])
    assert res.exit_code == 0, res.output
    (item,) = json.loads(res.output)
    assert item["flows"] == 1 and item["status"] == "complete" and "Xiaomi" in item["device"]
    table = CliRunner().invoke(main, ["sessions", str(tmp_path)])
    assert table.exit_code == 0 and "Xiaomi" in table.output


def test_errors_are_one_line_and_nonzero(tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["sessions", str(tmp_path / "missing")])
    assert res.exit_code == 1 and res.output.strip().startswith("error:")
    res = CliRunner().invoke(main, ["verify", str(tmp_path)])
    assert res.exit_code == 1 and "not a capture session" in res.output
    res = CliRunner().invoke(main, ["capture", "--duration", "soon"])
    assert res.exit_code == 2 and "not a duration" in res.output
    res = CliRunner().invoke(main, ["capture"])
    assert res.exit_code == 1 and "--no-device" in res.output


def test_parse_size() -> None:
    assert parse_size("64MiB") == 64 * 1024 * 1024
    assert parse_size("1000") == 1000
    assert parse_size("1.5 KiB") == 1536
    for bad in ("", "lots", "-1", "5 parsecs"):
        with pytest.raises(click.BadParameter):
            parse_size(bad)
