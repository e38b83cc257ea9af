"""Batched on-device augmentation: one random affine warp per image (crop scale, aspect,
translation, flips, quarter turns, small rotations) and brightness/contrast jitter, applied to a
whole batch at once. Written here because torchvision's v2 transforms work per sample on the CPU,
which dominates epochs on small in-memory images."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

IDENTITY = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


def affine_params(n: int, augment: Mapping[str, Any], generator: torch.Generator) -> torch.Tensor | None:
    """Random (n, 2, 3) affine matrices for crop-scale, flips, 90-degree turns and rotations of
    up to `rotate` degrees; None if all are off. After an odd number of quarter turns the output's
    x-extent is the crop's y-scale, so the translation bounds swap with it (the crop stays inside
    the image)."""
    hflip, vflip = float(augment.get("hflip", 0)), float(augment.get("vflip", 0))
    rot90, rotate = bool(augment.get("rot90", False)), float(augment.get("rotate", 0.0))
    scale = augment.get("scale") or [1.0, 1.0]
    lo, hi = float(scale[0]), float(scale[1])
    if hflip == 0 and vflip == 0 and not rot90 and lo >= 1.0 and rotate == 0:
        return None
    area = lo + (hi - lo) * torch.rand(n, generator=generator)
    log_ratio = (torch.rand(n, generator=generator) * 2 - 1) * math.log(4 / 3) if lo < 1.0 else torch.zeros(n)
    sx = (area * log_ratio.exp()).sqrt().clamp(max=1.0)
    sy = (area / log_ratio.exp()).sqrt().clamp(max=1.0)
    shift_x = torch.rand(n, generator=generator) * 2 - 1
    shift_y = torch.rand(n, generator=generator) * 2 - 1
    fx = torch.where(torch.rand(n, generator=generator) < hflip, -1.0, 1.0)
    fy = torch.where(torch.rand(n, generator=generator) < vflip, -1.0, 1.0)
    k = torch.randint(0, 4, (n,), generator=generator) if rot90 else torch.zeros(n, dtype=torch.int64)
    turned = k % 2 == 1
    tx = shift_x * (1 - torch.where(turned, sy, sx))
    ty = shift_y * (1 - torch.where(turned, sx, sy))
    cos = torch.tensor([1.0, 0.0, -1.0, 0.0])[k]
    sin = torch.tensor([0.0, 1.0, 0.0, -1.0])[k]
    if rotate > 0:
        angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(rotate)
        cos, sin = cos * angle.cos() - sin * angle.sin(), sin * angle.cos() + cos * angle.sin()
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = cos * sx * fx, -sin * sy * fy
    theta[:, 1, 0], theta[:, 1, 1] = sin * sx * fx, cos * sy * fy
    theta[:, 0, 2], theta[:, 1, 2] = tx, ty
    return theta


def warp(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Apply one (2, 3) affine matrix per image of `x` (bilinear, mirrored at the borders). When
    every matrix is a pure flip (the default hflip-only augmentation) the images are flipped by
    indexing instead: the same pixels, without resampling the batch."""
    if theta.abs().eq(IDENTITY).all():  # every matrix is the identity up to the signs of its diagonal
        mirror_x = theta[:, 0, 0].lt(0).to(x.device).view(-1, 1, 1, 1)
        mirror_y = theta[:, 1, 1].lt(0).to(x.device).view(-1, 1, 1, 1)
        x = torch.where(mirror_x, x.flip(-1), x)
        return torch.where(mirror_y, x.flip(-2), x)
    grid = F.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def jitter(
    x: torch.Tensor,
    augment: Mapping[str, Any],
    generator: torch.Generator,
    draws: int | None = None,
    rows: slice = slice(None),
) -> torch.Tensor:
    """Per-image contrast (around the image's mean) and brightness factors drawn from
    [1 - c, 1 + c] and [1 - b, 1 + b], on 0..255 pixel values; `x` unchanged when both are 0.
    A data-parallel shard of a batch draws for the whole batch (`draws` images) and keeps `rows`,
    so the generator advances as in one process."""
    brightness, contrast = float(augment.get("brightness", 0.0)), float(augment.get("contrast", 0.0))
    if brightness == 0 and contrast == 0:
        return x
    n = x.shape[0]
    c = (1 + (torch.rand(draws or n, generator=generator) * 2 - 1) * contrast)[rows]
    b = (1 + (torch.rand(draws or n, generator=generator) * 2 - 1) * brightness)[rows]
    c, b = c.view(n, 1, 1, 1).to(x.device), b.view(n, 1, 1, 1).to(x.device)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((x - mean) * c + mean).mul_(b).clamp_(0, 255)
