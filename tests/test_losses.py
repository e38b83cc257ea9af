"""The training loss: plain cross-entropy, or ordinal soft targets (SORD) when classes are levels."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lrlab.core.losses import OrdinalCrossEntropy, balanced_class_weights, ordinal_targets, training_loss


def test_ordinal_targets_are_gaussians_over_the_class_order() -> None:
    targets = ordinal_targets(4, 0.5)
    torch.testing.assert_close(targets.sum(1), torch.ones(4))
    torch.testing.assert_close(targets, targets.flip(0).flip(1))  # symmetric in the class order
    middle = targets[1]
    assert middle.argmax() == 1 and middle[0] == pytest.approx(middle[2]) and middle[2] > middle[3] > 0
    assert middle[1] == pytest.approx(
        1 / (1 + 2 * torch.exp(torch.tensor(-2.0)) + torch.exp(torch.tensor(-8.0)))
    )


def test_ordinal_loss_prefers_a_near_mistake_and_narrows_to_cross_entropy() -> None:
    loss = OrdinalCrossEntropy(4, 0.5)
    label = torch.tensor([0])
    near, far = torch.tensor([[0.0, 3.0, 0.0, 0.0]]), torch.tensor([[0.0, 0.0, 0.0, 3.0]])
    assert loss(near, label) < loss(far, label)
    assert nn.CrossEntropyLoss()(near, label) == pytest.approx(nn.CrossEntropyLoss()(far, label).item())
    logits, labels = torch.randn(8, 4, generator=torch.Generator().manual_seed(0)), torch.arange(8) % 4
    narrow = OrdinalCrossEntropy(4, 0.05, label_smoothing=0.1)
    plain = nn.CrossEntropyLoss(label_smoothing=0.1)
    assert narrow(logits, labels).item() == pytest.approx(plain(logits, labels).item(), rel=1e-6)


def test_the_config_picks_the_loss(compose_cfg) -> None:
    from lrlab.app.schema import validate
    from lrlab.errors import ConfigError

    assert isinstance(training_loss(4, 0.1, 0.0), nn.CrossEntropyLoss)
    assert isinstance(training_loss(4, 0.0, 0.5), OrdinalCrossEntropy)
    assert validate(compose_cfg("train.ordinal_smoothing=0.5")).train.ordinal_smoothing == 0.5
    with pytest.raises(
        ConfigError, match=r"train.ordinal_smoothing=-1.0 is not valid: it must be a number >= 0"
    ):
        validate(compose_cfg("train.ordinal_smoothing=-1"))


def test_balanced_class_weights_give_every_class_the_same_total_weight() -> None:
    labels = torch.tensor([0] * 6 + [1] * 3 + [3] * 1)  # class 2 is absent
    weights = balanced_class_weights(labels, 4)
    torch.testing.assert_close(weights, torch.tensor([10 / 24, 10 / 12, 0.0, 10 / 4]))
    totals = torch.bincount(labels, minlength=4) * weights
    assert totals[0] == pytest.approx(totals[1].item()) == pytest.approx(totals[3].item())


def test_class_weights_reach_both_losses() -> None:
    logits = torch.randn(8, 4, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 0, 0, 0, 0, 1, 2, 3])
    weights = balanced_class_weights(labels, 4)
    weighted = training_loss(4, class_weights=weights)(logits, labels)
    per_row = nn.functional.cross_entropy(logits, labels, reduction="none")
    assert weighted.item() == pytest.approx(
        (per_row * weights[labels]).sum().item() / weights[labels].sum().item()
    )
    assert weighted.item() != pytest.approx(training_loss(4)(logits, labels).item())
    ordinal = training_loss(4, ordinal_sigma=0.5, class_weights=weights)
    assert ordinal.weight is not None and ordinal(logits, labels).item() != pytest.approx(
        training_loss(4, ordinal_sigma=0.5)(logits, labels).item()
    )


def test_data_balance_weights_builds_the_weighted_training_loss(compose_cfg, caplog) -> None:
    """`data.balance=weights` on ELPV: the engine's loss carries the train split's balanced
    weights (rarest class heaviest), printed per class; `none` leaves the plain loss."""
    import logging

    from lrlab.app.build import build, make_engine

    logger = logging.getLogger("lrlab")
    logger.addHandler(caplog.handler)  # Hydra's job logging may have stopped propagation
    try:
        with caplog.at_level(logging.INFO, logger="lrlab"):
            setup = build(compose_cfg("data.balance=weights", "data.image_size=32", "model.pretrained=false"))
    finally:
        logger.removeHandler(caplog.handler)
    engine = make_engine(setup, [])
    weights = engine.loss_fn.weight
    assert weights is not None and int(weights.argmax()) == setup.class_names.index("p=2/3")
    assert "training loss weights per class" in caplog.text and "p=2/3 " in caplog.text
    assert (
        make_engine(build(compose_cfg("data.image_size=32", "model.pretrained=false")), []).loss_fn.weight
        is None
    )
