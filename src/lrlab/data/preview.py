"""A look at the training data as the model receives it (fastai's `show_batch`): a few training
images after augmentation and resizing, un-normalised, each titled with its class, drawn as one grid.
Drawn on a copy of the loader's randomness, so looking never changes the training's data order or
augmentation."""

from __future__ import annotations

import copy
import io
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lrlab.data.loaders import TensorLoader
from lrlab.data.types import Normalization


@dataclass
class BatchPreview:
    """Training images (N, H, W, C in 0..1, as the model sees them before normalisation), their
    labels and the class names; `save(path)` draws the grid, and Jupyter shows it inline."""

    images: np.ndarray
    labels: np.ndarray
    class_names: list[str]

    def __repr__(self) -> str:
        n, h, w, _ = self.images.shape
        shown = set(self.titles())
        classes = [name for name in self.class_names if name in shown]
        return f"BatchPreview({n} training images, {h}x{w} px, classes {classes})"

    def titles(self) -> list[str]:
        return [self.class_names[int(i)] for i in self.labels]

    def figure(self) -> Any:
        """The grid as a matplotlib Figure (not attached to pyplot: nothing is left open)."""
        from matplotlib.figure import Figure

        n = len(self.images)
        cols = min(8, max(1, math.ceil(math.sqrt(n))))
        rows = max(1, math.ceil(n / cols))
        fig = Figure(figsize=(1.7 * cols, 1.9 * rows + 0.3), layout="constrained")
        axes = fig.subplots(rows, cols, squeeze=False)
        for ax in axes.flat:
            ax.axis("off")
        for ax, image, title in zip(axes.flat, self.images, self.titles()):
            grey = image.shape[-1] == 1 or np.allclose(image[..., 0], image[..., -1])
            ax.imshow(image[..., 0] if grey else image, cmap="gray" if grey else None, vmin=0, vmax=1)
            ax.set_title(title, fontsize=8)
        h, w = self.images.shape[1:3]
        fig.suptitle(f"training images as the model sees them (augmented, {h}x{w} px)", fontsize=9)
        return fig

    def save(self, path: str | Path) -> Path:
        """Write the grid as a PNG at `path` (folders created); returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.figure().savefig(path, dpi=100)
        return path

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.figure().savefig(buffer, format="png", dpi=100)
        return buffer.getvalue()


def preview_batch(
    loader: Any, norm: Normalization, class_names: Sequence[str], count: int = 16, seed: int = 0
) -> BatchPreview | None:
    """`count` training images of `loader` (a TensorLoader, or a DataLoader over a dataset with
    its training transform) augmented as training augments them, drawn with their own `seed`: the
    loader's generator and the global random states are left as they were. None for a loader of
    another kind (nothing could be drawn without consuming its randomness) or `count` < 1."""
    if count < 1:
        return None
    if isinstance(loader, TensorLoader):
        images, labels = _from_tensor_loader(loader, count, seed)
    elif hasattr(loader, "dataset") and len(loader.dataset) > 0:
        images, labels = _from_dataset(loader.dataset, count, seed)
    else:
        return None
    if images is None:
        return None
    mean = torch.tensor(norm.mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(norm.std, dtype=torch.float32).view(1, -1, 1, 1)
    pixels = (images.detach().float().cpu() * std + mean).clamp(0, 1)
    return BatchPreview(pixels.permute(0, 2, 3, 1).numpy(), labels.cpu().numpy(), list(class_names))


def _from_tensor_loader(loader: TensorLoader, count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first batch of a copy of `loader` with its own generator, cut to `count` rows."""
    clone = copy.copy(loader)
    clone.generator = torch.Generator().manual_seed(seed)
    clone.batch_size = min(count * max(1, loader.world), loader.batch_size)
    clone.drop_last = False
    images, labels = next(iter(clone))
    return images[:count], labels[:count]


def _from_dataset(dataset: Any, count: int, seed: int) -> tuple[torch.Tensor | None, torch.Tensor]:
    """`count` items of a map-style dataset chosen with `seed`, its transform's random draws
    (torch's, Python's and NumPy's generators) made on saved states restored afterwards; no images
    (None) when its items are not tensors (a dataset without a transform)."""
    chosen = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:count]
    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            random.seed(seed)
            np.random.seed(seed)
            items = [dataset[int(i)] for i in chosen]
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
    labels = torch.tensor([int(label) for _, label in items])
    if not all(isinstance(image, torch.Tensor) for image, _ in items):
        return None, labels
    return torch.stack([image for image, _ in items]), labels
