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

    def image(self) -> Any:
        """The grid as one PIL image: each picture (scaled to 96-192 px, small ones without
        smoothing, so their pixels show) under its class name. Drawn with PIL rather than
        matplotlib (about 10 ms instead of 500 ms for 16 images): every training draws it."""
        from PIL import Image, ImageDraw, ImageFont

        n, h, w = self.images.shape[:3]
        tile, label, pad, header = min(192, max(96, h)), 18, 4, 24
        cols = min(8, max(1, math.ceil(math.sqrt(n))))
        rows = max(1, math.ceil(n / cols))
        width = max(440, pad + cols * (tile + pad))  # room for the title above a narrow grid
        canvas = Image.new("RGB", (width, header + rows * (label + tile + pad)), "white")
        draw, font = ImageDraw.Draw(canvas), ImageFont.load_default(size=13)
        title = f"training images as the model sees them (augmented, {h}x{w} px)"
        draw.text((canvas.width / 2, header / 2), title, fill="black", font=font, anchor="mm")
        scaling = Image.Resampling.NEAREST if h < tile else Image.Resampling.BILINEAR
        for i, (pixels, name) in enumerate(zip(self.images, self.titles())):
            bytes_ = np.rint(pixels * 255).astype(np.uint8)
            picture = Image.fromarray(bytes_[..., 0] if bytes_.shape[-1] == 1 else bytes_).convert("RGB")
            row, col = divmod(i, cols)
            x, y = pad + col * (tile + pad), header + row * (label + tile + pad)
            draw.text((x + tile / 2, y + label / 2), name, fill="black", font=font, anchor="mm")
            canvas.paste(picture.resize((tile, tile), scaling), (x, y + label))
        return canvas

    def save(self, path: str | Path) -> Path:
        """Write the grid as a PNG at `path` (folders created); returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.image().save(path)
        return path

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.image().save(buffer, format="png")
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
