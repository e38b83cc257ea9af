"""Datasets and loaders on real bundled data (digits, ELPV) and image trees written on the fly."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lrlab.data.loaders import TensorLoader, make_loaders
from lrlab.data.registry import SOURCES, DataConfig, get_source, register_source
from lrlab.data.sources import DigitsConfig, load_digits, load_elpv, load_source
from lrlab.data.types import ImageSource, Normalization, TensorSplit
from lrlab.errors import ConfigError, LrlabError

NORM = Normalization((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def test_digits_split_is_stratified_and_resized() -> None:
    source = load_digits(image_size=16, valid_pct=0.25, split_seed=0)
    assert source.num_classes == 10
    assert len(source.train) + len(source.valid) == 1797
    assert source.train.images.shape[1:] == (1, 16, 16) and source.train.images.dtype == torch.uint8
    full = Counter(source.train.labels.tolist()) + Counter(source.valid.labels.tolist())
    valid = Counter(source.valid.labels.tolist())
    assert all(abs(valid[c] - 0.25 * n) <= 1 for c, n in full.items())


@pytest.fixture(scope="module")
def elpv():
    return load_elpv(image_size=32, classes=4)


def test_elpv_four_classes_stratified_by_class_and_cell_type(elpv) -> None:
    from elpv_dataset.utils import load_dataset

    assert len(elpv.train) + len(elpv.valid) == 2624
    assert len(elpv.valid) == 656
    _, probs, _ = load_dataset()
    labels = np.rint(probs * 3).astype(int)
    full = Counter(labels.tolist())
    valid = Counter(elpv.valid.labels.tolist())
    for cls, n in full.items():
        assert abs(valid[cls] - 0.25 * n) <= 1.5
    assert sorted(full) == [0, 1, 2, 3]


def test_elpv_split_is_fixed_by_split_seed() -> None:
    a = load_elpv(image_size=8, split_seed=0)
    b = load_elpv(image_size=8, split_seed=0)
    c = load_elpv(image_size=8, split_seed=1)
    assert torch.equal(a.valid.images, b.valid.images)
    assert not torch.equal(a.valid.images, c.valid.images)


def test_elpv_binary_variant() -> None:
    source = load_elpv(image_size=8, classes=2)
    assert source.class_names == ["functional", "defective"]
    assert set(source.train.labels.tolist()) == {0, 1}


def test_tensor_loader_is_seeded_normalised_and_three_channel() -> None:
    split = TensorSplit(torch.randint(0, 256, (50, 1, 8, 8), dtype=torch.uint8), torch.arange(50) % 5)
    aug = {"hflip": 0.5, "vflip": 0.5, "rot90": True, "scale": [0.5, 1.0]}
    first = [b for b in TensorLoader(split, 16, NORM, shuffle=True, augment=aug, seed=3)]
    again = [b for b in TensorLoader(split, 16, NORM, shuffle=True, augment=aug, seed=3)]
    other = [b for b in TensorLoader(split, 16, NORM, shuffle=True, augment=aug, seed=4)]
    assert len(first) == 4 and first[0][0].shape == (16, 3, 8, 8)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again))
    assert not torch.equal(first[0][1], other[0][1])
    plain = next(iter(TensorLoader(split, 50, NORM)))[0]
    expected = (split.images.float().expand(-1, 3, -1, -1) / 255 - 0.5) / 0.5
    assert torch.allclose(plain, expected, atol=1e-6)


def test_flip_augmentation_flips_exactly() -> None:
    image = torch.arange(16, dtype=torch.uint8).view(1, 1, 4, 4)
    split = TensorSplit(image.repeat(64, 1, 1, 1), torch.zeros(64, dtype=torch.int64))
    x, _ = next(iter(TensorLoader(split, 64, NORM, augment={"hflip": 1.0, "scale": [1.0, 1.0]})))
    flipped = (image.flip(-1).float().expand(-1, 3, -1, -1) / 255 - 0.5) / 0.5
    assert torch.allclose(x[0], flipped[0], atol=1e-5)


def _write_tree(root: Path, classes=("cat", "dog"), per_class: int = 6) -> None:
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(root / c / f"{i}.png")


def test_imagefolder_single_tree_split_and_timm_transforms(tmp_path: Path) -> None:
    _write_tree(tmp_path)
    cfg = {
        "name": "imagefolder",
        "root": str(tmp_path),
        "image_size": 16,
        "batch_size": 4,
        "num_workers": 0,
        "valid_pct": 0.25,
        "split_seed": 0,
        "in_memory": False,
        "augment": {"hflip": 0.5, "scale": [0.5, 1.0]},
    }
    source = load_source(cfg)
    assert source.class_names == ["cat", "dog"] and len(source.train) == 9 and len(source.valid) == 3
    train, valid = make_loaders(source, cfg, NORM)
    x, y = next(iter(train))
    assert x.shape == (4, 3, 16, 16) and y.dtype == torch.int64
    assert next(iter(valid))[0].shape[1:] == (3, 16, 16)


def test_imagefolder_train_valid_tree_in_memory(tmp_path: Path) -> None:
    _write_tree(tmp_path / "train")
    _write_tree(tmp_path / "valid", per_class=2)
    cfg = {
        "name": "imagefolder",
        "root": str(tmp_path),
        "image_size": 12,
        "batch_size": 4,
        "num_workers": 0,
        "valid_pct": 0.2,
        "split_seed": 0,
        "in_memory": True,
        "augment": {},
    }
    source = load_source(cfg)
    assert isinstance(source.train, TensorSplit)
    assert source.train.images.shape == (12, 3, 12, 12) and len(source.valid) == 4


def test_missing_root_and_offline_torchvision_give_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(LrlabError, match="not an existing directory"):
        load_source(
            {
                "name": "imagefolder",
                "root": str(tmp_path / "nope"),
                "valid_pct": 0.2,
                "split_seed": 0,
                "image_size": 8,
            }
        )
    with pytest.raises(LrlabError, match=r"data\.download=true"):
        load_source(
            {
                "name": "torchvision",
                "dataset": "CIFAR10",
                "root": str(tmp_path),
                "download": False,
                "valid_pct": 0.2,
                "split_seed": 0,
                "image_size": 8,
            }
        )
    with pytest.raises(LrlabError, match="CIFAR10"):
        load_source(
            {
                "name": "torchvision",
                "dataset": "CIFAR11",
                "root": str(tmp_path),
                "valid_pct": 0.2,
                "split_seed": 0,
                "image_size": 8,
            }
        )


def test_elpv_from_a_folder_copy_in_another_image_format(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    (tmp_path / "images").mkdir()
    lines = []
    for i in range(64):
        prob = (0.0, 1 / 3, 2 / 3, 1.0)[i % 4]
        kind = "mono" if (i // 4) % 2 else "poly"
        name = f"images/cell{i:04d}.webp"
        Image.fromarray(rng.integers(0, 255, (20, 20), dtype=np.uint8)).save(tmp_path / name, lossless=True)
        lines.append(f"{name}  {prob}  {kind}")
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    source = load_source(
        {
            "name": "elpv",
            "root": str(tmp_path),
            "classes": 4,
            "image_size": 10,
            "valid_pct": 0.25,
            "split_seed": 0,
        }
    )
    assert len(source.train) == 48 and len(source.valid) == 16
    assert Counter(source.valid.labels.tolist()) == {0: 4, 1: 4, 2: 4, 3: 4}
    assert source.train.images.shape[1:] == (1, 10, 10)


def test_load_source_takes_missing_keys_from_the_sources_config() -> None:
    source = load_source({"name": "digits", "image_size": 8})
    assert len(source.valid) == 450 and source.train.images.shape[1:] == (1, 8, 8)
    assert source.train.images.shape == load_digits(DigitsConfig(image_size=8)).train.images.shape


def test_an_unknown_source_lists_the_registered_ones() -> None:
    with pytest.raises(ConfigError, match="elpv, digits, imagefolder, torchvision"):
        load_source({"name": "mnist"})


@pytest.mark.parametrize(
    "cfg, message",
    [
        ({"name": "digits", "classes": 2}, "data.classes is not a key of data source 'digits'"),
        ({"name": "digits", "augment": {"hflp": 1.0}}, "data.augment.hflp is not a key"),
        ({"name": "imagefolder"}, "data.root is missing"),
        ({"name": "elpv", "classes": 3}, "data.classes=3 is not valid for elpv; choose 4 or 2"),
        ({"name": "digits", "valid_pct": 0}, "data.valid_pct=0"),
    ],
)
def test_a_bad_data_config_names_the_key(cfg: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_source(cfg)
    assert message in str(info.value)


@dataclass(kw_only=True)
class ToyConfig(DataConfig):
    name: str = "toy"
    image_size: int = 4
    in_memory: bool = True
    count: int = 8


def test_a_new_source_registers_its_config_and_loader() -> None:
    def load_toy(cfg: ToyConfig) -> ImageSource:
        images = torch.zeros(cfg.count, 1, cfg.image_size, cfg.image_size, dtype=torch.uint8)
        split = TensorSplit(images, torch.arange(cfg.count) % 2)
        return ImageSource(split, split, ["a", "b"])

    register_source("toy", ToyConfig)(load_toy)
    try:
        assert get_source("toy").config is ToyConfig
        assert len(load_source({"name": "toy", "count": 6}).train) == 6
    finally:
        SOURCES.pop("toy")
    with pytest.raises(ValueError, match="name defaulting to 'other'"):
        register_source("other", ToyConfig)
