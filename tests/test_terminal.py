"""What a person sees on a terminal when auditor quotes hostile text.

Each command runs as a real process on a pseudo-terminal (``os.openpty``: its output is a
tty, so nothing is stripped for a pipe), and what it writes is fed to pyte, a VT100/xterm
emulator, to read the screen back as rows. The attacker's text is the operator of a forged
evidence bundle, and the host and creator name of a tampered HAR; the screen must show the
escapes as text and a verdict that the bundle cannot draw over.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import struct
import subprocess
import sys
import tarfile
import termios
import threading
from dataclasses import dataclass
from pathlib import Path

import pyte
import pytest
from click.testing import CliRunner

from auditor.cli import main
from auditor.evidence.signing import generate_keypair
from auditor.session import SessionWriter
from tests.evidence.conftest import IMEI, make_session, rewrite_bundle

ROWS, COLS = 40, 200
HAR = Path(__file__).parent / "data" / "har" / "websocket.har"  # mitmproxy's, see PROVENANCE


@dataclass
class Screen:
    code: int
    rows: list[str]  # the screen's rows, right-stripped, blank rows dropped
    title: str
    attributes: set[tuple[str, str, bool]]  # (fg, bg, reverse) of every cell drawn
    raw: bytes

    @property
    def text(self) -> str:
        return "\n".join(self.rows)


def _read_all(master: int, into: bytearray) -> None:
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: every writer closed its side of the terminal
            return
        if not chunk:
            return
        into += chunk


def _terminal() -> tuple[int, int, bytearray, threading.Thread]:
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLS, 0, 0))
    out = bytearray()
    reader = threading.Thread(target=_read_all, args=(master, out), daemon=True)
    reader.start()
    return master, slave, out, reader


def on_screen(args: list[str], before: str = "", *, subprocess_: bool = False) -> Screen:
    """Run ``auditor ARGS`` with a pseudo-terminal of ROWS x COLS as its standard input,
    output and error, and read the screen back, after ``before`` was drawn on it.

    ``subprocess_`` runs the real ``auditor`` program; otherwise the command runs in this
    process with sys.stdout and sys.stderr on the terminal (the same bytes to the same
    device, without the second of start-up a process costs)."""
    master, slave, out, reader = _terminal()
    try:
        if subprocess_:
            env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": str(COLS)}
            proc = subprocess.Popen(
                [sys.executable, "-m", "auditor.cli", *args],
                stdin=slave,
                stdout=slave,
                stderr=slave,
                env=env,
                start_new_session=True,
            )
            os.close(slave)
            code = proc.wait(timeout=120)
        else:
            tty = open(slave, "w", encoding="utf-8", buffering=1)
            saved = sys.stdin, sys.stdout, sys.stderr
            sys.stdin = sys.stdout = sys.stderr = tty
            try:
                main.main(args=args, prog_name="auditor", standalone_mode=True)
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            finally:
                sys.stdin, sys.stdout, sys.stderr = saved
                tty.close()
        reader.join(timeout=30)
    finally:
        os.close(master)
    screen = pyte.Screen(COLS, ROWS)
    stream = pyte.ByteStream(screen)
    stream.feed(before.encode())
    stream.feed(bytes(out))
    attrs = {
        (c.fg, c.bg, c.reverse)
        for line in screen.buffer.values()
        for c in line.values()
        if c.data.strip()
    }
    rows = [r.rstrip() for r in screen.display if r.strip()]
    return Screen(code, rows, screen.title, attrs, bytes(out))


def assert_inert(screen: Screen) -> None:
    """Nothing the attacker wrote was obeyed: no colours, no reverse video, no title."""
    assert screen.attributes <= {("default", "default", False)}, screen.attributes
    assert screen.title == "", screen.title


# ------------------------------------------------------------------------- a forged bundle


@dataclass
class Case:
    dir: Path
    pub: str  # the public key verify is given
    genuine_tail: list[str]  # the last two rows `verify` shows of the genuine bundle
    operator_at: int  # the column its operator's name starts at


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> Case:
    """A small session packed by the real `auditor bundle`, signed, as "Jane Doe"."""
    d = tmp_path_factory.mktemp("terminal")
    session = make_session(d / "captures")
    (d / "keys").mkdir(mode=0o700)
    keys = generate_keypair(d / "keys" / "signing.key")
    made = CliRunner().invoke(
        main,
        ["bundle", str(session), "--sign", str(keys.private), "--out", str(d / "genuine.tar.gz"),
         "--operator", "Jane Doe"],
    )  # fmt: skip
    assert made.exit_code == 0, made.output
    # what the genuine bundle shows: the rows a forger copies, character for character
    genuine = on_screen(["verify", str(d / "genuine.tar.gz"), "--pubkey", str(keys.public)])
    assert genuine.code == 0, genuine.text
    assert_inert(genuine)
    tail = genuine.rows[-2:]
    assert tail[0].startswith("SIGNATURE valid") and tail[1].startswith("OK:"), tail
    (row,) = [r for r in genuine.rows if "by Jane Doe)" in r]
    return Case(d, str(keys.public), tail, row.index("Jane Doe"))


def forge(case: Case, operator: str, name: str) -> str:
    """The genuine bundle with ``operator`` in its bundle.json, re-packed as ``name``; its
    signature no longer matches."""

    def edit(members: list[tuple[tarfile.TarInfo, bytes]]) -> list[tuple[tarfile.TarInfo, bytes]]:
        out = []
        for ti, data in members:
            if ti.name == "bundle.json":
                doc = json.loads(data)
                doc["operator"] = operator
                data = json.dumps(doc, indent=2, sort_keys=True).encode()
            out.append((ti, data))
        return out

    return str(rewrite_bundle(case.dir / "genuine.tar.gz", case.dir / name, edit))


def attacks(sig: str, ok: str, at: int = 0) -> dict[str, str]:
    """Operators that, obeyed by a terminal, draw the genuine bundle's last rows over the
    real verdict (``ok`` without its last character, where the real line's ")" closes it);
    ``at`` is the column the operator starts at."""
    return {
        # no control character: padded so the genuine verdict wraps onto a row of its own
        "wrap": "Jane Doe" + "." * (COLS - (at + 8) % COLS) + ok[:-1],
        # the issue's: back to column 0, up one row, erase it, write the genuine rows
        "cursor-up": f"Jane Doe)\r\x1b[1A\x1b[2K{sig}\r\n\x1b[2K{ok[:-1]}",
        # plain newlines: rows of their own, no escape sequence at all
        "newlines": f"Jane Doe)\n{sig}\n{ok[:-1]}",
        # carriage return alone: the rest of the line is written over its start
        "carriage-return": f"Jane Doe)\r{ok[:-1]}" + " " * 40,
        # the same with the one-byte C1 CSI (U+009B) instead of ESC [
        "c1-csi": f"Jane Doe)\r\x9b1A\x9b2K{sig}\r\n\x9b2K{ok[:-1]}",
        # backspaces over the row, then the genuine verdict
        "backspace": "\b" * (COLS + 20) + ok[:-1],
        # clear the screen, draw the genuine rows, hide what follows (black on black), retitle
        "clear-and-hide": f"\x1b[2J\x1b[H{sig}\r\n{ok}\r\n\x1b[30;40m\x1b]0;verified\x07",
        # a bidi override: the row reads right to left from here on
        "bidi": f"Jane Doe\u202e{ok[::-1]}",
    }


def check_forged_verdict(screen: Screen, sig: str, ok: str) -> None:
    assert screen.code == 1
    assert screen.rows[-1].startswith("FAILED: "), screen.text
    assert "signature INVALID" in screen.rows[-1]
    # the forged rows are not drawn as rows: no row starts as the genuine ones do
    assert not [r for r in screen.rows if r.startswith(("OK:", "SIGNATURE valid"))], screen.text
    assert sig not in screen.rows and ok not in screen.rows
    # the operator is on the bundle's row, its control characters shown as escapes
    (about,) = [r for r in screen.rows if r.startswith("bundle ")]
    assert re.search(r"\\u(00(1b|0d|0a|9b|08)|202e)|Jane Doe\.\.\.", about), about
    # every row starts with auditor's own words: quoted text never wraps onto a row
    starts = ("bundle ", "SIGNATURE ", "FAILED: ", "nothing unpacked", "MISSING ", "CHANGED ")
    assert all(r.startswith(starts) for r in screen.rows), screen.text
    assert_inert(screen)


def test_verify_of_a_forged_bundle_in_a_real_terminal(case: Case) -> None:
    """The issue's attack on the real `auditor` program: FAILED is the last row."""
    sig, ok = case.genuine_tail
    bundle = forge(case, attacks(sig, ok)["cursor-up"], "forged.tar.gz")
    screen = on_screen(["verify", bundle, "--pubkey", case.pub], subprocess_=True)
    check_forged_verdict(screen, sig, ok)
    assert screen.rows[-2].startswith("SIGNATURE INVALID"), screen.text
    assert "\\u000d\\u001b[1A\\u001b[2KSIGNATURE valid" in screen.text


@pytest.mark.parametrize("attack", [a for a in attacks("S", "O") if a != "cursor-up"])
def test_verify_of_a_forged_bundle_shows_failed_and_no_forged_verdict(
    case: Case, attack: str
) -> None:
    sig, ok = case.genuine_tail
    # named as long as the genuine one, so that the forger knows the columns
    name = f"{attack[:7]:.<7}.tar.gz"
    bundle = forge(case, attacks(sig, ok, case.operator_at)[attack], name)
    screen = on_screen(["verify", bundle, "--pubkey", case.pub])
    check_forged_verdict(screen, sig, ok)
    assert screen.rows[-2].startswith("SIGNATURE INVALID"), screen.text


def test_unbundle_of_a_forged_bundle_ends_on_failed(case: Case) -> None:
    sig, ok = case.genuine_tail
    bundle = forge(case, attacks(sig, ok)["cursor-up"], "forged-unbundle.tar.gz")
    out = case.dir / "unpacked"
    screen = on_screen(["unbundle", bundle, "--out", str(out), "--pubkey", case.pub])
    check_forged_verdict(screen, sig, ok)
    assert not out.exists()
    assert screen.rows[-2] == f"nothing unpacked to {out}", screen.text
    assert screen.rows[-3].startswith("SIGNATURE INVALID"), screen.text


def test_verify_json_of_a_forged_bundle_is_inert_and_exact(case: Case) -> None:
    sig, ok = case.genuine_tail
    operator = attacks(sig, ok)["c1-csi"] + "\u202e\u200b\x7f"
    bundle = forge(case, operator, "forged-json.tar.gz")
    screen = on_screen(["verify", bundle, "--pubkey", case.pub, "--json"])
    assert screen.code == 1
    doc = json.loads(screen.raw.decode())
    assert doc["operator"] == operator and doc["ok"] is False  # the value itself, exactly
    assert not re.search("[\x1b\x7f-\x9f\u202e\u200b]", screen.raw.decode())
    assert "\\u009b1A" in screen.text and screen.rows[-1] == "}"
    assert_inert(screen)


def test_verify_session_rows_never_start_with_a_quoted_name(tmp_path: Path) -> None:
    """A file planted in a session, its name padded so that a forged verdict would wrap onto
    a row of its own: the line is cut to the terminal's width instead."""
    w = SessionWriter.create(tmp_path)
    w.close()
    forged = "OK: 3 artifacts checked"
    (w.path / ("." * (COLS - len("UNLISTED  ")) + forged)).write_text("planted")
    screen = on_screen(["verify", str(w.path)])
    assert screen.code == 1
    assert screen.rows[-1].startswith("FAILED: "), screen.text
    assert not [r for r in screen.rows if forged in r], screen.text
    assert all(r.startswith(("UNLISTED ", "session ", "FAILED: ")) for r in screen.rows), (
        screen.text
    )
    assert_inert(screen)


# ----------------------------------------------------------------------------- a tampered HAR

ATTACKER = "attacker.example"
# backspaces back over the attacker's name, then a vendor's: "imei sent to api.xiaomi.com"
HOST = ATTACKER + "\b" * len(ATTACKER) + "api.xiaomi.com"
# clear the screen, set the title, and start a line of its own
CREATOR = "mitmproxy\x1b[2J\x1b[3J\x1b[H\x1b]0;owned\x07\nsession FORGED (complete): 0 HTTP flows"


@pytest.fixture(scope="module")
def har_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """mitmproxy's websocket.har, tampered as an attacker would: its creator name clears the
    screen, and its first request sends the IMEI to a host that draws itself as another."""
    d = tmp_path_factory.mktemp("har")
    doc = json.loads(HAR.read_text())
    doc["log"]["creator"]["name"] = CREATOR
    req = doc["log"]["entries"][0]["request"]
    req["url"] = f"https://{HOST}/v3/channel_123?imei={IMEI}"
    req["headers"] = [h for h in req["headers"] if h["name"].lower() != "host"]
    req["headers"].append({"name": "Host", "value": HOST})
    req["queryString"] = [{"name": "imei", "value": IMEI}]
    (d / "evil.har").write_text(json.dumps(doc))
    return d


def test_har_import_and_analysis_show_the_escapes(har_dir: Path) -> None:
    before = "MARKER: on the screen before auditor ran\r\n"
    caps = har_dir / "caps"
    args = ["import", str(har_dir / "evil.har"), "--out", str(caps), "--identifier", f"imei={IMEI}"]
    screen = on_screen(args, before)
    assert screen.code == 0, screen.text
    # the screen was not cleared, the title not set: the creator name is shown as text
    assert screen.rows[0] == before.strip(), screen.text
    assert (
        "mitmproxy\\u001b[2J\\u001b[3J\\u001b[H\\u001b]0;owned\\u0007\\u000asession" in screen.text
    )
    assert not [r for r in screen.rows if r.startswith("session FORGED")], screen.text
    assert_inert(screen)

    (session,) = caps.iterdir()
    screen = on_screen(["analyze", str(session), "--out", str(har_dir / "rep")])
    assert screen.code == 0, screen.text
    shown = [r for r in screen.rows if "imei" in r and "sent to" in r]
    assert shown, screen.text
    # the attacker's name and the backspaces are on the screen; no row names the vendor alone
    assert all(f"{ATTACKER}\\u0008" in r for r in shown), shown
    assert not re.search(r"sent to api\.xiaomi\.com", screen.text), screen.text
    assert_inert(screen)
