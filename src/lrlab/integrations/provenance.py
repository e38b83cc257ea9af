"""Where a run's code and libraries came from: the git commit and dirty flag of the launch folder,
of lrlab's own source when it is a git checkout (an editable install), and the versions of lrlab and
the libraries that shape its numbers, as tags any tracker records."""

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
    launch = _commit(Path(cwd or Path.cwd()))
    if launch:
        tags.update({"git.commit": launch[0], "mlflow.source.git.commit": launch[0], "git.dirty": launch[1]})
    here = Path(__file__).resolve()
    # only where git tracks this very file: a regular install inside a repo's ignored .venv is not
    source = _commit(here.parents[1]) if _git("ls-files", here.name, cwd=here.parent) else None
    if source:
        tags.update({"lrlab.git.commit": source[0], "lrlab.git.dirty": source[1]})
    return tags


def _commit(folder: Path) -> tuple[str, str] | None:
    """The HEAD commit of the git work tree holding `folder` and whether tracked files changed."""
    commit = _git("rev-parse", "HEAD", cwd=folder)
    if not commit:
        return None
    status = _git("status", "--porcelain", "--untracked-files=no", cwd=folder)
    return commit, str(bool(status))
