"""The code style gate: ruff's linter and formatter agree with the tree (run by the README's test
command, so CI enforces it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PATHS = ["src", "tests", "benchmarks"]


def _ruff(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ruff", *args, *PATHS], cwd=ROOT, capture_output=True, text=True
    )


@pytest.mark.parametrize("command", [("check", "--no-cache"), ("format", "--check", "--no-cache")])
def test_ruff_is_clean(command: tuple[str, ...]) -> None:
    out = _ruff(*command)
    assert out.returncode == 0, out.stdout + out.stderr
