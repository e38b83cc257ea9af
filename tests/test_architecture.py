"""The layering rules of the design brief, checked on the code itself."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import lrlab

PACKAGE = Path(lrlab.__file__).parent
CORE_PACKAGES = ("core", "finder", "data", "models")
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
