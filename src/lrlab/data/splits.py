"""Stratified train / valid / test splits, deterministic from a seed.

`split_indices` cuts the test split first, then valid from what is left, each stratified by the
same labels (or finer strata, e.g. ELPV's class x cell type), so the test split of a given
`test_pct` and seed does not change when `valid_pct` does. Sizes are fractions of the whole:
`ceil(pct * n)`, scikit-learn's rounding. With `test_pct=0` the valid split is exactly the one
`train_test_split(..., test_size=valid_pct, stratify=strata, random_state=seed)` gives.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    import numpy as np

from lrlab.errors import LrlabError


class Split(NamedTuple):
    """Sorted positions of each split; disjoint, and together every position once."""

    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray


def _cut(index: np.ndarray, strata: np.ndarray, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified (rest, held out) of `index`, `count` of them held out."""
    from sklearn.model_selection import train_test_split

    rest, held = train_test_split(index, test_size=count, random_state=seed, stratify=strata)
    return rest, held


def split_indices(
    strata: np.ndarray,
    valid_pct: float,
    test_pct: float = 0.0,
    seed: int = 0,
    names: Sequence[str] | None = None,
) -> Split:
    """Positions of the train, valid and test splits of `len(strata)` items, stratified by
    `strata`; `valid_pct` or `test_pct` of 0 gives an empty split. LrlabError when a stratum is too
    small to be split (each needs one item per split), naming the small ones (`names[stratum]`
    when the strata are class indices)."""
    import numpy as np  # not at import: the CLI imports this module to register the sources

    strata = np.asarray(strata)
    n = len(strata)
    rest, empty = np.arange(n), np.array([], dtype=np.int64)
    valid, test = empty, empty
    try:
        if test_pct > 0:
            rest, test = _cut(rest, strata, math.ceil(test_pct * n), seed)
        if valid_pct > 0:
            rest, valid = _cut(rest, strata[rest], math.ceil(valid_pct * n), seed)
    except ValueError as exc:
        fractions = f"data.valid_pct={valid_pct} and data.test_pct={test_pct}"
        need = 1 + (valid_pct > 0) + (test_pct > 0)
        values, counts = np.unique(strata, return_counts=True)
        small = [(v, int(c)) for v, c in zip(values, counts) if c < need]
        if small:
            what = "class" if names is not None else "stratum"
            listed = ", ".join(f"{names[int(v)] if names is not None else v} ({c})" for v, c in small)
            raise LrlabError(
                f"Cannot split {n} images into stratified train/valid/test with {fractions}: each "
                f"{what} needs at least {need} images (one per split), and these have fewer: {listed}. "
                f"Add images to them, remove them, or set data.test_pct=0."
            ) from exc
        raise LrlabError(
            f"Cannot split {n} images into stratified train/valid/test with {fractions}: {exc} "
            "Use more images, or other fractions."
        ) from exc
    return Split(np.sort(rest), np.sort(valid), np.sort(test))
