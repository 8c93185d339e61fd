import ast
import json
import logging
import re
import shlex
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from auditor import __version__
from auditor.cli import main
from auditor.cli.common import TerminalFormatter, _escaped_excepthook, handle_errors
from auditor.cli.device_cmds import parse_size
from auditor.records import HttpRecord
from auditor.session import SessionWriter

CLI = Path(__file__).parents[1] / "auditor" / "cli"  # the package: main and its command modules
WEBSOCKET_HAR = Path(__file__).parent / "data" / "har" / "websocket.har"


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


# ------------------------------------------------------------------ what reaches the terminal


def test_cli_prints_only_through_the_escaping_helpers() -> None:
    """Every line the CLI writes goes through echo() or emit_json(), which escape what came
    from a capture, a bundle or a device; a command that calls click.echo or print itself
    would bypass them."""
    modules = sorted(CLI.glob("*.py"))
    assert len(modules) > 3
    allowed = {"echo", "emit_json_text", "_escaped_excepthook", "_escaped_thread_hook"}
    bad = []
    for fn in (n for m in modules for n in ast.walk(ast.parse(m.read_text()))):
        if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef) or fn.name in allowed:
            continue
        for node in ast.walk(fn):
            if not isinstance(node, ast.Call):
                continue
            name = ast.unparse(node.func)
            if name in ("click.echo", "click.secho", "print", "sys.stdout.write",
                        "sys.stderr.write") or name.endswith(".print"):  # fmt: skip
                arg = ast.unparse(node.args[0]) if node.args else ""
                if not arg.startswith(("terminal_line(", "table")):
                    bad.append(f"{fn.name}: {name}({arg[:40]})")
    assert not bad, bad


HOSTILE = "Jane\x1b[1A\x1b[2K\rOK: 9 files checked\x9b2J\u202egnp.exe\u200b\b\b"


def test_errors_quote_on_one_escaped_line(tmp_path: Path) -> None:
    # an archive named by its sender: the error quotes the name, on one line
    bad = tmp_path / "b\nOK: 4 files checked\x1b[2K.tar.gz"
    bad.write_bytes(b"not an archive")
    res = CliRunner().invoke(main, ["verify", str(bad)])
    assert res.exit_code == 1
    (line,) = res.output.splitlines()
    assert line.startswith("error: ") and "\\u000aOK: 4 files checked\\u001b[2K" in line


def test_verify_session_quotes_file_names_on_their_line_and_ends_on_the_verdict(
    tmp_path: Path,
) -> None:
    w = SessionWriter.create(tmp_path, device={"manufacturer": HOSTILE})
    w.close()
    (w.path / f"x{HOSTILE}\nOK: 12 artifacts checked").write_text("planted")
    res = CliRunner().invoke(main, ["verify", str(w.path)])
    assert res.exit_code == 1
    lines = res.stdout.splitlines()
    assert lines[-1].startswith("FAILED: ") and str(w.path) not in lines[-1]
    assert not [x for x in lines if x.startswith("OK")]
    unlisted = [x for x in lines if x.startswith("UNLISTED")]
    assert unlisted and "\\u001b[1A" in unlisted[0] and "\\u000aOK: 12" in unlisted[0]
    assert all(c not in res.output for c in "\x1b\x9b\u202e\u200b\b\r")
    # the sessions table quotes the manifest: escaped too
    table = CliRunner().invoke(main, ["sessions", str(tmp_path)])
    assert table.exit_code == 0 and "Jane\\u001b[" in table.output, table.output
    assert all(c not in table.output for c in "\x1b\x9b\u202e\u200b\b\r")
    as_json = CliRunner().invoke(main, ["sessions", str(tmp_path), "--json"])
    (item,) = json.loads(as_json.output)
    assert HOSTILE in item["device"]  # the JSON holds the value itself, written inertly
    assert all(c not in as_json.output for c in "\x1b\x9b\u202e\u200b\b\r")
    assert "\\u009b2J\\u202egnp.exe\\u200b" in as_json.output


def test_log_records_and_tracebacks_are_escaped(capsys: pytest.CaptureFixture[str]) -> None:
    fmt = TerminalFormatter("%(levelname)s %(name)s: %(message)s")
    try:
        raise ValueError(f"bad host {HOSTILE}")
    except ValueError:
        rec = logging.LogRecord(
            "auditor.x", logging.WARNING, __file__, 1, "host %s\nOK", (HOSTILE,), sys.exc_info()
        )
    out = fmt.format(rec)
    first, *rest = out.splitlines()
    assert first.startswith("WARNING auditor.x: host Jane\\u001b[1A") and "\\u000aOK" in first
    assert rest[0].startswith("Traceback") and "bad host Jane\\u001b[1A" in out
    assert all(c not in out for c in "\x1b\x9b\u202e\u200b\b\r")
    exc = ValueError(HOSTILE)
    _escaped_excepthook(ValueError, exc, None)
    err = capsys.readouterr().err
    assert "ValueError: Jane\\u001b[1A" in err and "\x1b" not in err


def test_a_real_run_escapes_its_log_and_its_traceback(tmp_path: Path) -> None:
    """In a process of its own, as a user runs it: after the command line is read, a log
    record and an uncaught exception that quote hostile text reach stderr escaped."""
    script = (
        "import logging, sys\n"
        "from auditor.cli import main\n"
        f"main(['-v', 'sessions', {str(tmp_path)!r}], standalone_mode=False)\n"
        f"logging.getLogger('auditor.x').warning('host %s', {HOSTILE!r})\n"
        f"raise ValueError({HOSTILE!r})\n"
    )
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert res.returncode == 1
    assert "WARNING auditor.x: host Jane\\u001b[1A\\u001b[2K\\u000dOK" in res.stderr, res.stderr
    assert "ValueError: Jane\\u001b[1A" in res.stderr, res.stderr
    assert all(c not in res.stderr for c in "\x1b\x9b\u202e\u200b\b\r"), res.stderr


# ----------------------------------------------------------------------------------- disk full


def test_no_space_left_is_one_line_naming_the_file(capsys: pytest.CaptureFixture[str]) -> None:
    """A real ENOSPC: /dev/full refuses every write."""

    @handle_errors
    def write_report() -> None:
        with open("/dev/full", "w") as f:
            f.write("x" * 100_000)
            f.flush()

    with pytest.raises(SystemExit) as exit_:
        write_report()
    assert exit_.value.code == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line == (
        "error: cannot write /dev/full: no space left on the device (ENOSPC); "
        "free some space and run the command again"
    )


@pytest.fixture(scope="module")
def har_session(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("caps")
    res = CliRunner().invoke(main, ["import", str(WEBSOCKET_HAR), "--out", str(out)])
    assert res.exit_code == 0, res.output
    (session,) = out.iterdir()
    return session


def _limited(kib: int, *args: str | Path) -> subprocess.CompletedProcess[str]:
    """``auditor ARGS`` with its files limited to ``kib`` KiB (bash's `ulimit -f`): a write
    past it fails with EFBIG, as on a full disk (Python ignores SIGXFSZ)."""
    cmd = " ".join(shlex.quote(str(a)) for a in (sys.executable, "-m", "auditor.cli", *args))
    return subprocess.run(
        ["bash", "-c", f"ulimit -f {kib}; exec {cmd}"], capture_output=True, text=True, timeout=120
    )


def test_full_disk_during_analyze_is_one_clear_line(har_session: Path, tmp_path: Path) -> None:
    res = _limited(2, "analyze", har_session, "--out", tmp_path / "rep")
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr
    errors = [x for x in res.stderr.splitlines() if x.startswith("error:")]
    assert len(errors) == 1 and len(res.stderr.splitlines()) <= 2, res.stderr  # + custody warning
    assert re.fullmatch(
        rf"error: cannot write {re.escape(str(tmp_path / 'rep'))}/\S+: file too large .*\(EFBIG\); "
        r"free some space and run the command again",
        errors[0],
    ), errors[0]


def test_full_disk_during_import_is_one_clear_line(tmp_path: Path) -> None:
    res = _limited(16, "import", WEBSOCKET_HAR, "--out", tmp_path / "caps")
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr
    (line,) = [x for x in res.stderr.splitlines() if x.startswith("error:")]
    assert "websocket.har" in line and "too large" in line.lower(), line
