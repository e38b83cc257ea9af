"""Mixup and CutMix of training batches (timm's Mixup): soft targets the training loss takes, the
smoothing folded in once, and the settings that cannot apply refused before any work."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lrlab.core.engine import Engine
from lrlab.core.losses import balanced_class_weights
from lrlab.core.mixing import batch_mixer
from lrlab.errors import ConfigError


def _batch(n: int = 8, classes: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return torch.rand(n, 3, 8, 8, generator=gen), torch.arange(n) % classes


def test_no_alpha_means_no_mixing() -> None:
    assert batch_mixer(4) is None and batch_mixer(4, 0.0, 0.0, prob=1.0) is None


def test_mixup_blends_each_image_with_the_reversed_batch_and_its_targets() -> None:
    torch.manual_seed(0)
    x, y = _batch()
    mixed, targets = batch_mixer(4, mixup_alpha=0.4)(x, y)
    assert targets.shape == (8, 4)
    torch.testing.assert_close(targets.sum(1), torch.ones(8))
    lam = float(targets[0, y[0]]) if y[0] != y[-1] else None
    assert lam is not None and 0 < lam < 1
    torch.testing.assert_close(mixed, lam * x + (1 - lam) * x.flip(0))
    assert torch.equal(x, _batch()[0])  # the loader's tensor is left as it was
    torch.testing.assert_close(targets[0, y[-1]], torch.tensor(1 - lam))


def test_cutmix_pastes_a_box_of_the_reversed_batch_and_smoothing_lifts_every_class() -> None:
    torch.manual_seed(1)
    x, y = _batch()
    mixed, targets = batch_mixer(4, cutmix_alpha=1.0, label_smoothing=0.1)(x, y)
    from_other = torch.isclose(mixed, x.flip(0)) & ~torch.isclose(mixed, x)
    kept = torch.isclose(mixed, x)
    assert from_other.any() and kept.any() and (from_other | kept).all()
    assert (targets > 0).all()  # smoothing gives each class at least 0.1 / 4
    torch.testing.assert_close(targets.sum(1), torch.ones(8))


def test_the_engine_trains_on_mixed_batches_with_class_weights() -> None:
    torch.manual_seed(2)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
    x, y = _batch(16)
    loss_fn = nn.CrossEntropyLoss(weight=balanced_class_weights(y, 4))  # soft targets and weights
    engine = Engine(model, loss_fn=loss_fn, batch_transform=batch_mixer(4, mixup_alpha=0.4))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    batches = iter([(x, y)] * 30)
    losses = [engine.step(batches, optimizer)[0].item() for _ in range(30)]
    assert all(torch.isfinite(torch.tensor(losses))) and sum(losses[-5:]) < sum(losses[:5])
    assert engine.evaluate([(x, y)]) == Engine(model).evaluate([(x, y)])  # evaluation never mixes


def test_mixing_reaches_the_engine_with_the_smoothing_moved_into_its_targets(compose_cfg) -> None:
    from lrlab.app.build import build, make_engine

    cfg = compose_cfg(
        "experiment=smoke", "train.mixup_alpha=0.2", "train.label_smoothing=0.1", "tracking=none"
    )
    engine = make_engine(build(cfg), [])
    mixup = engine.batch_transform.mixup
    assert mixup.mixup_alpha == pytest.approx(0.2) and mixup.label_smoothing == pytest.approx(0.1)
    assert engine.loss_fn.label_smoothing == 0.0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (("train.mixup_alpha=0.2", "model.head=regress", "train.label_smoothing=0"), r"head=regress"),
        (("train.cutmix_alpha=1", "train.ordinal_smoothing=0.5"), r"both set soft targets"),
        (("train.mixup_alpha=0.2", "data.batch_size=15"), r"even data.batch_size"),
        (("train.mix_prob=1.5",), r"train.mix_prob=1.5 is not valid"),
    ],
)
def test_what_mixing_cannot_apply_to_is_refused(compose_cfg, overrides, message) -> None:
    from lrlab.app.schema import validate

    with pytest.raises(ConfigError, match=message):
        validate(compose_cfg("experiment=smoke", *overrides))
