"""The training loss: plain cross-entropy, or ordinal soft targets (SORD) when classes are levels."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lrlab.core.losses import OrdinalCrossEntropy, ordinal_targets, training_loss


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
