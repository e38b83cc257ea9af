"""The built-in data sources, each a config dataclass (its keys and defaults) registered with its
loader: bundled ELPV and digits, image folders and torchvision datasets.

Small datasets are decoded once into uint8 tensors and served by `TensorLoader`, which indexes,
augments (one batched affine warp) and normalises whole batches on the training device: torch's
DataLoader would collate and transform sample by sample in Python every epoch. Larger or
file-based datasets go through a DataLoader with timm's own transforms.

torch is imported inside the functions that decode: the CLI imports this module to register each
source's config as a Hydra schema, and `lrlab --help` should not pay for torch.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from lrlab.data.registry import AugmentConfig, DataConfig, data_config, get_source, register_source
from lrlab.data.types import ImageSource, TensorSplit
from lrlab.errors import ConfigError, LrlabError

if TYPE_CHECKING:
    import torch
    from torch.utils.data import Dataset

log = logging.getLogger(__name__)

Config = TypeVar("Config", bound=DataConfig)


def _config(cls: type[Config], cfg: Config | None, fields: Mapping[str, Any]) -> Config:
    """`cfg` with `fields` replaced, or `cls(**fields)`: loaders take a config or its keywords."""
    return replace(cfg, **fields) if cfg is not None else cls(**fields)


def _stratified_split(strata: np.ndarray, valid_pct: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    index = np.arange(len(strata))
    train_idx, valid_idx = train_test_split(index, test_size=valid_pct, random_state=seed, stratify=strata)
    return np.sort(train_idx), np.sort(valid_idx)


def _uint8_stack(images: np.ndarray, size: int) -> torch.Tensor:
    """A uint8 (N, 1, size, size) tensor from (N, H, W) uint8 images."""
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


def _split_tensors(
    images: torch.Tensor, labels: np.ndarray, strata: np.ndarray, valid_pct: float, seed: int
) -> tuple[TensorSplit, TensorSplit]:
    import torch

    train_idx, valid_idx = _stratified_split(strata, valid_pct, seed)
    y = torch.as_tensor(labels, dtype=torch.int64)
    return TensorSplit(images[train_idx], y[train_idx]), TensorSplit(images[valid_idx], y[valid_idx])


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
    from PIL import Image

    labels = _elpv_labels_file(root)
    rows = [line.split() for line in labels.read_text().splitlines() if line.strip()]
    images = np.stack([np.asarray(Image.open(labels.parent / path).convert("L")) for path, _, _ in rows])
    probs = np.array([float(p) for _, p, _ in rows])
    types = np.array([t for _, _, t in rows])
    images.setflags(write=False)
    return images, probs, types


@dataclass(kw_only=True)
class ElpvConfig(DataConfig):
    """Bundled ELPV solar-cell electroluminescence images (elpv-dataset package, CC BY-NC-SA 4.0)."""

    name: str = "elpv"
    classes: int = 4  # 4: defect probability {0, 1/3, 2/3, 1}; 2: functional (p < 0.5) vs defective
    root: str | None = None  # None: the elpv-dataset package; or a folder with its labels.csv + images/
    image_size: int = 128
    num_workers: int = 0
    valid_pct: float = 0.25  # stratified by class and cell type
    in_memory: bool = True
    augment: AugmentConfig = field(
        # the augmentation the ELPV results in experiments/ were measured with
        default_factory=lambda: AugmentConfig(hflip=0.5, vflip=0.5, rot90=True, scale=[0.85, 1.0])
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
    cfg = _config(ElpvConfig, cfg, fields)
    images, probs, types = _elpv_arrays(cfg.root)
    level = np.rint(np.asarray(probs) * 3).astype(np.int64)
    if cfg.classes == 4:
        labels, names = level, ["p=0", "p=1/3", "p=2/3", "p=1"]
    else:
        labels, names = (level >= 2).astype(np.int64), ["functional", "defective"]
    strata = labels * 2 + (np.asarray(types) == "poly").astype(np.int64)
    stack = _uint8_stack(images, cfg.image_size)
    train, valid = _split_tensors(stack, labels, strata, cfg.valid_pct, cfg.split_seed)
    return ImageSource(train, valid, names)


@dataclass(kw_only=True)
class DigitsConfig(DataConfig):
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes)."""

    name: str = "digits"
    image_size: int = 32
    batch_size: int = 64
    num_workers: int = 0
    valid_pct: float = 0.25
    in_memory: bool = True
    augment: AugmentConfig = field(
        default_factory=lambda: AugmentConfig(hflip=0.0, vflip=0.0, rot90=False, scale=[0.9, 1.0])
    )


@register_source("digits", DigitsConfig)
def load_digits(cfg: DigitsConfig | None = None, **fields: Any) -> ImageSource:
    """scikit-learn's bundled 8x8 digits, scaled to uint8 and resized to image_size."""
    from sklearn.datasets import load_digits as sk_digits

    cfg = _config(DigitsConfig, cfg, fields)
    digits = sk_digits()
    stack = _uint8_stack(np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8), cfg.image_size)
    train, valid = _split_tensors(stack, digits.target, digits.target, cfg.valid_pct, cfg.split_seed)
    return ImageSource(train, valid, [str(c) for c in digits.target_names])


class _Subset:
    """A subset of an image dataset with its own transform (train and valid differ); a map-style
    dataset (`__len__`, `__getitem__`), which is all DataLoader needs."""

    def __init__(self, base: Dataset, indices: Sequence[int], transform: Any = None):
        self.base, self.indices, self.transform = base, list(indices), transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        image, label = self.base[self.indices[i]]
        image = image.convert("RGB")
        return (self.transform(image) if self.transform else image), label


def _dataset_targets(dataset: Dataset) -> np.ndarray:
    for attr in ("targets", "_labels", "labels"):
        if hasattr(dataset, attr):
            return np.asarray(getattr(dataset, attr))
    return np.asarray([dataset[i][1] for i in range(len(dataset))])


@dataclass(kw_only=True)
class ImageFolderConfig(DataConfig):
    """Any folder of images: ROOT/train/<class>/* and ROOT/valid/<class>/*, or ROOT/<class>/* split
    by valid_pct."""

    name: str = "imagefolder"
    root: str

    def check(self) -> ImageFolderConfig:
        super().check()
        if not Path(str(self.root)).expanduser().is_dir():
            raise ConfigError(f"data.root={str(self.root)!r} is not an existing directory.")
        return self


@register_source("imagefolder", ImageFolderConfig)
def load_imagefolder(cfg: ImageFolderConfig | None = None, **fields: Any) -> ImageSource:
    """ROOT/train + ROOT/valid (or val) class folders, or one class-folder tree split by valid_pct."""
    from torchvision.datasets import ImageFolder

    cfg = _config(ImageFolderConfig, cfg, fields).check()
    root, base = cfg.root, Path(cfg.root).expanduser()
    valid_dir = next((base / name for name in ("valid", "val") if (base / name).is_dir()), None)
    try:
        if (base / "train").is_dir() and valid_dir is not None:
            train, valid = ImageFolder(str(base / "train")), ImageFolder(str(valid_dir))
            if train.classes != valid.classes:
                raise LrlabError(f"{base}/train and {valid_dir} hold different class folders.")
            return ImageSource(
                _Subset(train, range(len(train))), _Subset(valid, range(len(valid))), train.classes
            )
        full = ImageFolder(str(base))
    except (FileNotFoundError, RuntimeError) as exc:
        raise LrlabError(f"data.root={root!r} holds no images in class folders: {exc}") from exc
    train_idx, valid_idx = _stratified_split(np.asarray(full.targets), cfg.valid_pct, cfg.split_seed)
    return ImageSource(_Subset(full, train_idx), _Subset(full, valid_idx), full.classes)


def _torchvision_split(cls: type, root: str, download: bool, train: bool) -> Dataset | None:
    params = inspect.signature(cls).parameters
    if "train" in params:
        return cls(root, train=train, download=download)
    if "split" in params:
        names = ("train", "trainval") if train else ("val", "valid", "test")
        for name in names:
            try:
                return cls(root, split=name, download=download)
            except ValueError:
                continue
    return None if not train else cls(root, download=download)


@dataclass(kw_only=True)
class TorchvisionConfig(DataConfig):
    """Any torchvision classification dataset by class name (e.g. CIFAR10, OxfordIIITPet, FashionMNIST)."""

    name: str = "torchvision"
    dataset: str
    root: str | None = None  # None: $LRLAB_DATA, else ./data under the launch directory
    download: bool = False  # needs internet, once


@register_source("torchvision", TorchvisionConfig)
def load_torchvision(cfg: TorchvisionConfig | None = None, **fields: Any) -> ImageSource:
    """Any torchvision classification dataset by class name, with its official split when it has one."""
    import torchvision.datasets as tvd

    cfg = _config(TorchvisionConfig, cfg, fields)
    dataset, download = cfg.dataset, cfg.download
    root = cfg.root or os.environ.get("LRLAB_DATA") or "data"
    cls = getattr(tvd, str(dataset), None)
    if not isinstance(cls, type):
        import difflib

        close = difflib.get_close_matches(str(dataset), tvd.__all__, n=5)
        raise LrlabError(
            f"data.dataset={dataset!r} is not a torchvision dataset. "
            f"Close matches: {', '.join(close) or 'none'}."
        )
    try:
        train = _torchvision_split(cls, root, download, train=True)
        valid = _torchvision_split(cls, root, download, train=False)
    except Exception as exc:  # torchvision raises RuntimeError, URLError, OSError...
        hint = "pass data.download=true (needs internet)" if not download else "check the internet connection"
        raise LrlabError(
            f"Could not load torchvision dataset {dataset} from data.root={root!r} "
            f"({type(exc).__name__}: {exc}); "
            f"{hint}, or use an offline dataset: data=elpv, data=digits or data=imagefolder data.root=PATH."
        ) from exc
    classes = list(getattr(train, "classes", []))
    if valid is None:
        train_idx, valid_idx = _stratified_split(_dataset_targets(train), cfg.valid_pct, cfg.split_seed)
        return ImageSource(_Subset(train, train_idx), _Subset(train, valid_idx), classes)
    if not classes:
        classes = [str(c) for c in sorted(set(_dataset_targets(train).tolist()))]
    return ImageSource(_Subset(train, range(len(train))), _Subset(valid, range(len(valid))), classes)


def materialize(dataset: Dataset, image_size: int) -> TensorSplit:
    """Decode an image dataset once into a uint8 tensor stack at image_size (resize + centre crop)."""
    import torch
    from torchvision.transforms import v2

    to_tensor = v2.Compose(
        [v2.PILToTensor(), v2.Resize(image_size, antialias=True), v2.CenterCrop(image_size)]
    )
    images, labels = [], []
    for i in range(len(dataset)):
        image, label = dataset[i]
        images.append(to_tensor(image))
        labels.append(int(label))
    return TensorSplit(torch.stack(images), torch.tensor(labels, dtype=torch.int64))


def load_source(cfg: Mapping[str, Any] | DataConfig) -> ImageSource:
    """Load the source a data config names, e.g. `load_source({"name": "digits", "image_size": 32})`
    (missing keys take the source's defaults), decoded into memory when `in_memory` is set."""
    config = data_config(cfg).check()
    source = get_source(config.name).load(config)
    if config.in_memory and not isinstance(source.train, TensorSplit):
        log.info("Decoding %s into memory at %d px ...", config.name, config.image_size)
        source = ImageSource(
            materialize(source.train, config.image_size),
            materialize(source.valid, config.image_size),
            source.class_names,
        )
    return source
