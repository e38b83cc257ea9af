"""Mixup and CutMix of training batches through timm's `Mixup`: it mixes each batch with its
reverse and returns soft targets (label smoothing folded in), which torch's cross-entropy takes."""

from __future__ import annotations

from collections.abc import Callable

import torch
from timm.data import Mixup

BatchTransform = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class BatchMixer:
    """timm's `Mixup` on a copy of each batch: it mixes in place, and a loader given to the engine
    may yield tensors it keeps (a list of batches, a cached tensor), which must stay unmixed."""

    def __init__(self, mixup: Mixup) -> None:
        self.mixup = mixup

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mixup(x.clone(), y)


def batch_mixer(
    num_classes: int,
    mixup_alpha: float = 0.0,
    cutmix_alpha: float = 0.0,
    prob: float = 1.0,
    label_smoothing: float = 0.0,
) -> BatchMixer | None:
    """timm's batch-wise Mixup/CutMix (Beta(alpha, alpha) mixing weights; with both alphas > 0, one
    or the other per batch, half the time each) applied to a share `prob` of the batches, or None
    when both alphas are 0. Batches must have an even number of images (timm mixes halves)."""
    if mixup_alpha <= 0 and cutmix_alpha <= 0:
        return None
    return BatchMixer(
        Mixup(
            mixup_alpha=mixup_alpha,
            cutmix_alpha=cutmix_alpha,
            prob=prob,
            switch_prob=0.5,
            mode="batch",
            label_smoothing=label_smoothing,
            num_classes=num_classes,
        )
    )
