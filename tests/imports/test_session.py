"""The import driver: format detection, the session it makes, its errors, and the CLI text."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from mitmproxy import io as mio
from mitmproxy.test import tflow

import auditor.cli
from auditor.evidence.verify import verify_session
from auditor.imports import ImportFileError, ImportFormat, detect_format
from auditor.imports.session import ORIGINAL, import_command, import_files, parse_identifiers
from auditor.records import DnsRecord, EventRecord, HttpRecord
from auditor.session import Session, read_manifest
from auditor.timeutil import parse_iso
from tests.packets import helpers as packet_helpers

SAMPLES = Path(__file__).parent / "samples"
PCAP_HEADER = bytes.fromhex("d4c3b2a102000400000000000000000000000400" + "01000000")
PCAPNG_HEADER = bytes.fromhex("0a0d0d0a1c0000004d3c2b1a01000000ffffffffffffffff1c000000")


def _flow_file(path: Path, *flows: Any) -> Path:
    with open(path, "wb") as fh:
        w = mio.FlowWriter(fh)
        for f in flows:
            w.add(f)
    return path


@pytest.fixture
def flows_file(tmp_path: Path) -> Path:
    ok = tflow.tflow(resp=True)
    ok.request.content = b"imei=490154203237518"
    return _flow_file(tmp_path / "phone.mitm", ok, tflow.tdnsflow(resp=True), tflow.ttcpflow())


@pytest.fixture
def out(tmp_path: Path) -> Path:
    return tmp_path / "captures"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _sessions(out: Path) -> list[Path]:
    return sorted(p for p in out.iterdir()) if out.exists() else []


# --------------------------------------------------------------------------------- detection


def test_detect_format(flows_file: Path) -> None:
    har = (SAMPLES / "chrome.har").read_bytes()
    flows = flows_file.read_bytes()
    assert detect_format(har) is ImportFormat.HAR
    assert detect_format(b"\xef\xbb\xbf \n" + har) is ImportFormat.HAR
    assert detect_format(har.decode().encode("utf-16")) is ImportFormat.HAR
    assert detect_format(flows) is ImportFormat.MITMPROXY
    assert detect_format(flows[:100]) is ImportFormat.MITMPROXY  # the first flow cut short
    assert detect_format(PCAP_HEADER) is ImportFormat.PCAP
    assert detect_format(bytes.fromhex("a1b23c4d") + PCAP_HEADER[4:]) is ImportFormat.PCAP
    assert detect_format(PCAPNG_HEADER) is ImportFormat.PCAPNG
    for other in (b"\x89PNG\r\n\x1a\n", b"12345", b"5:hello,", b"GET / HTTP/1.1\r\n", b"[{}]"):
        assert detect_format(other) is None, other


def test_detect_real_packet_captures(shared_captures: Path) -> None:
    pcaps = sorted(shared_captures.glob("*.pcap"))
    assert pcaps
    for p in pcaps:
        assert detect_format(p.read_bytes()[:65536]) is ImportFormat.PCAP, p.name


# -------------------------------------------------------------------------------- the session


def test_imported_session_is_verifiable_and_readable(out: Path, flows_file: Path) -> None:
    files = [SAMPLES / "httptoolkit.har", SAMPLES / "chrome.har", flows_file]
    res = import_files(files, out, identifiers=["imei=490154203237518", "oaid=7f1c2e3d4b5a6978"])
    assert res.status == "complete" and res.warnings == []
    assert verify_session(res.session).ok

    manifest = read_manifest(res.session)
    assert manifest["status"] == "complete"
    assert manifest["device"]["identifiers"] == [
        {"name": "imei", "value": "490154203237518", "source": "--identifier"},
        {"name": "oaid", "value": "7f1c2e3d4b5a6978", "source": "--identifier"},
    ]
    listed = {a["path"]: a["sha256"] for a in manifest["artifacts"]}
    imported = manifest["capture"]["import"]["files"]
    assert [f["name"] for f in imported] == ["httptoolkit.har", "chrome.har", "phone.mitm"]
    for src, f in zip(files, imported, strict=True):
        copy = res.session / ORIGINAL / src.name
        assert copy.read_bytes() == src.read_bytes()
        assert (copy.stat().st_mode & 0o777) == 0o600
        assert f["sha256"] == _sha(src) == listed[f"{ORIGINAL}/{src.name}"]
        assert f["size"] == src.stat().st_size and f["original"] == f"{ORIGINAL}/{src.name}"
    assert [f["format"] for f in imported] == ["har", "har", "mitmproxy"]
    assert imported[0]["counts"]["http"] == 5 and imported[0]["creator"]["name"] == "HTTP Toolkit"
    assert imported[2]["counts"] == {"dns": 1, "event": 1, "flows": 3, "http": 1}

    sess = Session(res.session)
    df = sess.flows()
    assert len(df) == 5 + 1 + 4 + 1  # HTTP Toolkit http + its TLS error, Chrome, the flow file
    assert "https://app-measurement.com/a" in set(df["url"])
    assert sum(isinstance(r, DnsRecord) for r in sess.records()) == 1
    events = [r for r in sess.records() if isinstance(r, EventRecord)]
    assert [e.kind for e in events] == ["import_started", "import", "import", "tcp_flow", "import"]
    assert events[1].data["counts"]["http"] == 5
    assert events[2].data["connections"] == {
        "412893": [f"har-{_sha(files[1])[:12]}-0", f"har-{_sha(files[1])[:12]}-1"]
    }


def test_the_analyser_finds_the_identifiers(out: Path) -> None:
    from auditor.analysis.engine import identifiers_of

    res = import_files(
        [SAMPLES / "charles.har"], out, identifiers={"android_id": "9774d56d682e549c"}
    )
    assert identifiers_of(read_manifest(res.session), {}) == {"android_id": "9774d56d682e549c"}


def test_malformed_entries_are_counted_in_the_event_and_manifest(out: Path) -> None:
    res = import_files([SAMPLES / "malformed_3_of_10.har"], out)
    assert res.status == "complete" and verify_session(res.session).ok
    (f,) = read_manifest(res.session)["capture"]["import"]["files"]
    assert f["skipped"] == 3 and f["counts"]["http"] == 7
    assert "skipped_detail" not in f  # the details are in the event, not the manifest
    (event,) = [
        r
        for r in Session(res.session).records()
        if isinstance(r, EventRecord) and r.kind == "import"
    ]
    assert [s["where"] for s in event.data["skipped_detail"]] == ["entry 2", "entry 5", "entry 8"]
    assert res.warnings[0] == "malformed_3_of_10.har: entry 2: request.url is missing"


def test_truncated_flow_file_makes_an_incomplete_but_verifiable_session(
    out: Path, tmp_path: Path
) -> None:
    whole = _flow_file(tmp_path / "whole.mitm", *(tflow.tflow(resp=True) for _ in range(3)))
    cut = tmp_path / "cut.mitm"
    cut.write_bytes(whole.read_bytes()[:-25])
    res = import_files([cut], out)
    assert res.status == "incomplete" and verify_session(res.session).ok
    assert len(list(Session(res.session).http())) == 2
    assert "cut.mitm: the flow file ends mid-record at byte" in res.warnings[0]
    (f,) = read_manifest(res.session)["capture"]["import"]["files"]
    assert f["stopped_at_byte"] > 0 and f["sha256"] == _sha(cut)
    # what the report says: the file was cut, after 2 flows; no stop that did not happen
    from auditor.analysis.coverage import incomplete

    (said,) = incomplete(Session(res.session))
    assert (
        f"cut.mitm ends mid-record at byte {f['stopped_at_byte']} of {len(cut.read_bytes())}"
        in said
    )
    assert "after 2 flows" in said and "stopped by" not in said


def test_original_names_are_unique_and_never_hidden(out: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    shutil.copy(SAMPLES / "charles.har", a / "x.har")
    shutil.copy(SAMPLES / "chrome.har", b / "x.har")
    shutil.copy(SAMPLES / "httptoolkit.har", tmp_path / ".hidden.har")
    res = import_files([a / "x.har", b / "x.har", tmp_path / ".hidden.har"], out)
    assert sorted(p.name for p in (res.session / ORIGINAL).iterdir()) == [
        "_hidden.har",
        "x-2.har",
        "x.har",
    ]
    assert verify_session(res.session).ok


# ------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    "content,message",
    [
        (b"", "empty file"),
        (b"\x89PNG\r\n\x1a\n0000", "unknown format"),
        ((SAMPLES / "not_json.har").read_bytes(), "not a HAR file: not JSON"),
        ((SAMPLES / "wrong_structure.har").read_bytes(), 'no "log" object'),
        (b"12:not a flow}", "unknown format"),
        (b"30:4:type;4:http;2:id;1:x;8:ver", "not a readable mitmproxy flow file"),
    ],
)
def test_bad_files_fail_before_any_session_is_made(
    out: Path, tmp_path: Path, content: bytes, message: str
) -> None:
    bad = tmp_path / "bad.bin"
    bad.write_bytes(content)
    with pytest.raises(ImportFileError, match=message) as exc:
        import_files([SAMPLES / "charles.har", bad], out)
    assert str(bad) in str(exc.value)
    assert _sessions(out) == []


def test_missing_folder_and_duplicate_files(out: Path, tmp_path: Path) -> None:
    with pytest.raises(ImportFileError, match="no such file"):
        import_files([tmp_path / "nope.har"], out)
    with pytest.raises(ImportFileError, match="a folder"):
        import_files([tmp_path], out)
    shutil.copy(SAMPLES / "chrome.har", tmp_path / "again.har")
    with pytest.raises(ImportFileError, match="same content as"):
        import_files([SAMPLES / "chrome.har", tmp_path / "again.har"], out)
    with pytest.raises(ImportFileError, match="no file"):
        import_files([], out)
    assert _sessions(out) == []


@pytest.mark.parametrize(
    "idents,message",
    [
        (["imei"], "use NAME=VALUE"),
        (["imei="], "must not be empty"),
        (["=1"], "must not be empty"),
        (["imei=1", "imei=2"], "given twice"),
    ],
)
def test_bad_identifiers(out: Path, idents: list[str], message: str) -> None:
    with pytest.raises(ImportFileError, match=message):
        import_files([SAMPLES / "charles.har"], out, identifiers=idents)
    assert _sessions(out) == []


def test_parse_identifiers_keeps_values_with_equals_signs() -> None:
    assert parse_identifiers(["token=a=b "]) == [
        {"name": "token", "value": "a=b", "source": "--identifier"}
    ]


def test_failure_half_way_closes_the_session_as_incomplete(
    out: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from auditor.imports import session as driver

    def broken(*args: Any, **kwargs: Any) -> Iterator[HttpRecord]:
        yield HttpRecord(
            id="1", method="GET", scheme="http", host="h", port=80, path="/", url="http://h/"
        )
        raise ImportFileError("x.har: disk on fire")

    monkeypatch.setattr(driver, "har_records", broken)
    with pytest.raises(ImportFileError, match=r"disk on fire.*closed as incomplete"):
        import_files([SAMPLES / "charles.har"], out)
    (path,) = _sessions(out)
    assert read_manifest(path)["status"] == "incomplete" and verify_session(path).ok
    kinds = [r.kind for r in Session(path).records() if isinstance(r, EventRecord)]
    assert kinds == ["import_started", "import_failed"]


# ---------------------------------------------------------------------------- packet captures

PHONE, SERVER = "10.1.2.3", "198.51.100.7"
T0 = 1_796_000_000_000_000_000  # ns


def _l3_packets() -> list[bytes]:
    """DNS for a name, then a TLS ClientHello to the address it answered, as IPv4 packets."""
    q = packet_helpers.dns_query(7, "tracker.example")
    a = packet_helpers.dns_response(
        7, "tracker.example", 1, [packet_helpers.rr(b"\xc0\x0c", 1, packet_helpers.ip4(SERVER))]
    )
    hello = packet_helpers.tls_records(packet_helpers.client_hello_body("tracker.example", ["h2"]))
    return [
        packet_helpers.ipv4(PHONE, "10.1.2.1", 17, packet_helpers.udp(40000, 53, q)),
        packet_helpers.ipv4("10.1.2.1", PHONE, 17, packet_helpers.udp(53, 40000, a)),
        packet_helpers.ipv4(PHONE, SERVER, 6, packet_helpers.tcp(40001, 443, b"", flags=0x02)),
        packet_helpers.ipv4(SERVER, PHONE, 6, packet_helpers.tcp(443, 40001, b"", flags=0x12)),
        packet_helpers.ipv4(PHONE, SERVER, 6, packet_helpers.tcp(40001, 443, hello, flags=0x18)),
    ]


LINKS = {
    "ethernet": (1, packet_helpers.ether),
    "raw": (101, lambda l3: l3),
    "sll": (113, packet_helpers.sll),
    "sll2": (276, packet_helpers.sll2),
    "null": (0, lambda l3: packet_helpers.null(l3, 2)),
}


@pytest.mark.parametrize("link", sorted(LINKS))
def test_pcap_in_every_link_type_becomes_a_verifiable_session(
    out: Path, tmp_path: Path, link: str
) -> None:
    linktype, frame = LINKS[link]
    cap = tmp_path / f"{link}.pcap"
    cap.write_bytes(
        packet_helpers.pcap(
            [(T0 + i, frame(p)) for i, p in enumerate(_l3_packets())],
            linktype,
        )
    )
    res = import_files([cap], out, identifiers=["imei=490154203237518"])
    assert res.status == "complete" and verify_session(res.session).ok
    (f,) = res.files
    assert f["format"] == "pcap" and f["sha256"] == _sha(cap)
    assert _sha(res.session / ORIGINAL / cap.name) == _sha(cap)  # the original, kept
    assert f["counts"] == {"packets": 5, "packet_flows": 2, "dns_messages": 2}
    assert f["capture"]["link_types"] == [linktype]
    assert f["capture"]["flows_named_by"] == {"ip": 1, "tls-sni": 1}  # the resolver, the server
    # the analyser reads it like a live session: the flow is named and attributed
    from auditor.analysis.engine import analyze

    flows = analyze([res.session]).flows
    tls = flows[flows["server_port"] == 443].iloc[0]
    assert (tls["name"], tls["seen_by"], bool(tls["bypass"])) == (
        "tracker.example",
        "packets",
        False,
    )
    assert tls["flow_id"] == f"{ORIGINAL}/{cap.name}#1"


def test_pcapng_comments_interfaces_and_pcapdroid_trailer(out: Path, tmp_path: Path) -> None:
    o = "<"
    frames = [
        packet_helpers.ether(p) + packet_helpers.pcapdroid_trailer(10123, "com.tracker.app")
        for p in _l3_packets()
    ]
    data = packet_helpers.shb(o, comment="captured on the test phone") + packet_helpers.idb(o, 1)
    data += b"".join(
        packet_helpers.epb(o, 0, 1_796_000_000_000_000 + i, fr) for i, fr in enumerate(frames)
    )
    cap = tmp_path / "droid.pcapng"
    cap.write_bytes(data)
    res = import_files([cap], out)
    (f,) = res.files
    assert f["format"] == "pcapng" and f["capture"]["comments"] == 1
    assert f["capture"]["apps"] == ["com.tracker.app"]
    events = [r for r in Session(res.session).records() if isinstance(r, EventRecord)]
    (imp,) = [e for e in events if e.kind == "import"]
    assert imp.data["comments"] == [
        {"where": "section", "index": 0, "text": "captured on the test phone"}
    ]
    from auditor.analysis.engine import analyze

    flows = analyze([res.session]).flows
    assert set(flows["apps"]) == {"com.tracker.app"}
    assert set(flows["app_evidence"]) == {"pcapdroid"}


def test_a_truncated_capture_is_imported_up_to_the_damage(out: Path, tmp_path: Path) -> None:
    full = packet_helpers.pcap(
        [
            (1_796_000_000_000_000_000 + i, packet_helpers.ether(p))
            for i, p in enumerate(_l3_packets())
        ]
    )
    cap = tmp_path / "cut.pcap"
    cap.write_bytes(full[:-30])
    res = import_files([cap], out)
    (f,) = res.files
    assert f["counts"]["packets"] == 4
    assert any("damaged" in w for w in res.warnings), res.warnings
    assert verify_session(res.session).ok


def test_a_capture_that_is_not_one_leaves_nothing(out: Path, tmp_path: Path) -> None:
    cap = tmp_path / "bad.pcap"
    cap.write_bytes(PCAP_HEADER[:4] + b"\xff" * 10)  # the magic, then garbage
    with pytest.raises(ImportFileError, match=r"bad\.pcap"):
        import_files([cap], out)
    assert _sessions(out) == []


def test_every_shared_capture_is_imported_and_analysed(
    out: Path, tmp_path: Path, shared_captures: Path
) -> None:
    from auditor.analysis.engine import analyze, write
    from auditor.packets import read_capture

    pcaps = sorted(shared_captures.glob("*.pcap*"))
    assert pcaps
    for cap in pcaps:
        res = import_files([cap], out)
        assert verify_session(res.session).ok, cap.name
        (f,) = res.files
        direct = read_capture(cap, keep_packets=False)
        assert f["counts"].get("packets", 0) == direct.counts.get("packets", 0), cap.name
        analysis = analyze([res.session])
        seen = analysis.flows[analysis.flows["seen_by"] == "packets"]
        # every flow of the capture is in the table but the phone's own loopback
        assert len(seen) + analysis.doc["packets"][res.session.name]["paths"].get(
            "local", 0
        ) == len(direct.flows), cap.name
        names = {n for n in direct.flows["sni"].dropna() for n in n.split(";")}
        assert names <= set(seen["sni"].dropna().str.split(";").explode()), cap.name
        report = tmp_path / "reports" / res.session.name
        write(analysis, report, ["json", "html", "csv", "md"])
        assert json.loads((report / "findings.json").read_text())["coverage"]["packet_capture"]


# ----------------------------------------------------------------------------- the CLI text


def _cli_group() -> click.Group:
    return auditor.cli.main


def test_the_cli_command_works(out: Path, flows_file: Path) -> None:
    group = _cli_group()
    cmd = group.commands["import"]
    assert cmd.help and "Example" in cmd.help
    args = ["import", str(SAMPLES / "malformed_3_of_10.har"), str(flows_file), "--out", str(out)]
    res = CliRunner().invoke(group, [*args, "--identifier", "imei=490154203237518", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["status"] == "complete" and len(data["files"]) == 2 and "text" not in data
    assert verify_session(Path(data["session"])).ok
    text = CliRunner().invoke(group, [args[0], str(SAMPLES / "charles.har"), "--out", str(out)])
    assert text.exit_code == 0
    assert "charles.har (har, from Charles Proxy 4.6.6): 2 http" in text.stdout
    assert "note: 2 bodies rebuilt from params" in text.stdout


def test_the_cli_command_fails_in_one_line(out: Path) -> None:
    res = CliRunner().invoke(
        _cli_group(), ["import", str(SAMPLES / "not_json.har"), "--out", str(out)]
    )
    assert res.exit_code == 1
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("error: ")
    assert "not_json.har: not a HAR file" in res.stderr


def test_import_command_text_and_warnings(out: Path) -> None:
    data = import_command([str(SAMPLES / "malformed_3_of_10.har")], str(out), [], as_json=False)
    assert "malformed_3_of_10.har (har, from mitmproxy 12.3.1): 7 http; 3 skipped" in data["text"]
    assert len(data["warnings"]) == 3 and data["summary"]["flows"] == 7


def test_a_flow_saved_in_two_files_is_imported_once(out: Path, tmp_path: Path) -> None:
    shared, other = tflow.tflow(resp=True), tflow.tflow(resp=True)
    first = _flow_file(tmp_path / "first.mitm", shared)
    second = _flow_file(tmp_path / "second.mitm", shared, other)
    res = import_files([first, second], out)
    assert [r.id for r in Session(res.session).http()] == [shared.id, other.id]
    assert res.files[1]["counts"]["http"] == 1 and res.files[1]["skipped"] == 1
    assert res.warnings == [f"second.mitm: http {shared.id}: already imported from an earlier file"]


# ------------------------------------------------------------- what a session says of itself


def _frame_times(path: Path) -> list[float]:
    """Every frame's time as tshark reads it (the independent reader)."""
    out = subprocess.run(
        ["tshark", "-r", str(path), "-T", "fields", "-e", "frame.time_epoch"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return [float(x) for x in out.split()]


@pytest.mark.parametrize("name", ["pcapdroid_metadata.pcap", "apksherlock_capture.pcap"])
def test_an_imported_capture_spans_its_first_to_its_last_packet(
    out: Path, shared_captures: Path, name: str
) -> None:
    if shutil.which("tshark") is None:
        pytest.skip("tshark is not installed")
    cap = shared_captures / name
    times = _frame_times(cap)
    res = import_files([cap], out)
    imp = res.manifest["capture"]["import"]
    assert parse_iso(imp["first_ts"]) == pytest.approx(min(times), abs=1e-6)
    assert parse_iso(imp["last_ts"]) == pytest.approx(max(times), abs=1e-6)
    assert res.manifest["summary"]["first_ts"] == imp["first_ts"]
    assert res.manifest["summary"]["last_ts"] == imp["last_ts"]
    sess = Session(res.session)
    assert sess.duration_seconds() == pytest.approx(max(times) - min(times), abs=1e-5)
    # the import's own run is kept apart: when it ran, and how long it took
    assert parse_iso(res.manifest["started_at"]) > max(times)
    assert 0 <= imp["import_seconds"] < 600
    from auditor.analysis.coverage import build_coverage

    cov = build_coverage([sess], sess.flows(), None, {})
    assert cov["duration_seconds"] == round(max(times) - min(times), 1)


def test_an_imported_flow_file_spans_its_flows_and_messages(out: Path) -> None:
    path = Path(__file__).resolve().parents[1] / "data" / "mitm" / "websocket.mitm"
    with open(path, "rb") as fh:
        flows = list(mio.FlowReader(fh).stream())
    times = [f.request.timestamp_start for f in flows]  # type: ignore[attr-defined]
    times += [f.response.timestamp_end for f in flows]  # type: ignore[attr-defined]
    times += [m.timestamp for f in flows for m in f.websocket.messages]  # type: ignore[attr-defined]
    res = import_files([path], out)
    (f,) = res.files
    assert parse_iso(f["first_ts"]) == pytest.approx(min(times), abs=1e-6)
    assert parse_iso(f["last_ts"]) == pytest.approx(max(times), abs=1e-6)
    assert Session(res.session).duration_seconds() == pytest.approx(
        max(times) - min(times), abs=1e-5
    )
    summary = read_manifest(res.session)["summary"]
    assert parse_iso(summary["last_ts"]) == pytest.approx(max(times), abs=1e-6)


def test_skipped_items_reach_the_findings_coverage(
    out: Path, tmp_path: Path, shared_captures: Path
) -> None:
    from auditor.analysis.engine import analyze

    bad_packets = shared_captures / "pcapdroid_invalid_or_unsupported.pcap"
    res = import_files([SAMPLES / "malformed_3_of_10.har", bad_packets], out)
    assert any("2 of 15 packets could not be read" in w for w in res.warnings), res.warnings
    cov = analyze([res.session]).doc["coverage"]
    har = [s for s in cov["skipped"] if s["file"] == "malformed_3_of_10.har"]
    assert {s["kind"] for s in har} == {"har-entry"}
    assert sum(s["count"] for s in har) == 3
    assert sorted(e for s in har for e in s["examples"]) == ["entry 2", "entry 5", "entry 8"]
    assert {s["session"] for s in cov["skipped"]} == {res.session.name}
    (pk,) = [s for s in cov["skipped"] if s["kind"] == "packets"]
    # frames counted by the decoder in no protocol at all (a cut IP header, a bad version)
    from auditor.packets import read_capture

    counts = read_capture(bad_packets, keep_packets=False).counts
    assert pk["count"] == counts["packets"] - counts["ipv4"] - counts["ipv6"] == 2
    assert cov["skipped_total"] == 5
    # the entry's own text is kept as data, never as markup (the report escapes it)
    assert all(
        set(s) == {"session", "file", "kind", "reason", "count", "examples"} for s in cov["skipped"]
    )


def test_a_capture_of_which_nothing_can_be_read_gives_no_session(
    out: Path, tmp_path: Path, shared_captures: Path
) -> None:
    data = (shared_captures / "pcapdroid_two_flows.pcap").read_bytes()
    assert data[20:24] == b"\x01\x00\x00\x00"  # Ethernet, little-endian
    user0 = tmp_path / "user0.pcap"
    user0.write_bytes(data[:20] + (147).to_bytes(4, "little") + data[24:])  # DLT_USER0
    with pytest.raises(
        ImportFileError,
        match=r"user0\.pcap: none of its 49 packets can be read "
        r"\(unknown-link-type-147: 49\); nothing to import",
    ):
        import_files([user0], out)
    empty = tmp_path / "empty.pcap"
    empty.write_bytes(PCAP_HEADER)
    with pytest.raises(ImportFileError, match=r"empty\.pcap: the capture holds no packets"):
        import_files([empty], out)
    assert _sessions(out) == []
    res = CliRunner().invoke(_cli_group(), ["import", str(user0), "--out", str(out)])
    assert res.exit_code != 0 and "none of its 49 packets can be read" in res.stderr


def test_a_har_of_which_every_entry_is_skipped_fails(out: Path, tmp_path: Path) -> None:
    har = json.loads((SAMPLES / "chrome.har").read_text())
    for e in har["log"]["entries"]:
        del e["request"]["url"]
    bad = tmp_path / "no_urls.har"
    bad.write_text(json.dumps(har))
    n = len(har["log"]["entries"])
    with pytest.raises(
        ImportFileError,
        match=rf"no_urls\.har: nothing could be imported: all {n} items \(har-entry\) were "
        r"skipped; the first, entry 0: request.url is missing",
    ):
        import_files([bad], out)


def test_skipped_items_have_a_warning_line_each(out: Path) -> None:
    from auditor.analysis.coverage import skipped_warnings

    res = import_files([SAMPLES / "malformed_3_of_10.har"], out)
    lines = skipped_warnings(Session(res.session))
    assert sum(int(line.split(": ")[2].split()[0]) for line in lines) == 3
    assert all("har-entry item(s) not imported" in line for line in lines)
    assert any("request.url is missing (first: entry 2" in line for line in lines), lines


def test_files_of_different_days_cover_their_own_time_not_the_gap(out: Path) -> None:
    data = Path(__file__).resolve().parents[1] / "data"
    old, new = data / "mitm" / "dumpfile-7-websocket.mitm", data / "mitm" / "websocket.mitm"
    res = import_files([old, new], out)
    a, b = res.files
    imp = res.manifest["capture"]["import"]
    assert (imp["first_ts"], imp["last_ts"]) == (a["first_ts"], b["last_ts"])
    assert b["first_ts"] > a["last_ts"]  # 2021 and 2023
    covered = a["duration_seconds"] + b["duration_seconds"]
    assert Session(res.session).duration_seconds() == pytest.approx(covered, abs=0.01)


def test_a_capture_of_encrypted_wifi_frames_only_is_refused(out: Path) -> None:
    cap = Path(__file__).resolve().parents[1] / "data" / "pcap" / "ieee802.11_rx-stbc.pcap"
    if not cap.is_file():
        pytest.skip(f"{cap} not present")
    if shutil.which("tshark") is not None:  # the independent reader: protected frames only
        out_ = subprocess.run(
            ["tshark", "-r", str(cap), "-T", "fields", "-e", "wlan.fc.protected"],
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout.split()
        assert out_ and set(out_) <= {"1", "True"}, out_
    with pytest.raises(
        ImportFileError,
        match=rf"none of its {len(_frame_times(cap)) if shutil.which('tshark') else 3} packets "
        r"can be read \(wlan-encrypted-frame: \d+\)",
    ):
        import_files([cap], out)
    assert _sessions(out) == []
