"""Which packets may carry a name (:mod:`auditor.packets.namekinds`): the compiled pass against
its numpy twin, on packets drawn around every edge the kinds are told by and on every batch of
real captures; and what the reader does with each."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from auditor.packets import namekinds as K
from auditor.packets import names as N
from auditor.packets.decode import Decoder
from auditor.packets.pcapfile import CaptureReader
from tests.conftest import SHARED_CAPTURES

compiled = pytest.mark.skipif(not K.COMPILED, reason="the compiled name kinds are not built")
DATA = Path(__file__).resolve().parents[1] / "data"


def _inputs(seed: int, n: int) -> SimpleNamespace:
    """Packets' first payload bytes, lengths, protocols and ports, drawn around every edge the
    kinds are told by: TLS record and handshake types, HTTP methods, QUIC versions and header
    bits, Google QUIC flags, the DNS ports, lengths shorter than the bytes read."""
    rng = np.random.default_rng(seed)
    head = rng.integers(0, 256, (n, 16), dtype=np.uint8)
    firsts = np.array([22, 23, 0x47, 0x50, 0x48, 0xC0, 0xC3, 0xD0, 0xE1, 0x08, 0x0C, 0x09, 0x4F])
    pick = rng.random(n) < 0.7
    head[pick, 0] = rng.choice(firsts, pick.sum())
    head[rng.random(n) < 0.5, 1] = 3
    low = rng.random(n) < 0.3
    head[low, 2] = rng.choice([0, 1, 3, 4, 5], low.sum())
    q = K.QUIC_CONSTANTS.tolist()
    versions = [q[0], q[1], q[3], q[4] - 1, q[4], 0, 0x51303530]  # v1, v2, drafts, Q050
    v = rng.random(n) < 0.4
    vv = rng.choice(np.array(versions, dtype=np.uint32), v.sum()).astype(">u4")
    head[v, 1:5] = vv.view(np.uint8).reshape(-1, 4)
    typ = rng.random(n) < 0.4
    head[typ, 5] = rng.choice([1, 2], typ.sum())
    methods = [b"GET ", b"POST", b"HEAD", b"PUT ", b"OPTI", b"CONN", b"GETX"]
    m = rng.random(n) < 0.15
    head[m, :4] = np.frombuffer(b"".join(rng.choice(methods, m.sum())), np.uint8).reshape(-1, 4)
    ports = np.array([*N.DNS_PORTS, 443, 80, 8443, 40000, 0, 1, 65535])
    return SimpleNamespace(
        payload_head=head,
        payload_len=rng.choice([*range(20), 40, 1500], n).astype(np.int64),
        proto=rng.choice(np.array([6, 17, 17, 1, 58, 0], dtype=np.int16), n),
        sport=rng.choice(ports, n).astype(np.int32),
        dport=rng.choice(ports, n).astype(np.int32),
    )


@compiled
@pytest.mark.parametrize("seed", range(4))
def test_the_compiled_kinds_are_numpys(seed: int) -> None:
    pb = _inputs(seed, 50_000)
    idx = np.flatnonzero(np.random.default_rng(seed).random(50_000) < 0.8)
    want = K.kinds_numpy(pb, idx)  # type: ignore[arg-type]
    maybe, found = K.name_kinds(pb, idx)  # type: ignore[arg-type]
    assert (np.flatnonzero(want) == maybe).all() and (want[maybe] == found).all()
    for kind in K.KIND_CODES.tolist():  # every kind is drawn, and none is all
        assert 0 < (want == kind).sum() < len(idx) // 2
    for port in N.DNS_PORTS:  # each DNS port tells DNS (over UDP, 12 bytes at least)
        on = (pb.dport[idx] == port) & (pb.proto[idx] == 17) & (pb.payload_len[idx] >= 12)
        assert on.any() and (want[on] == N.KIND_DNS).all()


def _call(pb: SimpleNamespace, rows: np.ndarray, out: np.ndarray, **change: object) -> None:
    from auditor.packets import _flowtab

    args = {
        "head": pb.payload_head,
        "plen": pb.payload_len,
        "proto": pb.proto,
        "sport": pb.sport,
        "dport": pb.dport,
        "rows": rows,
        "prefixes": K.HTTP_PREFIXES,
        "dns": K.DNS_PORTS,
        "quic": K.QUIC_CONSTANTS,
        "kinds": K.KIND_CODES,
        "out": out,
    }
    args.update(change)
    _flowtab.name_kinds(*args.values())


@compiled
def test_the_compiled_pass_checks_what_it_is_given() -> None:
    pb = _inputs(0, 10)
    out = np.empty(3, dtype=np.int8)
    with pytest.raises(ValueError, match="outside the batch"):
        _call(pb, np.array([0, 1, 10]), out)
    with pytest.raises(ValueError, match="wrong size"):
        _call(pb, np.array([0, 1]), out)
    with pytest.raises(ValueError, match="wrong size"):
        _call(pb, np.array([0, 1, 2]), out, quic=K.QUIC_CONSTANTS[:4])
    rows = np.array([0, 1, 9])
    want = np.empty(3, dtype=np.int8)
    _call(pb, rows, want)
    narrow = np.ascontiguousarray(pb.payload_head[:, :6])  # only the first six bytes tell
    _call(pb, rows, out, head=narrow)
    assert (out == want).all()
    with pytest.raises(ValueError, match="wrong size"):
        _call(pb, rows, out, head=narrow[:, :5].copy())
    empty = np.empty(0, dtype=np.int8)  # an empty batch
    z = SimpleNamespace(**{k: v[:0] for k, v in vars(pb).items()})
    _call(z, np.zeros(0, dtype=np.int64), empty)


def _real_captures() -> list[Path]:
    files = [*Path(__file__).parent.glob("samples/*.pcap")]
    for sub in ("names", "gquic", "pcap"):
        files += DATA.glob(f"{sub}/*.pcap*")
    if SHARED_CAPTURES.is_dir():
        files += SHARED_CAPTURES.glob("*.pcap*")
    return sorted(files)


@compiled
def test_the_compiled_kinds_on_real_captures() -> None:
    """Every batch of real captures (TLS, name, gQUIC and link-type samples of this
    repository, and ../shared/captures when it is there): the compiled kinds are numpy's."""
    seen: dict[int, int] = {}
    for path in _real_captures():
        with path.open("rb") as fh:
            for rb in CaptureReader(fh):
                pb = Decoder().decode(rb)
                idx = np.flatnonzero(pb.payload_len > 0)
                maybe, found = K.name_kinds(pb, idx)
                want = K.kinds_numpy(pb, idx)
                assert (np.flatnonzero(want) == maybe).all() and (want[maybe] == found).all()
                for k, c in zip(*np.unique(found, return_counts=True), strict=True):
                    seen[int(k)] = seen.get(int(k), 0) + int(c)
    # DNS, ClientHellos, server flights, QUIC and HTTP heads are all among them
    assert set(seen) == set(K.KIND_CODES.tolist()) and sum(seen.values()) > 300, seen


def test_importing_the_reader_leaves_out_the_certificate_parser() -> None:
    """cryptography's x509 comes with the first certificate read, not with the name worker's
    start (most captures give it none)."""
    code = (
        "import sys, auditor.packets.workerpipe, auditor.packets.tlscert as t\n"
        "print('cryptography.x509' in sys.modules)\n"
        "t.certificate_info(b'not a certificate')\n"
        "print('cryptography.x509' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]
