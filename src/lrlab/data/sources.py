"""The built-in in-memory data sources, each a config dataclass (its keys and defaults) registered
with its loader: bundled ELPV and digits (image folders and torchvision datasets: `files.py`), and
`load_source`, which loads any registered source. Every source splits train / valid / test
(`splits.py`).

Small datasets are decoded once into uint8 tensors and served by `TensorLoader`, which indexes,
augments (one batched affine warp) and normalises whole batches on the training device: torch's
DataLoader would collate and transform sample by sample in Python every epoch. Larger or
file-based datasets go through a DataLoader with timm's own transforms.

torch is imported inside the functions that decode: the CLI imports this module to register each
source's config as a Hydra schema, and `lrlab --help` should not pay for torch.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from lrlab.data.decode import map_in_threads
from lrlab.data.registry import AugmentConfig, DataConfig, data_config, get_source, register_source
from lrlab.data.splits import split_indices
from lrlab.data.types import ImageSource, TensorSplit
from lrlab.errors import ConfigError, LrlabError

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch.utils.data import Dataset

log = logging.getLogger(__name__)

Config = TypeVar("Config", bound=DataConfig)


def config_with(cls: type[Config], cfg: Config | None, fields: Mapping[str, Any]) -> Config:
    """`cfg` with `fields` replaced, or `cls(**fields)`: loaders take a config or its keywords."""
    return replace(cfg, **fields) if cfg is not None else cls(**fields)


def uint8_stack(images: np.ndarray, size: int) -> torch.Tensor:
    """A uint8 (N, 1, size, size) tensor from (N, H, W) uint8 images (every in-memory source)."""
    import torch

    return _resize_uint8(torch.from_numpy(images.copy()).unsqueeze(1), size)


def _resize_uint8(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize a uint8 (N, C, H, W) stack to size x size with antialiasing, in chunks to bound memory."""
    import torch
    import torch.nn.functional as F

    if images.shape[-2:] == (size, size):
        return images.contiguous()
    out = []
    for chunk in images.split(256):
        resized = F.interpolate(
            chunk.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )
        out.append(resized.round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(out)


def split_tensors(
    images: torch.Tensor,
    labels: np.ndarray,
    strata: np.ndarray,
    cfg: DataConfig,
    paths: list[str] | None = None,
) -> tuple[TensorSplit, TensorSplit, TensorSplit | None]:
    """Stratified train, valid and test splits (test None when test_pct is 0) of a tensor stack,
    each image with its file when `paths` are given."""
    import torch

    split = split_indices(strata, cfg.valid_pct, cfg.test_pct, cfg.split_seed)
    full = TensorSplit(images, torch.as_tensor(labels, dtype=torch.int64), paths)
    test = full.subset(split.test) if cfg.test_pct > 0 else None
    return full.subset(split.train), full.subset(split.valid), test


def _elpv_labels_file(root: str | None) -> Path:
    if root:
        path = Path(root).expanduser()
        path = path / "labels.csv" if path.is_dir() else path
        if not path.is_file():
            raise LrlabError(
                f"data.root={root!r}: no ELPV labels.csv there (expected the elpv-dataset layout)."
            )
        return path
    try:
        import elpv_dataset
    except ImportError as exc:
        raise LrlabError(
            "data=elpv needs the elpv-dataset package (pip install elpv-dataset) or data.root=PATH"
        ) from exc
    return Path(elpv_dataset.__file__).parent / "data" / "labels.csv"


@lru_cache(maxsize=2)
def _elpv_arrays(root: str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode the 2,624 ELPV images once per process: from the elpv-dataset package, or from a
    copy of its `labels.csv` + `images/` layout under `root` (any image format PIL reads)."""
    import numpy as np
    from PIL import Image

    labels = _elpv_labels_file(root)
    rows = [line.split() for line in labels.read_text().splitlines() if line.strip()]
    images = np.stack(
        map_in_threads(lambda row: np.asarray(Image.open(labels.parent / row[0]).convert("L")), rows)
    )
    probs = np.array([float(p) for _, p, _ in rows])
    types = np.array([t for _, _, t in rows])
    images.setflags(write=False)
    return images, probs, types


def _elpv_files(root: str | None = None) -> list[str]:
    """The file of each ELPV image, in `_elpv_arrays`' order: per-image predictions name them."""
    labels = _elpv_labels_file(root)
    rows = [line.split() for line in labels.read_text().splitlines() if line.strip()]
    return [str(labels.parent / row[0]) for row in rows]


# ELPV's 2-class task from its 4 classes: functional = p in {0, 1/3}, defective = p in {2/3, 1}.
ELPV_GROUPS = {"functional": [0, 1], "defective": [2, 3]}


def elpv_labels(
    probs: np.ndarray, types: np.ndarray, classes: int
) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Labels, class names and split strata (class x cell type) of ELPV's defect probabilities."""
    import numpy as np

    level = np.rint(np.asarray(probs) * 3).astype(np.int64)
    if classes == 4:
        labels, names = level, ["p=0", "p=1/3", "p=2/3", "p=1"]
    else:
        labels, names = (level >= 2).astype(np.int64), ["functional", "defective"]
    return labels, names, labels * 2 + (np.asarray(types) == "poly").astype(np.int64)


@dataclass(kw_only=True)
class ElpvConfig(DataConfig):
    """Bundled ELPV solar-cell electroluminescence images (elpv-dataset package, CC BY-NC-SA 4.0);
    train / valid / test 60/20/20 (the schema's valid_pct and test_pct), each stratified by class
    and cell type (mono/poly)."""

    name: str = "elpv"
    classes: int = 4  # 4: defect probability {0, 1/3, 2/3, 1}; 2: functional (p < 0.5) vs defective
    root: str | None = None  # None: the elpv-dataset package; or a folder with its labels.csv + images/
    image_size: int = 128
    num_workers: int = 0
    in_memory: bool = True
    augment: AugmentConfig = field(
        # Flips keep the busbars horizontal, as they are in 2,622 of the 2,624 cells (the other two
        # are black); quarter turns would show vertical busbars that never occur at test time
        # (measured on an H100, 300 px, 2+30 epochs: 74.5% with rot90, 80.2% without).
        default_factory=lambda: AugmentConfig(hflip=0.5, vflip=0.5, rot90=False, scale=[0.85, 1.0])
    )

    def check(self) -> ElpvConfig:
        super().check()
        if self.classes not in (2, 4):
            raise ConfigError(f"data.classes={self.classes} is not valid for elpv; choose 4 or 2.")
        return self


@register_source("elpv", ElpvConfig)
def load_elpv(cfg: ElpvConfig | None = None, **fields: Any) -> ImageSource:
    """The ELPV solar cells (bundled, or under `root`), stratified by class and cell type (mono/poly).
    `load_elpv(image_size=64)` is short for `load_elpv(ElpvConfig(image_size=64))`."""
    cfg = config_with(ElpvConfig, cfg, fields)
    images, probs, types = _elpv_arrays(cfg.root)
    labels, names, strata = elpv_labels(probs, types, cfg.classes)
    stack = uint8_stack(images, cfg.image_size)
    train, valid, test = split_tensors(stack, labels, strata, cfg, _elpv_files(cfg.root))
    groups = {k: list(v) for k, v in ELPV_GROUPS.items()} if cfg.classes == 4 else None
    return ImageSource(train, valid, names, test, class_groups=groups)


@dataclass(kw_only=True)
class DigitsConfig(DataConfig):
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes); train / valid /
    test 60/20/20, stratified by class."""

    name: str = "digits"
    image_size: int = 32
    batch_size: int = 64
    num_workers: int = 0
    in_memory: bool = True
    augment: AugmentConfig = field(
        default_factory=lambda: AugmentConfig(hflip=0.0, vflip=0.0, rot90=False, scale=[0.9, 1.0])
    )


@register_source("digits", DigitsConfig)
def load_digits(cfg: DigitsConfig | None = None, **fields: Any) -> ImageSource:
    """scikit-learn's bundled 8x8 digits, scaled to uint8 and resized to image_size."""
    import numpy as np
    from sklearn.datasets import load_digits as sk_digits

    cfg = config_with(DigitsConfig, cfg, fields)
    digits = sk_digits()
    stack = uint8_stack(np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8), cfg.image_size)
    train, valid, test = split_tensors(stack, digits.target, digits.target, cfg)
    return ImageSource(train, valid, [str(c) for c in digits.target_names], test)


def materialize(dataset: Dataset, image_size: int) -> TensorSplit:
    """Decode an image dataset once into a uint8 tensor stack at image_size (resize + centre crop)."""
    import torch
    from torchvision.transforms import v2

    to_tensor = v2.Compose(
        [v2.PILToTensor(), v2.Resize(image_size, antialias=True), v2.CenterCrop(image_size)]
    )

    def decoded(index: int) -> tuple[torch.Tensor, int]:
        image, label = dataset[index]
        return to_tensor(image), int(label)

    pairs = map_in_threads(decoded, range(len(dataset)), desc="decoding into memory")
    labels = torch.tensor([label for _, label in pairs], dtype=torch.int64)
    return TensorSplit(torch.stack([image for image, _ in pairs]), labels, getattr(dataset, "paths", None))


def check_classes(source: ImageSource, name: str) -> None:
    """At least two classes, each split holding images of at least two of them (a one-class
    problem trains to a meaningless 100%); LrlabError naming the split otherwise."""
    import numpy as np

    if source.num_classes < 2:
        classes = ", ".join(source.class_names) or "none"
        raise LrlabError(f"data {name!r} has {source.num_classes} class(es) ({classes}); need at least 2.")
    for split in ("train", "valid", "test"):
        images = getattr(source, split)
        if images is None:
            continue
        present = np.unique(np.asarray(images.labels))
        if len(present) < 2:
            found = ", ".join(source.class_names[int(i)] for i in present) or "none"
            raise LrlabError(
                f"the {split} split of data {name!r} holds images of {len(present)} class(es) ({found}) "
                f"out of {source.num_classes}; every split needs at least 2. Add images or change "
                "data.valid_pct / data.test_pct."
            )


def load_source(cfg: Mapping[str, Any] | DataConfig) -> ImageSource:
    """Load the source a data config names, e.g. `load_source({"name": "digits", "image_size": 32})`
    (missing keys take the source's defaults), decoded into memory when `in_memory` is set."""
    config = data_config(cfg).check()
    source = get_source(config.name).load(config)
    check_classes(source, config.name)
    if not isinstance(source.train, TensorSplit) and not config.in_memory:
        source = replace(source, eval_resize="timm")
    if config.in_memory and not isinstance(source.train, TensorSplit):
        log.info("Decoding %s into memory at %d px ...", config.name, config.image_size)
        size = config.image_size
        source = replace(
            source,
            eval_resize="crop",
            train=materialize(source.train, size),
            valid=materialize(source.valid, size),
            test=materialize(source.test, size) if source.test is not None else None,
        )
    return source
