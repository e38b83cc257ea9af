"""`lrlab task=predict checkpoint=PATH input=FILE_OR_DIR`: class probabilities for image files
from a saved model, as a CSV (path, predicted class, its probability, one column per class) and
a grid of the first images with their predictions (`predictions.png`).
Unreadable files are named and skipped; the rest are still predicted. `data.batch_size` sets the
images per forward pass (64 unless given), `data.num_workers` the threads that decode the files."""

from __future__ import annotations

import csv
import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from textwrap import shorten
from typing import Any

from lrlab.app.job import Job, RunResult
from lrlab.app.schema import validate
from lrlab.app.tasks import override_key
from lrlab.app.tasks.checkpoint_ref import local_checkpoint
from lrlab.app.tasks.checkpoint_tta import checkpoint_tta
from lrlab.core.device import resolve_device
from lrlab.data.decode import map_in_threads
from lrlab.data.preview import image_grid
from lrlab.errors import ConfigError, NothingDone, describe
from lrlab.models.checkpoint import LoadedModel, load_model

log = logging.getLogger("lrlab")
DEFAULT_BATCH_SIZE = 64  # images per forward pass unless data.batch_size is given
SHOWN, THUMBNAIL_PX = 24, 192  # predictions.png: the first images, at most this many pixels a side
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".gif"}


def image_files(path: str | Path) -> list[Path]:
    """`path` itself, or every image file under it (recursively, sorted); ConfigError if none."""
    path = Path(path).expanduser()
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise ConfigError(f"input={str(path)!r} is neither an image file nor a directory.")
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ConfigError(f"input={str(path)!r} holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))}).")
    return files


def _decode(path: Path) -> tuple[Path, Any, str | None]:
    """The decoded image of `path`, or why it could not be read."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
            return path, image.copy(), None
    except Exception as exc:  # PIL raises many types for damaged files
        return path, None, describe(exc)


def _readable(
    paths: Sequence[Path], skipped: list[tuple[Path, str]], workers: int = 0, chunk: int = 64
) -> Iterator[tuple[Path, Any]]:
    """(path, image) in order for every readable file, decoded `chunk` at a time by `workers`
    threads (0: in this thread); unreadable ones go to `skipped`."""
    for start in range(0, len(paths), chunk):
        part = paths[start : start + chunk]
        for path, image, error in (
            map_in_threads(_decode, part, workers=workers) if workers else map(_decode, part)
        ):
            if error is None:
                yield path, image
            else:
                skipped.append((path, error))
                log.error("cannot read %s (%s): skipped", path, error)


def predict_files(
    loaded: LoadedModel,
    paths: Sequence[Path],
    batch_size: int = DEFAULT_BATCH_SIZE,
    tta: str | None = None,
    progress: Any = None,
    workers: int = 0,
    thumbnails: list[Any] | None = None,
) -> tuple[list[dict[str, Any]], list[tuple[Path, str]]]:
    """One row per readable file (path, predicted, probability, one probability per class) and
    the (path, reason) of every file that could not be read, `batch_size` images per forward pass,
    decoded by `workers` threads; `tta` None: the checkpoint's own. `thumbnails`: a list that gets
    small copies of the first `SHOWN` readable images, in the rows' order."""
    from tqdm.auto import tqdm

    rows, skipped, batch = [], [], []
    bar = tqdm(total=len(paths), desc="predict", unit="img", disable=progress)

    def flush() -> None:
        if thumbnails is not None:
            for _, image in batch[: max(0, SHOWN - len(thumbnails))]:
                small = image.convert("RGB")
                small.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
                thumbnails.append(small)
        found = loaded.prediction_rows([image for _, image in batch], tta=tta)
        rows.extend({"path": str(path)} | row for (path, _), row in zip(batch, found))
        bar.update(len(batch))
        batch.clear()

    for item in _readable(paths, skipped, workers, chunk=batch_size):
        batch.append(item)
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    bar.update(len(skipped))
    bar.close()
    return rows, skipped


def class_counts(rows: Sequence[dict[str, Any]], shown: int = 10) -> str:
    """How many images each class was predicted for, most first (`shown` classes, then the rest)."""
    counts = Counter(str(row["predicted"]) for row in rows).most_common()
    text = ", ".join(f"{name}: {count}" for name, count in counts[:shown])
    rest = sum(count for _, count in counts[shown:])
    return text + (f", {len(counts) - shown} more classes: {rest}" if rest else "")


def prediction_grid(rows: Sequence[dict[str, Any]], thumbnails: Sequence[Any], output_dir: Path) -> Path:
    """`predictions.png`: the first images, each titled with its predicted class, the class's
    probability and the file's name, to check the CSV by eye."""
    titles = [
        f"{row['predicted']} {row['probability']:.2f}\n{Path(row['path']).name[:24]}"
        for row in rows[: len(thumbnails)]
    ]
    header = f"the first {len(thumbnails)} of {len(rows)} images: predicted class, its probability"
    path = output_dir / "predictions.png"
    image_grid(thumbnails, titles, header, columns=6).save(path)
    return path


def write_predictions(rows: Sequence[dict[str, Any]], path: Path, columns: Sequence[str]) -> Path:
    """`predictions.csv`: the file's path, then `columns` (`LoadedModel.prediction_columns`)."""
    fields = ["path", *columns]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return path


def run_predict(
    loaded: LoadedModel,
    inputs: str,
    output_dir: Path,
    tta: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    workers: int = 0,
) -> Path:
    """Predict every image under `inputs` with `loaded` (`lrlab.load_model`); writes and returns
    `<output_dir>/predictions.csv`."""
    paths = image_files(inputs)
    thumbnails: list[Any] = []
    rows, skipped = predict_files(loaded, paths, batch_size, tta, workers=workers, thumbnails=thumbnails)
    if not rows:
        shown = ", ".join(f"{p.name} ({shorten(why, 90, placeholder=' ...')})" for p, why in skipped[:5]) + (
            ", ..." if len(skipped) > 5 else ""
        )
        raise NothingDone(
            f"none of the {len(paths)} file(s) under input={inputs} could be read as an image: {shown}; "
            "no predictions.csv was written."
        )
    output_dir.mkdir(parents=True, exist_ok=True)
    out = write_predictions(rows, output_dir / "predictions.csv", loaded.prediction_columns)
    log.info(f"predicted {len(rows)} of {len(paths)} image(s) with {loaded.meta['model_name']}: {out}")
    grid = prediction_grid(rows, thumbnails, output_dir)
    log.info(f"the first {len(thumbnails)}, with their predictions: {grid}")
    log.info(f"predicted classes: {class_counts(rows)}")
    if skipped:
        log.info(f"skipped {len(skipped)} unreadable file(s): " + ", ".join(str(p) for p, _ in skipped[:10]))
    return out


def run(job: Job) -> RunResult:
    """`task=predict`: predict `input` with `checkpoint`, recorded as the tracking backend says."""
    cfg = validate(job.cfg)
    loaded = load_model(local_checkpoint(cfg, job), device=resolve_device(cfg.device))  # the one read of it
    given = {override_key(o) for o in job.overrides}
    batch_size = cfg.data.batch_size if "data.batch_size" in given else DEFAULT_BATCH_SIZE
    workers = cfg.data.num_workers if "data.num_workers" in given else 0
    tta = checkpoint_tta(cfg, job.overrides, loaded)
    path = run_predict(loaded, cfg.input, job.output_dir, tta, batch_size, workers)
    return RunResult([], {}, output_dir=job.output_dir, extra={"predictions": str(path)})
