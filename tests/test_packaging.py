"""The config tree and the sweeper plugin ship inside a regular (non-editable) wheel, and Hydra
finds them there."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_carries_the_config_tree_and_composes(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    wheel = next(tmp_path.glob("lrlab-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in (
        "lrlab/conf/config.yaml",
        "lrlab/conf/model/efficientnet_lite0.yaml",
        "lrlab/conf/experiment/smoke.yaml",
        "lrlab/conf/hydra/job_logging/lrlab.yaml",
        "lrlab/conf/search/lr_vs_finder.yaml",
        "hydra_plugins/lrlab_optuna_sweeper/lrlab_optuna_sweeper.py",
    ):
        assert required in names
    target = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(target)
    overrides = ["experiment=smoke", "search=lr_vs_finder"]
    script = (
        "import hydra\n"
        "from lrlab.app import cli\n"
        f"assert cli.CONFIG_DIR.startswith({str(target)!r}), cli.CONFIG_DIR\n"
        "with hydra.initialize_config_dir(config_dir=cli.CONFIG_DIR, version_base='1.3'):\n"
        f"    cfg = hydra.compose('config', overrides={overrides!r}, return_hydra_config=True)\n"
        "sweeper = cfg.hydra.sweeper._target_.rsplit('.', 1)[-1]\n"
        "print(cfg.model.name, cfg.data.name, sweeper, cfg.hydra.sweep.dir)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [
        "test_efficientnet",
        "digits",
        "LrlabOptunaSweeper",
        "sweeps/smoke-lr_vs_finder",
    ]
