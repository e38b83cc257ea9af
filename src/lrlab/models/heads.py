"""Heads for classes that are ordered levels (`model.head`), in place of timm's linear classifier:

- `classify`: timm's own linear head, one logit per class (the default);
- `regress`: one output, the level as a number in [0, 1] (class k of K is k / (K - 1)), trained
  with mean squared error and rounded to the nearest level, as Deitsch et al. (2018) train ELPV;
- `ordinal`: CORN (Shi et al., 2021), K - 1 conditional binary tasks "y > k given y > k - 1",
  whose products give rank-consistent class probabilities; its likelihood is the sum of the
  tasks' binary cross-entropies, so the usual cross-entropy on its output is CORN's loss.

Every head returns (N, K) class scores whose softmax is its class probabilities and whose argmax
is its predicted class, so evaluation, TTA, `task=predict`, the served model and the exported
graph work the same for all three. Written here because timm has no ordinal or regression heads.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional

from lrlab.core.losses import level_value
from lrlab.core.settings import HEADS


class OrdinalHead(nn.Module):
    """CORN: K - 1 logits f_k of P(y > k | y > k - 1), returned as class log-probabilities
    log P(y = k) = sum_{j<k} log sigmoid(f_j) + log sigmoid(-f_k) (the last class without the
    second term), which sum to 1 over the classes by construction."""

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_features, num_classes - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.fc(x)
        zero = torch.zeros_like(f[..., :1])
        above = torch.cat([zero, torch.cumsum(functional.logsigmoid(f), -1)], -1)  # log P(y > k - 1)
        return above + torch.cat([functional.logsigmoid(-f), zero], -1)


class RegressionHead(nn.Module):
    """One output r, the level on [0, 1], returned as scores -(r - level_k)^2 / (2 w^2) with
    w half the level spacing: their argmax is the nearest level and their softmax a Gaussian over
    the levels. `value` (`lrlab.core.losses.level_value`) recovers r from the scores for the
    squared-error loss."""

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_features, 1)
        self.register_buffer("levels", torch.linspace(0, 1, num_classes), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.fc(x)
        width = 0.5 / (len(self.levels) - 1)
        return -((r - self.levels.to(r.dtype)) ** 2) / (2 * width**2)

    value = staticmethod(level_value)


def attach_head(model: nn.Module, head: str, num_classes: int) -> nn.Module:
    """Replace the timm model's linear classifier by the `head` for `num_classes` ordered levels
    (`classify` leaves it); the new head sits where timm's was, so `get_classifier()` and the
    layer groups find it."""
    if head == "classify":
        return model
    if head not in HEADS:
        raise ValueError(f"model.head={head!r} is not one of {', '.join(HEADS)}")
    classifier = model.get_classifier()
    if not isinstance(classifier, nn.Linear):
        raise ValueError(
            f"model.head={head} replaces a linear classifier; {type(model).__name__}'s is "
            f"{type(classifier).__name__}"
        )
    module = (OrdinalHead if head == "ordinal" else RegressionHead)(classifier.in_features, num_classes)
    module.to(classifier.weight.device, classifier.weight.dtype)
    parent, name = _owner(model, classifier)
    setattr(parent, name, module)
    return model


def _owner(model: nn.Module, child: nn.Module) -> tuple[nn.Module, str]:
    """The module holding `child` as an attribute, and that attribute's name."""
    for path, module in model.named_modules():
        if module is child:
            parent_path, _, name = path.rpartition(".")
            return model.get_submodule(parent_path), name
    raise ValueError("the classifier is not a submodule of the model")
