import hashlib
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auditor import columns
from auditor.errors import SessionError
from auditor.evidence import custody
from auditor.evidence.close import seal_late
from auditor.evidence.verify import verify_session
from auditor.records import EventRecord, HttpRecord, TlsFailedRecord
from auditor.session import (
    FLOWS,
    MANIFEST,
    Session,
    SessionWriter,
    list_sessions,
    read_manifest,
    read_manifest_lenient,
    session_info,
)


def _http(i: int, body: bytes | None = None, writer: SessionWriter | None = None) -> HttpRecord:
    ref = writer.bodies.put(body) if (writer and body) else None
    return HttpRecord(
        id=f"f{i}",
        method="GET",
        scheme="https",
        host=f"h{i % 2}.example",
        port=443,
        path=f"/p?i={i}",
        url=f"https://h{i % 2}.example/p?i={i}",
        request_start=f"2026-01-01T00:00:0{i}.000000Z",
        response_end=f"2026-01-01T00:00:0{i}.500000Z",
        status=200,
        request_body=ref,
        request_headers=(("Host", f"h{i % 2}.example"),),
    )


def _closed_session(out: Path) -> Path:
    w = SessionWriter.create(out, notes="unit", device={"model": "M2007J3SG", "serial": "abc"})
    for i in range(3):
        w.write(_http(i, b"payload-%d" % i, w))
    w.write(
        TlsFailedRecord(
            id="t",
            ts="2026-01-01T00:00:05.000000Z",
            side="client",
            client_ip="127.0.0.1",
            client_port=1,
            sni="pinned.example",
            error="unknown ca",
        )
    )
    w.event("step", "idle", n=1)
    w.close()
    return w.path


def test_create_layout_and_modes(session_dir: Path) -> None:
    path = _closed_session(session_dir)
    assert stat.S_IMODE(path.stat().st_mode) == 0o700
    for f in (MANIFEST, FLOWS):
        assert stat.S_IMODE((path / f).stat().st_mode) == 0o600
    m = json.loads((path / MANIFEST).read_text())
    assert m["status"] == "complete" and m["notes"] == "unit"
    assert m["started_at"].endswith("Z") and m["ended_at"] >= m["started_at"]
    assert set(m["versions"]) >= {"auditor", "mitmproxy", "scapy", "adbutils", "python"}
    paths = [a["path"] for a in m["artifacts"]]
    assert FLOWS in paths and sum(p.startswith("bodies/") for p in paths) == 3
    assert m["summary"]["flows"] == 3 and m["summary"]["tls_failed"] == 1
    assert m["summary"]["hosts"] == 3


def test_reader_records_and_dataframe(session_dir: Path) -> None:
    sess = Session(_closed_session(session_dir))
    recs = list(sess.records())
    assert [type(r).__name__ for r in recs].count("HttpRecord") == 3
    assert isinstance(recs[-1], EventRecord) and recs[-1].data == {"n": 1}
    df = sess.flows()
    assert list(df.columns) == list(columns.FLOW_COLUMNS)
    assert len(df) == 4
    assert set(df[columns.RECORD_TYPE]) == {"http", "tls_failed"}
    assert str(df[columns.START].dt.tz) == "UTC"
    http = df[df[columns.RECORD_TYPE] == "http"]
    assert http[columns.REQUEST_WIRE_SIZE].tolist() == [9, 9, 9]
    assert (http[columns.BYTES_UP] > 9).all()
    assert sess.bodies.get(http[columns.REQUEST_BODY_SHA256].iloc[0]) == b"payload-0"


def test_truncated_last_line_and_corrupt_line_are_warnings(session_dir: Path) -> None:
    w = SessionWriter.create(session_dir)
    w.write(_http(1))
    w.detach()
    with open(w.path / FLOWS, "ab") as fh:
        fh.write(b'{"type": "http", "id": "broken"}\n')
        fh.write(b"\x00garbage\n")
    w2 = SessionWriter.attach(w.path)
    w2.write(_http(2))
    w2.detach()
    with open(w.path / FLOWS, "ab") as fh:
        fh.write(b'{"type": "http", "id": "cut-in-the-mid')
    sess = Session(w.path)
    ids = [r.id for r in sess.http()]
    assert ids == ["f1", "f2"]
    assert len(sess.warnings) == 3
    assert "truncated" in sess.warnings[-1]


def test_verify_detects_changed_missing_unlisted(session_dir: Path) -> None:
    path = _closed_session(session_dir)
    assert verify_session(path).ok
    body = sorted((path / "bodies").iterdir())[0]
    with open(path / FLOWS, "r+b") as fh:
        fh.seek(10)
        fh.write(b"X")
    body.unlink()
    (path / "extra.txt").write_text("planted")
    res = verify_session(path)
    assert not res.ok
    assert res.changed == (FLOWS,)
    assert res.missing == (f"bodies/{body.name}",)
    assert res.unlisted == ("extra.txt",)


def test_verify_open_session_is_not_ok(session_dir: Path) -> None:
    w = SessionWriter.create(session_dir)
    res = verify_session(w.path)
    assert not res.ok and res.problems


def test_close_twice_and_attach_closed_fail(session_dir: Path) -> None:
    path = _closed_session(session_dir)
    with pytest.raises(SessionError):
        SessionWriter.attach(path)


def test_attach_creates_a_missing_session(tmp_path: Path) -> None:
    w = SessionWriter.attach(tmp_path / "new-session")
    w.write(_http(0))
    m = w.close()
    assert m["session_id"] == "new-session" and m["summary"]["flows"] == 1


def test_not_a_session(tmp_path: Path) -> None:
    with pytest.raises(SessionError, match="not a capture session"):
        Session(tmp_path)
    (tmp_path / MANIFEST).write_text("{broken")
    with pytest.raises(SessionError, match="unreadable manifest"):
        Session(tmp_path)


def test_list_sessions(session_dir: Path) -> None:
    a = _closed_session(session_dir)
    open_one = SessionWriter.create(session_dir)
    open_one.write(_http(1))
    (session_dir / "not-a-session").mkdir()
    infos, warnings = list_sessions(session_dir)
    assert [i.id for i in infos] == [a.name, open_one.path.name]  # by start time
    closed = next(i for i in infos if i.id == a.name)
    assert closed.flows == 3 and closed.status == "complete" and "M2007J3SG" in closed.device
    assert next(i for i in infos if i.id != a.name).status == "open"
    assert warnings == []


def test_concurrent_appends_from_two_processes_stay_whole(session_dir: Path) -> None:
    import subprocess
    import sys

    w1 = SessionWriter.create(session_dir)
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; from auditor.session import SessionWriter\n"
            "w = SessionWriter.attach(Path(sys.argv[1]))\n"
            "for i in range(500): w.event('child', 'x' * 200, i=i)\n",
            str(w1.path),
        ]
    )
    for i in range(500):
        w1.event("parent", "y" * 200, i=i)
    assert child.wait(60) == 0
    sess = Session(w1.path)
    recs = list(sess.records())
    assert len(recs) == 1000 and not sess.warnings
    assert {r.kind for r in recs if isinstance(r, EventRecord)} == {"child", "parent"}


def test_a_torn_line_in_the_middle_loses_nothing_written_after_it(session_dir: Path) -> None:
    w = SessionWriter.create(session_dir)
    w.write(_http(1))
    with open(w.path / FLOWS, "ab") as fh:  # a writer killed mid-record
        fh.write(b'{"type": "http", "id": "torn", "meth')
    w.event("proxy_died", "mitmdump exited")
    w.write(_http(2))
    sess = Session(w.path)
    recs = list(sess.records())
    assert [getattr(r, "id", None) or r.kind for r in recs] == ["f1", "proxy_died", "f2"]
    assert len(sess.warnings) == 1 and "torn" in sess.warnings[0]


def test_an_import_is_dated_by_its_traffic_not_by_when_it_ran(session_dir: Path) -> None:
    w = SessionWriter.create(session_dir, capture={"import": {"files": []}})
    w.event("import_started", "importing 1 file(s)")
    for i in range(3):
        w.write(_http(i))
    w.event("import", "imported x.har")
    span = {"first_ts": "2026-01-01T00:00:00.000000Z", "last_ts": "2026-01-01T00:02:20.000000Z"}
    manifest = w.close(capture={"import": {"files": [], **span}})
    # the import's own events (dated when it ran) are not traffic; the span is the capture's
    assert manifest["summary"]["first_ts"] == span["first_ts"]
    assert manifest["summary"]["last_ts"] == span["last_ts"]
    sess = Session(session_dir / manifest["session_id"])
    assert sess.duration_seconds() == 140.0
    assert sess.summary().first_ts == "2026-01-01T00:00:00.000000Z"  # the first record
    assert sess.summary().last_ts == "2026-01-01T00:00:02.000000Z"  # no import event


def test_a_live_session_lasts_from_its_start_to_its_end(session_dir: Path) -> None:
    path = _closed_session(session_dir)
    m = json.loads((path / MANIFEST).read_text())
    from auditor.timeutil import parse_iso

    expected = parse_iso(m["ended_at"]) - parse_iso(m["started_at"])
    assert Session(path).duration_seconds() == pytest.approx(expected)


# ------------------------------------------------------------- hostile manifests (issue 15.3)

DEEP = "[" * 50_000 + "]" * 50_000  # json.loads: RecursionError


def _plant_deep(path: Path) -> None:
    text = (path / MANIFEST).read_text()
    (path / MANIFEST).write_text(text.rstrip()[:-1] + f', "x": {DEEP}}}')


def test_a_deeply_nested_manifest_is_a_clear_error_not_a_recursion(session_dir: Path) -> None:
    path = _closed_session(session_dir)
    _plant_deep(path)
    with pytest.raises(SessionError, match=r"manifest\.json: unreadable manifest: .*nested"):
        read_manifest(path)
    with pytest.raises(SessionError, match="nested"):
        verify_session(path)
    # analysis opens it leniently: a warning, and the records are still read
    manifest, problems = read_manifest_lenient(path)
    assert manifest["status"] == "unknown" and "nested" in problems[0]
    sess = Session(path, lenient=True)
    assert len(list(sess.http())) == 3 and "nested" in sess.warnings[0]


def test_one_bad_manifest_does_not_hide_the_other_sessions(session_dir: Path) -> None:
    good = _closed_session(session_dir)
    deep = _closed_session(session_dir)
    _plant_deep(deep)
    odd = _closed_session(session_dir)  # sections of the wrong type: read as absent
    m = json.loads((odd / MANIFEST).read_text())
    m.update(device=["x"], summary={"flows": "many"}, started_at=7)
    (odd / MANIFEST).write_text(json.dumps(m))
    infos, warnings = list_sessions(session_dir)
    by_path = {Path(i.path): i for i in infos}
    assert by_path[good].status == "complete" and by_path[good].flows == 3
    bad = by_path[deep]
    assert bad.status == "unreadable" and bad.problem and "nested" in bad.problem
    assert bad.flows == 0
    assert by_path[odd].status == "complete" and by_path[odd].device == "-"
    assert by_path[odd].flows == 0 and by_path[odd].started_at is None
    assert len(warnings) == 1 and "nested" in warnings[0] and str(deep) in warnings[0]
    assert session_info(good).problem is None


# ------------------------------------------------- what is not hashed is not read (issue 15.4)


def test_a_dot_file_added_under_packets_is_named_by_verify(session_dir: Path) -> None:
    path = _closed_session(session_dir)
    (path / "packets").mkdir()
    (path / "packets" / ".late.pcap").write_bytes(b"\xd4\xc3\xb2\xa1" + bytes(20))
    (path / ".hidden").write_text("x")
    res = verify_session(path)
    assert not res.ok and res.unlisted == (".hidden", "packets/.late.pcap")
    # and a reader that takes its files from a closed session gets only what was hashed
    assert Session(path).files("packets") == []
    assert Session(path).files("bodies") == sorted(
        f"bodies/{p.name}" for p in (path / "bodies").iterdir()
    )


def test_a_dot_file_present_at_close_is_hashed_like_any_other(session_dir: Path) -> None:
    w = SessionWriter.create(session_dir)
    (w.path / "packets").mkdir()
    (w.path / "packets" / ".a.pcap").write_bytes(b"abc")
    assert Session(w.path).files("packets") == []  # open: temporary names are not read
    m = w.close()
    assert "packets/.a.pcap" in [a["path"] for a in m["artifacts"]]
    assert verify_session(w.path).ok
    (w.path / "packets" / ".a.pcap").write_bytes(b"abd")
    assert verify_session(w.path).changed == ("packets/.a.pcap",)


def test_links_and_fifos_are_named_and_never_sealed(session_dir: Path, tmp_path: Path) -> None:
    path = _closed_session(session_dir)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "more.pcap").write_bytes(b"x")
    (path / "packets").symlink_to(elsewhere)  # a walk does not enter it; a reader would
    os.mkfifo(path / "pipe")  # hashing it would hang
    res = verify_session(path)
    assert not res.ok
    assert any("packets: a symbolic link" in p for p in res.problems)
    assert any("pipe: not a regular file" in p for p in res.problems)
    w = SessionWriter.create(session_dir)
    os.mkfifo(w.path / "pipe")
    with pytest.raises(SessionError, match="cannot seal: pipe: not a regular file"):
        w.close()


# ----------------------------------------------------------- sealing late (issue 15.9)


def _left_open(out: Path, *, clean: bool) -> Path:
    w = SessionWriter.create(out)
    w.event("recorder_started", "mitmproxy recorder attached")
    w.write(_http(1))
    w.write(_http(4))
    if clean:
        w.event("recorder_stopped", "mitmproxy shutting down")
    w.detach()  # as a killed process: the session stays open
    return w.path


def test_seal_late_closes_hashes_and_logs_who_and_when(session_dir: Path) -> None:
    path = _left_open(session_dir, clean=False)
    assert not verify_session(path).ok
    res = seal_late(path, by="J. Doe", reason="mitmdump killed", argv=["auditor", "close", "S"])
    m = read_manifest(path)
    assert res.manifest == m and res.warnings == () and not res.stopped_cleanly
    assert m["status"] == "incomplete" and m["stopped_by"] == "left_open"
    assert "no clean stop" in m["stop_detail"]
    last = max(r.ts for r in Session(path).records() if isinstance(r, EventRecord))
    assert m["ended_at"] == last  # the last record's time, not the time it was sealed
    late = m["sealed_late"]
    assert late["by"] == "J. Doe" and late["reason"] == "mitmdump killed"
    assert late["user"] == custody.login_user() and late["at"] > m["started_at"]
    assert verify_session(path).ok
    _, entries, problems = custody.read_log(path / "custody.jsonl")
    (entry,) = entries
    assert problems == [] and entry["command"] == "close" and entry["ts"] == late["at"]
    assert entry["argv"] == ["auditor", "close", "S"] and entry["exit_code"] == 0
    assert entry["details"]["sealed_late"] is True and entry["details"]["by"] == "J. Doe"
    assert (
        entry["details"]["manifest_sha256"]
        == custody.hashlib.sha256((path / MANIFEST).read_bytes()).hexdigest()
    )
    assert res.to_dict()["status"] == "incomplete"


def test_seal_late_says_when_the_recorder_had_stopped_cleanly(session_dir: Path) -> None:
    res = seal_late(_left_open(session_dir, clean=True), by="lab")
    assert res.stopped_cleanly and "stopped cleanly" in res.manifest["stop_detail"]


def test_seal_late_refuses_what_it_must_not_seal(session_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(SessionError, match="not a capture session"):
        seal_late(tmp_path, by="x")
    with pytest.raises(SessionError, match="already closed"):
        seal_late(_closed_session(session_dir), by="x")
    path = _left_open(session_dir, clean=False)
    with pytest.raises(SessionError, match="who seals"):
        seal_late(path, by="  ")
    with pytest.raises(SessionError, match="limited to 200"):
        seal_late(path, by="x" * 201)
    live = SessionWriter.attach(path)  # a recorder still writing into it
    with pytest.raises(SessionError, match="still being recorded"):
        seal_late(path, by="x")
    assert read_manifest(path)["status"] == "open"
    live.detach()
    assert seal_late(path, by="x").manifest["status"] == "incomplete"
    assert not list(path.glob(".*")), "a temporary file was left"


def _finishes[T](fn: Callable[[], T], seconds: float = 20) -> T:
    """``fn()``'s result (or its exception), or a failure if it blocks (as a FIFO read would,
    for ever)."""
    import threading

    out: list[T] = []
    err: list[BaseException] = []

    def run() -> None:
        try:
            out.append(fn())
        except BaseException as exc:
            err.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    if err:
        raise err[0]
    assert out, "blocked"
    return out[0]


def test_a_fifo_for_a_manifest_or_flows_file_hangs_nothing(session_dir: Path) -> None:
    w = SessionWriter.create(session_dir)
    w.detach()
    (w.path / FLOWS).unlink()
    os.mkfifo(w.path / FLOWS)  # an open session: its records are read for the summary
    bad = _closed_session(session_dir)
    (bad / MANIFEST).unlink()
    os.mkfifo(bad / MANIFEST)
    infos, _ = _finishes(lambda: list_sessions(session_dir))
    by_path = {Path(i.path): i for i in infos}
    assert by_path[bad].status == "unreadable" and "not a regular file" in by_path[bad].problem
    assert by_path[w.path].status == "open" and by_path[w.path].flows == 0
    sess = Session(w.path)
    assert _finishes(lambda: list(sess.records())) == []
    assert sess.warnings == [f"{FLOWS}: unreadable: not a regular file"]


def test_seal_late_of_an_import_killed_mid_copy_names_no_original(session_dir: Path) -> None:
    data = b"0123456789" * 100
    plan = {
        "name": "x.pcap",
        "original": "original/x.pcap",
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "format": "pcap",
    }
    w = SessionWriter.create(session_dir, capture={"import": {"files": [plan]}})
    (w.path / "original").mkdir()
    (w.path / "original" / "x.pcap").write_bytes(data[:300])  # killed mid-copy
    w.detach()
    res = seal_late(w.path, by="x")
    (entry,) = res.manifest["capture"]["import"]["files"]
    assert entry["original"] is None and "300 bytes of the 1000" in entry["not_copied"]
    assert "original/x.pcap" in [a["path"] for a in res.manifest["artifacts"]]  # kept
    assert res.warnings and "x.pcap: the import was cut short" in res.warnings[0]
    assert verify_session(w.path).ok


def test_hashing_a_fifo_or_a_device_is_an_error_not_a_hang(tmp_path: Path) -> None:
    from auditor.session import sha256_file

    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "zero").symlink_to("/dev/zero")  # would never end
    for name in ("pipe", "zero"):
        with pytest.raises(OSError, match="not a regular file"):
            _finishes(lambda name=name: sha256_file(tmp_path / name))


# ------------------------------------------------------------------ hostile manifests, fuzzed


@pytest.fixture(scope="module")
def sealed_manifest(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    path = _closed_session(tmp_path_factory.mktemp("fuzz"))
    return path, (path / MANIFEST).read_bytes()


def _hostile_manifest() -> st.SearchStrategy[bytes]:
    from tests.fuzz.helpers import json_bytes, mutated, mutated_json

    @st.composite
    def draw(draw: st.DrawFn) -> bytes:
        seed = json.loads(_closed_manifest_text())
        kind = draw(st.sampled_from(["data", "bytes", "deep"]))
        if kind == "data":
            keys = ["status", "artifacts", "seal", "capture", "summary", "started_at"]
            return json_bytes(draw(mutated_json([seed], keys=keys)))
        if kind == "bytes":
            return draw(mutated([json.dumps(seed).encode()]))
        depth = draw(st.integers(60, 100_000))
        opener = draw(st.sampled_from(["[", '{"a":']))
        return (opener * depth).encode()

    return draw()


_SEED: list[str] = []


def _closed_manifest_text() -> str:
    if not _SEED:
        import tempfile

        _SEED.append((_closed_session(Path(tempfile.mkdtemp())) / MANIFEST).read_text())
    return _SEED[0]


@settings(max_examples=80, deadline=None, derandomize=True, database=None)
@given(doc=_hostile_manifest())
def test_no_manifest_breaks_sessions_verify_analysis_or_sealing(
    sealed_manifest: tuple[Path, bytes], doc: bytes
) -> None:
    path, original = sealed_manifest
    (path / MANIFEST).write_bytes(doc)
    try:
        infos, _ = list_sessions(path.parent)  # never raises: unreadable ones are listed
        (info,) = infos
        assert (info.status == "unreadable") == (info.problem is not None)
        for check in (verify_session, lambda p: seal_late(p, by="fuzz")):
            try:
                check(path)
            except SessionError:
                pass
        Session(path, lenient=True)  # analysis opens any manifest
        assert sorted(p.name for p in path.iterdir() if p.name.startswith(".")) == []
    finally:
        (path / MANIFEST).write_bytes(original)
        (path / "custody.jsonl").unlink(missing_ok=True)


def test_a_manifest_with_a_lone_surrogate_is_unreadable_not_a_crash(session_dir: Path) -> None:
    """Found by the fuzz above: json reads "\\ud800" (and its bytes), which cannot be hashed
    for the seal nor written back as UTF-8."""
    path = _closed_session(session_dir)
    text = (path / MANIFEST).read_text()
    for planted in ('"\\ud800"', '"\\udfff x"'):
        (path / MANIFEST).write_text(text.replace('"unit"', planted))
        with pytest.raises(SessionError, match="lone surrogate"):
            verify_session(path)
        (info,), _ = list_sessions(session_dir)
        assert info.status == "unreadable"
    (path / MANIFEST).write_text(text.replace('"unit"', '"\\ud83d\\ude00"'))  # a pair: fine
    assert read_manifest(path)["notes"] == "\U0001f600" and not verify_session(path).ok
