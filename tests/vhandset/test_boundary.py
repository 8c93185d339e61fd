"""The line between auditor and its test double, held by a test.

auditor imports vhandset only inside the ``simulate`` command and ``demo.run_demo`` (lazily,
so the product never loads the double otherwise); vhandset imports from auditor only the
public API its package docstring names, never the parsers it exists to test."""

from __future__ import annotations

import ast
from pathlib import Path

import vhandset

REPO = Path(__file__).resolve().parents[2]
# where auditor may import vhandset: (file, enclosing function)
LAZY_ENTRIES = {("auditor/cli/device_cmds.py", "simulate"), ("auditor/demo.py", "run_demo")}
# what vhandset may import from auditor: module -> names
PUBLIC_API = {
    "auditor.packets.pcapwrite": {
        "DEFAULT_SNAPLEN",
        "LINKTYPES",
        "LINKTYPE_ETHERNET",
        "LINKTYPE_LINUX_SLL2",
        "LINKTYPE_RAW",
        "PcapWriter",
        "global_header",
        "record",
    }
}


def imports(path: Path) -> list[tuple[str, set[str], str | None]]:
    """(module, names, enclosing top-level function or None) of every import in ``path``."""
    found: list[tuple[str, set[str], str | None]] = []

    def walk(node: ast.AST, func: str | None) -> None:
        for child in ast.iter_child_nodes(node):
            inner = func
            if func is None and isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                inner = child.name
            if isinstance(child, ast.ImportFrom) and child.module:
                found.append((child.module, {a.name for a in child.names}, func))
            elif isinstance(child, ast.Import):
                found.extend((a.name, set(), func) for a in child.names)
            walk(child, inner)

    walk(ast.parse(path.read_text()), None)
    return found


def test_auditor_imports_vhandset_only_lazily_in_demo_and_simulate() -> None:
    crossings = set()
    for path in [*(REPO / "auditor").rglob("*.py"), *(REPO / "addons").rglob("*.py")]:
        rel = str(path.relative_to(REPO))
        for module, _, func in imports(path):
            if module == "vhandset" or module.startswith("vhandset."):
                crossings.add((rel, func))
    assert crossings, "the two entry points import vhandset"
    assert crossings <= LAZY_ENTRIES


def test_vhandset_imports_only_the_named_public_api_of_auditor() -> None:
    for path in Path(vhandset.__file__).parent.rglob("*.py"):
        for module, names, _ in imports(path):
            if module == "auditor" or module.startswith("auditor."):
                assert module in PUBLIC_API, (path.name, module)
                assert names <= PUBLIC_API[module], (path.name, names - PUBLIC_API[module])
                for name in names:  # and the package docstring names each of them
                    assert name in vhandset.__doc__ or name.startswith("LINKTYPE"), name
