"""``auditor fleet report`` at scale: DuckDB against plain pandas, and dask.distributed.

A fleet dataset of 5,000 sessions and 20,000,000 flow rows (4,000 per session) is written
straight as Parquet, in the layout ``auditor export`` writes (``auditor.fleet.dataset``:
one part per partition, the sessions file committing it), with numpy and pyarrow: 5
vendors, 4 models each, 5 builds per model (each recorded over two months), 40 hosts per
vendor and 60 shared ones, each owned by one of 30 recipients; each build sends its own set
of (recipient, identifier) pairs, which grows from build to build, so that "since which
build" has answers. Session keys are 64 hex digits, as real ones are.

Each engine runs the report's aggregations (``auditor.fleet.engines``) and builds the
report document, in a fresh process that reports its time, CPU seconds (all its threads)
and peak RSS (VmHWM): DuckDB (best of three), pandas (the baseline), and dask on a
LocalCluster of 1 and 2 worker processes on 127.0.0.1 (the cluster is started before the
clock starts; the workers' peaks are reported beside the client's). Every engine's report
must equal DuckDB's. The machine's load average is recorded with each run: on shared cores
the clock moves with other work, CPU seconds much less.

Targets (issue 17): DuckDB at least 10x faster than pandas on the 5,000-session dataset;
DuckDB's peak memory flat in the number of sessions (1,000 -> 5,000 within 1.5x); Dask's
report identical, its overhead against DuckDB stated.

    .venv/bin/python -m bench.fleet                      # 1,000, 2,500 and 5,000 sessions
    .venv/bin/python -m bench.fleet --sessions=5000 --flows=4000 --keep=/tmp/fleet-bench
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from bench.packets import _hwm_mib

SIZES = (1000, 2500, 5000)
FLOWS_PER_SESSION = 4000
SEED = 17
VENDORS = ("Xiaomi", "OnePlus", "Huawei", "Samsung", "Oppo")
MODELS_PER_VENDOR = 4
BUILDS_PER_MODEL = 5
RECIPIENTS = 30
VENDOR_HOSTS, SHARED_HOSTS = 40, 60
IDENTIFIERS = ("imei", "android_id", "serial", "wifi_mac", "advertising_id", "phone_number")
ENCODINGS = ("plain", "gzip > json > plain", "form > sha1-hex", "br > protobuf > hex")
TARGET_SPEEDUP = 10.0
TARGET_MEMORY_RATIO = 1.5
_ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- the dataset


def _strings(pool: list[str], codes: np.ndarray) -> pa.Array:
    return pa.DictionaryArray.from_arrays(pa.array(codes, pa.int32()), pa.array(pool)).cast(
        pa.string()
    )


def write_dataset(root: Path, sessions: int, flows_per_session: int, seed: int = SEED) -> dict:
    """A fleet dataset of ``sessions`` sessions under ``root``; returns its counts."""
    from auditor.fleet import schema as S
    from auditor.fleet.dataset import Dataset, part_name, partition_dir

    rng = np.random.default_rng(seed)
    ds = Dataset.open(root, create=True)
    recipients = [f"Recipient {i:02d} Ltd" for i in range(RECIPIENTS)]
    builds = [
        (v, f"{v[:2].upper()}-{m:02d}", f"{11 + b}/B{b}.{m}/{v[:1]}{b}.{m}.0", vi, b)
        for vi, v in enumerate(VENDORS)
        for m in range(MODELS_PER_VENDOR)
        for b in range(BUILDS_PER_MODEL)
    ]
    shared = [f"api{i}.shared-cdn.example" for i in range(SHARED_HOSTS)]
    # each host belongs to one recipient; a vendor's own hosts to its first three recipients
    host_pool = shared + [
        f"t{i}.{v.lower()}-telemetry.example" for v in VENDORS for i in range(VENDOR_HOSTS)
    ]
    host_owner = np.concatenate(
        [
            rng.integers(0, RECIPIENTS, SHARED_HOSTS),
            *[(vi * 3 + np.arange(VENDOR_HOSTS) % 3) % RECIPIENTS for vi in range(len(VENDORS))],
        ]
    )
    build_of = rng.integers(0, len(builds), sessions)
    month_of = rng.integers(0, 2, sessions)  # each build is recorded over two months
    keys = [hashlib.sha256(f"{seed}/{i}".encode()).hexdigest() for i in range(sessions)]
    # (recipient, identifier) pairs per build, growing with the build number
    pairs_of: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for vi in range(len(VENDORS)):
        for m in range(MODELS_PER_VENDOR):
            got: list[tuple[int, int]] = []
            for b in range(BUILDS_PER_MODEL):
                got = got + [
                    (int(rng.integers(0, RECIPIENTS)), int(rng.integers(0, len(IDENTIFIERS))))
                    for _ in range(2)
                ]
                pairs_of[(vi, m * BUILDS_PER_MODEL + b)] = sorted(set(got))
    rows = 0
    parts: dict[tuple[int, int], list[int]] = {}
    for i in range(sessions):
        parts.setdefault((int(build_of[i]), int(month_of[i])), []).append(i)
    for (bi, mi), members in sorted(parts.items()):
        vendor, model, build, vi, b = builds[bi]
        month = f"2025-{b * 2 + mi + 1:02d}"
        part = (vendor, model, build, month)
        pdir, name = partition_dir(part), part_name([keys[i] for i in members])
        n = len(members) * flows_per_session
        sess_codes = np.repeat(np.arange(len(members)), flows_per_session)
        own = np.concatenate([np.arange(SHARED_HOSTS), SHARED_HOSTS + vi * VENDOR_HOSTS +
                              np.arange(VENDOR_HOSTS)])  # fmt: skip
        hosts = own[rng.integers(0, len(own), n)]
        t0 = np.datetime64(f"{month}-01T00:00:00", "us").astype(np.int64)
        starts = t0 + rng.integers(0, 27 * 86400 * 10**6, n)
        common = {
            S.SESSION_KEY: _strings([keys[i] for i in members], sess_codes),
            S.VENDOR: _strings([vendor], np.zeros(n, int)),
            S.MODEL: _strings([model], np.zeros(n, int)),
            S.BUILD: _strings([build], np.zeros(n, int)),
            S.MONTH: _strings([month], np.zeros(n, int)),
        }
        flows = {
            **common,
            "session_id": _strings([keys[i][:20] for i in members], sess_codes),
            "flow_id": pa.array(np.arange(rows, rows + n)).cast(pa.string()),
            "start": pa.array(starts, S.TS),
            S.HOST: _strings(host_pool, hosts),
            S.RECIPIENT: _strings(recipients, host_owner[hosts]),
            "organisation_id": _strings([r.split()[1] for r in recipients], host_owner[hosts]),
            "country": pa.nulls(n, pa.string()),
            "server_country": pa.nulls(n, pa.string()),
            "hosting": pa.nulls(n, pa.string()),
            "transport": _strings(["tcp"], np.zeros(n, int)),
            "scheme": _strings(["https"], np.zeros(n, int)),
            "method": _strings(["POST"], np.zeros(n, int)),
            "status": pa.array(np.full(n, 200)),
            S.BYTES_UP: pa.array(rng.integers(200, 20000, n)),
            S.BYTES_DOWN: pa.array(rng.integers(100, 50000, n)),
            "seen_by": _strings(["proxy"], np.zeros(n, int)),
            "bypass": pa.array(np.zeros(n, bool)),
            "idle": pa.array(rng.random(n) < 0.3),
            "apps": pa.nulls(n, pa.string()),
        }
        pairs = pairs_of[(vi, bi % (MODELS_PER_VENDOR * BUILDS_PER_MODEL))]
        idents: dict[str, list[Any]] = {k: [] for k in S.IDENTIFIERS.names}
        for i in members:
            for r, ident in pairs:
                if rng.random() < 0.8:
                    for k, v in zip(S.PARTITION_KEYS, part, strict=True):
                        idents[k].append(v)
                    idents[S.SESSION_KEY].append(keys[i])
                    idents[S.RECIPIENT].append(recipients[r])
                    idents[S.IDENTIFIER].append(IDENTIFIERS[ident])
                    idents[S.ENCODINGS].append([ENCODINGS[(r + ident) % len(ENCODINGS)]])
                    idents["hosts"].append([])
                    idents["rules"].append(["identifier-sent"])
                    idents[S.FLOWS].append(int(rng.integers(1, 50)))
                    idents["flow_ids"].append([])
        m = len(members)
        sess: dict[str, Any] = {k: pa.nulls(m, f.type) for k, f in zip(
            S.SESSIONS.names, S.SESSIONS, strict=True)}  # fmt: skip
        sess.update(
            {
                S.SESSION_KEY: pa.array([keys[i] for i in members]),
                S.VENDOR: pa.array([vendor] * m),
                S.MODEL: pa.array([model] * m),
                S.BUILD: pa.array([build] * m),
                S.MONTH: pa.array([month] * m),
                "input": pa.array(["report"] * m),
                S.STARTED: pa.array(t0 + rng.integers(0, 27 * 86400 * 10**6, m), S.TS),
                S.DURATION: pa.array(rng.uniform(600, 7200, m)),
                S.FLOWS: pa.array(np.full(m, flows_per_session)),
            }
        )
        tables = {
            "flows": pa.table(flows, schema=S.FLOWS_T),
            "identifiers": pa.Table.from_pydict(idents, schema=S.IDENTIFIERS),
            "endpoints": S.ENDPOINTS.empty_table(),
            "findings": S.FINDINGS.empty_table(),
            "sessions": pa.table(sess, schema=S.SESSIONS),
        }
        for t in S.TABLES:  # sessions last: it commits the part
            ds.write_part(t, pdir, name, tables[t])
        rows += n
    return {"sessions": sessions, "flow_rows": rows, "partitions": len(parts)}


# ---------------------------------------------------------------- one engine, one process


def _report_digest(doc: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def run_engine(dataset: str, engine: str, workers: int) -> dict[str, Any]:
    from auditor.fleet.dataset import Dataset
    from auditor.fleet.engines import aggregates
    from auditor.fleet.report import build_report

    ds = Dataset.open(Path(dataset))
    out: dict[str, Any] = {"engine": engine if engine != "dask" else f"dask-{workers}"}
    cluster = None
    scheduler = None
    if engine == "dask":
        from distributed import LocalCluster

        t = time.perf_counter()
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            silence_logs=40,
        )
        scheduler = cluster.scheduler_address
        out["cluster_start_s"] = round(time.perf_counter() - t, 2)
    try:
        t = time.perf_counter()
        cpu = time.process_time()
        doc = build_report(aggregates(ds, engine, scheduler), generated_at="fixed")
        out["seconds"] = round(time.perf_counter() - t, 2)
        out["client_cpu_s"] = round(time.process_time() - cpu, 2)
        if cluster is not None:
            from distributed import Client

            with Client(cluster) as c:
                peaks = c.run(lambda: _hwm_mib())
            out["worker_peak_mib"] = sorted(peaks.values())
    finally:
        if cluster is not None:
            cluster.close()
    out["peak_mib"] = _hwm_mib()
    out["report"] = _report_digest(doc)
    out["identifier_rows"] = doc["totals"]["identifier_rows"]
    return out


def _fresh(dataset: Path, engine: str, workers: int = 0) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.fleet", "--run", str(dataset), engine, str(workers)]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=_ROOT, check=False)
    if res.returncode != 0:
        return {"engine": engine, "error": (res.stderr.strip().splitlines() or ["?"])[-1]}
    result: dict[str, Any] = json.loads(res.stdout.strip().splitlines()[-1])
    return result


# ---------------------------------------------------------------- the whole bench


def main(
    sizes: tuple[int, ...] = SIZES,
    flows: int = FLOWS_PER_SESSION,
    keep: str | None = None,
    pandas_sizes: tuple[int, ...] | None = None,
) -> dict[str, Any]:
    base = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="auditor-fleet-bench-"))
    result: dict[str, Any] = {
        "flows_per_session": flows,
        "load_average": os.getloadavg()[0],
        "sizes": [],
    }
    try:
        for n in sizes:
            root = base / f"fleet-{n}"
            t = time.perf_counter()
            if not (root / "fleet.json").is_file():
                shutil.rmtree(root, ignore_errors=True)
                counts = write_dataset(root, n, flows)
            else:
                counts = {"sessions": n, "flow_rows": n * flows, "reused": True}
            size = {
                **counts,
                "generate_s": round(time.perf_counter() - t, 1),
                "parquet_mib": round(
                    sum(p.stat().st_size for p in root.rglob("*.parquet")) / 2**20
                ),
                "runs": [],
            }
            runs = [("duckdb", 0), ("dask", 1), ("dask", 2)]
            if pandas_sizes is None or n in pandas_sizes:
                runs.insert(1, ("pandas", 0))
            for engine, workers in runs:
                # DuckDB's run is short: best of three, so one burst of another process's
                # work on this shared machine does not decide the ratio
                tries = [
                    _fresh(root, engine, workers) for _ in range(3 if engine == "duckdb" else 1)
                ]
                best = min(tries, key=lambda r: r.get("seconds", float("inf")))
                best["load_average"] = round(os.getloadavg()[0], 1)
                size["runs"].append(best)
                print(json.dumps(best), file=sys.stderr)
            result["sizes"].append(size)
        result["summary"] = _summary(result["sizes"])
    finally:
        if not keep:
            shutil.rmtree(base, ignore_errors=True)
    print(json.dumps({"fleet": result}, indent=2))
    return result


def _summary(sizes: list[dict[str, Any]]) -> dict[str, Any]:
    def run(size: dict[str, Any], name: str) -> dict[str, Any]:
        return next((r for r in size["runs"] if r.get("engine") == name), {})

    small, big = sizes[0], sizes[-1]
    duck, pand = run(big, "duckdb"), run(big, "pandas")
    out: dict[str, Any] = {}
    if duck.get("seconds") and pand.get("seconds"):
        out["duckdb_speedup_over_pandas"] = round(pand["seconds"] / duck["seconds"], 1)
        out["speedup_target_met"] = out["duckdb_speedup_over_pandas"] >= TARGET_SPEEDUP
        # CPU seconds (all threads of the process): the work done, steadier than the clock
        # when other processes share the cores
        out["duckdb_cpu_advantage"] = round(pand["client_cpu_s"] / duck["client_cpu_s"], 1)
    d0 = run(small, "duckdb")
    if d0.get("peak_mib") and duck.get("peak_mib"):
        out["duckdb_memory_ratio"] = round(duck["peak_mib"] / d0["peak_mib"], 2)
        out["memory_target_met"] = out["duckdb_memory_ratio"] <= TARGET_MEMORY_RATIO
        out["duckdb_time_ratio"] = round(duck["seconds"] / d0["seconds"], 2)
        out["sessions_ratio"] = round(big["sessions"] / small["sessions"], 2)
    reports = {r["report"] for s in sizes for r in s["runs"][:1]}
    out["identical"] = all(len({r.get("report") for r in s["runs"]}) == 1 for s in sizes) and len(
        reports
    ) == len(sizes)
    for name in ("dask-1", "dask-2"):
        d = run(big, name)
        if d.get("seconds") and duck.get("seconds"):
            out[f"{name}_over_duckdb"] = round(d["seconds"] / duck["seconds"], 1)
    return out


def _arg(name: str, default: str | None) -> str | None:
    for a in sys.argv[1:]:
        if a.startswith(f"--{name}="):
            return a.split("=", 1)[1]
    return default


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--run":
        print(json.dumps(run_engine(sys.argv[2], sys.argv[3], int(sys.argv[4]))))
    else:
        sizes_arg = _arg("sessions", None)
        pandas_arg = _arg("pandas", None)
        main(
            tuple(int(x) for x in sizes_arg.split(",")) if sizes_arg else SIZES,
            int(_arg("flows", str(FLOWS_PER_SESSION)) or FLOWS_PER_SESSION),
            _arg("keep", None),
            tuple(int(x) for x in pandas_arg.split(",")) if pandas_arg else None,
        )
