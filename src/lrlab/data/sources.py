"""Datasets and loaders: bundled ELPV and digits, image folders and torchvision datasets.

Small datasets are decoded once into uint8 tensors and served by `TensorLoader`, which indexes,
augments (one batched affine warp) and normalises whole batches on the training device: torch's
DataLoader would collate and transform sample by sample in Python every epoch. Larger or
file-based datasets go through a DataLoader with timm's own transforms.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from lrlab.data.types import ImageSource, TensorSplit
from lrlab.errors import LrlabError

log = logging.getLogger(__name__)

ELPV_PROBABILITIES = (0.0, 1 / 3, 2 / 3, 1.0)


def _stratified_split(strata: np.ndarray, valid_pct: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    index = np.arange(len(strata))
    train_idx, valid_idx = train_test_split(index, test_size=valid_pct, random_state=seed, stratify=strata)
    return np.sort(train_idx), np.sort(valid_idx)


def _resize_uint8(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize a uint8 (N, C, H, W) stack to size x size with antialiasing, in chunks to bound memory."""
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


def load_elpv(
    image_size: int, classes: int = 4, valid_pct: float = 0.25, split_seed: int = 0, root: str | None = None
) -> ImageSource:
    """The ELPV solar cells (bundled, or under `root`), stratified by class and cell type (mono/poly)."""
    images, probs, types = _elpv_arrays(root)
    level = np.rint(np.asarray(probs) * 3).astype(np.int64)
    if classes == 4:
        labels, names = level, ["p=0", "p=1/3", "p=2/3", "p=1"]
    else:
        labels, names = (level >= 2).astype(np.int64), ["functional", "defective"]
    strata = labels * 2 + (np.asarray(types) == "poly").astype(np.int64)
    stack = _resize_uint8(torch.from_numpy(images.copy()).unsqueeze(1), image_size)
    train, valid = _split_tensors(stack, labels, strata, valid_pct, split_seed)
    return ImageSource(train, valid, names)


def load_digits(image_size: int, valid_pct: float = 0.25, split_seed: int = 0) -> ImageSource:
    """scikit-learn's bundled 8x8 digits, scaled to uint8 and resized to image_size."""
    from sklearn.datasets import load_digits as sk_digits

    digits = sk_digits()
    pixels = torch.from_numpy(np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)).unsqueeze(1)
    stack = _resize_uint8(pixels, image_size)
    train, valid = _split_tensors(stack, digits.target, digits.target, valid_pct, split_seed)
    return ImageSource(train, valid, [str(c) for c in digits.target_names])


class _Subset(Dataset):
    """A subset of an image dataset with its own transform (train and valid differ)."""

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


def load_imagefolder(root: str, valid_pct: float = 0.2, split_seed: int = 0) -> ImageSource:
    """ROOT/train + ROOT/valid (or val) class folders, or one class-folder tree split by valid_pct."""
    from torchvision.datasets import ImageFolder

    base = Path(root).expanduser()
    if not base.is_dir():
        raise LrlabError(f"data.root={root!r} is not an existing directory.")
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
    train_idx, valid_idx = _stratified_split(np.asarray(full.targets), valid_pct, split_seed)
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


def load_torchvision(
    dataset: str, root: str, download: bool = False, valid_pct: float = 0.2, split_seed: int = 0
) -> ImageSource:
    """Any torchvision classification dataset by class name, with its official split when it has one."""
    import torchvision.datasets as tvd

    cls = getattr(tvd, str(dataset), None)
    if not isinstance(cls, type):
        import difflib

        close = difflib.get_close_matches(str(dataset), tvd.__all__, n=5)
        raise LrlabError(
            f"data.dataset={dataset!r} is not a torchvision dataset. Close matches: {', '.join(close) or 'none'}."
        )
    try:
        train = _torchvision_split(cls, root, download, train=True)
        valid = _torchvision_split(cls, root, download, train=False)
    except Exception as exc:  # torchvision raises RuntimeError, URLError, OSError...
        hint = "pass data.download=true (needs internet)" if not download else "check the internet connection"
        raise LrlabError(
            f"Could not load torchvision dataset {dataset} from data.root={root!r} ({type(exc).__name__}: {exc}); "
            f"{hint}, or use an offline dataset: data=elpv, data=digits or data=imagefolder data.root=PATH."
        ) from exc
    classes = list(getattr(train, "classes", []))
    if valid is None:
        train_idx, valid_idx = _stratified_split(_dataset_targets(train), valid_pct, split_seed)
        return ImageSource(_Subset(train, train_idx), _Subset(train, valid_idx), classes)
    if not classes:
        classes = [str(c) for c in sorted(set(_dataset_targets(train).tolist()))]
    return ImageSource(_Subset(train, range(len(train))), _Subset(valid, range(len(valid))), classes)


def materialize(dataset: Dataset, image_size: int) -> TensorSplit:
    """Decode an image dataset once into a uint8 tensor stack at image_size (resize + centre crop)."""
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


def load_source(cfg: Mapping[str, Any]) -> ImageSource:
    """Build the ImageSource a data config names (elpv, digits, imagefolder, torchvision)."""
    name = cfg["name"]
    if name == "elpv":
        source = load_elpv(
            cfg["image_size"], cfg.get("classes", 4), cfg["valid_pct"], cfg["split_seed"], cfg.get("root")
        )
    elif name == "digits":
        source = load_digits(cfg["image_size"], cfg["valid_pct"], cfg["split_seed"])
    elif name == "imagefolder":
        source = load_imagefolder(cfg["root"], cfg["valid_pct"], cfg["split_seed"])
    elif name == "torchvision":
        source = load_torchvision(
            cfg["dataset"], cfg["root"], cfg.get("download", False), cfg["valid_pct"], cfg["split_seed"]
        )
    else:
        raise LrlabError(f"data.name={name!r} is not valid; choose elpv, digits, imagefolder or torchvision.")
    if cfg.get("in_memory") and not isinstance(source.train, TensorSplit):
        log.info("Decoding %s into memory at %d px ...", name, cfg["image_size"])
        source = ImageSource(
            materialize(source.train, cfg["image_size"]),
            materialize(source.valid, cfg["image_size"]),
            source.class_names,
        )
    return source
