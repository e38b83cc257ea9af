"""Classification metrics from predicted labels and targets: small pure functions on integer
arrays (numpy arrays, torch CPU tensors or lists), for the once-only test report.

Written by hand (a few lines each) rather than imported from scikit-learn so the definitions sit
next to the report that uses them: `balanced_accuracy` is the mean recall over the classes present
in the targets (scikit-learn's definition), and `grouped_accuracy` scores coarser classes (ELPV's
functional vs defective) from the same fine-grained predictions. The calibration error is written
here too: scikit-learn's `calibration_curve` is for two classes only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


def _labels(values: Any) -> np.ndarray:
    return np.asarray(values, dtype=np.int64).reshape(-1)


def confusion_matrix(predictions: Any, targets: Any, num_classes: int) -> np.ndarray:
    """Counts (num_classes x num_classes): row = true class, column = predicted class."""
    predictions, targets = _labels(predictions), _labels(targets)
    counts = np.bincount(targets * num_classes + predictions, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def accuracy(predictions: Any, targets: Any) -> float:
    """Fraction of predictions equal to the target (nan for no samples)."""
    predictions, targets = _labels(predictions), _labels(targets)
    return float(np.mean(predictions == targets)) if len(targets) else float("nan")


def per_class_recall(predictions: Any, targets: Any, num_classes: int) -> np.ndarray:
    """Recall of each class (correct / that class's samples); nan for a class with no samples."""
    matrix = confusion_matrix(predictions, targets, num_classes)
    support = matrix.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(matrix) / support, np.nan)


def balanced_accuracy(predictions: Any, targets: Any, num_classes: int | None = None) -> float:
    """Mean per-class recall over the classes present in `targets` (a class never predicted counts
    0; a class with no samples is left out); nan for no samples."""
    predictions, targets = _labels(predictions), _labels(targets)
    if not len(targets):
        return float("nan")
    n = num_classes or int(max(predictions.max(), targets.max())) + 1
    return float(np.nanmean(per_class_recall(predictions, targets, n)))


def grouped_accuracy(predictions: Any, targets: Any, groups: Sequence[Sequence[int]]) -> float:
    """Accuracy after mapping each class to its group (`groups[g]` lists the classes of group g),
    e.g. ELPV's 2-class accuracy from 4-class predictions: groups [[0, 1], [2, 3]]."""
    predictions, targets = _labels(predictions), _labels(targets)
    lookup = {c: g for g, members in enumerate(groups) for c in members}
    table = np.array([lookup.get(c, -1) for c in range(max(lookup, default=-1) + 1)], dtype=np.int64)
    labels = np.concatenate([predictions, targets])
    if labels.size and (labels.max() >= len(table) or (table[labels] < 0).any()):
        raise ValueError(f"a label is in none of the groups {[list(g) for g in groups]}")
    return accuracy(table[predictions], table[targets])


@dataclass(frozen=True)
class Calibration:
    """Top-label calibration over equal-width confidence bins (Guo et al., 2017): per bin, the
    images whose predicted class has a probability in (lower, upper], their mean confidence and
    their accuracy; `ece` is the mean gap between the two, weighted by the bins' sizes."""

    edges: np.ndarray
    counts: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray

    @property
    def ece(self) -> float:
        """Expected calibration error: 0 when every bin's accuracy equals its confidence."""
        total = self.counts.sum()
        if not total:
            return float("nan")
        gaps = np.abs(np.nan_to_num(self.accuracy) - np.nan_to_num(self.confidence))
        return float((self.counts * gaps).sum() / total)


def calibration(probabilities: Any, targets: Any, bins: int = 15) -> Calibration:
    """Bin each image by its top class probability (`probabilities` N x C) and compare the bins'
    mean confidence with their accuracy; empty bins hold nan."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    targets = _labels(targets)
    confidence, predicted = probabilities.max(axis=1), probabilities.argmax(axis=1)
    index = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    counts = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(index, confidence, bins) / counts
        hit_rate = np.bincount(index, (predicted == targets).astype(np.float64), bins) / counts
    return Calibration(np.linspace(0.0, 1.0, bins + 1), counts, mean_confidence, hit_rate)


def metric_key(name: str) -> str:
    """A class name as a metric-key segment for trackers (MLflow allows letters, digits and
    `_ - . /`, and `/` nests): runs of anything else become `_` (`p=1/3` -> `p_1_3`)."""
    return re.sub(r"[^A-Za-z0-9.-]+", "_", str(name)).strip("_") or "_"


def class_keys(class_names: Sequence[str]) -> list[str]:
    """`metric_key` of each class name, made unique: a repeated key gets `_<class index>`."""
    keys: list[str] = []
    for index, name in enumerate(class_names):
        key = metric_key(name)
        keys.append(f"{key}_{index}" if key in keys else key)
    return keys


def classification_report(
    predictions: Any,
    targets: Any,
    class_names: Sequence[str],
    class_groups: Mapping[str, Sequence[int]] | None = None,
) -> dict[str, float]:
    """accuracy, error_rate, balanced_accuracy, recall/<class> (classes with samples only, keys
    from `class_keys`) and, with `class_groups`, accuracy_<n>class."""
    num_classes = len(class_names)
    acc = accuracy(predictions, targets)
    report = {
        "accuracy": acc,
        "error_rate": 1.0 - acc,
        "balanced_accuracy": balanced_accuracy(predictions, targets, num_classes),
    }
    recalls = per_class_recall(predictions, targets, num_classes)
    for key, recall in zip(class_keys(class_names), recalls):
        if not np.isnan(recall):
            report[f"recall/{key}"] = float(recall)
    if class_groups:
        groups = list(class_groups.values())
        report[f"accuracy_{len(groups)}class"] = grouped_accuracy(predictions, targets, groups)
    return report
