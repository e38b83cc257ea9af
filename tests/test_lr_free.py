"""The learning-rate-free optimizers: Schedule-Free AdamW is stepped on its training weights and
evaluated and saved on its averaged weights (BatchNorm statistics recomputed under them),
Prodigy trains like Adam, and the config refuses what makes no sense for them."""

from __future__ import annotations

from functools import partial

import prodigyopt
import pytest
import schedulefree
import torch

from lrlab.app.schema import validate
from lrlab.core.engine import Engine
from lrlab.core.lr_free import has_modes, refresh_norm_statistics
from lrlab.core.optim import build_optimizer
from lrlab.core.schedules import constant
from lrlab.data.loaders import TensorLoader
from lrlab.data.sources import load_digits
from lrlab.errors import ConfigError
from lrlab.models.factory import create_model, normalization
from lrlab.models.groups import layer_groups


def _digits(optimizer_factory, seed: int = 0):
    torch.manual_seed(seed)
    source = load_digits(image_size=8)
    model = create_model("test_efficientnet", num_classes=10)
    norm = normalization(model)
    train = TensorLoader(source.train, 32, norm, shuffle=True, drop_last=True, seed=seed)
    valid = TensorLoader(source.valid, 64, norm)
    optimizer = build_optimizer(
        optimizer_factory, model, layer_groups(model, 2), lr=optimizer_factory.keywords["lr"]
    )
    return model, train, valid, optimizer


def test_schedule_free_evaluates_and_ends_on_its_averaged_weights() -> None:
    factory = partial(schedulefree.AdamWScheduleFree, lr=0.0025, weight_decay=0.01)
    model, train, valid, optimizer = _digits(factory)
    assert has_modes(optimizer) and not has_modes(torch.optim.AdamW(model.parameters()))
    engine = Engine(model)
    (epoch,) = engine.fit(train, valid, optimizer, constant(optimizer, [0.0025] * 6, len(train)), 1)
    assert not any(g["train_mode"] for g in optimizer.param_groups), "left in eval mode after fitting"
    averaged = {k: v.clone() for k, v in model.state_dict().items()}
    assert engine.evaluate(valid)["valid_loss"] == epoch.valid_loss  # the table row read these weights
    optimizer.train()
    moved = [k for k, v in model.state_dict().items() if not torch.equal(v, averaged[k])]
    assert moved, "training weights differ from the averaged ones"
    optimizer.eval()
    assert engine.evaluate(valid)["valid_loss"] == pytest.approx(epoch.valid_loss, rel=1e-6)


def test_norm_statistics_are_recomputed_but_held_layers_are_left_alone() -> None:
    factory = partial(torch.optim.AdamW, lr=1e-3)
    model, train, _, _ = _digits(factory)
    engine = Engine(model)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    held, free = norms[0], norms[-1]
    engine.hold_in_eval([held])
    before = {id(m): m.running_mean.clone() for m in norms}
    refresh_norm_statistics(engine, train, batches=3)
    assert torch.equal(held.running_mean, before[id(held)])
    assert not torch.equal(free.running_mean, before[id(free)])
    assert free.num_batches_tracked.item() == 3 and free.momentum == 0.1 and not model.training


def test_prodigy_estimates_its_step_and_lowers_the_loss(capsys, caplog) -> None:
    factory = partial(prodigyopt.Prodigy, lr=1.0, weight_decay=0.01, safeguard_warmup=True, decouple=True)
    with caplog.at_level("DEBUG", logger="lrlab"):
        model, train, valid, optimizer = _digits(factory)
    # Prodigy's own print of its settings goes to lrlab's debug log, not the console.
    assert "decoupled" not in capsys.readouterr().out and "decoupled weight decay" in caplog.text
    engine = Engine(model)
    start = engine.evaluate(valid)["valid_loss"]
    results = engine.fit(train, valid, optimizer, constant(optimizer, [1.0] * 6, len(train)), 3)
    assert results[-1].valid_loss < start
    assert optimizer.param_groups[0]["d"] > 1e-6  # grew from its d0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (("optimizer=prodigy",), r"stages\.0\.lr=find does not apply to optimizer=prodigy.*lr=1"),
        (("optimizer=prodigy", "lr=1", "task=lr_find"), r"task=lr_find does not apply to optimizer=prodigy"),
        (("optimizer=schedulefree_adamw", "lr=0.0025"), r"replaces the LR schedule.*schedule=constant"),
        (
            ("optimizer=prodigy", "lr=1", "stages=fine_tune"),
            r"stages\.1\.lr_spread=100 does not apply.*lr_spread=1",
        ),
        (("optimizer=schedulefree_adamw", "schedule=constant"), r"lr=find does not apply.*lr=0\.0025"),
        (("optimizer=prodigy", "lr=1", "schedule=one_cycle"), r"one_cycle does not suit.*schedule=constant"),
    ],
)
def test_what_makes_no_sense_for_an_lr_free_optimizer_is_refused(compose_cfg, overrides, message) -> None:
    with pytest.raises(ConfigError, match=message):
        validate(compose_cfg("experiment=smoke", "lr=find", *overrides))


def test_lr_free_optimizers_compose_with_what_they_need(compose_cfg) -> None:
    validate(compose_cfg("experiment=smoke", "optimizer=prodigy", "schedule=constant", "lr=1"))
    validate(compose_cfg("experiment=smoke", "optimizer=prodigy", "schedule=cosine", "lr=1"))
    validate(
        compose_cfg("experiment=smoke", "optimizer=schedulefree_adamw", "schedule=constant", "lr=0.0025")
    )
    validate(compose_cfg("optimizer=prodigy", "schedule=constant", "lr=1", "lr_spread=1"))  # ELPV, staged


def test_choosing_an_lr_free_optimizer_brings_the_settings_it_runs_with(compose_cfg) -> None:
    """`optimizer=prodigy` alone (on the default staged ELPV problem, and with a preset that sets
    its own lr) composes into a config the check accepts; what the command line sets is kept, and a
    sweep over optimizers or an lr a search preset searches gets nothing added."""
    from lrlab.app.lr_free import complete_lr_free_args

    for start in (
        ["optimizer=prodigy"],
        ["experiment=smoke", "optimizer=prodigy"],
        ["optimizer=schedulefree_adamw"],
    ):
        args, added = complete_lr_free_args(start)
        assert added and args[-len(start) :] == start
        cfg = validate(compose_cfg(*args))
        assert cfg.schedule._target_.endswith(".constant")
        assert cfg.lr == (1 if "optimizer=prodigy" in start else 0.0025)
    args, added = complete_lr_free_args(["optimizer=prodigy", "schedule=cosine", "lr=0.5", "--cfg", "job"])
    assert added == ["lr_spread=1"] and args == [
        "lr_spread=1",
        "optimizer=prodigy",
        "schedule=cosine",
        "lr=0.5",
        "--cfg",
        "job",
    ]
    assert validate(compose_cfg(*args[:-2])).lr == 0.5
    assert complete_lr_free_args(["optimizer=adamw"]) == (["optimizer=adamw"], [])
    assert complete_lr_free_args(["-m", "optimizer=prodigy,adamw"])[1] == []
    assert complete_lr_free_args(["-m", "optimizer=prodigy", "search=lr"])[1] == [
        "schedule=constant",
        "lr_spread=1",
    ]
