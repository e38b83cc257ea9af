"""In-memory images and their metadata: the types every data source returns and loaders consume.
torch appears in annotations only, so the data sources can be listed without importing it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch.utils.data import Dataset


@dataclass
class TensorSplit:
    """Images as uint8 (N, C, H, W) at the training size, labels as int64 (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class ImageSource:
    """A classification dataset split into train and valid, before any loader is built."""

    train: TensorSplit | Dataset
    valid: TensorSplit | Dataset
    class_names: list[str]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


@dataclass
class Normalization:
    """Per-channel mean and std (of 0..1 pixels) and the resize interpolation of a model."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bilinear"
