"""The import rule of the package layout (docs/extending.md, "Where code goes"), read off the source: every import,
function-local ones included, is an edge of the graph.

- no circle; no stage imports another stage;
- libraries never import a stage, a tool or an entry shim;
- `store/` imports only the foundation (and itself); the foundation imports only itself.
"""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "pipeline"
FOUNDATION = {"pipeline." + m for m in ("config", "keypoints", "fsutil", "faults", "tianchi", "joint", "frames", "names",
                                        "hardware", "distributed", "augment")}
SHIMS = {"pipeline.metrics", "pipeline.submit", "pipeline.synth", "pipeline.synth.__main__"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PKG.rglob("*.py")}


def imports_of(name: str):
    """Pipeline modules `name` imports anywhere in its source (relative imports resolved)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.add(full if full in MODULES else base)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: imports_of(name) for name in MODULES}


def layer(name: str) -> str:
    if name in SHIMS:
        return "shim"
    for part in ("stages", "tools", "store"):
        if name == f"pipeline.{part}" or name.startswith(f"pipeline.{part}."):
            return part
    if name in FOUNDATION or name == "pipeline":
        return "foundation"
    return "library"


def cycles(graph):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def violations(graph):
    bad = []
    for a, targets in graph.items():
        for b in targets:
            la, lb = layer(a), layer(b)
            if lb == "stages" and la != "shim" and b != "pipeline.stages":
                bad.append(f"{a} → {b} (nothing imports a stage)")
            elif lb in ("tools", "shim") and la not in ("tools", "shim"):
                bad.append(f"{a} → {b} (only tools and shims import tools)")
            elif la == "store" and lb not in ("store", "foundation"):
                bad.append(f"{a} → {b} (the store imports only the foundation)")
            elif la == "foundation" and lb != "foundation":
                bad.append(f"{a} → {b} (the foundation imports only itself)")
    return bad


def test_the_graph_has_the_modules():
    assert {"pipeline.stages.train", "pipeline.store.layout", "pipeline.heatmap.codec",
            "pipeline.config"} <= set(GRAPH)
    assert "pipeline.heatmap.codec" in GRAPH["pipeline.heatmap.zoom"]  # an edge that exists is seen


def test_no_import_circle():
    assert cycles(GRAPH) == []


def test_layers_import_only_downwards():
    assert violations(GRAPH) == []


def test_every_stage_has_a_main():
    stages = [n for n in GRAPH if n.startswith("pipeline.stages.")]
    assert len(stages) >= 12
    for name in stages:
        tree = ast.parse(MODULES[name].read_text())
        assert any(isinstance(n, ast.FunctionDef) and n.name == "main" for n in tree.body), name


@pytest.mark.parametrize("graph, expected", [
    ({"a": {"b"}, "b": {"a"}, "c": set()}, [["a", "b"]]),
    ({"a": {"b"}, "b": set()}, []),
])
def test_cycle_finder_finds_circles(graph, expected):
    assert cycles(graph) == expected


def test_rule_checker_flags_upward_imports():
    graph = {"pipeline.store.layout": {"pipeline.heatmap.codec"},
             "pipeline.heatmap.codec": {"pipeline.stages.train"},
             "pipeline.stages.train": {"pipeline.stages.predict"},
             "pipeline.stages.predict": set()}
    assert len(violations(graph)) == 3
