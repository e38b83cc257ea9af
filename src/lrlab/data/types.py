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
    """Images as uint8 (N, C, H, W) at the training size, labels as int64 (N,), and the file each
    image was decoded from when it came from files (None for built-in arrays)."""

    images: torch.Tensor
    labels: torch.Tensor
    paths: list[str] | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: Any) -> TensorSplit:
        """The images, labels (and paths) at positions `index` (an integer array)."""
        paths = [self.paths[int(i)] for i in index] if self.paths is not None else None
        return TensorSplit(self.images[index], self.labels[index], paths)


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

    def digests(self) -> dict[str, str]:
        """A content digest per split (MLflow's dataset digest): same data, same digest."""
        splits = {"train": self.train, "valid": self.valid, "test": self.test}
        return {name: split_digest(split) for name, split in splits.items() if split is not None}

    def sizes(self) -> dict[str, int]:
        """Images per split: train, valid and test (0 when there is no test split)."""
        test = len(self.test) if self.test is not None else 0
        return {"train": len(self.train), "valid": len(self.valid), "test": test}


def split_labels(split: TensorSplit | Dataset) -> torch.Tensor:
    """The labels of a split as int64 (N,): an in-memory split's own, a file dataset's `samples`
    or `targets` (through a torch Subset's indices); other datasets are read item by item."""
    import torch

    if isinstance(split, TensorSplit):
        return split.labels
    base, index = split, None
    if hasattr(split, "dataset") and hasattr(split, "indices"):  # torch.utils.data.Subset
        base, index = split.dataset, list(split.indices)
    samples = getattr(base, "samples", None)
    labels = [label for _, label in samples] if samples is not None else getattr(base, "targets", None)
    if labels is None:
        return torch.tensor([int(split[i][1]) for i in range(len(split))], dtype=torch.int64)
    labels = torch.as_tensor(list(labels), dtype=torch.int64)
    return labels if index is None else labels[index]


def split_digest(split: TensorSplit | Dataset) -> str:
    """16 hex digits of SHA-256 over an in-memory split's pixels and labels, or a file dataset's
    (path, label) list (its files are not read again); other datasets: their type and length."""
    import hashlib

    digest = hashlib.sha256()
    if isinstance(split, TensorSplit):
        digest.update(str(tuple(split.images.shape)).encode())
        digest.update(split.images.contiguous().numpy().tobytes())
        digest.update(split.labels.numpy().tobytes())
        return digest.hexdigest()[:16]
    base, index = split, None
    if hasattr(split, "dataset") and hasattr(split, "indices"):  # torch.utils.data.Subset
        base, index = split.dataset, list(split.indices)
    samples = getattr(base, "samples", None)
    if samples is None:
        digest.update(f"{type(base).__name__}:{len(split)}".encode())
        return digest.hexdigest()[:16]
    for path, label in samples if index is None else (samples[i] for i in index):
        digest.update(f"{path}\t{label}\n".encode())
    return digest.hexdigest()[:16]


@dataclass
class Normalization:
    """Per-channel mean and std (of 0..1 pixels) and the resize interpolation of a model."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bilinear"
