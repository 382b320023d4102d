"""The layout's promises (issue 12): no import cycle, and a library that never imports a step.

Imports are counted as Python sees them *and* as strings: ``importlib.import_module(...)`` /
``__import__(...)`` with a constant name (an f-string counts for every module under its
constant prefix) and any string constant that is exactly a precipgen module name (a registry of
module names) are edges too, so a cycle cannot hide behind importlib."""

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


def _dynamic_targets(node: ast.AST, modules: dict[str, Path]) -> list[str] | None:
    """Modules named by an ``import_module``/``__import__`` call or a module-name string."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value] if node.value in modules else None
    if not isinstance(node, ast.Call) or not node.args:
        return None
    func = node.func
    called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    if called not in ("import_module", "__import__"):
        return None
    arg = node.args[0]
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return [arg.value]
    if isinstance(arg, ast.JoinedStr):  # f"precipgen.steps.{name}": every module under the prefix
        head = arg.values[0] if arg.values else None
        prefix = head.value if isinstance(head, ast.Constant) else ""
        return [m for m in modules if prefix and m.startswith(prefix)]
    return None


def import_graph(sources: dict[str, str] | None = None) -> dict[str, set[str]]:
    """Module -> the precipgen modules it imports (static imports, relative ones resolved, and
    importlib / module-name strings). ``sources`` (module -> code) replaces the package tree."""
    if sources is None:
        modules = {_module_name(p): p for p in SRC.rglob("*.py")}
        code = {name: path.read_text() for name, path in modules.items()}
    else:
        modules = {name: Path(name.replace(".", "/") + ".py") for name in sources}
        code = dict(sources)
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(code[name])):
            dynamic = _dynamic_targets(node, modules)
            if dynamic is not None:
                targets = dynamic
            elif isinstance(node, ast.Import):
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
    """`precipgen <step>` and `mlflow run . -e <step>` name one module each: steps/<step>.py,
    with its flags (``add_arguments``) and ``run(args)``."""
    import importlib

    from precipgen.cli import STEPS

    steps = {p.stem for p in (SRC / "steps").glob("*.py")} - {"__init__", "flags"}
    assert set(STEPS) == steps
    mlproject = (SRC.parents[1] / "MLproject").read_text()
    for step in STEPS:
        assert f"\n  {step}:" in mlproject, step
        module = importlib.import_module(f"precipgen.steps.{step}")
        assert callable(module.add_arguments) and callable(module.run), step


def test_the_cli_reaches_every_step_only_through_importlib():
    """The dispatcher's f-string import is an edge to each step (what a cycle check must see)."""
    from precipgen.cli import STEPS

    assert {f"precipgen.steps.{s}" for s in STEPS} <= import_graph()["precipgen.cli"]


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]


def test_a_cycle_behind_importlib_or_a_name_registry_is_found():
    sources = {
        "pkg.a": "import pkg.b\n",
        "pkg.b": "import importlib\nimportlib.import_module('pkg.a')\n",
        "pkg.c": "import pkg.d\n",
        "pkg.d": "LOADERS = {'c': 'pkg.c'}\n",
        "pkg.e": "def f(n):\n    return __import__(f'pkg.{n}')\n",
    }
    graph = import_graph(sources)
    assert _cycles(graph) == [["pkg.a", "pkg.b"], ["pkg.c", "pkg.d"]]
    assert graph["pkg.e"] == {"pkg.a", "pkg.b", "pkg.c", "pkg.d"}


def test_every_mlproject_command_parses_with_its_defaults():
    """`mlflow run . -e <step>` with no -P: the command MLflow builds from the declared
    defaults is accepted by the step's own parser (a renamed or removed flag fails here, not
    in a user's run)."""
    import shlex

    import yaml

    from precipgen.cli import build_parser

    project = yaml.safe_load((SRC.parents[1] / "MLproject").read_text())
    for name, ep in project["entry_points"].items():
        defaults = {k: v.get("default", "") for k, v in (ep.get("parameters") or {}).items()}
        argv = shlex.split(ep["command"].format(**defaults))
        assert argv[:2] == ["python", f"entrypoints/{name}.py"], name
        build_parser(name).parse_args([name, *argv[2:]])  # SystemExit on an unknown flag
