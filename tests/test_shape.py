"""The package's shape: no import cycle among its own modules (outside TYPE_CHECKING blocks,
function-level imports included: a deferred import that dodges a cycle is still one);
modules of at most 300 lines and functions of at most 60, or a stated reason."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "unlearn_cli"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The package's modules `path` imports, wherever in the file, but under TYPE_CHECKING."""
    tree = ast.parse(path.read_text())
    skipped = {
        id(sub)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING"
        for sub in ast.walk(node)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("unlearn_cli"):
            for alias in node.names:  # `from pkg import module` imports the module
                full = f"{node.module}.{alias.name}"
                found.add(full if full in modules else node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("unlearn_cli")}
    return found


def import_graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(paths)
    graph = {}
    for name, path in paths.items():
        deps = {d for d in imports_of(path, modules) if d in modules and d != name}
        for dep in list(deps):  # importing a.b.c runs the packages above it first
            parts = dep.split(".")
            for i in range(1, len(parts)):
                parent = ".".join(parts[:i])
                if parent in modules and not name.startswith(parent + "."):
                    deps.add(parent)
        graph[name] = deps - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

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
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle_among_the_packages_modules():
    assert cycles(import_graph()) == []


def test_the_check_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


MAX_MODULE_LINES = 300
MAX_FUNCTION_LINES = 60  # of the body: a signature (Typer declares options there) and a
# docstring do not count
SIZE_NOTE = "Size:"  # a module docstring's line, or a comment on a def's line, saying why


def oversized(path: Path) -> list[str]:
    """What in `path` is over the limits without a note saying why."""
    source = path.read_text()
    lines = source.splitlines()
    tree = ast.parse(source)
    found = []
    if len(lines) > MAX_MODULE_LINES and SIZE_NOTE not in (ast.get_docstring(tree) or ""):
        found.append(f"{path.name}: {len(lines)} lines")
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        body = node.body
        if len(body) > 1 and ast.get_docstring(node) is not None:
            body = body[1:]
        length = (node.end_lineno or node.lineno) - body[0].lineno + 1
        noted = any(SIZE_NOTE in line for line in lines[node.lineno - 1 : body[0].lineno])
        if length > MAX_FUNCTION_LINES and not noted:
            found.append(f"{path.name}:{node.lineno} {node.name}: {length} lines")
    return found


def test_modules_and_functions_stay_small_or_say_why():
    assert [f for p in sorted(PACKAGE.rglob("*.py")) for f in oversized(p)] == []


def test_the_size_check_finds_a_long_function(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(61))
    (tmp_path / "m.py").write_text(f'def f():\n    """Doc."""\n{body}\n')
    assert oversized(tmp_path / "m.py") == ["m.py:1 f: 61 lines"]
    (tmp_path / "m.py").write_text(f"def f():  # Size: a table\n{body}\n")
    assert oversized(tmp_path / "m.py") == []
