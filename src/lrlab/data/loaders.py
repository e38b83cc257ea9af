"""Loaders: `TensorLoader` serves in-memory uint8 tensors (seeded order, batched augmentation and
normalisation on the training device); file datasets go through torch's DataLoader with timm's
transforms. Written by hand because DataLoader collates and transforms sample by sample."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from lrlab.data.augment import _affine_params, jitter
from lrlab.data.types import ImageSource, Normalization, TensorSplit


class TensorLoader:
    """Batches of an in-memory TensorSplit: seeded shuffling, batched augmentation, normalisation.

    Yields (float images normalised with the model's mean/std, 3 channels, labels) on `device`.
    The data order and augmentation depend only on `seed` and the number of epochs drawn so far.
    """

    def __init__(
        self,
        split: TensorSplit,
        batch_size: int,
        norm: Normalization,
        device: torch.device | str = "cpu",
        shuffle: bool = False,
        drop_last: bool = False,
        augment: Mapping[str, Any] | None = None,
        seed: int = 0,
    ):
        self.device = torch.device(device)
        self.images = split.images.to(self.device)
        self.labels = split.labels.to(self.device)
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.augment = dict(augment or {})
        self.generator = torch.Generator().manual_seed(seed)
        channels = len(norm.mean)
        self.mean = torch.tensor(norm.mean, device=self.device).view(1, channels, 1, 1) * 255
        self.std = torch.tensor(norm.std, device=self.device).view(1, channels, 1, 1) * 255
        self.channels = channels

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def _batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.images[index].float()
        if x.shape[1] != self.channels:
            x = x.expand(-1, self.channels, -1, -1)
        if self.augment:
            theta = _affine_params(len(index), self.augment, self.generator)
            if theta is not None:
                grid = F.affine_grid(theta.to(self.device), list(x.shape), align_corners=False)
                x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
            x = jitter(x, self.augment, self.generator)
        return (x - self.mean) / self.std, self.labels[index]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.labels)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        order = order.to(self.device)
        for i in range(len(self)):
            yield self._batch(order[i * self.batch_size : (i + 1) * self.batch_size])


def _timm_transform(norm: Normalization, image_size: int, training: bool, augment: Mapping[str, Any]) -> Any:
    from timm.data import create_transform

    kwargs: dict[str, Any] = dict(
        input_size=(3, image_size, image_size),
        is_training=training,
        mean=norm.mean,
        std=norm.std,
        interpolation=norm.interpolation,
    )
    if training:
        kwargs.update(
            hflip=float(augment.get("hflip", 0.5)),
            vflip=float(augment.get("vflip", 0.0)),
            scale=tuple(augment.get("scale") or (0.08, 1.0)),
        )
    return create_transform(**kwargs)


class Loaders(NamedTuple):
    """The loaders of a source: `train` (shuffled, augmented), `valid` (choices: checkpoints,
    early decisions, sweeps) and `test` (the once-only report; None without a test split)."""

    train: Any
    valid: Any
    test: Any = None


def make_loaders(
    source: ImageSource,
    cfg: Mapping[str, Any],
    norm: Normalization,
    device: torch.device | str = "cpu",
    seed: int = 0,
) -> Loaders:
    """Train, valid and test loaders for a source (`train, valid, test = make_loaders(...)`):
    TensorLoaders in memory, else DataLoaders with timm's transforms. `cfg` is a data config as a
    mapping (batch_size, augment, image_size, num_workers)."""
    batch_size, augment = int(cfg["batch_size"]), dict(cfg.get("augment") or {})
    held_out = [source.valid] + ([source.test] if source.test is not None else [])
    if isinstance(source.train, TensorSplit):
        train = TensorLoader(
            source.train,
            batch_size,
            norm,
            device,
            shuffle=True,
            drop_last=len(source.train) > batch_size,
            augment=augment,
            seed=seed,
        )
        return Loaders(train, *(TensorLoader(split, batch_size * 2, norm, device) for split in held_out))
    workers = int(cfg.get("num_workers", 0))
    pin = torch.device(device).type == "cuda"
    source.train.transform = _timm_transform(norm, cfg["image_size"], True, augment)
    train = DataLoader(
        source.train,
        batch_size=batch_size,
        shuffle=True,
        drop_last=len(source.train) > batch_size,
        generator=torch.Generator().manual_seed(seed),
        num_workers=workers,
        pin_memory=pin,
        persistent_workers=workers > 0,
    )
    evals = []
    for i, split in enumerate(held_out):
        split.transform = _timm_transform(norm, cfg["image_size"], False, augment)
        # valid is read every epoch: its workers persist; test is read once
        loader = DataLoader(
            split,
            batch_size * 2,
            shuffle=False,
            num_workers=workers,
            pin_memory=pin,
            persistent_workers=workers > 0 and i == 0,
        )
        evals.append(loader)
    return Loaders(train, *evals)
