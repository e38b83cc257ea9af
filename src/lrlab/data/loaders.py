"""Loaders: `TensorLoader` serves in-memory uint8 tensors (seeded order, batched augmentation and
normalisation on the training device); file datasets go through torch's DataLoader with timm's
transforms. Written by hand because DataLoader collates and transforms sample by sample."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

import torch
from torch.utils.data import DataLoader

from lrlab.core.launch import launched_local_world_size
from lrlab.data.augment import affine_params, jitter, warp
from lrlab.data.decode import usable_cores
from lrlab.data.types import ImageSource, Normalization, TensorSplit, split_labels
from lrlab.errors import LrlabError


def check_global_batch(batch_size: int, world: int) -> None:
    """Fail early when the global batch does not split evenly across `world` processes."""
    if batch_size % world:
        raise LrlabError(
            f"data.batch_size={batch_size} is the global batch of all {world} processes together "
            f"and must be a multiple of {world}, e.g. data.batch_size={world * max(1, batch_size // world)}."
        )


MAX_AUTO_WORKERS = 16


def loader_workers(setting: Any, device: torch.device | str) -> int:
    """DataLoader workers for `data.num_workers`: the number given; for `auto`, 2 on the CPU (the
    training threads need the cores) and on CUDA this process's share of the usable cores (torchrun's
    LOCAL_WORLD_SIZE processes share them) less one for the process itself, at most 16. One worker
    decodes and transforms 250-280 ELPV images/s at 300 px on a 2-core Xeon
    (benchmarks/loader_speed.py), so a GPU needs many."""
    if setting != "auto":
        return int(setting)
    if torch.device(device).type != "cuda":
        return 2
    share = usable_cores() // max(1, launched_local_world_size())
    return max(1, min(MAX_AUTO_WORKERS, share - 1))


class TensorLoader:
    """Batches of an in-memory TensorSplit: seeded shuffling, batched augmentation, normalisation.

    Yields (float images normalised with the model's mean/std, 3 channels, labels) on `device`.
    The data order and augmentation depend only on `seed` and the number of epochs drawn so far.
    `sample_weights` (training): each epoch draws `len(split)` rows with replacement, with these
    probabilities (`data.balance=sampler`), instead of a permutation.

    `shard=(rank, world)` gives one of `world` processes its part (data-parallel training):
    - `split_batches=True` (training): every rank draws the same seeded global order and the same
      augmentation as one process would, cuts the same global batches of `batch_size` and keeps
      rows `rank::world` of each, `batch_size // world` rows; a last partial batch is padded from
      the start of the order to a multiple of `world`. Every rank yields `len(self)` batches, and
      together the ranks' batches are exactly one process's batches;
    - `split_batches=False` (evaluation): rank r takes rows r, r + world, ... of the (unshuffled)
      split in batches of `ceil(batch_size / world)`: disjoint, together the whole split, counts
      differing by at most one batch, for metrics whose sums are all-reduced.
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
        shard: tuple[int, int] = (0, 1),
        split_batches: bool = True,
        sample_weights: torch.Tensor | None = None,
    ):
        self.rank, self.world = shard
        self.sample_weights = sample_weights
        if split_batches:
            check_global_batch(batch_size, self.world)
        self.split_batches = split_batches
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

    def _rows_per_batch(self) -> tuple[int, int]:
        """(rows this process reads, batch size it reads them in): the whole split, or its shard."""
        n = len(self.labels)
        if self.world == 1 or self.split_batches:
            return n, self.batch_size
        return len(range(self.rank, n, self.world)), math.ceil(self.batch_size / self.world)

    def __len__(self) -> int:
        n, batch_size = self._rows_per_batch()
        return n // batch_size if self.drop_last else math.ceil(n / batch_size)

    def _batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch of rows `index`; when splitting batches, this rank's rows of it, augmented by
        the draws one process would make for the whole batch."""
        n = len(index)
        mine = slice(self.rank, None, self.world) if self.world > 1 and self.split_batches else slice(None)
        index = index[mine]
        x = self.images[index].float()
        if x.shape[1] != self.channels:
            x = x.expand(-1, self.channels, -1, -1)
        if self.augment:
            theta = affine_params(n, self.augment, self.generator)
            if theta is not None:
                x = warp(x, theta[mine])
            x = jitter(x, self.augment, self.generator, n, mine)
        return (x - self.mean) / self.std, self.labels[index]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.labels)
        order = _draw_order(n, self.generator, self.sample_weights) if self.shuffle else torch.arange(n)
        order = order.to(self.device)
        if self.world > 1 and not self.split_batches:
            order = order[self.rank :: self.world]
        batch_size = self._rows_per_batch()[1]
        for i in range(len(self)):
            index = order[i * batch_size : (i + 1) * batch_size]
            if self.world > 1 and self.split_batches and len(index) % self.world:
                index = torch.cat([index, order[: self.world - len(index) % self.world]])
            yield self._batch(index)


def _draw_order(n: int, generator: torch.Generator, weights: torch.Tensor | None) -> torch.Tensor:
    """One epoch's training order: a permutation, or with `weights` n rows drawn with replacement
    in proportion to them (class-balanced sampling)."""
    if weights is None:
        return torch.randperm(n, generator=generator)
    return torch.multinomial(weights, n, replacement=True, generator=generator)


def balanced_sample_weights(source: ImageSource) -> torch.Tensor:
    """Each training image's draw weight for `data.balance=sampler`: its class's balanced weight,
    so every class is drawn equally often on average."""
    from lrlab.core.losses import balanced_class_weights

    labels = split_labels(source.train)
    return balanced_class_weights(labels, source.num_classes)[labels]


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
    shard: tuple[int, int] = (0, 1),
) -> Loaders:
    """Train, valid and test loaders for a source (`train, valid, test = make_loaders(...)`):
    TensorLoaders in memory, else DataLoaders with timm's transforms. `cfg` is a data config as a
    mapping (batch_size, augment, image_size, num_workers). `shard=(rank, world)`: this process's
    part for data-parallel training: `batch_size` is the global batch, each
    process trains on its rows of every global batch and validates on its rows of valid; test is
    whole (one process reports it). `cfg["balance"] == "sampler"` draws training images
    class-balanced (`balanced_sample_weights`)."""
    batch_size, augment = int(cfg["batch_size"]), dict(cfg.get("augment") or {})
    weights = balanced_sample_weights(source) if cfg.get("balance") == "sampler" else None
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
            shard=shard,
            sample_weights=weights,
        )
        valid = TensorLoader(source.valid, batch_size * 2, norm, device, shard=shard, split_batches=False)
        test = TensorLoader(source.test, batch_size * 2, norm, device) if source.test is not None else None
        return Loaders(train, valid, test)
    return _file_loaders(source, cfg, norm, device, seed, shard, weights)


class ShardedShuffle(torch.utils.data.Sampler):
    """Training order of a file dataset (one draw per epoch) for rank `rank` of `world`: every
    rank draws the same permutation from the shared `generator` (seeded alike, advanced alike),
    pads it from its start to a multiple of `world` and keeps positions `rank::world`; batches of
    `batch_size // world` from it are then each rank's rows of one process's global batches. The
    generator is the DataLoader's, so resuming restores the order. Written here because torch's
    DistributedSampler reseeds from an epoch counter the engine would have to set, and does not
    interleave batches. `weights`: draw with replacement in proportion to them instead."""

    def __init__(
        self,
        size: int,
        generator: torch.Generator,
        rank: int,
        world: int,
        weights: torch.Tensor | None = None,
    ):
        self.size, self.generator, self.rank, self.world = size, generator, rank, world
        self.weights = weights

    def __len__(self) -> int:
        return math.ceil(self.size / self.world)

    def __iter__(self) -> Iterator[int]:
        order = _draw_order(self.size, self.generator, self.weights)
        if self.size % self.world:
            order = torch.cat([order, order[: self.world - self.size % self.world]])
        yield from order[self.rank :: self.world].tolist()


def _file_loaders(
    source: ImageSource,
    cfg: Mapping[str, Any],
    norm: Normalization,
    device: torch.device | str,
    seed: int,
    shard: tuple[int, int] = (0, 1),
    weights: torch.Tensor | None = None,
) -> Loaders:
    """DataLoaders over file datasets with timm's transforms; with `shard=(rank, world)` each
    process reads its rows of every global training batch (`ShardedShuffle`) and rows
    `rank::world` of valid; test stays whole (one process reports it)."""
    (rank, world), batch_size = shard, int(cfg["batch_size"])
    check_global_batch(batch_size, world)
    augment, workers = dict(cfg.get("augment") or {}), loader_workers(cfg.get("num_workers", 0), device)
    common = dict(num_workers=workers, pin_memory=torch.device(device).type == "cuda")
    source.train.transform = _timm_transform(norm, cfg["image_size"], True, augment)
    generator = torch.Generator().manual_seed(seed)
    train = DataLoader(
        source.train,
        batch_size=batch_size // world,
        sampler=ShardedShuffle(len(source.train), generator, rank, world, weights),
        drop_last=len(source.train) > batch_size,
        generator=generator,
        persistent_workers=workers > 0,
        **common,
    )
    source.valid.transform = _timm_transform(norm, cfg["image_size"], False, augment)
    valid = DataLoader(  # read every epoch: its workers persist
        source.valid,
        math.ceil(batch_size * 2 / world),
        sampler=list(range(rank, len(source.valid), world)) if world > 1 else None,
        persistent_workers=workers > 0,
        **common,
    )
    test = None
    if source.test is not None:
        source.test.transform = _timm_transform(norm, cfg["image_size"], False, augment)
        test = DataLoader(source.test, batch_size * 2, **common)
    return Loaders(train, valid, test)
