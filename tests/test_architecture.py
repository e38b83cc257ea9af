"""The layering rules of the design brief, checked on the code itself."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import lrlab

PACKAGE = Path(lrlab.__file__).parent
CORE_PACKAGES = ("core", "finder", "train", "data", "models")
INTEGRATIONS = ("hydra", "omegaconf", "mlflow", "optuna")
MAX_MODULE_LINES = 350
MAX_FUNCTION_LINES = 60


def _modules(*packages: str) -> list[Path]:
    return sorted(p for pkg in packages for p in (PACKAGE / pkg).rglob("*.py"))


def _imported_roots(path: Path) -> set[str]:
    """Top-level names of every module `path` imports, at module level or inside functions."""
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("path", _modules(*CORE_PACKAGES), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_core_module_imports_no_integration(path: Path) -> None:
    """Engine, finder, optim, schedules, stages, data and models never import Hydra, OmegaConf,
    MLflow or Optuna, not even lazily inside a function."""
    assert not _imported_roots(path) & set(INTEGRATIONS), f"{path.name} imports an integration"


def test_importing_the_whole_core_loads_no_integration() -> None:
    """Transitively too: importing every core module in a fresh interpreter leaves them unloaded."""
    names = [".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts) for p in _modules(*CORE_PACKAGES)]
    names = [n.removesuffix(".__init__") for n in names]
    code = (
        "import importlib, sys\n"
        f"for name in {names!r}: importlib.import_module(name)\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {set(INTEGRATIONS)!r}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_core_import_check_can_fail(tmp_path: Path) -> None:
    """The static scan sees a lazy import inside a function."""
    module = tmp_path / "bad.py"
    module.write_text("def f():\n    from omegaconf import OmegaConf\n    import mlflow.tracking\n")
    assert _imported_roots(module) == {"omegaconf", "mlflow"}


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_stay_small(path: Path) -> None:
    assert len(path.read_text().splitlines()) <= MAX_MODULE_LINES


def test_functions_stay_short() -> None:
    """No function over ~60 lines, unless its docstring says why ("Long because ...")."""
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                size = node.end_lineno - node.lineno + 1
                if size > MAX_FUNCTION_LINES and "Long because" not in (ast.get_docstring(node) or ""):
                    long.append(f"{path.relative_to(PACKAGE)}:{node.name} ({size} lines)")
    assert not long


# The layers, lowest first: a module may import its own package and packages of lower rank only.
# app and sweep share the top rank and do not import each other.
LAYERS = {
    "errors": 0,
    "core": 1,
    "data": 2,
    "models": 3,
    "finder": 4,
    "train": 5,
    "integrations": 6,
    "app": 7,
    "sweep": 7,
}
ENTRY_MODULES = ("__init__", "__main__")  # the lazy public API and `python -m lrlab` sit above every layer


def _module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, known: set[str]) -> list[tuple[str, list[str]]]:
    """(imported lrlab module, names taken from it) for every import in `path`, lazy and
    TYPE_CHECKING ones included; `from pkg import sub` counts as importing the module `pkg.sub`."""
    found: list[tuple[str, list[str]]] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names if a.name.split(".")[0] == "lrlab"]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] != "lrlab":
                continue
            names = [a.name for a in node.names if f"{node.module}.{a.name}" not in known]
            found += [
                (f"{node.module}.{a.name}", []) for a in node.names if f"{node.module}.{a.name}" in known
            ]
            found.append((node.module, names))
    return found


def _graph(root: Path) -> dict[str, list[tuple[str, list[str]]]]:
    """lrlab module -> what it imports from other lrlab modules, for the package under `root`."""
    paths = sorted(root.rglob("*.py"))
    known = {_module_name(p, root) for p in paths}
    return {
        _module_name(p, root): [(m, n) for m, n in _imports(p, known) if m != _module_name(p, root)]
        for p in paths
    }


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def layer_violations(graph: dict[str, list[tuple[str, list[str]]]]) -> list[str]:
    """Imports that go to a higher layer or across the two top layers."""
    bad = []
    for module, imports in graph.items():
        here = _layer(module)
        if here is None or here in ENTRY_MODULES:
            continue
        for target, _ in imports:
            there = _layer(target)
            if there is None or there == here:
                continue
            if LAYERS.get(there, 99) >= LAYERS.get(here, -1):
                bad.append(f"{module} imports {target} ({here} may not import {there})")
    return bad


def import_cycles(graph: dict[str, list[tuple[str, list[str]]]]) -> list[list[str]]:
    """Groups of modules that import each other, directly or around a loop (Tarjan's SCCs > 1)."""
    edges = {m: sorted({t for t, _ in imports if t in graph}) for m, imports in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in edges[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                top = stack.pop()
                group.append(top)
                if top == node:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for node in edges:
        if node not in index:
            visit(node)
    return cycles


def private_imports(graph: dict[str, list[tuple[str, list[str]]]]) -> list[str]:
    """Names with a leading underscore imported from another lrlab module."""
    return [
        f"{module} imports {name} from {target}"
        for module, imports in graph.items()
        for target, names in imports
        for name in names
        if name.startswith("_") and not name.startswith("__")
    ]


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / "lrlab" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path / "lrlab"


def test_layers_import_downward_only() -> None:
    assert not layer_violations(_graph(PACKAGE))


def test_no_modules_import_each_other() -> None:
    assert not import_cycles(_graph(PACKAGE))


def test_no_private_name_is_imported_across_modules() -> None:
    assert not private_imports(_graph(PACKAGE))


CHECKS_FAIL = {
    "an upward import, even lazy, and app importing sweep": (
        layer_violations,
        {
            "core/engine.py": "def f():\n    from lrlab.finder.rules import RULES\n",
            "finder/rules.py": "from lrlab.core import engine\nRULES = {}\n",
            "app/run.py": "import lrlab.sweep.report\n",
            "sweep/report.py": "from lrlab.errors import LrlabError\n",
            "errors.py": "",
        },
        [
            "lrlab.app.run imports lrlab.sweep.report (app may not import sweep)",
            "lrlab.core.engine imports lrlab.finder.rules (core may not import finder)",
        ],
    ),
    "a pair (one side under TYPE_CHECKING) and a three-module loop": (
        import_cycles,
        {
            "core/engine.py": "from lrlab.core.types import Callback\n",
            "core/types.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
            "    from lrlab.core.engine import Engine\n",
            "sweep/a.py": "from lrlab.sweep import b\n",
            "sweep/b.py": "import lrlab.sweep.c\n",
            "sweep/c.py": "def f():\n    from lrlab.sweep.a import x\n",
        },
        [["lrlab.core.engine", "lrlab.core.types"], ["lrlab.sweep.a", "lrlab.sweep.b", "lrlab.sweep.c"]],
    ),
    "an underscored name taken from another module": (
        private_imports,
        {
            "data/sources.py": "def _split_tensors(): ...\n",
            "data/mnist.py": "from lrlab.data.sources import _split_tensors, load\n",
            "data/ok.py": "from lrlab.data import sources\n",
        },
        ["lrlab.data.mnist imports _split_tensors from lrlab.data.sources"],
    ),
}


@pytest.mark.parametrize("case", CHECKS_FAIL)
def test_each_check_fails_on_what_it_forbids(tmp_path: Path, case: str) -> None:
    check, files, expected = CHECKS_FAIL[case]
    assert sorted(check(_graph(_package(tmp_path, files)))) == expected


@pytest.mark.parametrize("path", _modules("core"), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_core_draws_no_plots(path: Path) -> None:
    """Plots belong to the layers that report (finder's curve plot, app's evaluation files)."""
    assert "matplotlib" not in _imported_roots(path), f"{path.name} imports matplotlib"
