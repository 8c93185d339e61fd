"""The compiled flow table (``auditor/packets/_flowtab.c``) against the numpy one of
:class:`~auditor.packets.flows.CaptureAnalyzer`, the name lookups of ``finish`` against plain
loops, and the name work shared between this process and the worker: whichever does what,
the flow table, DNS table and names come out the same."""

from __future__ import annotations

import bisect
import io
import os
import random
import shutil
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditor.packets import flows as F
from auditor.packets import namekinds
from auditor.packets import nameresult as R
from auditor.packets import names as N
from auditor.packets.decode import Decoder
from auditor.packets.dnstables import DnsStore, DnsTables
from auditor.packets.pcapfile import CaptureReader, PcapError
from tests.packets.helpers import (
    dns_query,
    dns_response,
    ether,
    ip4,
    ipv4,
    ipv6,
    pcap,
    rr,
    tcp,
    udp,
)
from tests.packets.test_flows import _trailer, scenario, write

try:
    from auditor.packets import _flowtab
except ImportError:  # not built: the tests that need it skip
    _flowtab = None  # type: ignore[assignment]
built = pytest.mark.skipif(_flowtab is None, reason="the compiled flow table is not built")
in_use = pytest.mark.skipif(
    F._flowtab is None, reason="the compiled flow table is not built or is switched off"
)

T0 = 1_700_000_000_000_000_000
S = 1_000_000_000


def test_the_compiled_flow_table_is_built_where_there_is_a_compiler() -> None:
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler here")
    expected = "numpy" if os.environ.get("AUDITOR_PURE_PYTHON_SCAN") else "compiled"
    assert expected == F.FLOW_TABLE
    # and it is no old build without the name kinds (it would fall back to numpy's, slower)
    assert namekinds.COMPILED == (expected == "compiled")


def tables(data: bytes, compiled: bool, chunk: int = 4096, timeout: float = 120.0) -> object:
    """Everything the analyser gives for ``data`` with one flow table or the other."""
    try:
        reader = CaptureReader(io.BytesIO(data), chunk_size=chunk)
    except PcapError as exc:
        return str(exc)
    decoder = Decoder()
    analyzer = F.CaptureAnalyzer(compiled=compiled, udp_timeout=timeout)
    for rb in reader:
        analyzer.feed(decoder.decode(rb))
    flows, dns, found = analyzer.finish()
    answers, names = F._answers_table(found), found.name_addrs()
    return flows, dns, answers, names, analyzer.packets_frame(decoder.apps), analyzer.warnings


def assert_same(data: bytes, chunk: int = 4096, timeout: float = 120.0) -> None:
    a = tables(data, False, chunk, timeout)
    b = tables(data, True, chunk, timeout)
    if isinstance(a, str) or isinstance(b, str):
        assert a == b
        return
    for x, y in zip(a, b, strict=True):  # type: ignore[call-overload]
        if isinstance(x, pd.DataFrame):
            pd.testing.assert_frame_equal(x, y)
        else:
            assert x == y


@in_use
@pytest.mark.parametrize("chunk", [4096, 65536])
@pytest.mark.parametrize("timeout", [0.005, 120.0])
def test_the_scenario(chunk: int, timeout: float) -> None:
    assert_same(write(scenario()), chunk, timeout)


@in_use
def test_real_captures(shared_captures: Path) -> None:
    files = sorted(shared_captures.glob("*.pcap*"))
    assert files
    for path in files:
        for chunk in (4096, 1 << 20):
            for timeout in (0.5, 120.0):
                assert_same(path.read_bytes(), chunk, timeout)


def _messy(seed: int, n: int = 600) -> bytes:
    """Packets among a few hosts and ports, UDP, TCP and ICMP, IPv4 and IPv6, with time going
    backwards now and then, long silences and PCAPdroid trailers (some with uid -1)."""
    rng = random.Random(seed)
    hosts4 = ["10.0.0.2", "10.0.0.3", "192.0.2.1", "198.51.100.2"]
    hosts6 = ["2001:db8::2", "2001:db8::1"]
    frames = []
    t = T0
    for _ in range(n):
        t += rng.choice([0, 1, 1000, S, 3 * S, -2 * S, 200 * S])
        proto = rng.choice([6, 17, 17, 1])
        sp, dp = rng.choice([53, 443, 5000, 5001]), rng.choice([53, 443, 5000])
        l4 = (
            tcp(sp, dp, b"x" * rng.randrange(3), flags=rng.choice([0x02, 0x12, 0x10, 0x11, 0x04]))
            if proto == 6
            else udp(sp, dp, b"y")
            if proto == 17
            else b"\x08\x00\x00\x00\x00\x01\x00\x01"
        )
        if rng.random() < 0.2:
            a, b = rng.sample(hosts6, 2)
            frame = ether(ipv6(a, b, proto if proto != 1 else 58, l4), 0x86DD)
        else:
            a, b = rng.sample(hosts4, 2)
            frame = ether(ipv4(a, b, proto, l4))
            if rng.random() < 0.1:
                frame += _trailer(rng.choice([-1, 10123, 10200]), rng.choice(["a.b", "c.d"]))
        frames.append((t, frame))
    return pcap(frames, 1, nano=True)


@in_use
@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("chunk", [1000, 4096, 1 << 20])
def test_generated_traffic(seed: int, chunk: int) -> None:
    assert_same(_messy(seed), chunk, 2.5)


@pytest.mark.parametrize("compiled", [False, pytest.param(True, marks=in_use)])
@pytest.mark.parametrize("seed", range(6))
def test_batches_do_not_change_the_flows(seed: int, compiled: bool) -> None:
    """Found reviewing the compiled table: with time going backwards, the UDP timeout was
    measured from the flow's latest time at a batch's start but from the previous packet
    inside a batch, and a trailer's app with uid -1 was kept only in batches that had some
    uid; so where the file was cut into chunks changed the flows."""
    data = _messy(seed)
    whole = tables(data, compiled, 1 << 20, 2.5)
    for chunk in (600, 1000, 4096):
        cut = tables(data, compiled, chunk, 2.5)
        for x, y in zip(whole, cut, strict=True):  # type: ignore[call-overload]
            if isinstance(x, pd.DataFrame):
                pd.testing.assert_frame_equal(x, y)
            else:
                assert x == y


@in_use
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 10_000), st.sampled_from([600, 2048, 8192]), st.floats(0.000001, 300))
def test_generated_traffic_property(seed: int, chunk: int, timeout: float) -> None:
    assert_same(_messy(seed, 200), chunk, timeout)


@built
def test_bad_arguments_are_errors_not_crashes() -> None:
    table = _flowtab.FlowTable(10)
    n = 3
    good = [
        np.ones(n, np.bool_), np.full(n, 4, np.uint8), *(np.zeros(n, np.uint64) for _ in range(4)),
        np.full(n, 17, np.int16), np.zeros(n, np.int32), np.zeros(n, np.int32),
        np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, np.int32),
        np.full(n, -1, np.int32), np.full(n, -1, np.int32), np.ones(n, np.int32),
        np.empty(n, np.int64), np.empty(n, np.int8),
    ]  # fmt: skip
    assert table.assign(0, *good) == 1
    for i in range(len(good)):
        bad = list(good)
        bad[i] = np.zeros(n + 1, dtype=good[i].dtype)
        with pytest.raises(ValueError):
            table.assign(0, *bad)
    with pytest.raises(TypeError):  # the outputs must be writable
        table.assign(0, *good[:-1], b"\x00" * n)
    with pytest.raises(RuntimeError):
        _flowtab.FlowTable.__new__(_flowtab.FlowTable).assign(0, *good)
    with pytest.raises(ValueError):
        _flowtab.address_texts(b"\x04", b"\x00" * 8, b"\x00" * 7)


@built
def test_address_texts_are_those_of_inet_ntop() -> None:
    rng = random.Random(5)
    special = [0, 1, 0xFFFF, 0xFFFF_0000_0000, 0xFFFF_FFFF, 2**64 - 1, 0x0001_0000_0000_0000]
    rows = []
    for _ in range(20_000):
        v = rng.choice([4, 6, 6, 0, 5])
        hi = rng.getrandbits(64) if rng.random() < 0.5 else rng.choice(special)
        lo = rng.getrandbits(64) if rng.random() < 0.5 else rng.choice(special)
        rows.append((v, hi, lo & 0xFFFF_FFFF if v == 4 else lo))
    columns = zip(*rows, strict=True)
    types = (np.uint8, np.uint64, np.uint64)
    v, hi, lo = (np.array(c, dtype=t) for c, t in zip(columns, types, strict=True))
    assert _flowtab.address_texts(v, hi, lo) == [N.address_text(*r) for r in rows]


# ------------------------------------------------------------------ finish: DNS names of flows


def _dns_names_by_loop(
    addr_names: dict[str, list[tuple[int, str]]], server_ip: list[str], first_ns: list[int]
) -> dict[int, str]:
    """What ``finish`` did with a loop and bisect before it was vectorised."""
    index = {a: sorted(v) for a, v in addr_names.items()}
    out = {}
    for row, ip in enumerate(server_ip):
        seen = index.get(ip)
        if seen is None:
            continue
        at = bisect.bisect_right(seen, (first_ns[row], "\uffff"))
        if at:
            out[row] = seen[at - 1][1]
    return out


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["a", "b", "c", "d", "e"]),
        st.lists(st.tuples(st.integers(-5, 5), st.sampled_from(["x", "y", "z", "ab", ""]))),
    ),
    st.lists(st.tuples(st.sampled_from(["a", "b", "c", "q"]), st.integers(-6, 6)), min_size=1),
)
def test_dns_names_of_flows(
    addr_names: dict[str, list[tuple[int, str]]], flows: list[tuple[str, int]]
) -> None:
    texts = np.array(sorted({ip for ip, _ in flows} | {"zz"}), dtype=object)
    code = {t: i for i, t in enumerate(texts.tolist())}
    server = np.array([code[ip] for ip, _ in flows], dtype=np.int64)
    first = np.array([t for _, t in flows], dtype=np.int64)
    flat = [(a, ts, name) for a, seen in addr_names.items() for ts, name in seen]
    store = DnsStore()
    for a, ts, name in flat:
        store.answered += struct.pack("<qii", ts, store.text_id(a), store.text_id(name))
    rows, found = F._DnsNamer(store.tables(), texts).lookup(server, first)
    got = dict(zip(rows.tolist(), found.tolist(), strict=True))
    assert got == _dns_names_by_loop(addr_names, [ip for ip, _ in flows], first.tolist())


# ------------------------------------------------------- names parsed here or in the worker


def _dns_heavy() -> bytes:
    frames = []
    t = T0
    for i in range(400):
        q = dns_query(i, f"n{i % 37}.example", 1 if i % 3 else 28)
        t += S // 100
        frames.append((t, ether(ipv4("10.0.0.2", "10.0.0.1", 17, udp(5000 + i % 50, 53, q)))))
        a = dns_response(i, f"n{i % 37}.example", 1, [rr(b"\xc0\x0c", 1, ip4(f"192.0.2.{i % 9}"))])
        t += S // 100
        frames.append((t, ether(ipv4("10.0.0.1", "10.0.0.2", 17, udp(53, 5000 + i % 50, a)))))
        if i % 40 == 0:  # DNS over TCP stays with the worker: it keeps stream state
            framed = len(q).to_bytes(2, "big") + q
            frames.append((t, ether(ipv4("10.0.0.2", "10.0.0.1", 6, tcp(40000, 53, framed)))))
    return pcap(frames, 1, nano=True)


@pytest.mark.parametrize("behind", [0, 1, 2, 1000])
def test_udp_dns_parsed_here_or_in_the_worker_gives_the_same_tables(
    behind: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``_BEHIND`` 0: this process parses every job's UDP DNS and whole ClientHellos; 1000:
    the worker does."""
    path = tmp_path / "dns.pcap"
    path.write_bytes(_dns_heavy() + write(scenario())[24:])
    alone = F.read_capture(path, workers=0, chunk_size=4096)
    monkeypatch.setattr(F, "_BEHIND", behind)
    shared = F.read_capture(path, workers=1, chunk_size=4096)
    pd.testing.assert_frame_equal(shared.flows, alone.flows)
    pd.testing.assert_frame_equal(shared.dns, alone.dns)
    pd.testing.assert_frame_equal(shared.dns_answers, alone.dns_answers)
    assert len(alone.dns_answers) > 300
    assert shared.names == alone.names
    assert shared.warnings == alone.warnings
    assert len(alone.dns) > 800


def test_merged_dns_rows_are_in_packet_order() -> None:
    def result(rows: list[tuple[int, int, bool, int, str, int, str]]) -> R.NameResult:
        store = DnsStore()
        for k, (packet, ident, response, rcode, qname, qtype, answer) in enumerate(rows):
            store.rows += struct.pack(
                "<qiiHBB", packet, qtype, store.text_id(qname), ident, rcode, response
            )
            if answer:  # one A record under the row, to see it follow its row
                name, value = store.text_id(qname), store.text_id(answer)
                store.answers += struct.pack("<qqiiii", k, 60, name, 1, value, -1)
        return R.NameResult({}, _hint_arrays({}), store.tables(), {}, {})

    a = [(0, 1, False, 0, "a", 1, ""), (3, 2, False, 0, "b", 1, ""), (3, 2, False, 0, "c", 28, "")]
    b = [
        (1, 5, True, 0, "d", 1, "192.0.2.1"),
        (2, 6, True, 3, "e", 1, ""),
        (7, 7, True, 0, "f", 1, "192.0.2.7"),
    ]
    rows = R.merge_results(result(a), result(b), result([])).dns.python_rows()
    assert [r[0] for r in rows] == [0, 1, 2, 3, 3, 7]
    assert [r[4] for r in rows] == ["a", "d", "e", "b", "c", "f"]  # a packet's rows in order
    assert [(r[4], [x.value for x in r[6]]) for r in rows if r[6]] == [
        ("d", ["192.0.2.1"]),
        ("f", ["192.0.2.7"]),
    ]


@built
@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64), st.lists(st.tuples(st.integers(-3, 70), st.integers(-3, 70))))
def test_gather_is_the_joined_slices_or_an_error(
    data: bytes, ranges: list[tuple[int, int]]
) -> None:
    starts = np.array([a for a, _ in ranges], dtype=np.int64)
    ends = np.array([b for _, b in ranges], dtype=np.int64)
    if all(0 <= a <= b <= len(data) for a, b in ranges):
        assert _flowtab.gather(data, starts, ends) == b"".join(data[a:b] for a, b in ranges)
    else:  # the Python slices would clip or be empty; the compiled one refuses
        with pytest.raises(ValueError):
            _flowtab.gather(data, starts, ends)
    with pytest.raises(ValueError):
        _flowtab.gather(data, starts, ends[:-1] if len(ends) else np.zeros(1, np.int64))


def test_merged_names_and_client_sides_are_what_dict_updates_gave() -> None:
    """merge_results on NameResult arrays: a flow's values of one kind come from the last
    result that has that kind for it (as dict.update did), other kinds stay; a flow's client
    side is the one of its earliest packet (the least (order, side))."""

    def result(
        names: dict[str, dict[int, str | list[str]]], hints: dict[int, tuple[int, int]]
    ) -> R.NameResult:
        return R.NameResult(R.name_columns(names), _hint_arrays(hints), DnsTables.empty(), {}, {})

    a = result({"sni": {1: "a.example", 2: ["b", "c"]}, "alpn": {1: "h2"}},
               {1: (5, 0), 2: (9, 1), 3: (4, 1)})  # fmt: skip
    b = result({"sni": {1: "z.example"}, "http_host": {4: "d"}},
               {1: (7, 1), 3: (4, 0), 4: (2, 0)})  # fmt: skip
    m = R.merge_results(a, b)
    got = {k: sorted(zip(*(x.tolist() for x in c), strict=True)) for k, c in m.names.items()}
    assert got == {
        "sni": [(1, "z.example", "z.example"), (2, "b;c", "b")],
        "alpn": [(1, "h2", "h2")],
        "http_host": [(4, "d", "d")],
    }
    assert sorted(zip(*(x.tolist() for x in m.hints), strict=True)) == [
        (1, 5, 0), (2, 9, 1), (3, 4, 0), (4, 2, 0)
    ]  # fmt: skip


def _hint_arrays(
    hints: dict[int, tuple[int, int]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Client-side hints (flow -> packet order, side) as a NameResult holds them."""
    n = len(hints)
    return (
        np.fromiter(hints.keys(), np.int64, n),
        np.fromiter((h[0] for h in hints.values()), np.int64, n),
        np.fromiter((h[1] for h in hints.values()), np.int64, n),
    )
