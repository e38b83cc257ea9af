"""In-memory images and their metadata: the types every data source returns and loaders consume.
torch appears in annotations only, so the data sources can be listed without importing it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

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

    def subset(self, index: Any) -> TensorSplit:
        """The images and labels at positions `index` (an integer array)."""
        return TensorSplit(self.images[index], self.labels[index])


@dataclass
class ImageSource:
    """A classification dataset split into train, valid and test, before any loader is built.

    Choices (checkpoints, early decisions, sweeps, the range test's held-out loss) use `valid`; the
    reported number is `test`, computed once after training (None when `test_pct` is 0).
    `class_groups` optionally names coarser classes, each a list of class indices (ELPV's four
    defect levels: functional = p in {0, 1/3}, defective = p in {2/3, 1}); runs then also report
    the accuracy of the grouped predictions (`accuracy_<n>class`).
    """

    train: TensorSplit | Dataset
    valid: TensorSplit | Dataset
    class_names: list[str]
    test: TensorSplit | Dataset | None = None
    class_groups: dict[str, list[int]] | None = None
    eval_resize: str = "square"  # how evaluation images were sized: square | crop | timm (data/preprocess.py)

    @property
    def channels(self) -> int:
        """Channels of the stored images (1: grayscale); 3 for file datasets (decoded as RGB)."""
        return int(self.train.images.shape[1]) if isinstance(self.train, TensorSplit) else 3

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def sizes(self) -> dict[str, int]:
        """Images per split: train, valid and test (0 when there is no test split)."""
        test = len(self.test) if self.test is not None else 0
        return {"train": len(self.train), "valid": len(self.valid), "test": test}


@dataclass
class Normalization:
    """Per-channel mean and std (of 0..1 pixels) and the resize interpolation of a model."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bilinear"
