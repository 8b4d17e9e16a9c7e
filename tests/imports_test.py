"""The import graph of the project's own modules: no cycles, and imports flow one way.

Every `import` statement counts, at module level or inside a function: a lazy import still ties
two modules together, and two modules that import each other hold one job between them. Edges:

- `import a.b.c` depends on the module `a.b.c` (or on the longest prefix that is a project module).
- `from a.b import c` depends on `a.b.c` when that is a module, otherwise on `a.b` itself.
- Relative imports are resolved against the importing module's package.

Importing `a.b.c` also runs `a/__init__.py` and `a/b/__init__.py`; those implicit parent edges are
not counted, as in other import linters, or a package `__init__` that re-exports its own
submodules would form a cycle with each of them.
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("gca_jax", "kernels", "train", "eval", "benchmarks")


def _module_name(path: pathlib.Path, root: pathlib.Path) -> str:
    """Dotted name of a file under `root`: `gca_jax/data/__init__.py` -> `gca_jax.data`."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules(root: pathlib.Path, packages) -> dict[str, pathlib.Path]:
    """Every module of `packages` (directories under `root`), by dotted name."""
    return {
        _module_name(p, root): p for pkg in packages for p in sorted((root / pkg).rglob("*.py"))
    }


def _resolve(name: str, modules) -> str | None:
    """The project module `name` refers to: itself, or its longest prefix that is a module."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def _imports(module: str, path: pathlib.Path, modules) -> set[str]:
    """Project modules that `module` imports anywhere in its body."""
    is_package = path.name == "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = module if is_package else module.rpartition(".")[0]
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                base = ".".join(p for p in (package, node.module) if p)
            else:
                base = node.module
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                for alias in node.names
            ]
        else:
            continue
        out.update(t for t in map(lambda n: _resolve(n, modules), targets) if t)
    out.discard(module)
    return out


def _graph(root: pathlib.Path, packages) -> dict[str, set[str]]:
    """module -> the modules of `packages` it imports."""
    modules = _modules(root, packages)
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _cycles(graph) -> list[tuple[list[str], list[str]]]:
    """`(cycle, other members)` of each strongly connected component of more than one module."""
    index, low, on_stack, stack, components = {}, {}, set(), [], []

    def visit(v):  # Tarjan's algorithm; the graph has a few hundred nodes, recursion is fine.
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
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    out = []
    for component in components:
        cycle = _cycle_in(graph, component)
        out.append((cycle, sorted(component - set(cycle))))
    return out


def _cycle_in(graph, component: set[str]) -> list[str]:
    """A shortest cycle through the smallest-named module of a strongly connected component."""
    start = min(component)
    parents, frontier = {start: None}, [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & component):
                if w == start:
                    path = [v]
                    while parents[path[-1]] is not None:
                        path.append(parents[path[-1]])
                    return [*reversed(path), start]
                if w not in parents:
                    parents[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"{component=} is not strongly connected")


def _format(cycles) -> str:
    """One line per cycle: `a -> b -> a (also in the cycle's component: c, d)`."""
    lines = []
    for cycle, others in cycles:
        rest = f" (also in the cycle's component: {', '.join(others)})" if others else ""
        lines.append(" -> ".join(cycle) + rest)
    return "\n".join(lines)


def _in(module: str, prefix: str) -> bool:
    """Whether `module` is `prefix` or inside it."""
    return module == prefix or module.startswith(prefix + ".")


GRAPH = _graph(ROOT, PACKAGES)
CYCLES = _cycles(GRAPH)


def test_graph_sees_every_kind_of_import(tmp_path):
    files = {
        "p/__init__.py": "from p.b import f\n",  # A name: the module that defines it.
        "p/b.py": "import os\n\ndef f():\n    from . import c\n",  # Lazy and relative.
        "p/c.py": "from p import b\nimport p.d.e\nimport numpy\n",  # A submodule; not ours.
        "p/d/__init__.py": "",
        "p/d/e.py": "from .. import c\nfrom ..b import f\nfrom p.d import g\n",
        "p/d/g.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import q\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert _graph(tmp_path, ["p"]) == {
        "p": {"p.b"},
        "p.b": {"p.c"},
        "p.c": {"p.b", "p.d.e"},
        "p.d": set(),
        "p.d.e": {"p.c", "p.b", "p.d.g"},
        "p.d.g": set(),  # `q` is outside the packages asked for.
    }
    (tmp_path / "q").mkdir()
    (tmp_path / "q" / "__init__.py").write_text("")
    assert _graph(tmp_path, ["p", "q"])["p.d.g"] == {"q"}  # TYPE_CHECKING imports count too.


def test_cycle_finder_reports_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}
    assert _cycles(graph) == [(["a", "b", "c", "a"], [])]
    graph = {"a": {"b"}, "b": {"a", "c"}, "c": {"b"}}
    assert _format(_cycles(graph)) == "a -> b -> a (also in the cycle's component: c)"


def test_no_import_cycle_through_the_data_package():
    cycles = [c for c in CYCLES if any(_in(m, "gca_jax.data") for m in c[0] + c[1])]
    assert not cycles, f"import cycles:\n{_format(cycles)}"


def test_no_import_cycle():
    assert not CYCLES, f"import cycles:\n{_format(CYCLES)}"


# (importer, imported): modules under the first prefix never import modules under the second.
FORBIDDEN = [
    *(("kernels", p) for p in ("gca_jax", "train", "eval", "benchmarks")),
    *(("gca_jax", p) for p in ("train", "eval", "benchmarks")),
    *(("gca_jax.modeling", p) for p in ("gca_jax.data", "gca_jax.training", "gca_jax.checkpoint")),
    ("gca_jax.modeling", "gca_jax.inference"),
    # Inference holds no layer maths: it reaches the kernels only through the model's layers.
    ("gca_jax.inference", "kernels"),
]


@pytest.mark.parametrize("importer,imported", FORBIDDEN)
def test_imports_flow_one_way(importer, imported):
    bad = sorted(
        f"{a} -> {b}"
        for a, deps in GRAPH.items()
        if _in(a, importer)
        for b in deps
        if _in(b, imported)
    )
    assert not bad, f"{importer} must not import {imported}:\n" + "\n".join(bad)
