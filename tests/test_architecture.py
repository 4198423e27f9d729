"""The layers hold: import-linter's contracts (pyproject.toml), no import cycles
(including imports made inside functions), and no function longer than a screen."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _graph():
    grimp = pytest.importorskip("grimp")
    sys.path.insert(0, str(ROOT))  # the linter reads cli/ as the package `cli`
    try:
        return grimp.build_graph("pyrovae", "cli", include_external_packages=False)
    finally:
        sys.path.remove(str(ROOT))


def test_layer_contracts_are_kept():
    lint = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    if not Path(lint).exists():
        pytest.skip("import-linter is not installed (pip install -e '.[test]')")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([lint], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]


def test_no_module_imports_itself_through_others():
    graph = _graph()
    edges = {m: set(graph.find_modules_directly_imported_by(m)) for m in graph.modules}
    cycles = _strongly_connected(edges)
    assert not cycles, f"import cycles: {cycles}"


def _strongly_connected(edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iteratively: the groups of modules that import each other."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    found.append(sorted(group))
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert _strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [
        ["a", "b", "c"]
    ]


#: The longest body a function may have (issue 10: "no function over ~60 lines"),
#: counted from its first statement after the docstring to its end.
MAX_FUNCTION_LINES = 60


def body_lengths(path: Path, root: Path = ROOT) -> list[tuple[int, str]]:
    """(lines, "file:line name") of every function and method in ``path``."""
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if len(body) > 1 and isinstance(body[0], ast.Expr):
                if isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
                    body = body[1:]
            lines = (node.end_lineno or node.lineno) - body[0].lineno + 1
            found.append((lines, f"{path.relative_to(root)}:{node.lineno} {node.name}"))
    return found


def test_no_function_is_longer_than_a_screen():
    files = [*(ROOT / "pyrovae").rglob("*.py"), *(ROOT / "cli").rglob("*.py")]
    too_long = sorted(
        (item for path in files for item in body_lengths(path) if item[0] > MAX_FUNCTION_LINES),
        reverse=True,
    )
    assert not too_long, f"functions over {MAX_FUNCTION_LINES} lines: {too_long}"


def test_body_lengths_skip_the_docstring(tmp_path):
    source = tmp_path / "f.py"
    source.write_text('def f():\n    """Doc\n    string."""\n    a = 1\n    return a\n')
    assert [n for n, _ in body_lengths(source, tmp_path)] == [2]
