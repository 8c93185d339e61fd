"""``auditor intel lookup`` from a cold start, and the compiled index it reads.

Target (issue 13): one lookup completes in under 0.3 s from a cold start on this machine.
A cold start is a new process, as a user or a script calling the command meets it, with
auditor's modules byte-compiled as an install leaves them; the lookup index in the cache
folder is current (it is built once, on first use after the knowledge base or a data set
changes; that build is timed too).

Measured in the same run, as baselines: a bare ``python -c pass`` (the interpreter's own
start) and the same lookup with the index bypassed (``KnowledgeBase.load()``, what every
lookup cost before the index). Reported: the median of ROUNDS runs of each, the ratios,
and 1,000 hosts on standard input in one process (per-host cost once started).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROUNDS = 7
TARGET_S = 0.3
HOSTS = ["tracking.miui.com", "sdk.umeng.com", "app-measurement.com", "d1.cloudfront.net"]


def _time(cmd: list[str], env: dict[str, str], stdin: str | None = None) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, env=env, input=stdin, text=True, check=True, capture_output=True)
    return time.perf_counter() - t


def _median(cmd: list[str], env: dict[str, str], stdin: str | None = None) -> float:
    return statistics.median(_time(cmd, env, stdin) for _ in range(ROUNDS))


def main() -> None:
    import compileall

    import auditor

    # as an installed package is: its modules byte-compiled (pip does it at install; this
    # machine sets PYTHONDONTWRITEBYTECODE, so a checkout would otherwise recompile every
    # module on every start, about 0.13 s more)
    compileall.compile_dir(Path(auditor.__file__).parent, quiet=1)
    bindir = Path(sys.executable).parent
    auditor = str(bindir / "auditor")
    with tempfile.TemporaryDirectory(prefix="auditor-bench-") as tmp:
        env = {**os.environ, "AUDITOR_CACHE_DIR": tmp}
        build = _time([auditor, "intel", "lookup", HOSTS[0], "--json"], env)
        python = _median([sys.executable, "-c", "pass"], env)
        one = _median([auditor, "intel", "lookup", HOSTS[0], "--json"], env)
        ip = _median([auditor, "intel", "lookup", "8.8.8.8", "--json"], env)
        load = (
            "from auditor.intel.kb import KnowledgeBase;"
            f"KnowledgeBase.load().lookup_host({HOSTS[0]!r})"
        )
        uncached = _median([sys.executable, "-c", load], env)
        many = "\n".join(f"h{i}.{HOSTS[i % len(HOSTS)]}" for i in range(1000)) + "\n"
        thousand = _median([auditor, "intel", "lookup", "-", "--json"], env, many)
    out = {
        "bench": "intel_lookup",
        "rounds": ROUNDS,
        "index_build_s": round(build, 3),
        "python_start_s": round(python, 3),
        "lookup_cold_s": round(one, 3),
        "lookup_ip_cold_s": round(ip, 3),
        "lookup_without_index_s": round(uncached, 3),
        "lookup_1000_hosts_stdin_s": round(thousand, 3),
        "per_host_ms": round(1000 * (thousand - one) / 999, 3),
        "ratio_to_python_start": round(one / python, 2),
        "speedup_over_no_index": round(uncached / one, 2),
        "target_s": TARGET_S,
        "meets_target": one < TARGET_S,
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
