"""training_curves.png: every step's loss, LR per layer group and gradient norm, each epoch's
valid loss, and where each stage started."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from lrlab.core.engine import Engine
from lrlab.core.schedules import one_cycle
from lrlab.data.loaders import TensorLoader
from lrlab.data.sources import load_digits
from lrlab.data.types import Normalization
from lrlab.train.curves import TrainingCurves


def test_curves_follow_every_step_and_epoch_of_two_fits_and_draw_them(tmp_path: Path) -> None:
    digits = load_digits(image_size=8)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    norm = Normalization((0.5,), (0.5,))
    train = TensorLoader(digits.train, 64, norm, shuffle=True, drop_last=True)
    valid = TensorLoader(digits.valid, 256, norm)
    curves = TrainingCurves()
    engine = Engine(model, log_every=5, callbacks=[curves])
    assert curves.save(tmp_path / "none.png") is None and not (tmp_path / "none.png").exists()
    assert curves._repr_png_() is None  # Jupyter shows nothing before the first step
    groups = [{"params": model[1].parameters(), "group_name": "body"}, {"params": model[3].parameters()}]
    opt = torch.optim.AdamW(groups, lr=1e-3)
    for stage, epochs in (("first", 1), ("second", 2)):
        schedule = one_cycle(opt, [1e-3, 1e-2], epochs * len(train))
        engine.fit(train, valid, opt, schedule, epochs=epochs, stage=stage)
    steps = 3 * len(train)  # 16 steps per epoch (1,077 training images in batches of 64)
    assert curves.steps == list(range(steps)) and len(curves.losses) == steps
    assert curves.stage_starts == [(0, "first"), (16, "second")]
    assert repr(curves) == "TrainingCurves(48 steps, 3 epochs, stages: first, second)"
    assert [at for at, _ in curves.epochs] == [16, 32, 48]
    assert [v for _, v in curves.epochs] == [r.valid_loss for r in engine.history]
    assert sorted(curves.lrs) == ["1", "body"] and len(curves.lrs["body"]) == steps
    assert max(lr for _, lr in curves.lrs["1"]) > 5 * max(lr for _, lr in curves.lrs["body"])
    assert len(curves.grad_norms) == steps and min(n for _, n in curves.grad_norms) > 0
    path = curves.save(tmp_path / "training_curves.png", "since the resume after epoch 1")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and curves._repr_png_()[:8] == path.read_bytes()[:8]


def test_a_frozen_layer_group_has_no_learning_rate_on_the_curves(digits) -> None:
    """In a head stage the body's optimizer groups still carry an LR; the curves draw only the
    groups the stage trains, so the body's line starts where the body is unfrozen."""
    from functools import partial

    from lrlab.core.optim import build_optimizer
    from lrlab.finder.config import FinderConfig
    from lrlab.models.factory import create_model, normalization
    from lrlab.models.groups import layer_groups
    from lrlab.train.stage import Stage
    from lrlab.train.stages import Training, run_stages

    torch.manual_seed(0)
    model = create_model("test_efficientnet", num_classes=10)
    groups = layer_groups(model, 2)
    train = TensorLoader(digits.train, 32, normalization(model), shuffle=True, drop_last=True, seed=0)
    valid = TensorLoader(digits.valid, 64, normalization(model))
    optimizer = build_optimizer(partial(torch.optim.AdamW), model, groups, lr=1e-3)
    curves = TrainingCurves()
    training = Training(groups, train, valid, optimizer, one_cycle, FinderConfig())
    stages = [Stage("head", 1, lr=1e-3, trainable="head"), Stage("all", 1, lr=1e-3, lr_spread=10)]
    run_stages(Engine(model, callbacks=[curves]), training, stages)
    steps = len(train)
    assert curves.stage_starts == [(0, "head"), (steps, "all")]
    assert [at for at, _ in curves.lrs["head"]] == list(range(2 * steps))
    for body in ("body0", "body1"):
        assert [at for at, _ in curves.lrs[body]] == list(range(steps, 2 * steps)), body


def test_an_early_stop_and_the_best_epoch_are_marked() -> None:
    from lrlab.core.monitor import EarlyStopping, Monitor
    from lrlab.core.schedules import constant

    digits = load_digits(image_size=8)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    norm = Normalization((0.5,), (0.5,))
    train, valid = TensorLoader(digits.train, 64, norm, shuffle=True), TensorLoader(digits.valid, 256, norm)
    curves = TrainingCurves()
    stopping = EarlyStopping(Monitor("accuracy", "min"), patience=1)  # accuracy rises: stops after epoch 2
    engine = Engine(model, callbacks=[stopping, curves])
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    engine.fit(train, valid, opt, constant(opt, [0.05], 10 * len(train)), epochs=10, stage="s")
    assert curves.early_stops == [engine.global_step] == [2 * len(train)]
    figure = curves.figure(best=(0, "best.pt: epoch 0, best accuracy"))
    loss_ax = figure.axes[0]
    (star,) = [line for line in loss_ax.get_lines() if line.get_label().startswith("best.pt")]
    assert (star.get_xdata()[0], star.get_ydata()[0]) == curves.epochs[0]
    assert "stopped early" in [text.get_text() for text in loss_ax.texts]
    assert (
        len(curves.figure(best=(7, "an epoch not drawn")).axes[0].get_lines()) == len(loss_ax.get_lines()) - 1
    )
