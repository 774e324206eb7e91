"""The layers and the import graph: assistant -> tools -> runtime, never upward, and no module cycle (imports
inside functions count too: a lazy import is still a dependency)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("assistant", "tools", "runtime")
LAYER = {"runtime": 0, "tools": 1, "assistant": 2}


def modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for p in (ROOT / pkg).rglob("*.py"):
            if "migrations" in p.parts:
                continue
            parts = list(p.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = p
    return out


def imports(path: Path, name: str, known: dict[str, Path]) -> set[str]:
    found = set()
    is_pkg = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_pkg else name.split(".")[:-1]
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(path, name, known) for name, path in known.items()}


def test_no_layer_imports_upward():
    upward = [(a, b) for a, deps in graph().items() for b in deps
              if LAYER[b.split(".")[0]] > LAYER[a.split(".")[0]]]
    assert upward == []


def test_no_import_cycle_between_modules():
    g = graph()
    # a package importing its own submodules (registry-style __init__) is not a cycle of the code's design
    edges = {a: {b for b in deps if not b.startswith(a + ".")} for a, deps in g.items()}
    seen, stack, cycles = set(), [], []

    def visit(node: str, on_path: set[str]) -> None:
        if node in on_path:
            cycles.append(stack[stack.index(node):] + [node])
            return
        if node in seen:
            return
        seen.add(node)
        on_path.add(node)
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            visit(nxt, on_path)
        stack.pop()
        on_path.discard(node)

    for n in sorted(edges):
        visit(n, set())
    assert cycles == []
