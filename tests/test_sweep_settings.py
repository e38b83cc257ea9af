"""The sweeper's one settings dataclass (also Hydra's `hydra/sweeper=lrlab_optuna` node), its
validation, the sampler and pruner tables, and what the sweeper process imports."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from lrlab.app.cli import CONFIG_DIR
from lrlab.errors import ConfigError
from lrlab.finder.rules import RULES
from lrlab.integrations.optuna_storage import PRUNERS, make_pruner
from lrlab.sweep.samplers import SAMPLERS
from lrlab.sweep.settings import SweepSettings

SWEEP_SOURCES = sorted((Path(__file__).resolve().parent.parent / "src" / "lrlab" / "sweep").glob("*.py"))


def _imports_after(code: str) -> set[str]:
    """Top-level packages loaded by `code` in a fresh interpreter."""
    script = f"import sys\n{code}\nprint(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_the_sweeper_and_lrlab_report_import_no_torch_or_timm() -> None:
    loaded = _imports_after("import lrlab.sweep.sweeper, lrlab.sweep.report, lrlab.sweep.report_plot")
    assert "optuna" in loaded and not loaded & {"torch", "timm", "torchvision"}


def test_the_settings_import_only_the_standard_library() -> None:
    loaded = _imports_after("import lrlab.sweep.settings")
    assert not loaded & {"optuna", "torch", "timm", "hydra", "mlflow", "numpy"}


def test_hydra_sweeper_node_is_the_settings_dataclass_with_its_defaults() -> None:
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=["hydra/sweeper=lrlab_optuna"], return_hydra_config=True)
    node = OmegaConf.to_container(cfg.hydra.sweeper)
    target = node.pop("_target_")
    assert target.endswith("lrlab_optuna_sweeper.LrlabOptunaSweeper")
    assert node == dataclasses.asdict(SweepSettings())
    assert SweepSettings.from_mapping(cfg.hydra.sweeper) == SweepSettings()


def test_a_preset_is_read_into_plain_settings() -> None:
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            "config",
            overrides=["experiment=smoke", "search=lr_vs_finder", "hydra.sweeper.finder_rules=[steep]"],
            return_hydra_config=True,
        )
    settings = SweepSettings.from_mapping(cfg.hydra.sweeper).validate()
    assert settings.study_name == "smoke-lr_vs_finder" and settings.enqueue == ["lr_finder"]
    assert settings.params == {"stages.*.lr": "tag(log, interval(1e-5, 1e-1))"}
    assert type(settings.params) is dict and settings.rules() == ["steep"]


def test_finder_rules_default_to_every_registered_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    assert SweepSettings().rules() == list(RULES)
    assert {"valley", "steep", "minimum", "slide"} <= set(RULES)
    monkeypatch.setitem(RULES, "half_valley", RULES["valley"])  # a newly registered rule
    assert SweepSettings().rules()[-1] == "half_valley"
    SweepSettings(finder_rules=["half_valley"]).validate()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"sampler": "bogus"}, "sampler='bogus' is not valid; choose one of: " + ", ".join(SAMPLERS)),
        ({"pruner": "early"}, "pruner='early' is not valid; choose one of: " + ", ".join(PRUNERS)),
        (
            {"finder_rules": ["valey"]},
            "finder_rules='valey' is not valid; choose one of: " + ", ".join(RULES),
        ),
        ({"n_trials": 0}, "n_trials=0 and n_jobs=1 must both be at least 1"),
        ({"max_failure_rate": 1.5}, "max_failure_rate=1.5 must be in [0, 1]"),
        ({"direction": ["minimize", "maximize"]}, "direction has 2 entries but metric has 1"),
        ({"enqueue": ["finder"]}, "enqueue entry 'finder' is not valid; use lr_finder or a mapping"),
    ],
)
def test_validation_names_the_bad_value_and_the_choices(settings: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        SweepSettings(**settings).validate()


def test_the_pruner_table_builds_pruners_and_explains_bad_names_and_kwargs() -> None:
    pruner = make_pruner({"name": "median", "n_startup_trials": 2})
    assert isinstance(pruner, optuna.pruners.MedianPruner)
    assert isinstance(make_pruner(None), optuna.pruners.NopPruner)
    with pytest.raises(ConfigError, match="pruner 'early' is not known; choose one of: none, median"):
        make_pruner({"name": "early"})
    with pytest.raises(ConfigError, match="pruner_kwargs for pruner 'median'"):
        make_pruner({"name": "median", "patience": 3})


def test_the_sweep_package_uses_no_private_hydra_or_optuna_attributes() -> None:
    private = re.compile(r"\._(return_value|trial_id|study_id|storage|cached_frozen_trial)\b")
    offenders = [f"{p.name}: {m.group(0)}" for p in SWEEP_SOURCES for m in private.finditer(p.read_text())]
    assert not offenders
