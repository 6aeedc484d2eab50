"""The code reads a method's declaration, never its name; the core imports nothing from the outer
layer; no module imports another that imports it back."""

from __future__ import annotations

import ast
from pathlib import Path

import metarep
from metarep.methods import registered

SRC = Path(metarep.__file__).parent
CORE = ("families", "linear", "nonlinear", "methods", "compute", "seeds", "optimizers")
OUTER = ("config", "engine", "running", "storage", "cli", "sweeps", "report", "reproduce", "api", "plots", "bench",
         "data")


def _modules():
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).with_suffix("")
        parts = [p for p in rel.parts if p != "__init__"]
        yield "metarep" + "".join("." + p for p in parts), path


def _name_tests(tree: ast.AST, names: set[str]):
    """String constants that are method names and are *tested*: compared (==, !=, in), used as a
    dict key or looked up by subscript. Naming a method as data (a study's list of methods to
    run, a benchmark's setting) is fine; branching on it is what a declaration replaces."""
    def named(node):
        return [n for n in ast.walk(node) if isinstance(n, ast.Constant) and n.value in names]

    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            yield from named(node)
        elif isinstance(node, ast.Dict):
            for key in node.keys:
                if key is not None:
                    yield from named(key)
        elif isinstance(node, ast.Subscript):
            yield from named(node.slice)
        elif isinstance(node, ast.MatchValue):
            yield from named(node)


def test_no_method_name_tested_outside_methods():
    names = {m.name for m in registered()}
    found = []
    for module, path in _modules():
        if module.startswith("metarep.methods"):
            continue
        for node in _name_tests(ast.parse(path.read_text()), names):
            found.append(f"{path.relative_to(SRC)}:{node.lineno}: {node.value!r}")
    assert not found, "method names tested outside methods/:\n" + "\n".join(found)


def test_the_name_check_can_fail():
    tree = ast.parse('if config.method.name == "fo-anil": pass\nwidth = {"oracle": k}.get(name)\nx = by["none"]')
    assert len(list(_name_tests(tree, {"fo-anil", "oracle", "none"}))) == 3


def _runtime_nodes(tree: ast.AST):
    """Every node but those under `if TYPE_CHECKING:` (imports for annotations only)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            continue
        yield node
        yield from _runtime_nodes(node)


def _imports(path: Path, module: str) -> set[str]:
    out = set()
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in _runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("metarep")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            if base.startswith("metarep"):
                out.add(base)
                out |= {f"{base}.{a.name}" for a in node.names}
    return out


def _graph() -> dict[str, set[str]]:
    modules = dict(_modules())
    return {m: {i for i in _imports(p, m) if i in modules and i != m} for m, p in modules.items()}


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_the_core_imports_nothing_from_the_outer_layer():
    graph = _graph()
    bad = [(m, i) for m in graph if _top(m) in CORE for i in graph[m] if _top(i) in OUTER]
    assert not bad, bad


def test_no_import_cycles():
    graph = _graph()
    # a package's __init__ importing its own submodules is not a cycle of modules
    edges = {m: {i for i in deps if not i.startswith(m + ".")} for m, deps in graph.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(node, stack):
        state[node] = 1
        for nxt in edges.get(node, ()):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m, [m])
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)
