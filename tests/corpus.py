"""The real-capture corpus against independent readers: ``python -m tests.corpus [--json]``.

Every public capture, flow file and HAR the tests use (``tests/data/*/``, each folder with its
PROVENANCE.md, and the shared captures in ``../shared/captures`` when present) is read by
auditor and by a reader auditor does not share code with:

- captures (pcap, pcapng, gzip, zstd): tshark. Compared per file: frames, TLS SNI over TCP,
  QUIC SNI (IETF Initials, which tshark decrypts, and gQUIC's ``gquic.tag.sni``), DNS query
  names and HTTP Host headers, as sets;
- mitmproxy flow files: mitmproxy's own ``FlowReader`` (the hosts of the HTTP flows it yields,
  without the placeholder ``unknown`` handshakes it invents for old WebSocket flows);
- HAR and .zhar: the entries' request URLs' hosts, read with ``json``/``zlib``.

It prints one row per file: what each side found, and whether they agree. The per-file
assertions live in the test modules (``tests/packets/test_tshark.py``, ``test_gquic.py``,
``test_linktypes.py``, ``tests/imports/test_mitmflows.py``); this is the table a release note
quotes.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
SHARED = ROOT.parent / "shared" / "captures"
CAPTURE_SUFFIXES = (".pcap", ".pcapng", ".gz", ".zst", ".cap")


def _files() -> list[Path]:
    out = sorted(p for p in DATA.glob("*/*") if p.is_file() and p.name != "PROVENANCE.md")
    if SHARED.is_dir():
        out += sorted(SHARED.glob("*.pcap*"))
    return out


def _tshark_names(path: Path) -> dict[str, Any]:
    tshark = shutil.which("tshark")
    if tshark is None:
        raise SystemExit("tshark is not installed")
    fields = {
        "tls": ("tls.handshake.type == 1 && tcp", "tls.handshake.extensions_server_name"),
        "quic": ("quic", "tls.handshake.extensions_server_name"),
        "gquic": ("gquic.tag.sni", "gquic.tag.sni"),
        "dns": ("dns.flags.response == 0", "dns.qry.name"),
        "http": ("http.request", "http.host"),
    }
    out: dict[str, Any] = {}
    for key, (flt, field) in fields.items():
        res = subprocess.run(
            [tshark, "-n", "-o", "tcp.reassemble_out_of_order:TRUE", "-r", str(path), "-Y", flt,
             "-T", "fields", "-e", field],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        out[key] = {v for line in res.stdout.splitlines() for v in line.split(",") if v}
    res = subprocess.run([tshark, "-n", "-r", str(path), "-T", "fields", "-e", "frame.number"],
                         capture_output=True, text=True, check=False)  # fmt: skip
    out["frames"] = len(res.stdout.splitlines())
    return out


def _auditor_names(path: Path) -> dict[str, Any]:
    from auditor.packets import flows as F
    from auditor.packets import read_capture

    r = read_capture(path)
    fl = r.flows

    def split(col: str) -> set[str]:
        if col not in fl:
            return set()
        return {v for x in fl[col].dropna() for v in str(x).split(";") if v}

    return {
        "tls": split(F.SNI),
        "quic": split(F.QUIC_SNI),  # IETF QUIC and gQUIC alike
        "dns": {q or "<Root>" for q in r.dns.loc[~r.dns[F.RESPONSE].astype(bool), F.QNAME]}
        if len(r.dns)
        else set(),
        "http": {h.rsplit(":", 1)[0] if h.count(":") == 1 else h for h in split(F.HTTP_HOST)},
        "frames": r.counts["packets"],
    }


def capture_row(path: Path) -> dict[str, Any]:
    theirs, ours = _tshark_names(path), _auditor_names(path)
    theirs["http"] = {h.rsplit(":", 1)[0] if h.count(":") == 1 else h for h in theirs["http"]}
    theirs["quic"] |= theirs.pop("gquic")  # auditor gives both in one column
    keys = ("tls", "quic", "dns", "http")
    row: dict[str, Any] = {"file": _rel(path), "reader": "tshark", "frames": ours["frames"],
                           "frames_theirs": theirs["frames"]}  # fmt: skip
    names_ours = set().union(*(ours[k] for k in keys))
    names_theirs = set().union(*(theirs[k] for k in keys))
    row["names"] = len(names_ours)
    row["names_theirs"] = len(names_theirs)
    row["only_auditor"] = sorted(names_ours - names_theirs)
    row["only_theirs"] = sorted(names_theirs - names_ours)
    row["by_kind"] = {k: [len(ours[k]), len(theirs[k])] for k in keys if ours[k] or theirs[k]}
    row["agree"] = ours["frames"] == theirs["frames"] and all(ours[k] == theirs[k] for k in keys)
    return row


def flowfile_row(path: Path) -> dict[str, Any]:
    from mitmproxy import http as mhttp
    from mitmproxy import io as mio

    theirs: set[str] = set()
    error = None
    try:
        with path.open("rb") as fh:
            for f in mio.FlowReader(fh).stream():
                if isinstance(f, mhttp.HTTPFlow) and f.request.host != "unknown":
                    theirs.add(f.request.pretty_host)
    except Exception as exc:  # the reference reader refused the file
        error = str(exc)
    ours: set[str] = set()
    try:
        ours = _imported_hosts(path)
    except Exception as exc:  # shown in the table
        error = error or str(exc)
    return {"file": _rel(path), "reader": "mitmproxy FlowReader", "names": len(ours),
            "names_theirs": len(theirs), "only_auditor": sorted(ours - theirs),
            "only_theirs": sorted(theirs - ours), "agree": ours == theirs,
            "note": error}  # fmt: skip


def har_row(path: Path) -> dict[str, Any]:
    raw = path.read_bytes()
    if raw[:1] != b"{":
        raw = zlib.decompress(raw, zlib.MAX_WBITS | 32)  # zlib or gzip
    doc = json.load(io.BytesIO(raw))
    theirs = {urlsplit(e["request"]["url"]).hostname or "" for e in doc["log"]["entries"]}
    ours = _imported_hosts(path)
    theirs.discard("")
    return {"file": _rel(path), "reader": "json", "names": len(ours),
            "names_theirs": len(theirs), "only_auditor": sorted(ours - theirs),
            "only_theirs": sorted(theirs - ours), "agree": ours == theirs}  # fmt: skip


def _imported_hosts(path: Path) -> set[str]:
    """The hosts of the HTTP records ``auditor import`` writes for ``path``."""
    from auditor.imports.session import import_files
    from auditor.records import HttpRecord
    from auditor.session import Session

    with tempfile.TemporaryDirectory() as tmp:
        res = import_files([path], Path(tmp))
        return {r.host for r in Session(res.session).records() if isinstance(r, HttpRecord)}


def _rel(path: Path) -> str:
    for base in (DATA, SHARED.parent):
        try:
            return str(path.relative_to(base))
        except ValueError:
            continue
    return str(path)


def rows() -> list[dict[str, Any]]:
    out = []
    for path in _files():
        name = path.name.lower()
        try:
            if name.endswith((".mitm", ".flows")):
                out.append(flowfile_row(path))
            elif name.endswith((".har", ".zhar")):
                out.append(har_row(path))
            elif name.endswith(CAPTURE_SUFFIXES):
                out.append(capture_row(path))
        except Exception as exc:  # a row, not a crash
            out.append({"file": _rel(path), "agree": False, "note": f"{type(exc).__name__}: {exc}"})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="one JSON object per file")
    args = ap.parse_args(argv)
    table = rows()
    if args.json:
        for row in table:
            print(json.dumps(row, sort_keys=True))
        return 0
    print(
        "| file | reader | names auditor / theirs | frames auditor / theirs | agree | differences |"
    )
    print("|---|---|---|---|---|---|")
    for r in table:
        diff = []
        if r.get("only_auditor"):
            diff.append("only auditor: " + ", ".join(r["only_auditor"][:5]))
        if r.get("only_theirs"):
            diff.append("only theirs: " + ", ".join(r["only_theirs"][:5]))
        if r.get("note"):
            diff.append(str(r["note"])[:120])
        frames = f"{r['frames']} / {r['frames_theirs']}" if "frames" in r else ""
        names = f"{r.get('names', '')} / {r.get('names_theirs', '')}"
        agree = "yes" if r.get("agree") else "no"
        print(f"| {r['file']} | {r.get('reader', '')} | {names} | {frames} | {agree} | "
              f"{'; '.join(diff)} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
