"""The training preview (data/train_batch.png): the images as training augments them, drawn
without touching the training's randomness."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import image_folder_config, write_image_tree
from lrlab.data.loaders import TensorLoader, make_loaders
from lrlab.data.preview import BatchPreview, preview_batch
from lrlab.data.sources import load_source
from lrlab.data.types import Normalization, TensorSplit

NORM = Normalization((0.5, 0.4, 0.3), (0.2, 0.25, 0.3))
AUGMENT = {"hflip": 0.5, "scale": [0.5, 1.0], "rotate": 10.0}


def _split(n: int = 40) -> TensorSplit:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 12, 12), dtype=torch.uint8, generator=generator)
    return TensorSplit(images, torch.arange(n) % 4)


def _loader(seed: int = 7) -> TensorLoader:
    return TensorLoader(_split(), 16, NORM, shuffle=True, drop_last=True, augment=AUGMENT, seed=seed)


def test_in_memory_preview_is_the_first_training_batch_and_leaves_the_loader_untouched() -> None:
    loader, untouched, untouched_twin = _loader(), _loader(), _loader()
    preview = preview_batch(loader, NORM, ["a", "b", "c", "d"], count=6, seed=7)
    assert preview is not None and preview.images.shape == (6, 12, 12, 3)
    assert preview.images.min() >= 0 and preview.images.max() <= 1
    first_images, first_labels = next(iter(untouched))
    # the same seed draws the same order: the preview's images are the first training batch's first six
    assert preview.labels.tolist() == first_labels[:6].tolist()
    assert preview.titles() == [["a", "b", "c", "d"][i] for i in first_labels[:6].tolist()]
    # un-normalised with the model's mean and std: a plain batch (no augmentation) comes back as its pixels
    plain = TensorLoader(_split(), 8, NORM)
    shown = preview_batch(plain, NORM, list("abcd"), count=3)
    expected = _split().images[:3].permute(0, 2, 3, 1).float().numpy() / 255
    np.testing.assert_allclose(shown.images, expected, atol=1e-5)
    # the training loader still yields what a loader never previewed yields, epoch after epoch
    for _ in range(2):
        for (x, y), (x2, y2) in zip(loader, untouched_twin, strict=True):
            assert torch.equal(x, x2) and torch.equal(y, y2)
    assert torch.equal(first_images, next(iter(_loader()))[0])


def test_file_preview_runs_the_training_transform_and_restores_every_random_state(tmp_path: Path) -> None:
    write_image_tree(tmp_path, per_class=5)
    cfg = image_folder_config(tmp_path)
    source = load_source(cfg)
    train = make_loaders(source, cfg, NORM).train
    torch.manual_seed(3)
    random.seed(3)
    np.random.seed(3)
    states = (torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy())
    preview = preview_batch(train, NORM, source.class_names, count=4, seed=1)
    assert torch.equal(torch.get_rng_state(), states[0])
    assert random.getstate() == states[1] and np.array_equal(np.random.get_state()[1], states[2])
    assert preview.images.shape == (4, 16, 16, 3)
    assert preview.images.min() >= 0 and preview.images.max() <= 1
    labels = [source.train[i][1] for i in range(len(source.train))]
    chosen = torch.randperm(len(source.train), generator=torch.Generator().manual_seed(1))[:4]
    assert preview.labels.tolist() == [labels[i] for i in chosen.tolist()]
    # the same seed draws the same augmented images again
    again = preview_batch(train, NORM, source.class_names, count=4, seed=1)
    np.testing.assert_array_equal(preview.images, again.images)


def test_the_grid_is_written_and_shown_inline(tmp_path: Path) -> None:
    preview = BatchPreview(
        np.random.default_rng(0).random((5, 8, 8, 1)), np.array([0, 1, 1, 0, 1]), ["x", "y"]
    )
    path = preview.save(tmp_path / "data" / "train_batch.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert preview._repr_png_()[:8] == b"\x89PNG\r\n\x1a\n"
    assert repr(preview) == "BatchPreview(5 training images, 8x8 px, classes ['x', 'y'])"


@pytest.mark.parametrize("loader", [[(torch.zeros(2, 3, 4, 4), torch.zeros(2))], None])
def test_nothing_is_drawn_from_a_plain_iterable_or_for_zero_images(loader) -> None:
    if loader is None:
        assert preview_batch(_loader(), NORM, list("abcd"), count=0) is None
    else:
        assert preview_batch(loader, NORM, ["a"], count=4) is None
