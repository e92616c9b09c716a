"""The package's shape: subpackages in layers that import only downwards, no import cycles
(function-level imports included), and notebooks that hold calls, not copied code."""
import ast
from collections import Counter
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "cxr_workbench"

# Lowest first: a module may import its own layer and the layers below it, never one above.
LAYERS = (
    {"io", "devices", "distributed", "settings"},
    {"imaging"},
    {"model"},
    {"method"},
    {"assets"},
    {"studies"},
    {"ui"},
)


def module_name(path: Path) -> str:
    """``cxr_workbench/method/optimize.py`` -> ``method.optimize``; ``cxr_workbench/io.py`` -> ``io``."""
    rel = path.relative_to(PKG).with_suffix("")
    return ".".join(p for p in rel.parts if p != "__init__") or "__init__"


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def internal_imports(path: Path) -> set[str]:
    """Modules of the package that ``path`` imports anywhere in its body (absolute imports only)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import; the package imports by full name"
            parts = (node.module or "").split(".")
            if parts[0] != "cxr_workbench":
                continue
            base = ".".join(parts[1:])
            for a in node.names:  # `from cxr_workbench.imaging import phantom` names a module
                name = f"{base}.{a.name}" if base else a.name
                out.add(name if name in modules() else base)
        elif isinstance(node, ast.Import):
            out.update(a.name.removeprefix("cxr_workbench.") for a in node.names if a.name.startswith("cxr_workbench."))
    return out - {""}


def layer_of(module: str) -> int:
    top = module.split(".")[0]
    for i, layer in enumerate(LAYERS):
        if top in layer:
            return i
    raise AssertionError(f"module {module} is in no layer; add its folder to LAYERS")


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
    graph = {name: internal_imports(p) - {name} for name, p in modules().items()}
    assert find_cycle(graph) is None, find_cycle(graph)


def test_imports_point_down_the_layers():
    upward = [f"{name} ({layer_of(name)}) imports {dep} ({layer_of(dep)})"
              for name, p in modules().items() if not name.endswith("__init__") and name != "__init__"
              for dep in internal_imports(p) if layer_of(dep) > layer_of(name)]
    assert not upward, upward


def test_the_layer_check_sees_an_upward_import(tmp_path):
    """The checker itself: method importing studies is caught."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from cxr_workbench.studies.augment import make_augmentation\n")
    assert internal_imports(bad) == {"studies.augment"}
    assert layer_of("studies.augment") > layer_of("method.optimize")


def test_every_folder_is_a_layer_and_the_subpackage_inits_are_empty():
    for folder in (p for p in PKG.iterdir() if p.is_dir() and p.name != "__pycache__"):
        assert (folder / "__init__.py").read_text().strip().startswith('"""') or not \
            (folder / "__init__.py").read_text().strip(), folder
        layer_of(folder.name)


def test_no_code_cell_of_five_lines_is_repeated_across_notebooks():
    cells = Counter()
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            lines = [line for line in cell.source.splitlines() if line.strip()]
            if cell.cell_type == "code" and len(lines) >= 5 and "parameters" not in cell.metadata.get("tags", []):
                cells["\n".join(lines)] += 1
    repeated = [src.splitlines()[0] for src, n in cells.items() if n > 1]
    assert not repeated, repeated


def test_every_module_says_what_it_exports_and_documents_it():
    """MONAI's habit: ``__all__`` in each module, every name in it defined there, and every exported
    function and class with a docstring."""
    import ast
    for name, path in modules().items():
        if path.name == "__init__.py":
            continue
        tree = ast.parse(path.read_text())
        exported = [ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
                    and any(getattr(t, "id", None) == "__all__" for t in n.targets)]
        assert len(exported) == 1, f"{name} has no __all__"
        defined = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
        assigned = {t.id for n in tree.body if isinstance(n, (ast.Assign, ast.AnnAssign))
                    for t in (n.targets if isinstance(n, ast.Assign) else [n.target]) if isinstance(t, ast.Name)}
        for item in exported[0]:
            assert item in defined or item in assigned, f"{name}.__all__ names {item}, which it does not define"
            if item in defined:
                assert ast.get_docstring(defined[item]), f"{name}.{item} is exported without a docstring"
