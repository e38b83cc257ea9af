"""Training losses: cross-entropy, optionally against soft targets for ordered classes, and
optionally class-weighted (`data.balance=weights`).

Written here because torch's cross-entropy takes soft targets but does not build them from a class
order; SORD (Diaz & Marathe, CVPR 2019) is the method, with a Gaussian over class steps.
"""

from __future__ import annotations

import torch
from torch import nn


def ordinal_targets(num_classes: int, sigma: float) -> torch.Tensor:
    """(classes, classes) soft targets: row y is a Gaussian of width `sigma` (in class steps) around
    class y over the class order, normalised to sum to 1."""
    steps = torch.arange(num_classes, dtype=torch.float32)
    weights = torch.exp(-((steps[None, :] - steps[:, None]) ** 2) / (2 * sigma**2))
    return weights / weights.sum(dim=1, keepdim=True)


def balanced_class_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per-class weights n / (classes x n_c), scikit-learn's "balanced": every class then weighs
    as much in total as any other; a class absent from `labels` gets weight 0."""
    counts = torch.bincount(labels.long().cpu(), minlength=num_classes).float()
    return torch.where(counts > 0, counts.sum() / (num_classes * counts.clamp(min=1)), torch.zeros(()))


class OrdinalCrossEntropy(nn.Module):
    """Cross-entropy against `ordinal_targets`: confusing a class with its neighbour costs less than
    with a far class, for labels that are ordered levels (ELPV's defect probabilities 0, 1/3, 2/3, 1).
    `label_smoothing` mixes in the uniform distribution as torch's cross-entropy does; `weight`
    scales each class's term as in torch's cross-entropy."""

    def __init__(
        self,
        num_classes: int,
        sigma: float,
        label_smoothing: float = 0.0,
        weight: torch.Tensor | None = None,
    ):
        super().__init__()
        self.register_buffer("targets", ordinal_targets(num_classes, sigma))
        self.register_buffer("weight", weight)
        self.label_smoothing = label_smoothing

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(
            logits, self.targets[labels], weight=self.weight, label_smoothing=self.label_smoothing
        )


def level_value(scores: torch.Tensor) -> torch.Tensor:
    """The level r in [0, 1] behind the regression head's (N, K) scores -(r - k/(K-1))^2 / (2 w^2),
    w half the spacing d: s_1 - s_0 = (2r - d) d / (2 w^2) (`lrlab.models.heads.RegressionHead`)."""
    spacing = 1.0 / (scores.shape[-1] - 1)
    width = spacing / 2
    return ((scores[..., 1] - scores[..., 0]) * 2 * width**2 / spacing + spacing) / 2


class LevelRegressionLoss(nn.Module):
    """Squared error between the regression head's level (`level_value`) and the true class's
    level k / (K - 1); `weight` (per class, e.g. balanced) weights each image's term by its class."""

    def __init__(self, num_classes: int, weight: torch.Tensor | None = None) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.register_buffer("weight", weight)

    def forward(self, scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        errors = (level_value(scores.float()) - labels.float() / (self.num_classes - 1)) ** 2
        if self.weight is None:
            return errors.mean()
        weights = self.weight[labels]
        return (errors * weights).sum() / weights.sum()


def training_loss(
    num_classes: int,
    label_smoothing: float = 0.0,
    ordinal_sigma: float = 0.0,
    class_weights: torch.Tensor | None = None,
    head: str = "classify",
) -> nn.Module:
    """The training loss a config asks for: plain cross-entropy (with label smoothing), or with
    `ordinal_sigma > 0` the ordinal soft-target cross-entropy; `class_weights` (e.g.
    `balanced_class_weights`) weight each class's term. `head="regress"` (`model.head`): the
    squared error of the predicted level; the `ordinal` head's cross-entropy is its own loss."""
    if head == "regress":
        return LevelRegressionLoss(num_classes, class_weights)
    if ordinal_sigma > 0:
        return OrdinalCrossEntropy(num_classes, ordinal_sigma, label_smoothing, class_weights)
    return nn.CrossEntropyLoss(weight=class_weights, label_smoothing=label_smoothing)
