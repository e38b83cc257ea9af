"""Data sources read from image files: any folder of images and any torchvision classification
dataset, served by torch's DataLoader with timm's transforms (or decoded into memory with
`in_memory`). A split the dataset has on disk is used as it is (ROOT/valid, ROOT/test, torchvision's
official test split); a missing one is cut from the training images, stratified by class.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lrlab.data.decode import map_in_threads
from lrlab.data.registry import DataConfig, register_source
from lrlab.data.sources import config_with
from lrlab.data.splits import split_indices
from lrlab.data.types import ImageSource
from lrlab.errors import ConfigError, LrlabError, describe

if TYPE_CHECKING:
    import numpy as np
    from torch.utils.data import Dataset

log = logging.getLogger(__name__)


class _Subset:
    """A subset of an image dataset with its own transform (train and eval differ); a map-style
    dataset (`__len__`, `__getitem__`), which is all DataLoader needs."""

    def __init__(self, base: Dataset, indices: Sequence[int], transform: Any = None):
        self.base, self.indices, self.transform = base, [int(i) for i in indices], transform

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def paths(self) -> list[str] | None:
        """The file of every image (an ImageFolder's `samples`), None for datasets without files."""
        samples = getattr(self.base, "samples", None)
        return [str(samples[i][0]) for i in self.indices] if samples is not None else None

    @property
    def labels(self) -> np.ndarray:
        """The class index of every image, without decoding any."""
        return _dataset_targets(self.base)[self.indices]

    def __getitem__(self, i: int) -> tuple[Any, int]:
        image, label = self.base[self.indices[i]]
        image = image.convert("RGB")
        return (self.transform(image) if self.transform else image), label


class FileImages:
    """Image files and their labels, each file decoded and passed through `transform` (e.g. a
    checkpoint's `Preprocess`): a map-style dataset for DataLoader."""

    def __init__(self, paths: Sequence[str], labels: Sequence[int], transform: Any):
        self.paths, self.labels, self.transform = list(paths), [int(y) for y in labels], transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        from PIL import Image

        with Image.open(self.paths[i]) as image:
            return self.transform(image), self.labels[i]


def files_loader(paths: Sequence[str], labels: Sequence[int], transform: Any, batch_size: int) -> Any:
    """The files in order, `transform`ed, in batches (a DataLoader of `FileImages`)."""
    from torch.utils.data import DataLoader

    return DataLoader(FileImages(paths, labels, transform), batch_size=batch_size, shuffle=False)


def _whole(dataset: Dataset) -> _Subset:
    return _Subset(dataset, range(len(dataset)))


def _dataset_targets(dataset: Dataset) -> np.ndarray:
    import numpy as np

    for attr in ("targets", "_labels", "labels"):
        if hasattr(dataset, attr):
            return np.asarray(getattr(dataset, attr))
    return np.asarray([dataset[i][1] for i in range(len(dataset))])


def _assemble(
    pool: Dataset, valid: Dataset | None, test: Dataset | None, classes: list[str], cfg: DataConfig
) -> ImageSource:
    """Train from `pool`; valid (when the dataset has none) and test (when it has none and test_pct
    is not 0) are cut from `pool` by their fractions of it, stratified by class."""
    want_test = cfg.test_pct > 0
    valid_pct = cfg.valid_pct if valid is None else 0.0
    test_pct = cfg.test_pct if want_test and test is None else 0.0
    if not valid_pct and not test_pct:
        return ImageSource(_whole(pool), _whole(valid), classes, _whole(test) if want_test else None)
    split = split_indices(_dataset_targets(pool), valid_pct, test_pct, cfg.split_seed, classes)
    return ImageSource(
        _Subset(pool, split.train),
        _whole(valid) if valid is not None else _Subset(pool, split.valid),
        classes,
        None if not want_test else _whole(test) if test is not None else _Subset(pool, split.test),
    )


@dataclass(kw_only=True)
class ImageFolderConfig(DataConfig):
    """Any folder of images: ROOT/train/<class>/* with, when present, ROOT/valid (or ROOT/val) and
    ROOT/test; a missing valid or test split is cut from ROOT/train by valid_pct / test_pct. Without
    ROOT/train, ROOT/<class>/* is split train / valid / test by the fractions."""

    name: str = "imagefolder"
    root: str
    skip_bad_images: bool = False  # images that cannot be read: an error naming them (false), or left out

    def check(self) -> ImageFolderConfig:
        super().check()
        if not Path(str(self.root)).expanduser().is_dir():
            raise ConfigError(f"data.root={str(self.root)!r} is not an existing directory.")
        return self


def _split_folders(base: Path, with_test: bool) -> tuple[Path, Path | None, Path | None]:
    """ROOT/train, ROOT/valid or ROOT/val (or None), and ROOT/test (None if absent or not wanted)."""
    valid = next((base / name for name in ("valid", "val") if (base / name).is_dir()), None)
    test = base / "test" if with_test and (base / "test").is_dir() else None
    return base / "train", valid, test


def _class_folders(folder: Path, root: str) -> Any:
    """torchvision's ImageFolder of `folder`'s class folders, hidden ones (`.ipynb_checkpoints`,
    `.git`) left out as fastai's `get_image_files` does; a folder with no class folder, or a class
    folder without an image, is named in an LrlabError instead of torchvision's generic refusal."""
    from torchvision.datasets import ImageFolder
    from torchvision.datasets.folder import IMG_EXTENSIONS

    def visible(path: Path) -> list[Path]:
        return sorted(d for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))

    class VisibleClassFolders(ImageFolder):
        def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
            classes = [d.name for d in visible(Path(directory))]
            return classes, {name: i for i, name in enumerate(classes)}

    classes = visible(folder)
    if not classes:
        raise LrlabError(
            f"data.root={root!r}: {folder} holds no class folders; lrlab reads ROOT/<class>/<image> "
            "(or ROOT/train/<class>/<image>, with ROOT/valid and ROOT/test when you have them)."
        )
    empty = [
        d.name
        for d in classes
        if not any(f.suffix.lower() in IMG_EXTENSIONS and f.is_file() for f in d.rglob("*"))
    ]
    if empty:
        raise LrlabError(
            f"data.root={root!r}: the class folder(s) {', '.join(empty)} in {folder} hold no image file "
            f"({', '.join(IMG_EXTENSIONS)}): add images or remove the folder(s)."
        )
    return VisibleClassFolders(str(folder))


@register_source("imagefolder", ImageFolderConfig)
def load_imagefolder(cfg: ImageFolderConfig | None = None, **fields: Any) -> ImageSource:
    """ROOT/train [+ ROOT/valid or val] [+ ROOT/test] class folders, or one class-folder tree; the
    splits a folder does not hold are cut from the training images, stratified by class."""
    cfg = config_with(ImageFolderConfig, cfg, fields).check()
    base = Path(cfg.root).expanduser()
    if not (base / "train").is_dir():
        full = _class_folders(base, cfg.root)
        verify_images(full, cfg.skip_bad_images)
        return _assemble(full, None, None, full.classes, cfg)
    train_dir, valid_dir, test_dir = _split_folders(base, cfg.test_pct > 0)
    pool = _class_folders(train_dir, cfg.root)
    valid, test = (_class_folders(d, cfg.root) if d is not None else None for d in (valid_dir, test_dir))
    for folder, dataset in ((valid_dir, valid), (test_dir, test)):
        if dataset is not None and dataset.classes != pool.classes:
            raise LrlabError(f"{train_dir} and {folder} hold different class folders.")
    for dataset in (pool, valid, test):
        if dataset is not None:
            verify_images(dataset, cfg.skip_bad_images)
    return _assemble(pool, valid, test, pool.classes, cfg)


def verify_images(dataset: Any, skip: bool) -> int:
    """Open, verify and fully decode every image file of an ImageFolder before training (PIL's
    `verify` checks the structure but not the pixel data: a truncated JPEG or a PNG with a damaged
    zlib stream passes it and fails in an epoch), so a damaged or empty file fails now, named. With
    `skip`, unreadable files are left out (returns how many)."""
    from PIL import Image

    def problem(sample: tuple[str, int]) -> tuple[str, str] | None:
        try:
            with Image.open(sample[0]) as image:
                image.verify()
            with Image.open(sample[0]) as image:
                image.load()
        except Exception as exc:  # PIL raises many types for damaged files
            return sample[0], describe(exc)
        return None

    checked = map_in_threads(problem, dataset.samples, desc=f"checking images in {dataset.root}")
    bad = [found for found in checked if found is not None]
    if bad and not skip:
        listed = "; ".join(f"{p} ({why[:80]})" for p, why in bad[:5]) + ("; ..." if len(bad) > 5 else "")
        raise LrlabError(
            f"{len(bad)} of {len(dataset.samples)} image files under {dataset.root} cannot be read: "
            f"{listed}. Fix or remove them, or set data.skip_bad_images=true to train without them."
        )
    if bad:
        dropped = {p for p, _ in bad}
        dataset.samples = [s for s in dataset.samples if s[0] not in dropped]
        dataset.imgs = dataset.samples
        dataset.targets = [t for _, t in dataset.samples]
        log.warning(
            "left out %d unreadable image(s) under %s (data.skip_bad_images=true)", len(bad), dataset.root
        )
    return len(bad)


def _first_split(cls: type, root: str, download: bool, names: Sequence[str]) -> Dataset | None:
    """The first of the split `names` the dataset class accepts (None if it accepts none)."""
    for name in names:
        try:
            return cls(root, split=name, download=download)
        except ValueError:
            continue
    return None


def _official_splits(cls: type, root: str, download: bool, with_test: bool) -> tuple[Dataset, Dataset | None]:
    """A torchvision dataset's training split and its official held-out split (train=False, or
    split test / val / valid), which lrlab uses as the test split; None when it has none."""
    params = inspect.signature(cls).parameters
    if "train" in params:
        train = cls(root, train=True, download=download)
        return train, cls(root, train=False, download=download) if with_test else None
    if "split" in params:
        train = _first_split(cls, root, download, ("train", "trainval"))
        if train is not None:
            test = _first_split(cls, root, download, ("test", "val", "valid")) if with_test else None
            return train, test
    return cls(root, download=download), None


@dataclass(kw_only=True)
class TorchvisionConfig(DataConfig):
    """Any torchvision classification dataset by class name (e.g. CIFAR10, OxfordIIITPet, FashionMNIST):
    its official test split is the test split (test_pct 0: none); valid is cut from its training
    split by valid_pct (and test by test_pct when it has no test split)."""

    name: str = "torchvision"
    dataset: str
    root: str | None = None  # None: $LRLAB_DATA, else ./data under the launch directory
    download: bool = False  # needs internet, once


def _torchvision_class(dataset: str) -> type:
    import torchvision.datasets as tvd

    cls = getattr(tvd, str(dataset), None)
    if not isinstance(cls, type):
        import difflib

        close = difflib.get_close_matches(str(dataset), tvd.__all__, n=5)
        raise LrlabError(
            f"data.dataset={dataset!r} is not a torchvision dataset. "
            f"Close matches: {', '.join(close) or 'none'}."
        )
    return cls


@register_source("torchvision", TorchvisionConfig)
def load_torchvision(cfg: TorchvisionConfig | None = None, **fields: Any) -> ImageSource:
    """Any torchvision classification dataset by class name: its official test split as the test
    split, valid cut from its training split."""
    cfg = config_with(TorchvisionConfig, cfg, fields)
    dataset, download = cfg.dataset, cfg.download
    root = cfg.root or os.environ.get("LRLAB_DATA") or "data"
    cls = _torchvision_class(dataset)
    try:
        train, test = _official_splits(cls, root, download, cfg.test_pct > 0)
    except Exception as exc:  # torchvision raises RuntimeError, URLError, OSError...
        hint = "pass data.download=true (needs internet)" if not download else "check the internet connection"
        raise LrlabError(
            f"Could not load torchvision dataset {dataset} from data.root={root!r} "
            f"({describe(exc)}); "
            f"{hint}, or use an offline dataset: data=elpv, data=mnist5k, data=digits or "
            "data=imagefolder data.root=PATH."
        ) from exc
    classes = list(getattr(train, "classes", []))
    if not classes:
        classes = [str(c) for c in sorted(set(_dataset_targets(train).tolist()))]
    return _assemble(train, None, test, classes, cfg)
