"""Datasets and loaders on real bundled data (digits, ELPV) and image trees written on the fly."""

from __future__ import annotations

import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import image_folder_config, write_image_tree
from lrlab.data.loaders import MAX_AUTO_WORKERS, TensorLoader, loader_workers, make_loaders
from lrlab.data.registry import SOURCES, DataConfig, get_source, register_source
from lrlab.data.sources import DigitsConfig, load_digits, load_elpv, load_source
from lrlab.data.splits import split_indices
from lrlab.data.types import ImageSource, Normalization, TensorSplit
from lrlab.errors import ConfigError, LrlabError

NORM = Normalization((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def _counts(split) -> Counter:
    return Counter(split.labels.tolist())


def test_digits_split_60_20_20_is_stratified_and_resized() -> None:
    source = load_digits(image_size=16, split_seed=0)
    assert source.num_classes == 10
    assert source.sizes() == {"train": 1077, "valid": 360, "test": 360}
    assert source.train.images.shape[1:] == (1, 16, 16) and source.train.images.dtype == torch.uint8
    full = _counts(source.train) + _counts(source.valid) + _counts(source.test)
    assert sum(full.values()) == 1797
    for held_out in (_counts(source.valid), _counts(source.test)):
        assert all(abs(held_out[c] - 0.2 * n) <= 1 for c, n in full.items())


@pytest.fixture(scope="module")
def elpv():
    return load_elpv(image_size=32, classes=4)


def test_elpv_four_classes_60_20_20_stratified_by_class_and_cell_type(elpv) -> None:
    from elpv_dataset.utils import load_dataset

    assert elpv.sizes() == {"train": 1574, "valid": 525, "test": 525}
    assert _counts(elpv.train) == {0: 904, 1: 178, 2: 64, 3: 428}
    assert _counts(elpv.valid) == {0: 302, 1: 58, 2: 21, 3: 144}
    assert _counts(elpv.test) == {0: 302, 1: 59, 2: 21, 3: 143}
    _, probs, _ = load_dataset()
    labels = np.rint(probs * 3).astype(int)
    full = Counter(labels.tolist())
    assert sorted(full) == [0, 1, 2, 3] and sum(full.values()) == 2624
    for held_out in (_counts(elpv.valid), _counts(elpv.test)):
        for cls, n in full.items():
            assert abs(held_out[cls] - 0.2 * n) <= 1.5
    assert elpv.class_groups == {"functional": [0, 1], "defective": [2, 3]}


def test_elpv_split_is_fixed_by_split_seed() -> None:
    a = load_elpv(image_size=8, split_seed=0)
    b = load_elpv(image_size=8, split_seed=0)
    c = load_elpv(image_size=8, split_seed=1)
    assert torch.equal(a.valid.images, b.valid.images) and torch.equal(a.test.images, b.test.images)
    assert not torch.equal(a.valid.images, c.valid.images)
    assert not torch.equal(a.test.images, c.test.images)


def test_elpv_binary_variant() -> None:
    source = load_elpv(image_size=8, classes=2)
    assert source.class_names == ["functional", "defective"]
    assert set(source.train.labels.tolist()) == set(source.test.labels.tolist()) == {0, 1}
    assert source.class_groups is None


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


def test_imagefolder_single_tree_split_and_timm_transforms(tmp_path: Path) -> None:
    write_image_tree(tmp_path)
    cfg = image_folder_config(tmp_path)
    source = load_source(cfg)
    assert source.class_names == ["cat", "dog"]
    assert source.sizes() == {"train": 6, "valid": 3, "test": 3}  # test ceil(0.2 * 12), valid ceil(0.25 * 12)
    train, valid, test = make_loaders(source, cfg, NORM)
    x, y = next(iter(train))
    assert x.shape == (4, 3, 16, 16) and y.dtype == torch.int64
    assert next(iter(valid))[0].shape[1:] == (3, 16, 16)
    assert sum(len(labels) for _, labels in test) == 3


def test_imagefolder_train_valid_tree_in_memory(tmp_path: Path) -> None:
    write_image_tree(tmp_path / "train")
    write_image_tree(tmp_path / "valid", per_class=2)
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
    assert isinstance(source.train, TensorSplit) and isinstance(source.test, TensorSplit)
    # no ROOT/test: the test split is cut from ROOT/train, stratified (ceil(0.2 * 12) = 3 images)
    assert source.sizes() == {"train": 9, "valid": 4, "test": 3}
    assert source.train.images.shape == (9, 3, 12, 12)


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
            "test_pct": 0.25,
            "split_seed": 0,
        }
    )
    assert source.sizes() == {"train": 32, "valid": 16, "test": 16}
    assert _counts(source.valid) == _counts(source.test) == {0: 4, 1: 4, 2: 4, 3: 4}
    assert source.train.images.shape[1:] == (1, 10, 10)


def test_load_source_takes_missing_keys_from_the_sources_config() -> None:
    source = load_source({"name": "digits", "image_size": 8})
    assert len(source.valid) == 360 and source.train.images.shape[1:] == (1, 8, 8)
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
        ({"name": "digits", "test_pct": -0.1}, "data.test_pct=-0.1"),
        ({"name": "digits", "test_pct": 1}, "data.test_pct=1"),
        ({"name": "digits", "valid_pct": 0.5, "test_pct": 0.5}, "data.valid_pct=0.5 plus data.test_pct=0.5"),
        (
            {"name": "digits", "balance": "oversample"},
            "data.balance='oversample' is not valid; choose one of: none, sampler, weights",
        ),
        ({"name": "digits", "num_workers": -1}, "data.num_workers=-1 must be a number >= 0 or auto"),
        ({"name": "digits", "num_workers": "many"}, "data.num_workers='many' must be a number >= 0 or auto"),
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


def _check_split(split, n: int) -> None:
    train, valid, test = (set(part.tolist()) for part in split)
    assert not (train & valid or train & test or valid & test), "splits overlap"
    assert train | valid | test == set(range(n)), "splits do not cover the data"
    assert sum(len(part) for part in split) == n


def test_split_indices_are_disjoint_stratified_and_fixed_by_the_seed() -> None:
    strata = np.repeat([0, 1, 2], [50, 30, 20])
    split = split_indices(strata, 0.2, 0.2, seed=0)
    _check_split(split, 100)
    assert [len(part) for part in split] == [60, 20, 20]
    for part, pct in ((split.valid, 0.2), (split.test, 0.2), (split.train, 0.6)):
        assert Counter(strata[part].tolist()) == {0: 50 * pct, 1: 30 * pct, 2: 20 * pct}
    again, other = split_indices(strata, 0.2, 0.2, seed=0), split_indices(strata, 0.2, 0.2, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(split, again))
    assert not np.array_equal(split.test, other.test)
    # the test split does not depend on valid_pct; without one, valid is the classic 2-way split
    assert np.array_equal(split_indices(strata, 0.3, 0.2, seed=0).test, split.test)
    two_way = split_indices(strata, 0.25, 0.0, seed=0)
    assert len(two_way.test) == 0 and [len(two_way.train), len(two_way.valid)] == [75, 25]


def test_a_stratum_too_small_to_split_is_a_clear_error() -> None:
    with pytest.raises(LrlabError, match=r"data\.valid_pct=0\.2 and data\.test_pct=0\.2"):
        split_indices(np.array([0, 0, 0, 0, 1]), 0.2, 0.2)


def test_elpv_splits_are_disjoint_and_cover_the_2624_images(elpv) -> None:
    """Positions from the same strata load_elpv uses: disjoint, covering, and the loaded test
    split holds exactly the labels at those positions."""
    from lrlab.data.sources import _elpv_arrays, elpv_labels

    _, probs, types = _elpv_arrays(None)
    labels, _, strata = elpv_labels(probs, types, 4)
    split = split_indices(strata, 0.2, 0.2, seed=0)
    _check_split(split, 2624)
    for part, loaded in zip(split, (elpv.train, elpv.valid, elpv.test)):
        assert loaded.labels.tolist() == labels[part].tolist()
        # stratified by class x cell type too: each held-out share within one image of 20 / 60 %
        share = 0.6 if part is split.train else 0.2
        for stratum, n in Counter(strata.tolist()).items():
            assert abs((strata[part] == stratum).sum() - share * n) <= 1
    # Each image keeps its file (test_predictions.csv names it): the file decodes to that image.
    from PIL import Image

    from lrlab.data.sources import uint8_stack

    assert len(elpv.test.paths) == len(elpv.test) and len(set(elpv.test.paths)) == len(elpv.test)
    size = elpv.test.images.shape[-1]
    for i in (0, len(elpv.test) // 2, len(elpv.test) - 1):
        decoded = np.asarray(Image.open(elpv.test.paths[i]).convert("L"))[None]
        assert torch.equal(uint8_stack(decoded, size)[0], elpv.test.images[i])


def test_test_pct_zero_means_no_test_split_and_the_old_two_way_split() -> None:
    source = load_source({"name": "digits", "image_size": 8, "valid_pct": 0.25, "test_pct": 0})
    assert source.test is None and source.sizes() == {"train": 1347, "valid": 450, "test": 0}
    loaders = make_loaders(source, {"batch_size": 64}, NORM)
    assert loaders.test is None and isinstance(loaders.valid, TensorLoader)


def test_imagefolder_uses_its_own_valid_and_test_folders(tmp_path: Path) -> None:
    write_image_tree(tmp_path / "train", per_class=10)
    write_image_tree(tmp_path / "val", per_class=3)
    write_image_tree(tmp_path / "test", per_class=2)
    cfg = {"name": "imagefolder", "root": str(tmp_path), "image_size": 8, "num_workers": 0}
    assert load_source(cfg).sizes() == {"train": 20, "valid": 6, "test": 4}
    assert load_source({**cfg, "test_pct": 0}).sizes() == {"train": 20, "valid": 6, "test": 0}
    shutil.rmtree(tmp_path / "val")  # no valid folder: valid is cut from train (ceil(0.2 * 20) = 4)
    source = load_source(cfg)
    assert source.sizes() == {"train": 16, "valid": 4, "test": 4}
    assert Counter(source.valid[i][1] for i in range(4)) == {0: 2, 1: 2}
    write_image_tree(tmp_path / "valid", classes=("cat", "cow"), per_class=1)
    with pytest.raises(LrlabError, match="different class folders"):
        load_source(cfg)


def test_imagefolder_skips_hidden_folders_and_names_what_it_cannot_use(tmp_path: Path) -> None:
    """A Jupyter `.ipynb_checkpoints` folder is no class; an empty class folder, a tree without
    class folders and a class too small to split are each named, not torchvision's or
    scikit-learn's generic refusal (which named the class by its index)."""
    write_image_tree(tmp_path, per_class=6)
    (tmp_path / ".ipynb_checkpoints").mkdir()
    cfg = {"name": "imagefolder", "root": str(tmp_path), "image_size": 8, "num_workers": 0}
    assert load_source(cfg).class_names == ["cat", "dog"]
    (tmp_path / "emu").mkdir()
    (tmp_path / "emu" / "notes.txt").write_text("no image")
    with pytest.raises(LrlabError, match=r"class folder\(s\) emu in .* hold no image file"):
        load_source(cfg)
    (tmp_path / "emu" / "notes.txt").unlink()
    shutil.copy(next((tmp_path / "cat").iterdir()), tmp_path / "emu" / "only.png")
    with pytest.raises(LrlabError, match=r"each class needs at least 3 images .* fewer: emu \(1\)"):
        load_source(cfg)
    with pytest.raises(LrlabError, match=r"each class needs at least 2 images .* fewer: emu \(1\)"):
        load_source({**cfg, "test_pct": 0})
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "a.png").write_bytes((tmp_path / "emu" / "only.png").read_bytes())
    with pytest.raises(LrlabError, match="holds no class folders"):
        load_source({**cfg, "root": str(bare)})


class TinyVision:
    """A torchvision-style dataset class with an official train/test split (train=True/False)."""

    def __init__(self, root: str, train: bool = True, download: bool = False):
        self.classes = ["a", "b"]
        self.targets = [i % 2 for i in range(40 if train else 10)]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        return Image.new("L", (6, 6), color=i), self.targets[i]


def test_torchvisions_official_test_split_is_the_test_split(monkeypatch, tmp_path: Path) -> None:
    import torchvision.datasets

    monkeypatch.setattr(torchvision.datasets, "TinyVision", TinyVision, raising=False)
    cfg = {"name": "torchvision", "dataset": "TinyVision", "root": str(tmp_path), "image_size": 4}
    source = load_source({**cfg, "valid_pct": 0.25})
    assert source.sizes() == {"train": 30, "valid": 10, "test": 10}  # valid cut from train; test official
    assert source.class_names == ["a", "b"] and source.test.indices == list(range(10))
    assert load_source({**cfg, "test_pct": 0}).test is None


class UnreachableVision(TinyVision):
    """A download that fails as torchvision's do offline: the reason on the message's last line."""

    def __init__(self, root: str, train: bool = True, download: bool = False):
        raise RuntimeError("Error downloading train.gz:\nTried http://example.invalid/, got:\n<no route>\n")


def test_a_failed_download_is_one_paragraph_with_its_reason(monkeypatch, tmp_path: Path) -> None:
    import torchvision.datasets

    monkeypatch.setattr(torchvision.datasets, "UnreachableVision", UnreachableVision, raising=False)
    cfg = {"name": "torchvision", "dataset": "UnreachableVision", "root": str(tmp_path), "download": True}
    with pytest.raises(LrlabError) as info:
        load_source({**cfg, "image_size": 4})
    message = str(info.value)
    assert "\n" not in message and "got: <no route>); check the internet connection" in message


def _with_bad_files(root: Path) -> list[Path]:
    """Four damaged files among 20 good ones: garbage, empty, and two that pass PIL's `verify()`
    but cannot be decoded (a JPEG cut short, a PNG whose zlib stream is damaged)."""
    import io
    import zlib

    write_image_tree(root, per_class=10)
    corrupt, empty = root / "cat" / "corrupt.jpg", root / "dog" / "empty.png"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg" * 20)
    empty.write_bytes(b"")
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    jpeg = io.BytesIO()
    noise.save(jpeg, "JPEG", quality=95)
    truncated = root / "cat" / "truncated.jpg"
    truncated.write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
    png = io.BytesIO()
    noise.save(png, "PNG")
    data = bytearray(png.getvalue())
    start = data.index(b"IDAT") + 4 + 40  # inside the compressed pixels; the chunk's CRC is fixed below
    data[start : start + 30] = bytes(30)
    length = int.from_bytes(data[start - 44 - 4 : start - 44], "big")
    chunk = bytes(data[start - 44 : start - 40 + length])
    data[start - 40 + length : start - 36 + length] = zlib.crc32(chunk).to_bytes(4, "big")
    bad_zlib = root / "dog" / "bad_zlib.png"
    bad_zlib.write_bytes(bytes(data))
    for path in (truncated, bad_zlib):
        with Image.open(path) as image:
            image.verify()  # what the old check did: both pass it
    return [corrupt, empty, truncated, bad_zlib]


def test_unreadable_images_are_named_before_any_training(tmp_path: Path) -> None:
    bad = _with_bad_files(tmp_path)
    cfg = {"name": "imagefolder", "root": str(tmp_path), "image_size": 8, "num_workers": 0}
    with pytest.raises(LrlabError, match=r"4 of 24 image files under .* cannot be read") as err:
        load_source(cfg)
    assert all(str(p) in str(err.value) for p in bad) and "data.skip_bad_images=true" in str(err.value)


def test_unreadable_images_can_be_left_out_with_a_count(tmp_path: Path, caplog) -> None:
    _with_bad_files(tmp_path)
    cfg = {"name": "imagefolder", "root": str(tmp_path), "image_size": 8, "num_workers": 0}
    source = load_source({**cfg, "skip_bad_images": True})
    assert sum(source.sizes().values()) == 20 and "left out 4 unreadable image(s)" in caplog.text
    train, _, _ = make_loaders(source, {**cfg, "batch_size": 4}, NORM)
    assert sum(len(y) for _, y in train) == source.sizes()["train"]  # every remaining file decodes


def test_one_class_data_is_refused(tmp_path: Path) -> None:
    write_image_tree(tmp_path, classes=("only",), per_class=12)
    with pytest.raises(LrlabError, match=r"has 1 class\(es\) \(only\); need at least 2"):
        load_source({"name": "imagefolder", "root": str(tmp_path), "image_size": 8, "num_workers": 0})
    from lrlab.data.sources import check_classes
    from lrlab.data.types import ImageSource, TensorSplit

    def split(*labels: int) -> TensorSplit:
        return TensorSplit(torch.zeros(len(labels), 1, 2, 2, dtype=torch.uint8), torch.tensor(labels))

    check_classes(ImageSource(split(0, 1, 2), split(0, 2), ["a", "b", "c"], split(1, 2)), "x")
    with pytest.raises(
        LrlabError, match=r"the test split of data 'x' holds images of 1 class\(es\) \(b\) out of 3"
    ):
        check_classes(ImageSource(split(0, 1, 2), split(0, 2), ["a", "b", "c"], split(1, 1)), "x")


def test_the_balanced_sampler_draws_every_class_about_equally_and_repeats_by_seed(tmp_path: Path) -> None:
    """data.balance=sampler: 9:1 imbalanced training data comes out near 1:1, drawn with
    replacement, the same for the same seed, in memory and from files."""
    images = torch.zeros(200, 1, 8, 8, dtype=torch.uint8)
    labels = torch.tensor([0] * 180 + [1] * 20)
    source = ImageSource(TensorSplit(images, labels), TensorSplit(images[:4], labels[:4]), ["a", "b"])
    cfg = {"batch_size": 50, "augment": {}, "balance": "sampler"}

    def drawn(loader) -> torch.Tensor:
        return torch.cat([y for _, y in loader])

    first = drawn(make_loaders(source, cfg, NORM, seed=3).train)
    assert len(first) == 200 and 0.4 < first.float().mean().item() < 0.6
    assert torch.equal(first, drawn(make_loaders(source, cfg, NORM, seed=3).train))
    plain = drawn(make_loaders(source, {**cfg, "balance": "none"}, NORM, seed=3).train)
    assert plain.float().mean().item() == pytest.approx(0.1)  # a permutation: 20 of 200

    write_image_tree(tmp_path / "train", per_class=1)
    for i in range(1, 18):  # cat 18 : dog 1
        Image.new("RGB", (20, 24)).save(tmp_path / "train" / "cat" / f"extra{i}.png")
    write_image_tree(tmp_path / "valid", per_class=1)
    files = {"name": "imagefolder", "root": str(tmp_path), "image_size": 8, "batch_size": 19,
             "num_workers": 0, "test_pct": 0, "augment": {}}  # fmt: skip
    tree = load_source(files)
    counts = torch.zeros(2)
    for _ in range(10):
        counts += torch.bincount(
            drawn(make_loaders(tree, {**files, "balance": "sampler"}, NORM, seed=_).train), minlength=2
        )
    assert 0.35 < counts[1] / counts.sum() < 0.65  # dog: 1 of 19 images, about half of the draws


def test_the_deitsch_split_preset_tests_on_a_quarter_of_the_cells(compose_cfg) -> None:
    """experiment=elpv_deitsch_split: Deitsch et al.'s 656 test cells (25%), 10% valid, the rest train."""
    cfg = compose_cfg("experiment=elpv_deitsch_split", "data.image_size=8")
    source = load_elpv(valid_pct=cfg.data.valid_pct, test_pct=cfg.data.test_pct, image_size=8)
    assert source.sizes() == {"train": 1705, "valid": 263, "test": 656}


def test_auto_workers_keep_two_on_the_cpu_and_take_the_processs_share_of_the_cores_on_a_gpu(
    monkeypatch, compose_cfg
) -> None:
    from lrlab.app.schema import validate

    assert validate(compose_cfg("data=imagefolder", "data.root=.")).data.num_workers == "auto"
    assert (
        validate(compose_cfg("data=imagefolder", "data.root=.", "data.num_workers=6")).data.num_workers == 6
    )
    assert loader_workers(0, "cuda") == 0 and loader_workers(6, "cpu") == 6
    monkeypatch.setattr("lrlab.data.loaders.usable_cores", lambda: 16)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert loader_workers("auto", "cpu") == 2  # training on the CPU needs the cores
    assert loader_workers("auto", "cuda") == 15  # one core left to the process that drives the GPU
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # torchrun, 4 GPUs on this node: 4 cores each
    assert loader_workers("auto", torch.device("cuda", 2)) == 3
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "32")
    assert loader_workers("auto", "cuda") == 1
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    monkeypatch.setattr("lrlab.data.loaders.usable_cores", lambda: 96)
    assert loader_workers("auto", "cuda") == MAX_AUTO_WORKERS == 16


def test_images_decoded_in_threads_come_back_in_order(monkeypatch) -> None:
    import time

    from lrlab.data import decode

    monkeypatch.setattr(decode, "usable_cores", lambda: 4)
    # later items finish first: the results must still follow the items
    assert decode.map_in_threads(lambda i: time.sleep((5 - i) / 200) or i * i, range(6)) == [
        0,
        1,
        4,
        9,
        16,
        25,
    ]
    assert decode.map_in_threads(str, [], desc="nothing") == []
