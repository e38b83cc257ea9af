"""Offline check of ELPV decision rules on trained checkpoints (no retraining): the argmax of the
flip-averaged probabilities, the class nearest to the expected defect level (a regression-style
decision, as Deitsch et al. round their regression output), and the argmax after per-class logit
offsets fitted on valid (grid -1.5..1.5) and applied to test. Valid and test accuracy for each.

    python benchmarks/elpv_decision_rules.py multirun/DATE/TIME/{0,1,2}/checkpoints/last.pt
"""

from __future__ import annotations

import argparse
import itertools

import torch

from lrlab.data.loaders import TensorLoader
from lrlab.data.sources import load_elpv
from lrlab.data.types import Normalization
from lrlab.models.checkpoint import load_model

LEVELS = torch.tensor([0, 1 / 3, 2 / 3, 1])


@torch.no_grad()
def log_probs(model: torch.nn.Module, split, norm: Normalization) -> tuple[torch.Tensor, torch.Tensor]:
    """Log of the flip-averaged class probabilities, and the labels, over a split."""
    out, labels = [], []
    for x, y in TensorLoader(split, 128, norm):
        probs = (model(x).softmax(-1) + model(x.flip(-1)).softmax(-1)) / 2
        out.append(probs.log())
        labels.append(y)
    return torch.cat(out), torch.cat(labels)


def accuracy(predicted: torch.Tensor, labels: torch.Tensor) -> float:
    return (predicted == labels).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--image-size", type=int, default=128)
    args = parser.parse_args()
    source = load_elpv(image_size=args.image_size, classes=4)
    grid = torch.linspace(-1.5, 1.5, 13)
    print("checkpoint | argmax valid / test | expected level valid / test | fitted offsets valid / test")
    for path in args.checkpoints:
        loaded = load_model(path)
        preprocess = loaded.meta["preprocess"]
        norm = Normalization(tuple(preprocess["mean"]), tuple(preprocess["std"]))
        splits = {name: log_probs(loaded.model, getattr(source, name), norm) for name in ("valid", "test")}
        best = max(itertools.product(grid.tolist(), repeat=3), key=lambda o: shifted(splits["valid"], o))
        level = {n: accuracy((s.exp() @ LEVELS * 3).round().long(), y) for n, (s, y) in splits.items()}
        plain = [shifted(splits[n], (0, 0, 0)) for n in ("valid", "test")]
        fitted = [shifted(splits[n], best) for n in ("valid", "test")]
        print(
            f"{path} | {plain[0]:.4f} / {plain[1]:.4f} | {level['valid']:.4f} / {level['test']:.4f} | "
            f"{fitted[0]:.4f} / {fitted[1]:.4f}"
        )


def shifted(split: tuple[torch.Tensor, torch.Tensor], offsets: tuple) -> float:
    """Accuracy of the argmax after adding `offsets` to classes 1..3's log-probabilities."""
    scores, labels = split
    return accuracy((scores + torch.tensor([0.0, *offsets])).argmax(1), labels)


if __name__ == "__main__":
    main()
