"""The package's import graph has no cycles: every `import repro...` / `from repro... import` in repro/, at module
level or inside a function (a function-level import only hides a cycle), is an edge; a strongly connected
component with more than one module is a cycle. (A package's `__init__` implied by importing one of its
submodules is not counted: Python runs it first, before either module's body.)"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path, package: str = "repro") -> dict[str, set[str]]:
    """module -> the package's modules it imports."""
    files = {module_name(p, root): p for p in (root / package).rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in files}
    for module, path in files.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative import
                    anchor = module.split(".")[:len(module.split(".")) - node.level + is_package]
                    base = ".".join(anchor + ([base] if base else []))
                # `from pkg import submodule` imports the submodule; `from module import name` the module
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            graph[module].update(t for t in targets if t in files and t != module)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_sees_a_cycle_hidden_in_a_function(tmp_path):
    pkg = tmp_path / "repro"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from repro.sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..a import x\n")
    (pkg / "c.py").write_text("import repro.a\n")
    graph = import_graph(tmp_path)
    assert graph["repro.a"] == {"repro.sub.b"} and graph["repro.sub.b"] == {"repro.a"}
    assert cycles(graph) == [["repro.a", "repro.sub.b"]]


def test_repro_has_no_import_cycles():
    found = cycles(import_graph(REPO))
    assert not found, "import cycles in repro/: " + "; ".join(" <-> ".join(c) for c in found)


# the command-line modules: they import the library; among them only these three are entry points alone
COMMAND_MODULES = {"repro.train", "repro.evaluate", "repro.report", "repro.decide", "repro.score", "repro.export",
                   "repro.tables", "repro.records"}
ENTRY_POINTS = {"repro.train", "repro.evaluate", "repro.report"}


def test_library_code_never_imports_a_command_module():
    """analysis/, bench/ and the rest of the library share the runner's helpers (repro.runner), never the command
    line's modules."""
    graph = import_graph(REPO)
    upward = sorted(f"{m} -> {t}" for m, targets in graph.items() if m not in COMMAND_MODULES
                    for t in targets & ENTRY_POINTS)
    assert not upward, "imports of command modules: " + "; ".join(upward)


def kind_comparisons(root: Path) -> list[str]:
    """`x == "generation"`, `kind in ("classification", ...)` and the like: a comparison with a task kind's name."""
    from repro.kinds import KINDS

    found = []
    for path in sorted((root / "repro").rglob("*.py")):
        if path.parent.name == "kinds":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Compare):
                continue
            operands = [node.left, *node.comparators]
            operands += [e for o in operands if isinstance(o, (ast.Tuple, ast.List, ast.Set)) for e in o.elts]
            constants = [o for o in operands if isinstance(o, ast.Constant) and o.value in KINDS]
            if constants:
                found.append(f"{path.relative_to(root)}:{node.lineno}")
    return found


def test_task_kinds_own_their_differences():
    """What differs between task kinds lives in repro/kinds/ (the kind classes, and `Traits` for light modules):
    no module elsewhere branches on a kind's name."""
    assert not kind_comparisons(REPO), "task.kind comparisons outside repro/kinds/: " + ", ".join(kind_comparisons(REPO))
