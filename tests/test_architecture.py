"""Structural rules of the code base (issue 12's acceptance list), checked on the source tree itself.

- no module imports an underscore name from another module;
- no function or method is longer than 80 lines;
- module-level imports between rsmoe modules form no cycle;
- the engine knows no model by name (it depends on the SegModel protocol only);
- ``rsmoe --help`` imports neither torch nor a model.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "rsmoe"
MAX_FUNCTION_LINES = 80


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def absolute(module: str, path: Path, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    base = package[: len(package) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def module_level_imports(tree: ast.Module):
    """Import statements executed at import time (not inside functions or ``if TYPE_CHECKING:``)."""
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If) and "TYPE_CHECKING" not in ast.unparse(node.test):
            yield from module_level_imports(ast.Module(body=node.body + node.orelse, type_ignores=[]))
        elif isinstance(node, ast.Try):
            yield from module_level_imports(ast.Module(body=node.body, type_ignores=[]))


def test_no_underscore_names_imported_across_modules():
    offenders = []
    for module, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                offenders += [f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {a.name}" for a in node.names
                              if a.name.startswith("_") and not a.name.startswith("__")]
    assert not offenders, offenders


def test_no_function_longer_than_80_lines():
    long = []
    for path in modules().values():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name} ({n} lines)")
    assert not long, long


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for module, path in mods.items():
        for node in module_level_imports(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = absolute(module, path, node)
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            graph[module] |= {t for t in targets if t in mods and t != module}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycles():
    assert find_cycle(import_graph()) is None, " -> ".join(find_cycle(import_graph()))


def test_cycle_finder_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_engine_knows_no_model_by_name():
    for path in (PACKAGE / "engine").glob("*.py"):
        text = path.read_text()
        assert "MPerS" not in text and "Segmentor" not in text and "FROZEN_PREFIXES" not in text, path


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["prepare", "--help"]])
def test_help_does_not_import_torch(argv):
    code = ("import sys\nfrom rsmoe.cli import main\ntry:\n    main(%r)\nexcept SystemExit:\n    pass\n"
            "bad = [m for m in ('torch', 'transformers', 'lightning') if m in sys.modules]\n"
            "sys.stderr.write(','.join(bad))" % (argv,))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stderr == "", f"rsmoe {' '.join(argv)} imported {res.stderr}"
