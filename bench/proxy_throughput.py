"""Requests per second through mitmdump, bare and with the recorder, in the same run.

Target (issue 2): the recorder costs at most 5% of bare mitmdump's throughput.
Small HTTP requests from 20 concurrent keep-alive clients to an origin on loopback; runs
alternate bare/recorder so drift on the machine hits both alike; the median run counts.
"""

from __future__ import annotations

import http.client
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

from auditor.netutil import free_port
from auditor.proxy.capture import Mitmdump, ProxyOptions
from auditor.session import SessionWriter
from vhandset.offline.origin import OriginServer

CLIENTS = 20
SECONDS = 5.0
ROUNDS = 3


def _load(proxy_port: int, origin_port: int, seconds: float) -> int:
    done = [0] * CLIENTS
    stop = time.monotonic() + seconds

    def client(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", proxy_port, timeout=10)
        n = 0
        while time.monotonic() < stop:
            try:
                conn.request("GET", f"http://localhost:{origin_port}/ping?c={i}&n={n}")
                conn.getresponse().read()
                n += 1
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", proxy_port, timeout=10)
        conn.close()
        done[i] = n

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done)


class _BareMitmdump(Mitmdump):
    def argv(self) -> list[str]:
        args = super().argv()
        i = args.index("-s")
        del args[i : i + 2]
        return _strip(args)


def _strip(args: list[str]) -> list[str]:
    out: list[str] = []
    skip = False
    for i, a in enumerate(args):
        if skip:
            skip = False
            continue
        if a == "--set" and i + 1 < len(args) and args[i + 1].startswith("auditor_"):
            skip = True
            continue
        out.append(a)
    return out


def run_once(kind: str, tmp: Path, origin_port: int) -> float:
    w = SessionWriter.create(tmp / "captures")
    w.detach()
    opts = ProxyOptions(port=free_port(), confdir=tmp / "conf")
    m = (_BareMitmdump if kind == "bare" else Mitmdump)(w.path, opts)
    m.start()
    try:
        _load(opts.port, origin_port, 1.0)  # warm-up
        n = _load(opts.port, origin_port, SECONDS)
    finally:
        m.stop()
    return n / SECONDS


def main() -> dict[str, float]:
    results: dict[str, list[float]] = {"bare": [], "recorder": []}
    with tempfile.TemporaryDirectory() as d, OriginServer() as origin:
        tmp = Path(d)
        for _ in range(ROUNDS):
            for kind in ("bare", "recorder"):
                results[kind].append(run_once(kind, tmp, origin.port))
    bare = statistics.median(results["bare"])
    rec = statistics.median(results["recorder"])
    out = {
        "bare_rps": round(bare, 1),
        "recorder_rps": round(rec, 1),
        "ratio": round(rec / bare, 3),
        "cost_percent": round(100 * (1 - rec / bare), 1),
        "runs": {k: [round(v, 1) for v in vs] for k, vs in results.items()},
        "target": "recorder >= 95% of bare",
    }
    print(json.dumps({"proxy_throughput": out}, indent=2))
    return out


if __name__ == "__main__":
    main()
