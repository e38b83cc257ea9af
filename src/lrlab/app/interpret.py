"""Interpretation of a model's test predictions, as fastai's ClassificationInterpretation gives:
per-class precision, recall and F1, the confusion matrix (counts and row-normalised) as a plot, the
most confidently wrong images as a grid, and (beyond fastai) a reliability diagram saying whether a
predicted probability of 0.9 is right 90% of the time; written as files a tracker can attach."""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lrlab.core.metrics import Calibration, calibration, confusion_matrix
from lrlab.data.preview import image_grid, picture


@dataclass
class Interpretation:
    """Predictions of one split: class names, predicted labels, targets, probabilities (N, C) and,
    for images from files, each one's path."""

    class_names: list[str]
    predictions: np.ndarray
    targets: np.ndarray
    probabilities: np.ndarray
    paths: list[str] | None = None

    def matrix(self) -> np.ndarray:
        return confusion_matrix(self.predictions, self.targets, len(self.class_names))

    def calibration(self, bins: int = 15) -> Calibration:
        """How the predicted class's probability compares with how often it is right, per bin."""
        return calibration(self.probabilities, self.targets, bins)

    def per_class(self) -> list[dict[str, float | str | int]]:
        """One row per class: precision, recall, F1 (2TP / (2TP + FP + FN): 0, not nan, for a class
        predicted and present but never hit) and support; nan where the ratio is 0/0."""
        m = self.matrix()
        rows = []
        for i, name in enumerate(self.class_names):
            hit, predicted, support = m[i, i], m[:, i].sum(), m[i].sum()
            precision = hit / predicted if predicted else math.nan
            recall = hit / support if support else math.nan
            f1 = 2 * hit / (predicted + support) if predicted + support else math.nan
            rows.append(
                {"class": name, "precision": precision, "recall": recall, "f1": f1, "support": int(support)}
            )
        return rows

    def table(self) -> str:
        """The per-class rows as aligned text."""
        width = max(5, *(len(n) for n in self.class_names))
        lines = [f"{'class':<{width}}  precision  recall  f1      support"]
        for r in self.per_class():
            scores = f"{r['precision']:<9.4f}  {r['recall']:<6.4f}  {r['f1']:<6.4f}"
            lines.append(f"{r['class']:<{width}}  {scores}  {r['support']}")
        return "\n".join(lines)

    def confidently_wrong(self, k: int = 16) -> np.ndarray:
        """Indices of up to `k` wrong predictions, the most confident (highest probability) first."""
        wrong = np.flatnonzero(self.predictions != self.targets)
        confidence = self.probabilities[wrong, self.predictions[wrong]]
        return wrong[np.argsort(-confidence, kind="stable")][:k]

    def write(
        self, directory: Path, images: np.ndarray | None = None, indices: Sequence[int] = ()
    ) -> list[Path]:
        """`per_class.csv`, `test_predictions.csv`, `confusion_matrix.png`, `reliability.png` and,
        given the images (N, H, W, C in 0..1) of `indices`, `top_losses.png` in `directory`; returns
        the paths."""
        directory.mkdir(parents=True, exist_ok=True)
        table = directory / "per_class.csv"
        with table.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["class", "precision", "recall", "f1", "support"])
            writer.writeheader()
            writer.writerows(self.per_class())
        paths = [table, self.write_predictions(directory / "test_predictions.csv")]
        paths.append(self.plot_confusion(directory / "confusion_matrix.png"))
        paths.append(self.plot_reliability(directory / "reliability.png"))
        if images is not None and len(indices):
            paths.append(self.plot_top_losses(images, indices, directory / "top_losses.png"))
        return paths

    def write_predictions(self, path: Path) -> Path:
        """One row per image, in the split's order: its index (and file), actual and predicted
        class, the prediction's probability, the loss (-log p of the actual class), and the
        probability of every class: the table to sort and filter for error analysis."""
        names = self.class_names
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            files = ["path"] if self.paths is not None else []
            writer.writerow(
                ["index", *files, "actual", "predicted", "probability", "loss", *(f"p_{n}" for n in names)]
            )
            for i, (target, predicted, probs) in enumerate(
                zip(self.targets, self.predictions, self.probabilities)
            ):
                file = [self.paths[i]] if self.paths is not None else []
                loss = -math.log(max(float(probs[target]), 1e-45))
                writer.writerow(
                    [i, *file, names[target], names[predicted], f"{probs[predicted]:.6g}", f"{loss:.6g}"]
                    + [f"{p:.6g}" for p in probs]
                )
        return path

    def plot_confusion(self, path: Path) -> Path:
        """Counts (left) and row-normalised fractions (right): row = actual, column = predicted."""
        m = self.matrix()
        with np.errstate(invalid="ignore", divide="ignore"):
            rows = m / m.sum(axis=1, keepdims=True)
        n = len(self.class_names)
        fig = _figure(figsize=(4 + 1.6 * n, 1.8 + 0.8 * n), layout="constrained")
        axes = fig.subplots(1, 2)
        for ax, values, title, fmt in ((axes[0], m, "counts", "d"), (axes[1], rows, "row-normalised", ".2f")):
            ax.imshow(np.nan_to_num(values, nan=0.0), cmap="Blues")
            for i in range(n):
                for j in range(n):
                    text = format(values[i, j], fmt) if not np.isnan(values[i, j]) else "-"
                    dark = values[i, j] > np.nanmax(values) / 2
                    ax.text(
                        j, i, text, ha="center", va="center", color="white" if dark else "black", fontsize=8
                    )
            ax.set_xticks(range(n), self.class_names, rotation=45, ha="right", fontsize=8)
            ax.set_yticks(range(n), self.class_names, fontsize=8)
            ax.set_xlabel("predicted")
            ax.set_ylabel("actual")
            ax.set_title(f"confusion matrix ({title})", fontsize=9)
        fig.savefig(path, dpi=110)
        return path

    def plot_reliability(self, path: Path) -> Path:
        """Accuracy against confidence per bin (the diagonal is perfect calibration; a bar below it
        is overconfident), and below, how many images each bin holds."""
        bins = self.calibration()
        lower, width = bins.edges[:-1], np.diff(bins.edges)
        fig = _figure(figsize=(5, 5.6))
        fig.subplots_adjust(left=0.14, right=0.96, top=0.9, bottom=0.1, hspace=0.08)
        accuracy_ax, count_ax = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
        accuracy_ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--", label="calibrated")
        accuracy_ax.bar(
            lower,
            np.nan_to_num(bins.accuracy),
            width,
            align="edge",
            color="tab:blue",
            alpha=0.7,
            edgecolor="white",
            label="accuracy",
        )
        filled = bins.counts > 0
        accuracy_ax.plot(
            bins.confidence[filled],
            bins.accuracy[filled],
            "o",
            color="tab:orange",
            ms=4,
            label="accuracy at the bin's mean confidence",
        )
        accuracy_ax.set_ylim(0, 1)
        accuracy_ax.set_ylabel("accuracy")
        accuracy_ax.legend(fontsize=8, loc="upper left")
        count_ax.bar(lower, bins.counts, width, align="edge", color="tab:grey", edgecolor="white")
        count_ax.set_xlim(0, 1)
        count_ax.set_xlabel("confidence (probability of the predicted class)")
        count_ax.set_ylabel("images")
        fig.suptitle(
            f"reliability: expected calibration error {bins.ece:.3f} ({int(bins.counts.sum())} images)",
            fontsize=10,
        )
        fig.savefig(path, dpi=100)
        return path

    def plot_top_losses(self, images: np.ndarray, indices: Sequence[int], path: Path) -> Path:
        """The images of `indices` (most confidently wrong first), titled predicted / actual /
        probability of the prediction / probability of the actual class, and the file's name for
        data read from files."""
        titles = []
        for i in indices:
            p, t = self.predictions[i], self.targets[i]
            file = f"\n{Path(self.paths[i]).name[:24]}" if self.paths is not None else ""
            titles.append(
                f"{self.class_names[p]} / {self.class_names[t]}\n"
                f"{self.probabilities[i, p]:.2f} / {self.probabilities[i, t]:.2f}{file}"
            )
        header = "most confidently wrong: predicted / actual, probability of each"
        image_grid([picture(image) for image in images], titles, header, columns=4).save(path)
        return path


class ThumbnailTap:
    """Wraps an evaluation loader: yields its batches unchanged and keeps a small copy of every
    image (un-normalised, at most `size` px, uint8 on the CPU), so the most confidently wrong
    images can be shown without a second pass over the split (the test split is read once)."""

    def __init__(self, loader: Iterable, mean: Sequence[float], std: Sequence[float], size: int = 96):
        self.loader, self.size = loader, size
        self.mean, self.std = torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)
        self.thumbnails: list[torch.Tensor] = []

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[Any]:
        for x, y in self.loader:
            small = x.detach().float()
            if max(small.shape[-2:]) > self.size:
                small = torch.nn.functional.interpolate(small, size=(self.size, self.size), mode="area")
            pixels = small.cpu() * self.std + self.mean
            self.thumbnails.append((pixels.clamp(0, 1) * 255).round().to(torch.uint8))
            yield x, y

    def images(self, indices: Sequence[int]) -> np.ndarray:
        """The kept images at positions `indices`, (N, H, W, C) in 0..1."""
        if not len(indices):
            return np.zeros((0, 1, 1, 3))
        stacked = torch.cat(self.thumbnails)[torch.as_tensor(list(indices), dtype=torch.long)]
        return (stacked.permute(0, 2, 3, 1).float() / 255).numpy()


def _figure(**kwargs: object):
    """A matplotlib Figure not attached to pyplot (no backend switch, nothing left open)."""
    from matplotlib.figure import Figure

    return Figure(**kwargs)
