"""Android 16 intrusion logs: the reader against hand-written files and the standard library's
own JSON encoding, hostile lines, and the records it gives."""

from __future__ import annotations

import dataclasses
import io
import json
import random
from pathlib import Path
from typing import Any

import pytest

from auditor.imports import (
    ImportFormat,
    ImportReport,
    SkipKind,
    detect_format,
    looks_like_intrusion_log,
)
from auditor.imports.intrusion import (
    MAX_NAME,
    OS_CONNECT,
    OS_DNS,
    SKIP_KIND,
    OsNetworkEvent,
    intrusion_records,
    read_events,
)
from auditor.records import EventRecord, record_from_dict, record_to_dict

DATA = Path(__file__).resolve().parents[1] / "data" / "intrusion"
SAMPLE = DATA / "2026-05-12.txt"


def report() -> ImportReport:
    return ImportReport(getattr(ImportFormat, "INTRUSION", ImportFormat.HAR))


def read(data: bytes, **kw: object) -> tuple[list[OsNetworkEvent], ImportReport]:
    rep = report()
    return list(read_events(io.BytesIO(data), rep, **kw)), rep  # type: ignore[arg-type]


def reasons(rep: ImportReport) -> dict[str, str]:
    return {s.where: s.reason for s in rep.skipped}


# ------------------------------------------------------------------- the hand-written file


def test_the_hand_written_file_gives_its_dns_and_connect_events() -> None:
    events, rep = read(SAMPLE.read_bytes())
    # what the file says, line by line (read off the file, not off the reader)
    assert [(e.line, e.kind, e.package) for e in events] == [
        (2, "dns", "com.whatsapp"),
        (3, "connect", "com.whatsapp"),
        (4, "dns", "com.example.weather"),
        (5, "connect", "com.example.weather"),
        (7, "connect", "android.uid.system:1000"),
        (8, "connect", "com.android.vending"),
        (9, "dns", "com.android.vending"),
    ]
    by_line = {e.line: e for e in events}
    assert by_line[2].ts == 1778572801.0 and by_line[3].ts == 1778572801.18
    assert (by_line[2].hostname, by_line[2].addresses) == ("g.whatsapp.example", ("192.0.2.33",))
    assert (by_line[3].ip, by_line[3].port, by_line[3].event_id) == ("192.0.2.33", 5222, 1)
    weather = by_line[4]
    assert weather.addresses == ("198.51.100.7", "198.51.100.8", "2001:db8::7")
    assert weather.address_count == 14
    assert (by_line[5].ip, by_line[5].port) == ("2001:db8::7", 443)
    assert by_line[7].ip == "::1"  # "ip6-localhost/::1": the part after the slash
    assert by_line[8].ip == "203.0.113.9"  # an IPv4-mapped IPv6 address, as the v4 one
    assert by_line[9].addresses == () and by_line[9].address_count == 0
    assert rep.counts == {
        "lines": 12,
        "dns_event": 3,
        "connect_event": 4,
        "security_event": 4,
        "other_events": 1,
    }
    assert rep.meta["security_event_tags"] == {
        "logging_started": 1,
        "app_process_start": 1,
        "tag 210002": 1,
        "adb_shell_cmd": 1,
    }
    assert rep.meta["unknown_event_types"] == {"future_event": 1}
    assert rep.notes == {
        "dns_answers_cut_by_the_os": 1,
        "events_of_unknown_types": 1,
        "ipv4_mapped_addresses": 1,
        "security_event_times_in_milliseconds": 1,
    }
    assert rep.skipped_total == 0


def test_events_encoded_by_the_standard_library_read_back_field_for_field() -> None:
    """Events written by json.dumps (any key order, with and without spaces) are read as
    written: the encoder is Python's, the expected values are the table's."""
    rng = random.Random(7)
    table: list[tuple[Any, ...]] = []
    for i in range(200):
        ms = 1_778_572_800_000 + i * 137
        pkg = rng.choice(["com.a", "com.b.c", "android.uid.system:1000"])
        if i % 2:
            ip = f"198.51.100.{i % 250}"
            body = {"event_id": i, "event_time": ms, "package_name": pkg, "port": 1000 + i}
            body["ip_address"] = "/" + ip
            table.append(("connect", ms / 1000, pkg, None, (), ip, 1000 + i, "connect_event", body))
        else:
            addrs = [f"192.0.2.{i % 250}", f"2001:db8::{i + 1:x}"]
            body = {"event_id": i, "event_time": ms, "package_name": pkg}
            body |= {"hostname": f"h{i}.example", "ip_addresses": ["/" + a for a in addrs]}
            body["ip_addresses_count"] = 2
            table.append(("dns", ms / 1000, pkg, f"h{i}.example", tuple(addrs), None, None,
                          "dns_event", body))  # fmt: skip
    lines = []
    for *_, kind, body in table:
        items = list(body.items())
        rng.shuffle(items)
        sep = rng.choice([(",", ":"), (", ", ": ")])
        lines.append(json.dumps({kind: dict(items)}, separators=sep))
    events, rep = read(("\r\n".join(lines) + "\r\n").encode())
    got = [(e.kind, e.ts, e.package, e.hostname, e.addresses, e.ip, e.port) for e in events]
    assert got == [row[:7] for row in table]
    assert rep.skipped_total == 0 and rep.counts["lines"] == 200


# ------------------------------------------------------------------------------ detection


def test_an_intrusion_log_is_told_from_a_har_by_its_first_line() -> None:
    head = SAMPLE.read_bytes()[:4096]
    assert looks_like_intrusion_log(head)
    assert looks_like_intrusion_log(b"\xef\xbb\xbf\n\n  " + head)
    assert looks_like_intrusion_log(b'{"dns_event": {"event_time": 1}}')
    # a damaged first event is still this format's (its lines are then skipped one by one)
    assert looks_like_intrusion_log(b'{"connect_event": nonsense\n')
    assert not looks_like_intrusion_log(b'{"log": {"entries": []}}')
    assert not looks_like_intrusion_log(b"")
    assert not looks_like_intrusion_log(b'["dns_event"]')
    # the generic detection takes any JSON object for a HAR: this check must come before it
    wired = getattr(ImportFormat, "INTRUSION", None)
    assert detect_format(head) is (wired or ImportFormat.HAR)
    assert detect_format(b'{"log": {"entries": []}}') is ImportFormat.HAR


# ------------------------------------------------------------------------------- records


def test_records_lead_back_to_their_line_and_survive_the_session_format() -> None:
    rep = report()
    recs = list(intrusion_records(io.BytesIO(SAMPLE.read_bytes()), rep, "x.txt", "il-abc"))
    assert [r.kind for r in recs] == [OS_DNS, OS_CONNECT, OS_DNS, OS_CONNECT, OS_CONNECT,
                                      OS_CONNECT, OS_DNS]  # fmt: skip
    assert rep.counts["event"] == 7
    first = recs[0]
    assert first.ts == "2026-05-12T08:00:01.000000Z"
    assert first.data["id"] == "il-abc-2" and first.data["file"] == "x.txt"
    assert first.data["source"] == "intrusion-log"
    for rec in recs:
        back = record_from_dict(json.loads(json.dumps(record_to_dict(rec))))
        assert isinstance(back, EventRecord)
        assert OsNetworkEvent.from_record(back) == OsNetworkEvent.from_record(rec)
    events, _ = read(SAMPLE.read_bytes())
    back_events = [OsNetworkEvent.from_record(r) for r in recs]
    assert [e.ref if e else None for e in back_events] == [r.data["id"] for r in recs]
    assert [dataclasses.replace(e, ref=None) if e else None for e in back_events] == events


def test_a_span_keeps_the_events_inside_it_and_counts_the_others() -> None:
    rep = report()
    span = (1778572801.18, 1778572805.0)  # line 3's time to line 8's
    recs = list(intrusion_records(io.BytesIO(SAMPLE.read_bytes()), rep, "x", "il", span=span))
    assert [r.data["line"] for r in recs] == [3, 4, 5, 7, 8]
    assert rep.notes["events_outside_the_span"] == 2 and rep.counts["event"] == 5


def test_a_record_edited_into_the_wrong_shape_is_not_an_event() -> None:
    data = {"line": 1, "package": "a", "ip": "192.0.2.1", "port": 1}
    good = EventRecord("2026-05-12T08:00:01Z", OS_CONNECT, "", data)
    assert OsNetworkEvent.from_record(good) is not None
    for data in (
        {"line": "1", "package": "a", "ip": "192.0.2.1", "port": 1},
        {"line": 1, "package": "a", "ip": "192.0.2.1", "port": True},
        {"line": 1, "package": "a", "ip": 7, "port": 1},
    ):
        assert OsNetworkEvent.from_record(EventRecord(good.ts, OS_CONNECT, "", data)) is None
    assert OsNetworkEvent.from_record(EventRecord("yesterday", OS_CONNECT, "", good.data)) is None
    assert OsNetworkEvent.from_record(EventRecord(good.ts, "tcp_flow", "", good.data)) is None


# ------------------------------------------------------------------------------ bad input

CONNECT = '{"connect_event":{"event_time":1778572801180,"package_name":"com.a","port":443,"ip_address":"/192.0.2.1"}}'  # noqa: E501


def test_bad_lines_are_skipped_and_counted_with_the_field_at_fault() -> None:
    lines = [
        CONNECT,
        "not json at all",
        "[1, 2]",
        '{"connect_event": 5}',
        '{"connect_event": {}, "dns_event": {}}',
        '{"connect_event":{"event_time":"soon","package_name":"a","port":1,"ip_address":"/192.0.2.1"}}',
        '{"connect_event":{"event_time":-5,"package_name":"a","port":1,"ip_address":"/192.0.2.1"}}',
        '{"connect_event":{"event_time":1,"package_name":"a","port":70000,"ip_address":"/192.0.2.1"}}',
        '{"connect_event":{"event_time":1,"package_name":"a","port":true,"ip_address":"/192.0.2.1"}}',
        '{"connect_event":{"event_time":1,"package_name":"a","port":1,"ip_address":"/999.1.1.1"}}',
        '{"connect_event":{"event_time":1,"package_name":7,"port":1,"ip_address":"/192.0.2.1"}}',
        '{"dns_event":{"event_time":1,"package_name":"a","ip_addresses":[]}}',
        '{"dns_event":{"event_time":1,"package_name":"a","hostname":"h","ip_addresses":"/1.2.3.4"}}',
        "[" * 5000 + "]" * 5000,
        CONNECT,  # the same event again
        '{"connect_event":{"event_time":99999999999999999,"package_name":"a","port":1,"ip_address":"/192.0.2.1"}}',
    ]  # fmt: skip
    events, rep = read(("\n".join(lines) + "\n").encode())
    assert len(events) == 1 and events[0].line == 1
    assert reasons(rep) == {
        "line 2": "not JSON",
        "line 3": "expected a JSON dict, found list",
        "line 4": "the event is not a JSON object",
        "line 5": "2 keys at the top level, not one naming the event type",
        "line 6": "connect_event.event_time is missing or not a number",
        "line 7": "connect_event.event_time is not a time in milliseconds from 1970 to 9999",
        "line 8": "connect_event.port is missing or not a port number",
        "line 9": "connect_event.port is missing or not a port number",
        "line 10": "connect_event.ip_address is missing or not an IP address",
        "line 11": "connect_event.package_name is missing or not a string",
        "line 12": "dns_event.hostname is missing or not a string",
        "line 13": "dns_event.ip_addresses is not a list",
        "line 14": "not usable JSON: nested more than 64 levels deep",
        "line 15": "the same event as an earlier line",
        "line 16": "connect_event.event_time is not a time in milliseconds from 1970 to 9999",
    }
    assert rep.skipped_total == 15
    kinds = {g.kind for g in rep.groups.values()}
    assert kinds == {SKIP_KIND, SkipKind.DUPLICATE}


def test_a_file_cut_short_keeps_the_events_before_the_cut_and_says_so() -> None:
    data = SAMPLE.read_bytes()
    cut = data[: data.index(b"\n", 500) + 40]  # in the middle of a line
    events, rep = read(cut)
    complete, _ = read(data[: data.index(b"\n", 500) + 1])
    assert events == complete and events
    (skip,) = rep.skipped
    assert skip.reason == "the file ends in the middle of this event (cut short?)"
    assert rep.warnings == [f"the file ends in the middle of the event on {skip.where}"]


def test_hostile_names_are_kept_as_written_and_counted() -> None:
    hostile_pkg = "<script>alert(1)</script>\u202e\x1b[31m"
    hostile_host = "evil.example\r\n<b>x</b>\u0000"
    lines = [
        json.dumps({"dns_event": {"event_time": 1778572801000, "package_name": hostile_pkg,
                                  "hostname": hostile_host, "ip_addresses": ["/192.0.2.1"]}}),
        json.dumps({"connect_event": {"event_time": 1778572801100, "package_name": hostile_pkg,
                                      "port": 443, "ip_address": "/192.0.2.1"}}),
        json.dumps({"connect_event": {"event_time": 1778572801200, "port": 80,
                                      "ip_address": "/192.0.2.1"}}),
        json.dumps({"dns_event": {"event_time": 1778572801300, "package_name": "a",
                                  "hostname": "x" * (MAX_NAME + 1), "ip_addresses": []}}),
        json.dumps({"dns_event": {"event_time": 1778572801400, "package_name": "a",
                                  "hostname": "h.example",
                                  "ip_addresses": ["/192.0.2.9", "<img>", 5, "/192.0.2.9"]}}),
        json.dumps({"<bad>\u202e_event": {"event_time": 1}}),
    ]  # fmt: skip
    events, rep = read(("\n".join(lines) + "\n").encode())
    assert [e.package for e in events] == [hostile_pkg, hostile_pkg, "", "a"]
    assert events[0].hostname == hostile_host  # kept as the OS wrote it; shown escaped
    assert events[3].addresses == ("192.0.2.9",)
    assert rep.notes == {
        "package_names_not_android_names": 2,
        "hostnames_not_dns_names": 1,
        "events_without_package": 1,
        "addresses_not_understood": 2,
        "events_of_unknown_types": 1,
    }
    assert reasons(rep) == {"line 4": f"dns_event.hostname is longer than {MAX_NAME} characters"}
    assert rep.meta["unknown_event_types"] == {"(a type with unusual characters)": 1}
    # no hostile text in any reason or warning the command prints
    shown = " ".join([*reasons(rep).values(), *rep.warnings])
    assert "<" not in shown and "\u202e" not in shown


def test_an_overlong_line_is_skipped_without_reading_it_whole() -> None:
    long_line = b'{"dns_event":{"hostname":"' + b"a" * 5000 + b'"}}'
    data = CONNECT.encode() + b"\n" + long_line + b"\n" + CONNECT.replace("443", "444").encode()
    events, rep = read(data, max_line=1000)
    assert [e.port for e in events] == [443, 444]
    assert reasons(rep) == {"line 2": "longer than 1000 bytes"}


def test_invalid_utf8_and_empty_input() -> None:
    events, rep = read(b"\xff\xfe\x00garbage\n" + CONNECT.encode())
    assert len(events) == 1 and reasons(rep) == {"line 1": "not JSON"}
    events, rep = read(b"")
    assert events == [] and rep.skipped_total == 0 and rep.counts == {}
    events, rep = read(b"\n\n   \n")
    assert events == [] and rep.skipped_total == 0


def test_overlapping_files_share_their_events_once() -> None:
    seen: set[bytes] = set()
    first, _ = read(SAMPLE.read_bytes(), seen=seen)
    again, rep = read(SAMPLE.read_bytes(), seen=seen)
    assert len(first) == 7 and again == []
    # every line, security events too (as MVT does), and none of their notes counted again
    assert rep.skipped_total == 12 and rep.notes == {} and rep.counts == {}
    assert {g.kind for g in rep.groups.values()} == {SkipKind.DUPLICATE}


@pytest.mark.parametrize("n", [20_000])
def test_a_large_file_is_read_line_by_line(n: int) -> None:
    line = CONNECT.encode()
    data = b"".join(line.replace(b"1778572801180", str(1778572801180 + i).encode()) + b"\n"
                    for i in range(n))  # fmt: skip
    rep = report()
    count = sum(1 for _ in read_events(io.BytesIO(data), rep))
    assert count == n and rep.counts["connect_event"] == n


def test_record_times_are_written_as_auditor_writes_times() -> None:
    from datetime import UTC, datetime

    from auditor.imports.intrusion import _iso_ms

    rng = random.Random(3)
    for ms in [0, 1, 999, 1000, 1778572801180, 253402300799999] + [
        rng.randrange(0, 253402300799999) for _ in range(2000)
    ]:
        want = datetime.fromtimestamp(ms // 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        assert _iso_ms(ms / 1000) == f"{want}.{ms % 1000:03d}000Z"


def test_a_daily_file_wholly_inside_another_imports_with_it(tmp_path: Path) -> None:
    """``auditor import a.txt b.txt`` where b's events are all in a (overlapping daily logs):
    one session, each event once, b counted as duplicates, not refused as unreadable."""
    from auditor.imports.session import import_files
    from auditor.session import Session

    a = tmp_path / "a.txt"
    a.write_bytes(SAMPLE.read_bytes())
    b = tmp_path / "b.txt"
    b.write_bytes(b"".join(SAMPLE.read_bytes().splitlines(keepends=True)[:5]))
    events, _ = read(SAMPLE.read_bytes())
    res = import_files([a, b], tmp_path / "sessions")
    recs = [
        r
        for r in Session(res.session).records()
        if isinstance(r, EventRecord) and r.kind in ("os_dns", "os_connect")
    ]
    assert len(recs) == len(events) > 5
    imports = [
        r
        for r in Session(res.session).records()
        if isinstance(r, EventRecord) and r.kind == "import"
    ]
    assert any("duplicate" in json.dumps(r.data) for r in imports)
