"""The package's shape: no import cycles (function-level imports included), and notebooks hold
calls, not copied code."""
import ast
from collections import Counter
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "cxr_workbench"


def internal_imports(path: Path) -> set[str]:
    """Modules of the package that ``path`` imports anywhere in its body."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                out.add(node.module.split(".")[0])
            else:
                out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("cxr_workbench."):
            out.add(node.module.split(".")[1])
    return out & {p.stem for p in PKG.glob("*.py")}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(n):
        state[n] = "open"
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == "open":
                return stack[stack.index(m):] + [m]
            if m not in state and (cycle := visit(m)):
                return cycle
        state[n] = "done"
        stack.pop()
        return None

    for n in sorted(graph):
        if n not in state and (cycle := visit(n)):
            return cycle
    return None


def test_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_import_cycle_in_the_package():
    graph = {p.stem: internal_imports(p) - {p.stem} for p in PKG.glob("*.py")}
    assert find_cycle(graph) is None, find_cycle(graph)


def test_no_code_cell_of_five_lines_is_repeated_across_notebooks():
    cells = Counter()
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            lines = [line for line in cell.source.splitlines() if line.strip()]
            if cell.cell_type == "code" and len(lines) >= 5 and "parameters" not in cell.metadata.get("tags", []):
                cells["\n".join(lines)] += 1
    repeated = [src.splitlines()[0] for src, n in cells.items() if n > 1]
    assert not repeated, repeated
