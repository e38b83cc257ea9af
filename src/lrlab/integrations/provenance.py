"""Where a run's code and libraries came from: the git commit and dirty flag of the launch folder
and the versions of lrlab and the libraries that shape its numbers, as tags any tracker records."""

from __future__ import annotations

import importlib.metadata
import subprocess
from pathlib import Path


def _git(*args: str, cwd: str | Path) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def provenance_tags(cwd: str | Path | None = None) -> dict[str, str]:
    """Git commit and dirty flag (when `cwd` is in a git repo) and package versions."""
    tags: dict[str, str] = {}
    for pkg in ("lrlab", "torch", "torchvision", "timm", "mlflow", "optuna", "hydra-core"):
        try:
            tags[f"version.{pkg}"] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            continue
    where = Path(cwd or Path.cwd())
    commit = _git("rev-parse", "HEAD", cwd=where)
    if commit:
        status = _git("status", "--porcelain", "--untracked-files=no", cwd=where)
        tags.update(
            {"git.commit": commit, "mlflow.source.git.commit": commit, "git.dirty": str(bool(status))}
        )
    return tags
