"""How right attribution is, and how much of real traffic it names.

1. The evaluation set (``tests/intel/eval``): hosts whose operator a primary source names.
   Owner recall (right family / rows with a known owner) and the wrong-owner rate (named
   wrongly / named), overall and per family, with the knowledge base alone and with the data
   sets: what the data sets add.
2. Real captures nobody here made (``../shared/captures``, and the real HAR exports under
   ``tests/imports/samples``): each imported and analysed as a user would; the share of
   their host names that get a recipient, by basis.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from auditor.intel.kb import KnowledgeBase
from tests.intel.eval.evalset import load_rows, score

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "captures"
HARS = ROOT / "tests" / "imports" / "samples"


def _evaluate(kb: KnowledgeBase) -> dict[str, Any]:
    def predict(host: str) -> str | None:
        family = kb.family(kb.lookup_host(host))
        return family.rsplit(":", 1)[-1] if family else None

    s = score(load_rows(), predict)
    return {
        "rows": s.n,
        "named": s.named,
        "correct": s.correct,
        "wrong": s.wrong,
        "owner_recall": round(s.recall, 3),
        "wrong_owner_rate": round(s.wrong_rate, 3),
        "wrong_rows": [(m.row.host, m.row.family, m.predicted) for m in s.wrong_rows],
        "per_family": {f: [v.n, v.correct, v.wrong] for f, v in s.per_family.items()},
    }


def _captures() -> dict[str, Any]:
    from auditor.analysis.engine import analyze
    from auditor.imports.session import import_files

    files = sorted(SHARED.glob("*.pcap*")) if SHARED.is_dir() else []
    files += [HARS / n for n in ("chrome.har", "firefox.har", "charles.har", "httptoolkit.har")]
    per_file: dict[str, Any] = {}
    hosts_total = named_total = 0
    bases: Counter[str] = Counter()
    with tempfile.TemporaryDirectory(prefix="auditor-bench-") as tmp:
        for path in files:
            res = import_files([path], Path(tmp) / path.stem)
            eps = analyze([res.session]).doc["endpoints"]
            names = {e["host"]: e for e in eps if e["host"] and not _is_address(e["host"])}
            named = {h for h, e in names.items() if e["organisation"]}
            bases.update(names[h]["basis"] for h in named)
            hosts_total += len(names)
            named_total += len(named)
            per_file[path.name] = {"hosts": len(names), "named": len(named),
                                   "unnamed": sorted(set(names) - named)}  # fmt: skip
    return {
        "files": len(files),
        "hosts": hosts_total,
        "named": named_total,
        "share_named": round(named_total / hosts_total, 3) if hosts_total else None,
        "by_basis": dict(sorted(bases.items())),
        "per_file": per_file,
    }


def _is_address(host: str) -> bool:
    return host == "None" or ":" in host or host.replace(".", "").isdigit()


def main() -> dict[str, Any]:
    out = {
        "bench": "attribution",
        "evaluation_kb_only": _evaluate(KnowledgeBase.load(datasets=False)),
        "evaluation": _evaluate(KnowledgeBase.load()),
        "real_captures": _captures(),
    }
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
