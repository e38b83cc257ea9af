"""The test split, read once: metrics, the per-class table, the confusion matrix and the most
confidently wrong images. Used at the end of every training and by `lrlab task=evaluate
checkpoint=PATH`, which rebuilds the checkpoint's data from the config stored in it."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from lrlab.app.console import format_test_report
from lrlab.app.interpret import Interpretation, ThumbnailTap
from lrlab.core.engine import Engine
from lrlab.core.metrics import classification_report
from lrlab.data.preprocess import Preprocess
from lrlab.models.checkpoint import LoadedModel

log = logging.getLogger("lrlab")
TOP_LOSSES = 16


@dataclass
class TestReport:
    """The test metrics (accuracy, error_rate, balanced_accuracy, loss, ece, recall/<class>,
    accuracy_<n>class) and the files written (per_class.csv, confusion_matrix.png, reliability.png,
    top_losses.png)."""

    metrics: dict[str, float] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)


def evaluate_split(
    engine: Engine,
    loader: Any,
    class_names: list[str],
    class_groups: dict[str, list[int]] | None,
    preprocess: Preprocess | None,
    directory: Path,
    what: str | None = None,
    paths: list[str] | None = None,
) -> TestReport:
    """Evaluate `engine.model` (`what`, in the console; None: a training's final model) on `loader`
    once: metrics printed after the epoch tables, and the interpretation files in `directory` (the
    per-image predictions name each image's file, given `paths` in the loader's order). An empty
    report for no loader."""
    if loader is None:
        return TestReport()
    tap = ThumbnailTap(loader, preprocess.mean, preprocess.std) if preprocess is not None else loader
    predictions, targets, loss, probabilities = engine.predict(tap, probabilities=True)
    interpretation = Interpretation(
        class_names, predictions.numpy(), targets.numpy(), probabilities.numpy(), paths
    )
    metrics = classification_report(predictions, targets, class_names, class_groups)
    metrics["loss"] = loss
    metrics["ece"] = interpretation.calibration().ece
    for line in format_test_report(metrics, class_names, class_groups, len(targets), what):
        log.info(line)
    log.info("\n" + interpretation.table())
    wrong = interpretation.confidently_wrong(TOP_LOSSES)
    images = tap.images(wrong) if isinstance(tap, ThumbnailTap) else None
    files = interpretation.write(directory, images, wrong)
    log.info(f"evaluation files: {directory}")
    return TestReport(metrics, files)


def checkpoint_data(loaded: LoadedModel) -> dict[str, Any]:
    """The data config the checkpoint's run trained on (resolved), as saved in the checkpoint."""
    return OmegaConf.to_container(OmegaConf.create(loaded.meta["config"]).data, resolve=True)


def evaluate_checkpoint(
    checkpoint: str,
    loaded: LoadedModel,
    output_dir: Path,
    tta: str = "none",
    device: Any = "cpu",
    data: dict[str, Any] | None = None,
) -> TestReport:
    """`task=evaluate`: the model of `checkpoint` (as `lrlab.load_model` gives it) on the test split
    of `data`, by default its own data (rebuilt from the config saved in the checkpoint, so the split
    is the one it was never trained or chosen on). Other data must have the checkpoint's classes, in
    its order."""
    from lrlab.data.files import files_loader
    from lrlab.data.loaders import make_loaders
    from lrlab.data.sources import load_source
    from lrlab.data.types import Normalization
    from lrlab.errors import ConfigError

    data_cfg = checkpoint_data(loaded) if data is None else data
    source = load_source(data_cfg)
    which = f"the data of {checkpoint}" if data is None else f"data.name={data_cfg.get('name')}"
    if source.test is None:
        raise ConfigError(f"{which} has no test split (data.test_pct=0): nothing to evaluate.")
    if list(source.class_names) != list(loaded.class_names):
        raise ConfigError(
            f"{which} has the classes {list(source.class_names)}, and {checkpoint} predicts "
            f"{list(loaded.class_names)}: evaluation needs the same classes in the same order "
            "(for an image folder, one subfolder per class, named as in training)."
        )
    paths = getattr(source.test, "paths", None)
    if data is not None and paths is not None:
        # Other data from files: each file preprocessed as the checkpoint's own, as task=predict does.
        test = files_loader(paths, source.test.labels, loaded.preprocess, data_cfg["batch_size"] * 2)
    else:
        norm = Normalization(loaded.preprocess.mean, loaded.preprocess.std, loaded.preprocess.interpolation)
        data_device = device if data_cfg.get("in_memory") else "cpu"
        test = make_loaders(source, data_cfg, norm, data_device).test
    engine = Engine(loaded.model, device, tta=tta)
    groups = source.class_groups
    what = f"{checkpoint} on the test split of {data_cfg.get('name')}"
    directory = output_dir / "evaluation"
    return evaluate_split(engine, test, source.class_names, groups, loaded.preprocess, directory, what, paths)
