"""Count the pairs of places in a tree that share six or more identical lines.

Each ``.py`` file's lines are folded (surrounding white space stripped, inner runs of white
space made one space); blank lines, comment-only lines and import statements are dropped.
Every window of N consecutive kept lines (N = 6 by default) is hashed; two places in which
the same window stands form a pair, and overlapping windows of the same two places are one
pair (a run).
Prints the number of pairs, then the longest ones.

    python scripts/dupes.py [ROOT ...] [--min-lines N] [--top K]

The default root is ``auditor``. Run it before and after a change to see what the change
removed or wrote again (issue 16 gives the before and after of this number).
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import re
from collections import defaultdict
from pathlib import Path

_SPACE = re.compile(r"\s+")


def folded_lines(path: Path) -> list[tuple[int, str]]:
    """The kept lines of ``path`` as ``(line number, folded text)``."""
    source = path.read_text(encoding="utf-8", errors="replace")
    imports: set[int] = set()
    try:
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import | ast.ImportFrom):
                imports.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
    except SyntaxError:
        pass
    out = []
    for n, raw in enumerate(source.splitlines(), 1):
        text = _SPACE.sub(" ", raw.strip())
        if text and not text.startswith("#") and n not in imports:
            out.append((n, text))
    return out


def pairs(roots: list[Path], min_lines: int) -> list[tuple[str, int, str, int, int]]:
    """The runs shared by two places: ``(file a, first line a, file b, first line b,
    length in kept lines)``, longest first."""
    where: dict[bytes, list[tuple[str, int]]] = defaultdict(list)
    for root in roots:
        files = [root] if root.is_file() else sorted(root.rglob("*.py"))
        for path in files:
            lines = folded_lines(path)
            for i in range(len(lines) - min_lines + 1):
                key = hashlib.blake2b(
                    "\n".join(t for _, t in lines[i : i + min_lines]).encode(), digest_size=12
                ).digest()
                where[key].append((str(path), i))
    # a run is a chain of windows whose two places move on together, one kept line a step
    starts: dict[tuple[str, str, int], set[int]] = defaultdict(set)
    for places in where.values():
        if len(places) < 2:
            continue
        for x in range(len(places)):
            for y in range(x + 1, len(places)):
                (fa, ia), (fb, ib) = sorted((places[x], places[y]))
                if fa == fb and ia == ib:
                    continue
                starts[(fa, fb, ib - ia)].add(ia)
    runs = []
    for (fa, fb, shift), idx in starts.items():
        ordered = sorted(idx)
        first = prev = ordered[0]
        for i in [*ordered[1:], None]:
            if i is not None and i == prev + 1:
                prev = i
                continue
            runs.append((fa, first, fb, first + shift, prev - first + min_lines))
            if i is not None:
                first = prev = i
    numbers = {
        f: [n for n, _ in folded_lines(Path(f))]
        for f in {r[0] for r in runs} | {r[2] for r in runs}
    }
    out = [(fa, numbers[fa][ia], fb, numbers[fb][ib], k) for fa, ia, fb, ib, k in runs]
    return sorted(out, key=lambda r: (-r[4], r[0], r[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("roots", nargs="*", type=Path, default=[Path("auditor")])
    ap.add_argument("--min-lines", type=int, default=6)
    ap.add_argument("--top", type=int, default=15)
    args = ap.parse_args()
    found = pairs(args.roots, args.min_lines)
    places = {(r[0], r[2]) for r in found}
    print(
        f"{len(found)} pairs of places sharing {args.min_lines}+ identical lines "
        f"({len(places)} pairs of files)"
    )
    for fa, la, fb, lb, k in found[: args.top]:
        print(f"{k:4d} lines  {fa}:{la} ~ {fb}:{lb}")


if __name__ == "__main__":
    main()
