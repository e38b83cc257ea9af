"""Batched augmentation: crops stay inside the image after quarter turns, small rotations,
brightness/contrast jitter; evaluation with flip test-time augmentation; label smoothing."""

from __future__ import annotations

import math

import pytest
import timm
import torch
from torch import nn

from lrlab.core.engine import Engine
from lrlab.core.losses import OrdinalCrossEntropy
from lrlab.data.augment import affine_params, jitter, warp
from lrlab.models.checkpoint import ProbabilityModel


def _corners(theta: torch.Tensor) -> torch.Tensor:
    """Where the output image's four corners sample the input, in [-1, 1] coordinates."""
    corners = torch.tensor([[-1.0, -1.0, 1.0], [1.0, -1.0, 1.0], [-1.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
    return torch.einsum("nij,cj->nci", theta, corners)


def test_crops_stay_inside_the_image_after_quarter_turns() -> None:
    """A narrow crop turned by 90 degrees has its long side along the other axis: the translation
    bound must swap with it, or the crop reads outside the image (filled by mirroring)."""
    gen = torch.Generator().manual_seed(0)
    theta = affine_params(4000, {"rot90": True, "scale": [0.3, 0.6]}, gen)
    inside = _corners(theta).abs().amax(dim=(1, 2)) <= 1 + 1e-6
    assert inside.all(), f"{(~inside).sum()} of 4000 crops read outside the image"


def test_without_turns_the_warp_and_its_random_stream_are_unchanged() -> None:
    """Adding turns and rotations did not change what flips + crops draw (reproducible results)."""
    aug = {"hflip": 0.5, "vflip": 0.5, "scale": [0.8, 1.0]}
    a = affine_params(64, aug, torch.Generator().manual_seed(1))
    b = affine_params(64, {**aug, "rot90": False, "rotate": 0.0}, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert torch.allclose(a[:, 0, 1], torch.zeros(64)) and torch.allclose(a[:, 1, 0], torch.zeros(64))


def test_small_rotations_stay_within_the_bound() -> None:
    theta = affine_params(2000, {"rotate": 3.0}, torch.Generator().manual_seed(2))
    angles = torch.atan2(theta[:, 1, 0], theta[:, 0, 0])
    assert angles.abs().max() <= math.radians(3.0) + 1e-6
    assert angles.abs().max() > math.radians(2.5) and angles.std() > math.radians(1.0)


def test_jitter_scales_brightness_and_contrast_within_bounds() -> None:
    x = torch.rand(500, 1, 8, 8) * 100 + 50
    gen = torch.Generator().manual_seed(3)
    assert jitter(x, {}, gen) is x
    bright = jitter(x.clone(), {"brightness": 0.2}, torch.Generator().manual_seed(3))
    ratio = bright.mean(dim=(1, 2, 3)) / x.mean(dim=(1, 2, 3))
    assert ratio.min() >= 0.8 - 1e-5 and ratio.max() <= 1.2 + 1e-5 and ratio.std() > 0.05
    contrast = jitter(x.clone(), {"contrast": 0.3}, torch.Generator().manual_seed(3))
    spread = contrast.std(dim=(1, 2, 3)) / x.std(dim=(1, 2, 3))
    assert spread.min() >= 0.7 - 1e-4 and spread.max() <= 1.3 + 1e-4
    assert torch.allclose(contrast.mean(dim=(1, 2, 3)), x.mean(dim=(1, 2, 3)), atol=1e-3)


class _LeftHalf(nn.Module):
    """A model whose two logits are the mean of the left and right image halves: its prediction
    flips with the image, so flip TTA must average the two views."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = x.shape[-1] // 2
        return torch.stack([x[..., :w].mean(dim=(1, 2, 3)), x[..., w:].mean(dim=(1, 2, 3))], 1) * 10


def test_flip_tta_averages_probabilities_of_the_image_and_its_mirror() -> None:
    x = torch.zeros(2, 1, 4, 4)
    x[0, ..., :2] = 1.0  # bright left half
    x[1, ..., 2:] = 0.2  # dim right half
    y = torch.tensor([0, 1])
    plain = Engine(_LeftHalf()).evaluate([(x, y)])
    tta = Engine(_LeftHalf(), tta="hflip").evaluate([(x, y)])
    assert plain["accuracy"] == 1.0
    # averaged over both views each image is ambiguous: p = 0.5 for both classes, loss log 2
    assert tta["valid_loss"] == pytest.approx(math.log(2), rel=1e-5)
    with pytest.raises(Exception, match="tta"):
        Engine(_LeftHalf(), tta="vflip")


class _TopHalf(nn.Module):
    """As _LeftHalf for the top and bottom halves: a mirror keeps its prediction, flipping it upside
    down swaps it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.shape[-2] // 2
        return torch.stack([x[..., :h, :].mean(dim=(1, 2, 3)), x[..., h:, :].mean(dim=(1, 2, 3))], 1) * 10


def test_flips_tta_also_averages_the_image_upside_down() -> None:
    x = torch.zeros(2, 1, 4, 4)
    x[0, :, :2, :] = 1.0  # bright top half
    x[1, :, 2:, :] = 0.2  # dim bottom half
    y = torch.tensor([0, 1])
    mirrored = Engine(_TopHalf(), tta="hflip").evaluate([(x, y)])
    assert mirrored["accuracy"] == 1.0 and mirrored["valid_loss"] < 0.2  # a mirror changes nothing here
    flips = Engine(_TopHalf(), tta="flips").evaluate([(x, y)])
    assert flips["valid_loss"] == pytest.approx(math.log(2), rel=1e-5)  # 2 views each way: p = 0.5


@pytest.mark.parametrize("tta", ["hflip", "flips"])
def test_the_engine_and_the_prediction_model_apply_a_tta_alike(tta: str) -> None:
    """The test split (the engine) and every prediction path (ProbabilityModel) average the same views."""
    torch.manual_seed(0)
    model = timm.create_model("test_efficientnet", num_classes=5).eval()
    x = torch.randn(6, 3, 32, 32)
    scored = Engine(model, tta=tta, progress=False)._eval_scores(x).softmax(1)
    assert torch.allclose(scored, ProbabilityModel(model, tta)(x), atol=1e-6)
    assert not torch.allclose(scored, model(x).softmax(1), atol=1e-3)


def test_label_smoothing_and_tta_reach_the_engine(compose_cfg) -> None:
    from lrlab.app.build import build, make_engine

    cfg = compose_cfg("experiment=smoke", "train.label_smoothing=0.1", "train.tta=hflip", "tracking=none")
    setup = build(cfg)
    engine = make_engine(setup, [])
    assert engine.loss_fn.label_smoothing == pytest.approx(0.1) and engine.tta == "hflip"
    setup.cfg.train.ordinal_smoothing = 0.5
    ordinal = make_engine(setup, []).loss_fn
    assert isinstance(ordinal, OrdinalCrossEntropy) and ordinal.targets.shape == (10, 10)
    assert ordinal.label_smoothing == pytest.approx(0.1)


def test_pure_flips_are_indexed_and_match_resampling() -> None:
    """hflip/vflip alone take the indexing path of `warp`; it gives the pixels grid_sample gives."""
    gen = torch.Generator().manual_seed(4)
    x = torch.rand(16, 3, 9, 7, generator=gen) * 255
    theta = affine_params(16, {"hflip": 0.5, "vflip": 0.5}, gen)
    assert (theta[:, 0, 0] < 0).any() and (theta[:, 1, 1] < 0).any() and (theta[:, 0, 0] > 0).any()
    grid = torch.nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
    resampled = torch.nn.functional.grid_sample(x, grid, padding_mode="reflection", align_corners=False)
    flipped = warp(x, theta)
    torch.testing.assert_close(flipped, resampled, atol=1e-3, rtol=0)
    mirrored = theta[:, 0, 0] < 0
    assert torch.equal(flipped[mirrored & (theta[:, 1, 1] > 0)], x[mirrored & (theta[:, 1, 1] > 0)].flip(-1))
    scaled = affine_params(16, {"hflip": 0.5, "scale": [0.5, 0.9]}, gen)
    grid = torch.nn.functional.affine_grid(scaled, list(x.shape), align_corners=False)
    expected = torch.nn.functional.grid_sample(x, grid, padding_mode="reflection", align_corners=False)
    assert torch.equal(warp(x, scaled), expected)
