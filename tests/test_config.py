"""The config tree against its schemas: every option of every group composes and validates, the
default problem composes without a preset, and bad keys and values fail naming the key."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from lrlab.app.cli import CONFIG_DIR, config_groups, deselect_null_groups
from lrlab.app.key_checks import misspelt_key
from lrlab.app.schema import LrlabConfig, ModelConfig, TrackingConfig, validate
from lrlab.core.flat import flatten
from lrlab.data.registry import get_source, registered_sources
from lrlab.errors import ConfigError
from lrlab.finder.config import FinderConfig
from lrlab.finder.rules import RULES
from lrlab.train.stage import Stage

CONF = Path(CONFIG_DIR)
OPTIONS = sorted(
    (group.name, option.stem)
    for group in CONF.iterdir()
    if group.is_dir() and group.name != "hydra"
    for option in group.glob("*.yaml")
)
# Keys an option needs before it validates offline (no download, no hub weights needed to validate).
NEEDS = {
    ("data", "imagefolder"): ["data.root={tmp}"],
    ("data", "torchvision"): ["data.dataset=CIFAR10"],
    ("optimizer", "prodigy"): ["lr=1", "lr_spread=1", "schedule=constant"],  # its own step size, one lr
    ("optimizer", "schedulefree_adamw"): ["lr=0.0025", "schedule=constant"],  # and it replaces the schedule
}


def _resolved(cfg) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)


def test_the_glob_sees_every_group() -> None:
    groups = {group for group, _ in OPTIONS}
    assert {"model", "data", "optimizer", "schedule", "stages", "tracking", "lr_finder"} <= groups
    assert {"experiment", "search"} <= groups


@pytest.mark.parametrize("group, option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_composes_and_validates(compose_cfg, tmp_path: Path, group: str, option: str) -> None:
    extra = [o.format(tmp=tmp_path) for o in NEEDS.get((group, option), [])]
    cfg = validate(compose_cfg(f"{group}={option}", *extra))
    assert cfg.stages and cfg.model.name and cfg.data.name
    assert get_source(cfg.data.name).config is OmegaConf.get_type(cfg.data)


def test_plain_lrlab_is_the_elpv_problem_without_a_preset(compose_cfg) -> None:
    plain = compose_cfg()
    assert _resolved(plain) == _resolved(compose_cfg("experiment=elpv"))
    assert _resolved(plain) == _resolved(compose_cfg(*deselect_null_groups(["experiment=null"])))
    assert plain.name == "elpv" and plain.tracking.experiment == "elpv"
    assert plain.data.image_size == 128 and plain.lr_finder.smoothing == "ema"
    assert plain.model.name == "tf_efficientnet_lite0"


def test_elpvs_recipe_fixes_the_unfrozen_lr_only_where_the_range_test_would_choose_it(compose_cfg) -> None:
    def stage_lrs(*overrides: str) -> list:
        return [stage["lr"] for stage in _resolved(validate(compose_cfg(*overrides)))["stages"]]

    plain = validate(compose_cfg())
    assert plain.model.head == "ordinal" and stage_lrs() == ["find", 5e-3]
    assert stage_lrs("lr=1e-3") == [1e-3, 1e-3]  # an lr the user gives applies to both stages
    assert stage_lrs("lr=auto") == ["auto", "auto"]
    assert stage_lrs("unfrozen_lr=find") == ["find", "find"]
    assert stage_lrs("unfrozen_lr=2e-3") == ["find", 2e-3]
    assert stage_lrs("~recipe") == ["find", "find"]  # recipe=null on the command line
    assert stage_lrs("data=digits") == ["find", "find"]  # the recipe is ELPV's alone
    gpu = validate(compose_cfg("experiment=elpv_gpu"))
    assert gpu.model.head == "classify" and stage_lrs("experiment=elpv_gpu") == ["find", "find"]


def test_another_data_source_gets_its_own_settings_not_elpvs(compose_cfg, tmp_path: Path) -> None:
    cfg = compose_cfg("model=resnet18", "data=imagefolder", f"data.root={tmp_path}")
    assert cfg.data.image_size == 224 and "classes" not in cfg.data
    assert cfg.name == "imagefolder" and cfg.tracking.experiment == "imagefolder"
    assert (cfg.lr_finder.smoothing, cfg.lr_finder.suggest) == ("ema", "lrlab")
    assert compose_cfg("data=digits").lr_finder.smoothing == "ema"
    assert compose_cfg("data=digits", "name=mine").tracking.experiment == "mine"
    assert compose_cfg("lr_finder=default").lr_finder.suggest == "lrlab"


@pytest.mark.parametrize("option", [o for g, o in OPTIONS if g == "stages"])
def test_every_stage_of_every_preset_has_every_stage_key(compose_cfg, option: str) -> None:
    keys = [f.name for f in dataclasses.fields(Stage)]
    for stage in compose_cfg(f"stages={option}").stages:
        assert list(stage) == keys
        assert OmegaConf.get_type(stage) is Stage


def test_smoke_stage_takes_a_rule_override(compose_cfg) -> None:
    cfg = validate(compose_cfg("experiment=smoke", "stages.0.lr_rule=steep"))
    assert cfg.stages[0].lr_rule == "steep"


def test_lr_finder_yaml_repeats_no_default_and_shows_every_key(compose_cfg) -> None:
    assert _resolved(compose_cfg("lr_finder=default").lr_finder) == dataclasses.asdict(FinderConfig())
    fastai = _resolved(compose_cfg("lr_finder=fastai").lr_finder)
    assert fastai == dataclasses.asdict(FinderConfig(smoothing="ema", suggest="valley"))


def _schema_of(group: str, option: str, compose_cfg, tmp_path: Path) -> type | None:
    if group == "data":
        extra = [o.format(tmp=tmp_path) for o in NEEDS.get((group, option), [])]
        return get_source(compose_cfg(f"data={option}", *extra).data.name).config
    return {"model": ModelConfig, "tracking": TrackingConfig, "lr_finder": FinderConfig}.get(group)


@pytest.mark.parametrize(
    "group, option", [(g, o) for g, o in OPTIONS if g in ("data", "model", "tracking", "lr_finder")]
)
def test_options_set_only_what_differs_from_the_schema(
    compose_cfg, tmp_path: Path, group: str, option: str
) -> None:
    """Defaults live in the dataclasses: an option's YAML sets a key only to a different value."""
    raw = yaml.safe_load((CONF / group / f"{option}.yaml").read_text()) or {}
    raw.pop("defaults", None)
    defaults = OmegaConf.to_container(OmegaConf.structured(_schema_of(group, option, compose_cfg, tmp_path)))
    repeated = [key for key, value in raw.items() if defaults.get(key) == value]
    assert not repeated, f"{group}/{option}.yaml repeats schema defaults: {repeated}"


@pytest.mark.parametrize(
    "override, key",
    [
        ("stages.0.lr_rul=steep", "lr_rul"),
        ("lr_finder.smoothin=ema", "smoothin"),
        ("data.clases=2", "clases"),
        ("model.nme=resnet18", "nme"),
        ("train.grad_acum=2", "grad_acum"),
        ("tracking.experimnt=x", "experimnt"),
    ],
)
def test_a_misspelt_key_fails_at_composition_naming_it(compose_cfg, override: str, key: str) -> None:
    with pytest.raises(ConfigCompositionException) as info:
        compose_cfg(override)
    assert key in str(info.value) + str(info.value.__cause__)


@pytest.mark.parametrize(
    "added, message",
    [
        ("+train.grad_acum=2", "train.grad_acum is not a key of lrlab's config.*Closest: train.grad_accum"),
        ("+stages.0.epoch=3", "stages.0.epoch is not a key.*Closest: stages.0.epochs"),
        ("++data.augment.flipp=1", "data.augment.flipp is not a key.*Closest: data.augment.vflip"),
        ("+foo=1", "foo is not a key of lrlab's config: `\\+foo=...` would add a key that nothing reads"),
    ],
)
def test_a_key_added_with_plus_that_no_schema_has_fails_validation(
    compose_cfg, added: str, message: str
) -> None:
    cfg = compose_cfg("experiment=smoke", added)  # Hydra adds it, even to a structured config
    with pytest.raises(ConfigError, match=message):
        validate(cfg)
    # an argument the optimizer takes passes on; one it does not take is named, with what it takes
    assert validate(compose_cfg("experiment=smoke", "+optimizer.amsgrad=true")).optimizer.amsgrad is True


@pytest.mark.parametrize(
    "added, message",
    [
        (
            "+optimizer.momentm=0.9",
            "optimizer.momentm is not an argument of torch.optim.AdamW.*It takes: betas",
        ),
        (
            "+schedule.pct_strat=0.3",
            "schedule.pct_strat is not an argument of .*one_cycle.*Closest: schedule.pct_start",
        ),
    ],
)
def test_an_argument_the_target_does_not_take_fails_validation(compose_cfg, added: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        validate(compose_cfg("experiment=smoke", added))


def test_restore_best_needs_the_checkpoint_it_restores(compose_cfg) -> None:
    assert validate(compose_cfg("experiment=smoke", "train.restore_best=true")).train.restore_best
    with pytest.raises(ConfigError, match=r"train\.restore_best=true needs train\.checkpoints=true"):
        validate(compose_cfg("experiment=smoke", "train.restore_best=true", "train.checkpoints=false"))


def test_every_key_of_every_preset_passes_the_command_line_key_check(compose_cfg) -> None:
    """The check before Hydra walks the schemas; it must never refuse a key lrlab has."""
    groups, sources = config_groups(), [s.config for s in registered_sources().values()]
    presets = [
        [f"{group}={option}"] for group, option in OPTIONS if group in ("data", "experiment", "optimizer")
    ]
    for overrides in ([], ["stages=gradual"], ["lr=auto"], *presets):
        keys = flatten(OmegaConf.to_container(compose_cfg(*overrides)))
        assert [k for k in keys if misspelt_key([f"{k}=1"], LrlabConfig, groups, sources)] == []
    # a data key no source has is refused; one another source has is left to Hydra's composition
    assert "data.batchsize is not a key of data (closest: data.batch_size" in misspelt_key(
        ["data.batchsize=8"], LrlabConfig, groups, sources
    )
    assert misspelt_key(["data=digits", "data.classes=2"], LrlabConfig, groups, sources) is None
    for free in (
        "experiment=smoke",
        "data.clases=2",
        "optimizer.momentm=1",
        "hydra.verbose=true",
        "hydra/launcher=joblib",
        "model@x=tiny",
        "+foo=1",
    ):
        assert misspelt_key([free], LrlabConfig, groups) is None  # Hydra or validation reports these
    assert misspelt_key(["--config-dir", "d", "mygroup=x"], LrlabConfig, groups) is None
    assert "closest: lr_finder.smoothing" in misspelt_key(["lr_finder.smoothin=ema"], LrlabConfig, groups)
    assert "precison is not a key of lrlab's config (closest: precision)" in misspelt_key(
        ["precison=bf16"], LrlabConfig, groups
    )


def test_an_elpv_key_is_not_a_key_of_another_source(compose_cfg) -> None:
    with pytest.raises(ConfigCompositionException) as info:
        compose_cfg("data=digits", "data.classes=2")
    assert "classes" in str(info.value) + str(info.value.__cause__)


def test_a_misspelt_key_in_a_config_not_from_the_tree_fails_validation(compose_cfg) -> None:
    raw = OmegaConf.to_container(compose_cfg("experiment=smoke"))
    raw["stages"][0]["lr_rul"] = "steep"
    with pytest.raises(ConfigError, match="lr_rul"):
        validate(OmegaConf.create(raw))
    raw = OmegaConf.to_container(compose_cfg("experiment=smoke"))
    raw["data"]["classes"] = 2
    with pytest.raises(ConfigError, match="classes"):
        validate(OmegaConf.create(raw))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["stages.0.lr_rule=stepp"],
            "stages.0.lr_rule='stepp' is not valid; choose one of: " + ", ".join(RULES),
        ),
        (["lr_finder.suggest=foo"], "lr_finder.suggest='foo' is not valid; choose one of: "),
        (["lr_finder.mode=log"], "lr_finder.mode='log' is not valid; choose one of: exp, linear"),
        (["lr_finder.start_lr=1.0", "lr_finder.end_lr=0.5"], "lr_finder.start_lr=1.0"),
        (["lr_finder.num_iter=1"], "lr_finder.num_iter=1"),
        (["lr_finder.num_iter=2"], "lr_finder.num_iter=2 must be at least 8"),
        (["lr_finder.start_lr=1", "lr_finder.end_lr=1e6"], "lr_finder.start_lr=1.0 is too high"),
        (["lr_finder.start_lr=1e-3", "lr_finder.end_lr=1e-2"], "must be at least 100x"),
        (["lr_finder.end_lr=inf"], "(finite)"),
        (["lr=inf"], "stages.0.lr=inf must be a positive finite number"),
        (["stages.0.lr=nan"], "stages.0.lr=nan must be a positive finite number"),
        (["stages.0.lr_spread_mode=wide"], "choose one of: geometric, slice_hi"),
        (["stages.0.trainable=body"], "stages.0.trainable='body'"),
        (["data.classes=3"], "data.classes=3 is not valid for elpv; choose 4 or 2"),
        (["data.valid_pct=1.5"], "data.valid_pct=1.5"),
        (["data.valid_pct=0"], "data.valid_pct=0"),
        (["data.test_pct=-0.1"], "data.test_pct=-0.1 must be at least 0"),
        (["data.test_pct=1"], "data.test_pct=1"),
        (
            ["data.valid_pct=0.5", "data.test_pct=0.5"],
            "data.valid_pct=0.5 plus data.test_pct=0.5 must be below 1",
        ),
        (["data.batch_size=0"], "data.batch_size=0"),
        (["data.name=mnist"], "data.name='mnist' is not a data source; choose one of: elpv, digits"),
        (
            ["data=imagefolder", "data.root=/no/such/dir"],
            "data.root='/no/such/dir' is not an existing directory",
        ),
        (["data=imagefolder"], "data.root"),
        (["task=fit"], "task='fit' is not valid; choose one of: train, lr_find"),
        (["task=tran"], "(closest: train)"),
        (["train.tta=true"], "train.tta=true is not valid; choose one of: none, hflip, flips."),
        (["resume=/no/such/last.pt"], "resume='/no/such/last.pt' is not a file: pass resume=PATH/TO/"),
        (["tracking.backend=wandb"], "choose one of: mlflow, none"),
        (["lr=-1"], "stages.0.lr=-1.0 must be a positive finite number"),
    ],
)
def test_a_bad_value_fails_validation_naming_the_key(compose_cfg, overrides: list[str], message: str) -> None:
    cfg = compose_cfg(*overrides)
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    assert message in str(info.value)


def test_every_registered_source_has_a_data_option_extending_its_schema() -> None:
    for name in registered_sources():
        text = (CONF / "data" / f"{name}.yaml").read_text()
        assert f"- /data_{name}_schema" in text


def test_registering_the_schemas_imports_no_torch() -> None:
    """`lrlab --help`, `--cfg job` and tab completion compose the config: they should not pay for
    torch, or for numpy (0.12 s of `lrlab --help`'s 1.7 s before the data sources imported it lazily)."""
    code = "import sys, lrlab.app.cli; print(sorted({'torch', 'timm', 'numpy'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_every_data_source_has_valid_and_test_fractions(compose_cfg, tmp_path: Path) -> None:
    """The split keys are in every data option's composed config (so `--cfg job` shows them); ELPV
    and digits are 60/20/20; `test_pct=0` (no test split) validates."""
    for option in (o for g, o in OPTIONS if g == "data"):
        extra = [o.format(tmp=tmp_path) for o in NEEDS.get(("data", option), [])]
        data = compose_cfg(f"data={option}", *extra).data
        assert {"valid_pct", "test_pct", "split_seed"} <= set(data)
    for option in ("elpv", "digits"):
        data = compose_cfg(f"data={option}").data
        assert (data.valid_pct, data.test_pct) == (0.2, 0.2)
    assert validate(compose_cfg("experiment=smoke", "data.test_pct=0")).data.test_pct == 0


def test_stage_overrides_are_checked_against_the_composed_presets() -> None:
    from lrlab.app.cli import CONFIG_DIR, config_groups
    from lrlab.app.stage_overrides import stage_override_problem

    def problem(*args: str) -> str | None:
        return stage_override_problem(list(args), config_groups(), CONFIG_DIR)

    assert problem("experiment=smoke", "stages.0.lr=1e-3") is None
    assert problem("stages=gradual", "stages.2.lr_rule=steep", "stages.1.epochs=2") is None
    assert problem("lr=1e-3") is None
    missing = problem("stages=gradual", "stages.3.lr=1e-3")
    assert missing is not None and "3 stages (0 head, 1 from_body1, 2 all)" in missing
    assert "stages=gradual: 3" in missing and "stages=head_only: 1" in missing
    named = problem("stages=gradual", "stages.all.lr_spread=10")
    assert named is not None and named.startswith("stages.all.lr_spread: stages are numbered, not named")
    assert "stages.2.lr_spread" in named
    # Presets in a sweep are each composed; the message names the one that lacks the stage.
    swept = problem("-m", "stages=fine_tune,head_only,full", "tracking=none", "stages.1.lr=1e-2,1e-3")
    assert swept is not None and swept.startswith("stages.1.lr (with stages=head_only):")
    # Where the stages cannot be known up front, Hydra is left to report.
    assert problem("--config-dir", "/elsewhere", "stages.5.lr=1") is None
    assert problem("-m", "stages=choice(full,gradual)", "stages.2.lr=1") is None
    assert problem("model=nonexistent", "stages.5.lr=1") is None


def test_a_data_key_of_another_source_names_the_options_that_have_it() -> None:
    from lrlab.app.cli import CONFIG_DIR, config_groups
    from lrlab.app.data_overrides import data_key_problem
    from lrlab.data.registry import registered_sources

    sources = {name: source.config for name, source in registered_sources().items()}

    def problem(*args: str) -> str | None:
        return data_key_problem(list(args), config_groups(), CONFIG_DIR, sources)

    root = problem("experiment=smoke", "data.root=/cells")
    assert root is not None and root.startswith("data.root is not a key of data=digits: only data=cifar10,")
    assert "data=imagefolder" in root and "data=pets" in root and "data=mnist5k" not in root
    dataset = problem("data=mnist5k", "data.dataset=CIFAR10")
    assert dataset == (
        "data.dataset is not a key of data=mnist5k: only data=cifar10, data=pets, data=torchvision have "
        "it. Choose one of them with data=NAME; `lrlab --cfg job` lists every key with its value."
    )
    swept = problem("-m", "experiment=smoke,elpv", "data.root=/cells")
    assert swept is not None and swept.startswith(
        "data.root is not a key of data=digits (with experiment=smoke):"
    )
    # Keys every source has, the right source, and what Hydra reports better itself: nothing to say.
    assert problem("experiment=smoke", "data.image_size=16", "data.augment.hflip=0") is None
    assert problem("data=imagefolder", "data.root=/cells") is None
    assert problem("experiment=smoke", "data.no_such_key=1") is None
    assert problem("--config-dir", "/elsewhere", "experiment=smoke", "data.root=/cells") is None


def test_checkpoint_tasks_name_the_overrides_they_do_not_read() -> None:
    from lrlab.app.tasks import unused_overrides

    assert unused_overrides("train", ["model=resnet34", "epochs=3"]) == []
    given = ["task=predict", "checkpoint=a.pt", "input=x/", "device=cpu", "train.tta=hflip", "tracking=none"]
    assert (
        unused_overrides("predict", [*given, "trial.number=0", "data.batch_size=256", "data.num_workers=8"])
        == []
    )
    assert unused_overrides(
        "predict", [*given, "model=resnet34", "+epochs=3", "train.lr=1", "data.root=x"]
    ) == [
        "model=resnet34",
        "+epochs=3",
        "train.lr=1",
        "data.root=x",
    ]
    assert unused_overrides("evaluate", ["data=imagefolder", "data.root=r", "experiment=smoke"]) == [
        "experiment=smoke"
    ]
    assert unused_overrides("export", ["format=onnx", "device=cuda", "checkpointx=1"]) == [
        "device=cuda",
        "checkpointx=1",
    ]


@pytest.mark.parametrize(
    ("written", "meant"), [("16-mixed", "16"), ("bf16-mixed", "bf16"), ("32-true", "32")]
)
def test_lightnings_precision_names_mean_the_same_setting(compose_cfg, written: str, meant: str) -> None:
    assert validate(compose_cfg(f"precision={written}")).precision == meant


def test_pure_half_precision_is_refused_naming_the_mixed_one(compose_cfg) -> None:
    with pytest.raises(
        ConfigError, match=r"precision=bf16-true: lrlab trains mixed precision only.*use precision=bf16"
    ):
        validate(compose_cfg("precision=bf16-true"))
