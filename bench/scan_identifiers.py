"""Identifier scanning throughput: mixed payloads through the Scanner, on one core.

Target: at least 100 MB/s of wire bytes for 10 identifiers in every encoding. The baselines
are measured in the same run on the same payloads (a sample of them, as they are slow): a
``bytes.find`` loop over every needle, one ``re`` alternation of all needles, and the Scanner
with its portable backend (ahocorasick-rs) instead of Hyperscan.

``python -m bench scan_identifiers`` scans 1 GB; ``python -m bench.scan_identifiers --quick``
scans 100 MB; ``--mb N`` (or ``AUDITOR_BENCH_SCAN_MB=N``) any other amount. ``--plant-rate R``
(or ``AUDITOR_BENCH_SCAN_PLANT``) sets the share of payloads that carry an identifier (0.02),
which decides how often the scanner must parse a payload to say where the match is.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import hashlib
import json
import os
import random
import re
import resource
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from auditor import decoders
from auditor.analysis.payload import Scanner

MB = 1024 * 1024
DEFAULT_MB = 1024
QUICK_MB = 100
POOL_MB = 48  # distinct payloads, cycled to reach the total
SAMPLE_MB = 8  # for the slow baselines
PLANT_RATE = 0.02  # payloads that carry an identifier

IDENTIFIERS = {
    "imei": "490154203237518",
    "imei2": "356938035643809",
    "android_id": "9774d56d682e549c",
    "serial": "R58M30ABCDX",
    "wifi_mac": "a4:5e:60:c1:22:9f",
    "bt_mac": "A4:5E:60:C1:22:A0",
    "advertising_id": "38400000-8cf0-11bd-b23e-10b96e40000d",
    "phone_number": "+8613800138000",
    "email": "jane.doe@example.com",
    "gsf_id": "3f4c2a1b9e8d7c60",
}
_WORDS = (
    "device event screen app open close session network wifi battery locale region ad click "
    "impression install update config sync push token model build version release channel"
).split()


@dataclass(frozen=True, slots=True)
class Payload:
    data: bytes
    encoding: str | None
    ctype: str | None
    planted: bool


def _encodings(value: bytes) -> list[bytes]:
    md5, sha1, sha256 = (h(value).digest() for h in (hashlib.md5, hashlib.sha1, hashlib.sha256))
    return [
        value,
        base64.b64encode(value),
        base64.urlsafe_b64encode(value).rstrip(b"="),
        value.hex().encode(),
        value.hex().upper().encode(),
        md5.hex().encode(),
        base64.b64encode(sha1),
        sha256.hex().upper().encode(),
    ]


def _event(rnd: random.Random) -> dict[str, object]:
    return {
        "ts": 1700000000000 + rnd.randrange(10**9),
        "name": rnd.choice(_WORDS),
        "props": {
            rnd.choice(_WORDS): rnd.choice(_WORDS) + str(rnd.randrange(1000)) for _ in range(4)
        },
        "url": f"https://{rnd.choice(_WORDS)}.example.com/{rnd.choice(_WORDS)}?id={rnd.randrange(10**6)}",
        "hash": rnd.randbytes(16).hex(),
    }


def _json(rnd: random.Random, size: int, secret: bytes | None) -> bytes:
    events = [_event(rnd) for _ in range(max(1, size // 300))]
    doc: dict[str, object] = {"v": 3, "device": {"model": "M2007J3SG", "os": "12"}, "e": events}
    if secret is not None:
        events[rnd.randrange(len(events))]["props"]["did"] = secret.decode("latin-1")  # type: ignore[index]
    return json.dumps(doc).encode()


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, value: bytes | int) -> bytes:
    if isinstance(value, int):
        return _varint(number << 3) + _varint(value)
    return _varint(number << 3 | 2) + _varint(len(value)) + value


def _protobuf(rnd: random.Random, size: int, secret: bytes | None) -> bytes:
    parts = []
    total = 0
    while total < size:
        inner = _field(1, rnd.randrange(2**40)) + _field(2, rnd.choice(_WORDS).encode())
        inner += _field(3, rnd.randbytes(rnd.randrange(8, 64)))
        msg = _field(7, inner)
        parts.append(msg)
        total += len(msg)
    if secret is not None:
        parts.insert(rnd.randrange(len(parts)), _field(9, _field(4, secret)))
    return b"".join(parts)


def _text(rnd: random.Random, size: int, secret: bytes | None) -> bytes:
    lines = []
    total = 0
    while total < size:
        line = f"{rnd.randrange(10**9)} I/{rnd.choice(_WORDS)}: " + " ".join(
            rnd.choice(_WORDS) for _ in range(10)
        )
        lines.append(line)
        total += len(line) + 1
    if secret is not None:
        lines.insert(rnd.randrange(len(lines)), "id=" + secret.decode("latin-1"))
    return "\n".join(lines).encode()


def _random(rnd: random.Random, size: int, secret: bytes | None) -> bytes:
    data = rnd.randbytes(size)
    if secret is not None:
        i = rnd.randrange(size)
        data = data[:i] + secret + data[i:]
    return data


def corpus(pool_bytes: int, seed: int = 1, plant_rate: float = PLANT_RATE) -> list[Payload]:
    rnd = random.Random(seed)
    secrets = [e for v in IDENTIFIERS.values() for e in _encodings(v.encode())]
    kinds: list[tuple[float, Callable[[random.Random, int, bytes | None], bytes], str, str | None]]
    kinds = [
        (0.30, _json, "json", "application/json"),
        (0.25, _json, "gzip", "application/json"),
        (0.15, _protobuf, "proto", "application/x-protobuf"),
        (0.15, _random, "random", "application/octet-stream"),
        (0.15, _text, "text", "text/plain"),
    ]
    out: list[Payload] = []
    total = 0
    while total < pool_bytes:
        _, fn, name, ctype = rnd.choices(kinds, weights=[k[0] for k in kinds])[0]
        size = int(min(256 * 1024, max(512, rnd.lognormvariate(9.5, 1.0))))
        planted = rnd.random() < plant_rate
        secret = rnd.choice(secrets) if planted else None
        data = fn(rnd, size, secret)
        enc = None
        if name == "gzip":
            data, enc = gzip.compress(data, 6), "gzip"
        out.append(Payload(data, enc, ctype, planted))
        total += len(data)
    return out


def _cycle(pool: list[Payload], total: int) -> Iterator[Payload]:
    done = 0
    while True:
        for p in pool:
            if done >= total:
                return
            done += len(p.data)
            yield p


def _scan_all(scanner: Scanner, pool: list[Payload], total: int) -> tuple[float, int, int]:
    wire = found = 0
    t0 = time.perf_counter()
    for p in _cycle(pool, total):
        res = scanner.scan_payload(p.data, content_encoding=p.encoding, content_type=p.ctype)
        wire += len(p.data)
        found += bool(res.matches)
    return time.perf_counter() - t0, wire, found


def _decoded(p: Payload) -> bytes:
    return decoders.decode(p.data, p.encoding).data if p.encoding else p.data


def _find_loop(needles: list[bytes], sample: list[Payload]) -> tuple[float, int]:
    t0 = time.perf_counter()
    hits = 0
    for p in sample:
        data = _decoded(p)
        for n in needles:
            if data.find(n) >= 0:
                hits += 1
    return time.perf_counter() - t0, hits


def _regex(needles: list[bytes], sample: list[Payload]) -> tuple[float, int]:
    rx = re.compile(b"|".join(re.escape(n) for n in sorted(needles, key=len, reverse=True)))
    t0 = time.perf_counter()
    hits = 0
    for p in sample:
        hits += bool(rx.search(_decoded(p)))
    return time.perf_counter() - t0, hits


def _sample(pool: list[Payload], size: int) -> list[Payload]:
    out, total = [], 0
    for p in pool:
        if total >= size:
            break
        out.append(p)
        total += len(p.data)
    return out


def _mbs(nbytes: int, seconds: float) -> float:
    return round(nbytes / MB / seconds, 1) if seconds else 0.0


def main(total_mb: int | None = None, plant_rate: float | None = None) -> dict[str, object]:
    total_mb = total_mb or int(os.environ.get("AUDITOR_BENCH_SCAN_MB", DEFAULT_MB))
    if plant_rate is None:
        plant_rate = float(os.environ.get("AUDITOR_BENCH_SCAN_PLANT", PLANT_RATE))
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    pool = corpus(POOL_MB * MB, plant_rate=plant_rate)
    pool_bytes = sum(len(p.data) for p in pool)
    scanner = Scanner(IDENTIFIERS)
    needles = [n.pattern for n in scanner.needles.needles]

    # warm-up, then the full run
    _scan_all(scanner, pool, 4 * MB)
    seconds, wire, with_matches = _scan_all(scanner, pool, total_mb * MB)
    planted = sum(p.planted for p in _cycle(pool, total_mb * MB))
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    sample = _sample(pool, SAMPLE_MB * MB)
    sample_bytes = sum(len(p.data) for p in sample)
    scan_s, _, _ = _scan_all(scanner, sample, sample_bytes)
    portable = Scanner(IDENTIFIERS, backend="aho-corasick")
    portable_s, _, _ = _scan_all(portable, sample, sample_bytes)
    find_s, _ = _find_loop(needles, sample)
    small = _sample(sample, SAMPLE_MB * MB // 4)
    small_bytes = sum(len(p.data) for p in small)
    regex_s, _ = _regex(needles, small)
    small_scan_s, _, _ = _scan_all(scanner, small, small_bytes)

    tracemalloc.start()
    _scan_all(scanner, pool, 64 * MB)
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    scan_rate = _mbs(wire, seconds)
    out: dict[str, object] = {
        "backend": scanner.matcher.backend,
        "identifiers": len(IDENTIFIERS),
        "needles": len(needles),
        "scanned_mb": round(wire / MB, 1),
        "payloads_per_s": round(sum(1 for _ in _cycle(pool, total_mb * MB)) / seconds),
        "seconds": round(seconds, 2),
        "mb_per_s": scan_rate,
        "target_mb_per_s": 100,
        "payloads_with_identifiers": with_matches,
        "payloads_planted": planted,
        "peak_rss_mb": round(rss_mb, 1),
        "corpus_pool_mb": round(pool_bytes / MB, 1),
        "tracemalloc_peak_mb_scanning_64mb": round(traced_peak / MB, 1),
        "baselines": {
            "sample_mb": round(sample_bytes / MB, 1),
            "scanner_mb_per_s": _mbs(sample_bytes, scan_s),
            "scanner_ahocorasick_rs_mb_per_s": _mbs(sample_bytes, portable_s),
            "bytes_find_loop_mb_per_s": _mbs(sample_bytes, find_s),
            "speedup_vs_bytes_find": round(find_s / scan_s, 1),
            "re_alternation_sample_mb": round(small_bytes / MB, 1),
            "re_alternation_mb_per_s": _mbs(small_bytes, regex_s),
            "speedup_vs_re_alternation": round(regex_s / small_scan_s, 1),
        },
        "mix": "json 30%, gzip json 25%, protobuf 15%, random 15%, text 15% (by count); "
        f"{plant_rate:.0%} carry an identifier",
    }
    print(json.dumps({"scan_identifiers": out}, indent=2))
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help=f"scan {QUICK_MB} MB")
    ap.add_argument("--mb", type=int, help=f"MB to scan (default {DEFAULT_MB})")
    ap.add_argument(
        "--plant-rate", type=float, help=f"share of payloads with an identifier ({PLANT_RATE})"
    )
    args = ap.parse_args()
    main(QUICK_MB if args.quick else args.mb, args.plant_rate)
    sys.exit(0)
