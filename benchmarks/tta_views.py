"""Score trained checkpoints on their own valid and test splits under each test-time augmentation
(`train.tta`: none, hflip, flips), so a TTA is chosen on valid and reported on test, over seeds.

    python benchmarks/tta_views.py RUN_DIR [RUN_DIR ...] [--json OUT.json]

Each RUN_DIR is a training's run directory (its `checkpoints/final.pt` is scored). The weights are
the same under every TTA (evaluation does not train), so the rows differ by the TTA alone. Prints
one row per run and mode, then the mean and sample std per mode.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from lrlab import Engine, hold_freed_memory, load_model
from lrlab.app.evaluate import checkpoint_data
from lrlab.core.metrics import accuracy, balanced_accuracy, per_class_recall
from lrlab.core.settings import TTA_MODES
from lrlab.data.loaders import make_loaders
from lrlab.data.sources import load_source
from lrlab.data.types import Normalization


def score(run_dir: Path, modes: list[str]) -> list[dict]:
    """Valid and test accuracy, balanced accuracy and per-class recall of the run's final model
    under each TTA mode."""
    loaded = load_model(run_dir / "checkpoints" / "final.pt")
    data_cfg = checkpoint_data(loaded)
    source = load_source(data_cfg)
    pre = loaded.preprocess
    loaders = make_loaders(source, data_cfg, Normalization(pre.mean, pre.std, pre.interpolation))
    rows = []
    for mode in modes:
        engine = Engine(loaded.model, "cpu", tta=mode, progress=False)
        row = {"run": run_dir.name, "tta": mode}
        for split, loader in (("valid", loaders.valid), ("test", loaders.test)):
            found = engine.predict(loader)
            classes = len(source.class_names)
            row[f"{split}_acc"] = accuracy(found.predictions, found.targets)
            row[f"{split}_balanced"] = balanced_accuracy(found.predictions, found.targets, classes)
            row[f"{split}_loss"] = found.loss
            recall = per_class_recall(found.predictions, found.targets, classes)
            row[f"{split}_recall"] = [round(float(r), 4) for r in recall]
        rows.append(row)
        print(
            f"{row['run']:>10} {mode:>6}  valid {row['valid_acc']:.4f} (loss {row['valid_loss']:.4f})  "
            f"test {row['test_acc']:.4f}  balanced {row['test_balanced']:.4f}  recall {row['test_recall']}",
            flush=True,
        )
    return rows


def summary(rows: list[dict], modes: list[str]) -> None:
    """Mean and sample std over runs, per mode."""
    print("\nmode    n  valid acc        test acc         test balanced")
    for mode in modes:
        chosen = [r for r in rows if r["tta"] == mode]
        cells = []
        for key in ("valid_acc", "test_acc", "test_balanced"):
            values = [r[key] for r in chosen]
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{100 * statistics.mean(values):.2f} ± {100 * sd:.2f}")
        print(f"{mode:<6} {len(chosen):>2}  " + "  ".join(f"{c:<15}" for c in cells))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories with checkpoints/final.pt")
    parser.add_argument("--modes", nargs="+", default=list(TTA_MODES), choices=TTA_MODES)
    parser.add_argument("--json", type=Path, help="write every row here")
    args = parser.parse_args(argv)
    hold_freed_memory()  # as the lrlab command does: CPU evaluation reuses its buffers
    rows = [row for run in args.runs for row in score(run, args.modes)]
    summary(rows, args.modes)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
