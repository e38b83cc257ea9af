"""Provenance tags: the launch folder's git commit and dirty flag, and lrlab's own source commit
when lrlab runs from a git checkout (an editable install)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

import lrlab
from lrlab.integrations.provenance import provenance_tags

SOURCE = Path(lrlab.__file__).resolve().parent


def _git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


def test_the_launch_folders_commit_and_dirty_flag_are_tagged(tmp_path: Path) -> None:
    repo, plain = tmp_path / "repo", tmp_path / "plain"
    repo.mkdir(), plain.mkdir()
    _git("init", "-q", cwd=repo)
    (repo / "experiment.yaml").write_text("lr: 0.01\n")
    _git("add", ".", cwd=repo)
    _git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "x", cwd=repo)
    clean = provenance_tags(repo)
    head = _git("rev-parse", "HEAD", cwd=repo)
    assert clean["git.commit"] == clean["mlflow.source.git.commit"] == head and clean["git.dirty"] == "False"
    (repo / "experiment.yaml").write_text("lr: 0.1\n")
    assert provenance_tags(repo)["git.dirty"] == "True"
    outside = provenance_tags(plain)
    assert "git.commit" not in outside and outside["version.lrlab"] == lrlab.__version__


def test_lrlabs_own_checkout_is_tagged_wherever_the_run_starts(tmp_path: Path) -> None:
    tracked = subprocess.run(
        ["git", "ls-files", "--error-unmatch", "__init__.py"], cwd=SOURCE, capture_output=True
    )
    if tracked.returncode != 0:
        pytest.skip("lrlab is not running from a git checkout (a regular install)")
    tags = provenance_tags(tmp_path)  # a launch folder outside any repository
    assert "git.commit" not in tags
    assert tags["lrlab.git.commit"] == _git("rev-parse", "HEAD", cwd=SOURCE)
    assert tags["lrlab.git.dirty"] in ("True", "False")
