"""Shared range-test curves: a test that starts from the identical state reuses the recorded curve
(no steps run, the same suggestions for every rule), and any change to that state misses."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import torch

from lrlab.core.optim import build_optimizer
from lrlab.data.loaders import TensorLoader
from lrlab.data.sources import load_digits
from lrlab.finder.curve_cache import DirectoryCurveStore, SharedCurves
from lrlab.finder.range_test import find_lr
from lrlab.finder.rules import suggest
from lrlab.models.factory import create_model, normalization
from lrlab.models.groups import layer_groups

ADAMW = partial(torch.optim.AdamW, betas=(0.9, 0.99), eps=1e-5, weight_decay=0.01)


def _setup(seed: int = 0):
    torch.manual_seed(seed)
    source = load_digits(image_size=8)
    model = create_model("test_efficientnet", num_classes=10)
    loader = TensorLoader(source.train, 32, normalization(model), shuffle=True, drop_last=True, seed=seed)
    optimizer = build_optimizer(ADAMW, model, layer_groups(model, 2), lr=3e-3)
    return model, loader, optimizer


class CountingStore(DirectoryCurveStore):
    def __init__(self, directory: Path):
        super().__init__(directory)
        self.puts = 0

    def put(self, key, value) -> None:
        self.puts += 1
        super().put(key, value)


def test_an_identical_start_reuses_the_curve_and_any_change_misses(tmp_path: Path) -> None:
    store = CountingStore(tmp_path / "curves")
    run = partial(find_lr, num_iter=30, end_lr=10.0, shared=SharedCurves(store, "digits 8px"))
    first = run(*_setup())
    assert not first.cached and first.seconds > 0 and store.puts == 1

    model, loader, optimizer = _setup()  # a new process would build exactly this
    again = run(model, loader, optimizer, suggest="valley")
    assert again.cached and again.spent_seconds == 0.0 and again.seconds == first.seconds and store.puts == 1
    np.testing.assert_array_equal(again.losses, first.losses)
    np.testing.assert_array_equal(again.lrs, first.lrs)
    assert again.suggestion == first.suggestions["valley"] == suggest(again.lrs, again.smoothed, "valley")

    # A reused curve leaves the state as a recorded one does: untouched (so a third call hits too).
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    assert run(model, loader, optimizer).cached
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    torch.manual_seed(123)
    assert not run(model, loader, optimizer).cached and store.puts == 2  # other RNG state: other draws

    with torch.no_grad():
        next(model.parameters()).add_(1e-3)
    assert not run(model, loader, optimizer).cached and store.puts == 3  # other weights
    model, loader, optimizer = _setup()
    for p in list(model.parameters())[:3]:
        p.requires_grad_(False)
    assert not run(model, loader, optimizer).cached and store.puts == 4  # another trainable set
    model, loader, optimizer = _setup()
    assert not run(model, loader, optimizer, shared=SharedCurves(store, "digits 16px")).cached  # other data
    model, loader, optimizer = _setup(seed=1)
    assert not run(model, loader, optimizer).cached  # another seed: other weights and data order
    assert not run(*_setup(), num_iter=40).cached  # another ramp
