"""Batched on-device augmentation: one random affine warp per image (crop scale, aspect,
translation, flips, quarter turns) applied to a whole batch with `grid_sample`. Written here because
torchvision's v2 transforms work per sample on the CPU, which dominates epochs on small images."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch


def _affine_params(n: int, augment: Mapping[str, Any], generator: torch.Generator) -> torch.Tensor | None:
    """Random (n, 2, 3) affine matrices for crop-scale, flips and 90-degree turns; None if all off."""
    hflip, vflip = float(augment.get("hflip", 0)), float(augment.get("vflip", 0))
    rot90 = bool(augment.get("rot90", False))
    scale = augment.get("scale") or [1.0, 1.0]
    lo, hi = float(scale[0]), float(scale[1])
    if hflip == 0 and vflip == 0 and not rot90 and lo >= 1.0:
        return None
    area = lo + (hi - lo) * torch.rand(n, generator=generator)
    log_ratio = (torch.rand(n, generator=generator) * 2 - 1) * math.log(4 / 3) if lo < 1.0 else torch.zeros(n)
    sx = (area * log_ratio.exp()).sqrt().clamp(max=1.0)
    sy = (area / log_ratio.exp()).sqrt().clamp(max=1.0)
    tx = (torch.rand(n, generator=generator) * 2 - 1) * (1 - sx)
    ty = (torch.rand(n, generator=generator) * 2 - 1) * (1 - sy)
    fx = torch.where(torch.rand(n, generator=generator) < hflip, -1.0, 1.0)
    fy = torch.where(torch.rand(n, generator=generator) < vflip, -1.0, 1.0)
    k = torch.randint(0, 4, (n,), generator=generator) if rot90 else torch.zeros(n, dtype=torch.int64)
    cos = torch.tensor([1.0, 0.0, -1.0, 0.0])[k]
    sin = torch.tensor([0.0, 1.0, 0.0, -1.0])[k]
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = cos * sx * fx, -sin * sy * fy
    theta[:, 1, 0], theta[:, 1, 1] = sin * sx * fx, cos * sy * fy
    theta[:, 0, 2], theta[:, 1, 2] = tx, ty
    return theta
