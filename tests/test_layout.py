"""The repository's shape, read from the source with ``ast`` (nothing is imported): no import
circles, no import across a forbidden line, no long module without a written reason.

The rules (README, "Layout"):

- An import at module level (a class body counts; ``if TYPE_CHECKING:`` blocks do not) is an
  edge of the import graph; an import inside a function is lazy and is no edge. No module may
  be part of a circle of edges (a strongly connected component of more than one module).
- ``auditor`` imports ``vhandset`` only lazily, inside the functions and modules of
  :data:`VHANDSET_LAZY_IN`; ``vhandset`` imports only the ``auditor`` names of
  :data:`VHANDSET_MAY_IMPORT`; nothing in ``auditor``, ``vhandset`` or ``addons`` imports
  ``tests``.
- A module of ``auditor`` or ``vhandset`` longer than :data:`LONG_LINES` lines has a line in its
  docstring that starts with :data:`LONG_MARKER`, saying why it is one module.

Today's offenders are listed in :data:`KNOWN_CIRCLES` and :data:`LONG_ALLOWED`. A new one fails,
and so does an entry that is no longer true, so the lists only shrink.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("auditor", "vhandset", "addons")
LONG_LINES = 800
LONG_MARKER = "Long because:"

# auditor may import vhandset only lazily, in a function of these names or in these modules
VHANDSET_LAZY_IN = {
    "functions": {"demo", "simulate", "run_demo"},
    "modules": {"auditor.demo"},
}

# the auditor modules or names (``module.name``) vhandset may import: its named public API
VHANDSET_MAY_IMPORT: set[str] = {"auditor.packets.pcapwrite"}  # pcap framing (vhandset/__init__.py)

# circles among module-level imports that are allowed for now, each with the reason it is
# being taken apart; remove an entry when its circle is gone (the test fails until it is). None
# as of issue 16: the circles it names (session.py and evidence/custody.py, engine.py and
# redact.py, the virtual handset's device, network and pcapdroid) go through imports inside
# functions or under ``if TYPE_CHECKING:``, which this rule does not count.
KNOWN_CIRCLES: list[frozenset[str]] = []

# modules over LONG_LINES lines without a reason yet, as of issue 16 (each being split, or
# given its reason, there); remove an entry when its module is short or says why it is long
LONG_ALLOWED: set[str] = set()


@dataclass(frozen=True, slots=True)
class Import:
    source: str  # the importing module
    target: str  # the imported module (the longest name that is a module of the repository)
    names: tuple[str, ...]  # for ``from X import a, b``: a, b
    lazy: bool  # inside a function
    function: str | None  # the outermost function it is in
    line: int


def module_files() -> dict[str, Path]:
    """Every module of the packages that exist: dotted name -> file."""
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(
    node: ast.AST, function: str | None
) -> Iterator[tuple[ast.Import | ast.ImportFrom, str | None]]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for other in child.orelse:
                yield from _walk(other, function)
            continue
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child, function
        elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            yield from _walk(child, function or getattr(child, "name", "<lambda>"))
        else:
            yield from _walk(child, function)


def imports_of(name: str, path: Path, modules: set[str]) -> Iterator[Import]:
    """The imports of module ``name`` that name a module of the repository (or ``tests``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]

    def known(dotted: str) -> str | None:
        while dotted:
            if dotted in modules or dotted.split(".")[0] == "tests":
                return dotted
            dotted = dotted.rpartition(".")[0]
        return None

    for node, function in _walk(tree, None):
        lazy = function is not None
        if isinstance(node, ast.Import):
            for alias in node.names:
                if target := known(alias.name):
                    yield Import(name, target, (), lazy, function, node.lineno)
            continue
        base = node.module or ""
        if node.level:
            up = package.split(".")[: len(package.split(".")) - node.level + 1]
            base = ".".join([*up, *([base] if base else [])])
        names = tuple(a.name for a in node.names)
        # ``from pkg import module`` imports the module; ``from module import name`` the module
        submodules = [f"{base}.{n}" for n in names if f"{base}.{n}" in modules]
        for sub in submodules:
            yield Import(name, sub, (), lazy, function, node.lineno)
        rest = tuple(n for n in names if f"{base}.{n}" not in modules)
        if (rest or not submodules) and (target := known(base)):
            yield Import(name, target, rest, lazy, function, node.lineno)


@functools.cache
def all_imports() -> tuple[Import, ...]:
    files = module_files()
    mods = set(files)
    return tuple(i for name, path in files.items() for i in imports_of(name, path, mods))


def circles(imports: Sequence[Import]) -> list[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    graph: dict[str, set[str]] = {}
    for i in imports:
        if not i.lazy and i.target != i.source and not i.target.startswith("tests"):
            graph.setdefault(i.source, set()).add(i.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(frozenset(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _top(module: str) -> str:
    return module.split(".")[0]


def test_the_graph_is_read() -> None:
    imports = all_imports()
    sources = {i.source for i in imports}
    assert "auditor.cli" in sources
    assert any(i.source == "addons.recorder" and _top(i.target) == "auditor" for i in imports)


def test_no_new_import_circle() -> None:
    found = circles(all_imports())
    new = [sorted(c) for c in found if c not in KNOWN_CIRCLES]
    gone = [sorted(c) for c in KNOWN_CIRCLES if c not in found]
    assert not new, f"import circles among module-level imports: {new}"
    assert not gone, f"KNOWN_CIRCLES lists circles that no longer exist as such: {gone}"


def test_auditor_imports_vhandset_only_lazily_in_demo_and_simulate() -> None:
    bad = [
        f"{i.source}:{i.line} imports {i.target}"
        for i in all_imports()
        if _top(i.source) == "auditor"
        and _top(i.target) == "vhandset"
        and not (
            i.lazy
            and (
                i.function in VHANDSET_LAZY_IN["functions"]
                or i.source in VHANDSET_LAZY_IN["modules"]
            )
        )
    ]
    assert not bad


def test_vhandset_imports_only_the_allowed_auditor_names() -> None:
    bad = [
        f"{i.source}:{i.line} imports {i.target} {list(i.names)}"
        for i in all_imports()
        if _top(i.source) == "vhandset"
        and _top(i.target) == "auditor"
        and i.target not in VHANDSET_MAY_IMPORT
        and not (i.names and all(f"{i.target}.{n}" in VHANDSET_MAY_IMPORT for n in i.names))
    ]
    assert not bad


def test_the_product_never_imports_tests() -> None:
    bad = [
        f"{i.source}:{i.line} imports {i.target}"
        for i in all_imports()
        if i.target == "tests" or i.target.startswith("tests.")
    ]
    assert not bad


def long_modules() -> dict[str, bool]:
    """Modules of auditor and vhandset over LONG_LINES lines: path -> whether they say why."""
    out = {}
    for pkg in ("auditor", "vhandset"):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            text = path.read_text(encoding="utf-8")
            if len(text.splitlines()) <= LONG_LINES:
                continue
            doc = ast.get_docstring(ast.parse(text)) or ""
            reason = any(line.strip().startswith(LONG_MARKER) for line in doc.splitlines())
            out[path.relative_to(ROOT).as_posix()] = reason
    return out


def test_a_long_module_says_why() -> None:
    long = long_modules()
    unexplained = sorted(p for p, reason in long.items() if not reason and p not in LONG_ALLOWED)
    stale = sorted(p for p in LONG_ALLOWED if long.get(p, True))
    assert not unexplained, (
        f"over {LONG_LINES} lines without a '{LONG_MARKER}' line in the docstring: {unexplained}"
    )
    assert not stale, f"LONG_ALLOWED entries now short, gone or explained: {stale}"


def test_a_circle_is_found_and_a_lazy_import_breaks_it() -> None:
    edges = [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d"), ("d", "e")]
    imports = [Import(s, t, (), False, None, 1) for s, t in edges]
    assert circles(imports) == [frozenset({"a", "b", "c"})]
    imports[2] = Import("c", "a", (), True, "f", 1)
    assert circles(imports) == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            "import auditor.cli\nfrom auditor import columns\nfrom . import x\n",
            {("auditor.cli", False), ("auditor.columns", False), ("auditor.pkg.x", False)},
        ),
        (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import auditor.cli\n"
            "def f():\n    from auditor.columns import FLOW_ID\n",
            {("auditor.columns", True)},
        ),
    ],
)
def test_imports_are_read_as_python_reads_them(
    tmp_path: Path, source: str, expected: set[tuple[str, bool]]
) -> None:
    path = tmp_path / "mod.py"
    path.write_text(source)
    mods = {"auditor.cli", "auditor.columns", "auditor.pkg.x", "auditor.pkg.mod"}
    got = {(i.target, i.lazy) for i in imports_of("auditor.pkg.mod", path, mods)}
    assert got == expected
