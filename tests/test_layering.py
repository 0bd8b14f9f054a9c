"""The import layering of relight3d, read from the source with ``ast`` (nothing is imported).

Layers, top to bottom (STYLE.md): apps/CLIs -> pipelines (+ engine) -> models, priors -> fields, lighting, data, eval,
export -> ops, geometry, errors (+ small leaf utilities). A module may import from its own layer or below, never above,
and no two files may import each other, directly or round a longer loop. Imports under ``if TYPE_CHECKING:`` are for
annotations only and are not counted.
"""

from __future__ import annotations

import ast
import fnmatch
from pathlib import Path
from typing import Dict, List, Optional, Set

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("relight3d", "relight3d_bench")

# (layer name, module patterns); the first matching layer wins, so the specific patterns come first.
LAYERS = [
    ("apps", ["relight3d.cli", "relight3d.*.cli", "relight3d.demo", "relight3d.method_configs", "relight3d_bench*"]),
    ("pipelines", ["relight3d.pipelines*", "relight3d.engine*"]),
    ("models/priors", ["relight3d.models*", "relight3d.priors*"]),
    (
        "fields/lighting/data/eval/export",
        ["relight3d.fields*", "relight3d.lighting*", "relight3d.data*", "relight3d.eval*", "relight3d.export*"],
    ),
    (
        "ops/geometry/errors",
        [
            "relight3d.ops*",
            "relight3d.geometry*",
            "relight3d.errors",
            "relight3d._optional",
            "relight3d.cli_types",
            "relight3d.output_names",
            "relight3d",
        ],
    ),
]


def layer_of(module: str) -> Optional[int]:
    for i, (_, patterns) in enumerate(LAYERS):
        if any(fnmatch.fnmatchcase(module, p) for p in patterns):
            return i
    return None


def module_files(root: Path = ROOT) -> Dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")) if (root / pkg).is_dir() else []:
            name = ".".join(path.relative_to(root).with_suffix("").parts)
            mods[name.removesuffix(".__init__")] = path
    return mods


def _type_checking_nodes(tree: ast.AST) -> Set[int]:
    skip: Set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                skip.update(id(n) for n in ast.walk(child))
    return skip


def imports_of(name: str, path: Path, known: Set[str]) -> Set[str]:
    """relight3d modules that ``name`` imports (at import time or inside functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _type_checking_nodes(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: Set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            candidates = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            # "from pkg import mod" depends on pkg.mod only; "from pkg import name" on pkg (its __init__)
            candidates = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for c in candidates:
            # "import a.b.c" depends on a.b.c; keep the longest known prefix of each candidate
            while c and c not in known:
                c = c.rpartition(".")[0]
            if c and c != name:
                found.add(c)
    return found


def import_graph(root: Path = ROOT) -> Dict[str, Set[str]]:
    files = module_files(root)
    known = set(files)
    return {name: imports_of(name, path, known) for name, path in files.items()}


def upward_imports(graph: Dict[str, Set[str]]) -> List[str]:
    bad = []
    for mod, deps in sorted(graph.items()):
        lm = layer_of(mod)
        for dep in sorted(deps):
            ld = layer_of(dep)
            if lm is not None and ld is not None and ld < lm:
                bad.append(f"{mod} ({LAYERS[lm][0]}) imports {dep} ({LAYERS[ld][0]})")
    return bad


def import_cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    out: List[List[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_every_module_has_a_layer():
    unplaced = [m for m in module_files() if layer_of(m) is None]
    assert not unplaced, f"modules in no layer (add them to LAYERS): {unplaced}"


def test_no_module_imports_a_layer_above_it():
    bad = upward_imports(import_graph())
    assert not bad, "imports against the layering:\n" + "\n".join(bad)


def test_no_import_cycles():
    cycles = import_cycles(import_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def _write(root: Path, files: Dict[str, str]) -> None:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


def test_checker_finds_planted_cycle_and_upward_import(tmp_path):
    """The checks above would fail on a tree with a circle, an upward import and a relative import of a parent."""
    _write(
        tmp_path,
        {
            "relight3d/__init__.py": "",
            "relight3d/ops/__init__.py": "from relight3d.ops.march import march\n",
            "relight3d/ops/march.py": "from relight3d import ops\n",
            "relight3d/eval/__init__.py": "",
            "relight3d/eval/a.py": "from . import b\n",
            "relight3d/eval/b.py": "def f():\n    from relight3d.eval.a import g\n",
            "relight3d/fields/__init__.py": "",
            "relight3d/fields/f.py": "from ..pipelines import loop\nfrom typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    from relight3d.cli import main\n",
            "relight3d/pipelines/__init__.py": "",
            "relight3d/pipelines/loop.py": "",
            "relight3d/cli.py": "",
        },
    )
    graph = import_graph(tmp_path)
    assert graph["relight3d.fields.f"] == {"relight3d.pipelines.loop"}  # TYPE_CHECKING import not counted
    assert upward_imports(graph) == [
        "relight3d.fields.f (fields/lighting/data/eval/export) imports relight3d.pipelines.loop (pipelines)"
    ]
    assert import_cycles(graph) == [
        ["relight3d.eval.a", "relight3d.eval.b"],
        ["relight3d.ops", "relight3d.ops.march"],
    ]


@pytest.mark.parametrize(
    "module,layer",
    [
        ("relight3d.pipelines.cli", "apps"),
        ("relight3d.priors.diffusion.loading", "models/priors"),
        ("relight3d.geometry.cameras", "ops/geometry/errors"),
        ("relight3d_bench.cycles_scene", "apps"),
    ],
)
def test_layer_table(module, layer):
    assert LAYERS[layer_of(module)][0] == layer
