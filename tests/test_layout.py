"""The layout's promises (issue 12): no import cycle, and a library that never imports a step."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import precipgen

SRC = Path(precipgen.__file__).parent
ENTRY_MODULES = {"precipgen.cli", "precipgen.demo", "precipgen.__main__"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the precipgen modules it imports (static imports, relative ones resolved)."""
    modules = {_module_name(p): p for p in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                targets = [f"{base}.{a.name}" for a in node.names] + [base]
            else:
                continue
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
        graph.setdefault(name, set())
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in list(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles():
    assert _cycles(import_graph()) == []


def test_library_never_imports_a_step():
    offenders = sorted(f"{m} -> {t}" for m, targets in import_graph().items() for t in targets
                       if t.startswith("precipgen.steps") and not m.startswith("precipgen.steps")
                       and m not in ENTRY_MODULES)
    assert offenders == []


def test_every_entry_point_is_a_step_module():
    """`precipgen <step>` and `mlflow run . -e <step>` name one module each: steps/<step>.py."""
    from precipgen.cli import STEPS

    steps = {p.stem for p in (SRC / "steps").glob("*.py")} - {"__init__", "flags"}
    assert set(STEPS) == steps
    mlproject = (SRC.parents[1] / "MLproject").read_text()
    for step in STEPS:
        assert f"\n  {step}:" in mlproject, step


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
