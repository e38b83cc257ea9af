"""The weight EMA (timm's ModelEmaV3): evaluation, checkpoints and the test split see the averaged
weights, training steps on its own, and settings the average cannot combine with are refused."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lrlab.core.ema import WeightAverage
from lrlab.core.engine import Engine
from lrlab.errors import ConfigError


def _problem(seed: int = 0) -> tuple[nn.Module, list[tuple[torch.Tensor, torch.Tensor]]]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))
    x = torch.randn(64, 12)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 1).long()
    return model, [(x[i : i + 16], y[i : i + 16]) for i in range(0, 64, 16)]


def test_swapping_keeps_the_training_weights_and_the_first_warm_update_copies_them() -> None:
    model, _ = _problem()
    average = WeightAverage(model, decay=0.99, warmup=True)
    with torch.no_grad():
        model[1].weight.add_(1.0)
    average.update(model, step=0)  # timm's warm-up: decay 0 at step 0, the average is the model
    torch.testing.assert_close(average.ema.module[1].weight, model[1].weight)
    trained = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model[1].weight.add_(1.0)
    average.update(model, step=1000)  # now near `decay`: the average moves ~1% of the way
    live = model[1].weight.clone()
    average.swap_in(model)
    assert average.averaged_in
    gap = (model[1].weight - trained["1.weight"]).abs().mean() / (live - trained["1.weight"]).abs().mean()
    assert 0 < gap < 0.05
    average.swap_in(model)  # twice is once: the training weights stay kept
    average.swap_out(model)
    torch.testing.assert_close(model[1].weight, live)
    assert not average.averaged_in


def test_the_engine_evaluates_the_average_and_trains_the_live_weights() -> None:
    model, batches = _problem(1)
    average = WeightAverage(model, decay=0.9)
    engine = Engine(model, average=average)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    engine.fit(batches, batches, optimizer, None, epochs=3)
    assert average.averaged_in  # after an epoch: the model holds the average
    held = engine.evaluate(batches)
    assert held == Engine(average.ema.module).evaluate(batches)  # what was evaluated is the average
    torch.testing.assert_close(model[1].weight, average.ema.module[1].weight)
    live = average.live["1.weight"].clone()
    assert not torch.equal(live, model[1].weight)
    engine.train_epoch(batches, optimizer)  # swaps the training weights back in before stepping
    assert not average.averaged_in and not torch.equal(model[1].weight, live)
    state = WeightAverage(model, decay=0.9)
    state.load_state_dict(average.state_dict())
    torch.testing.assert_close(state.ema.module[1].weight, average.ema.module[1].weight)


def test_the_ema_reaches_the_engine(compose_cfg) -> None:
    from lrlab.app.build import build, make_engine

    engine = make_engine(build(compose_cfg("experiment=smoke", "train.ema_decay=0.99", "tracking=none")), [])
    assert engine.average.ema.decay == pytest.approx(0.99)
    assert make_engine(build(compose_cfg("experiment=smoke", "tracking=none")), []).average is None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (("train.ema_decay=1",), r"train.ema_decay=1.0 is not valid"),
        (("train.ema_decay=0.99", "lr=auto"), r"stages.0.lr=auto is not supported"),
        (
            ("train.ema_decay=0.99", "optimizer=schedulefree_adamw", "schedule=constant", "lr=0.0025"),
            r"evaluates its own average",
        ),
    ],
)
def test_what_the_ema_cannot_combine_with_is_refused(compose_cfg, overrides, message) -> None:
    from lrlab.app.schema import validate

    with pytest.raises(ConfigError, match=message):
        validate(compose_cfg("experiment=smoke", *overrides))


def test_a_later_stages_range_test_runs_on_the_training_weights(compose_cfg, monkeypatch, tmp_path) -> None:
    """After the head stage the model holds the EMA; the unfrozen stage's range test must see the
    weights its training continues from."""
    import lrlab.train.stages as stages_module
    from lrlab.app.run import run_experiment

    seen: list[bool] = []
    real = stages_module.find_lr

    def spy(*args, **kwargs):
        seen.append(kwargs["engine"].average.averaged_in)
        return real(*args, **kwargs)

    monkeypatch.setattr(stages_module, "find_lr", spy)
    cfg = compose_cfg(
        "experiment=smoke",
        "stages=fine_tune",
        "freeze_epochs=1",
        "epochs=1",
        "stages.0.lr=0.01",
        "stages.1.lr=find",
        "lr_finder.num_iter=8",
        "train.ema_decay=0.9",
        "tracking=none",
        "train.checkpoints=false",
        "data.image_size=16",
    )
    run_experiment(cfg, tmp_path / "out", launch_dir=tmp_path)
    assert seen == [False]
