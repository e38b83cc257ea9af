"""Self-describing checkpoints, `lrlab.load_model` and `lrlab task=predict`: a saved model predicts
on image files exactly as it scored the evaluation split, and unreadable files are skipped by name."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lrlab import load_model
from lrlab.app.build import build
from lrlab.core.types import EpochResult
from lrlab.data.loaders import TensorLoader
from lrlab.data.preprocess import Preprocess
from lrlab.data.sources import uint8_stack
from lrlab.data.types import Normalization, TensorSplit
from lrlab.models.checkpoint import CheckpointError, save_atomic
from lrlab.train.checkpoints import CheckpointCallback


class _Engine:
    def __init__(self, model: torch.nn.Module):
        self.model = model
        self.history: list = []  # no epochs trained: the model's weights are any epoch's


def _saved(compose_cfg, tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    setup = build(compose_cfg("experiment=smoke", "tracking=none"))
    callback = CheckpointCallback(tmp_path, setup.model_description())
    callback.on_epoch_end(_Engine(setup.model), EpochResult("full", 0, 0, 1.0, 0.5, 0.1, 0.9, 1.0))
    return tmp_path / "best.pt", setup.model.eval()


def test_a_checkpoint_rebuilds_the_model_and_its_preprocessing(compose_cfg, tmp_path: Path) -> None:
    path, model = _saved(compose_cfg, tmp_path)
    loaded = load_model(path)
    assert (
        loaded.class_names == [str(d) for d in range(10)] and loaded.meta["model_name"] == "test_efficientnet"
    )
    assert loaded.preprocess.kind == "square" and loaded.preprocess.channels == 1
    assert "name: smoke" in loaded.meta["config"] and loaded.meta["lrlab_version"]
    # one line in a notebook, not the network and the saved config
    assert repr(loaded) == (
        "LoadedModel(test_efficientnet, 10 classes ['0', '1', '2', '3', '4', '5', '6', '7', '...'], "
        f"{loaded.preprocess.image_size} px, tta none)"
    )
    from sklearn.datasets import load_digits

    raw = np.rint(load_digits().images[:12] * (255.0 / 16.0)).astype(np.uint8)  # 8x8 grey, as the source
    files = [Image.fromarray(image, mode="L") for image in raw]
    norm = Normalization(loaded.preprocess.mean, loaded.preprocess.std)
    split = TensorSplit(uint8_stack(raw, loaded.preprocess.image_size), torch.zeros(12, dtype=torch.int64))
    x, _ = next(iter(TensorLoader(split, 12, norm)))
    assert torch.allclose(torch.stack([loaded.preprocess(f) for f in files]), x, atol=1e-6)
    with torch.no_grad():
        expected = model(x).softmax(-1)
    assert torch.allclose(loaded.predict_proba(files), expected, atol=1e-5)


def test_predict_batches_and_decoding_threads_keep_the_rows_and_their_order(
    compose_cfg, tmp_path: Path
) -> None:
    """`data.batch_size` and `data.num_workers` (decoding threads) change how task=predict works, not
    what it writes: the same rows in path order, the unreadable file skipped in the middle."""
    from sklearn.datasets import load_digits

    from lrlab.app.tasks.predict import image_files, predict_files

    path, _ = _saved(compose_cfg, tmp_path)
    loaded = load_model(path)
    folder = tmp_path / "images"
    folder.mkdir()
    for i, image in enumerate(np.rint(load_digits().images[:9] * (255.0 / 16.0)).astype(np.uint8)):
        Image.fromarray(image, mode="L").save(folder / f"{i}.png")
    (folder / "4b.png").write_bytes(b"not an image")
    paths = image_files(folder)
    plain, skipped = predict_files(loaded, paths, progress=True)
    shown: list = []
    threaded, skipped_threaded = predict_files(
        loaded, paths, batch_size=2, progress=True, workers=3, thumbnails=shown
    )
    # the first readable images, in the rows' order, kept small for predictions.png
    assert len(shown) == len(threaded) == 9 and [im.size for im in shown] == [(8, 8)] * 9
    assert all(
        np.array_equal(np.asarray(im)[..., 0], np.asarray(Image.open(r["path"])))
        for im, r in zip(shown, threaded)
    )
    assert [r["path"] for r in threaded] == [str(p) for p in paths if p.name != "4b.png"]
    assert [p.name for p, _ in skipped] == [p.name for p, _ in skipped_threaded] == ["4b.png"]
    from collections import Counter

    from lrlab.app.tasks.predict import class_counts

    counted = Counter(r["predicted"] for r in plain).most_common()
    assert class_counts(plain) == ", ".join(f"{name}: {n}" for name, n in counted)
    assert (
        class_counts(plain, shown=1)
        == f"{counted[0][0]}: {counted[0][1]}, {len(counted) - 1} more classes: {len(plain) - counted[0][1]}"
    )
    for one, other in zip(plain, threaded, strict=True):
        assert one["predicted"] == other["predicted"] and one["probability"] == pytest.approx(
            other["probability"], abs=1e-6
        )


def test_preprocess_round_trips_and_crops_like_the_in_memory_decoder() -> None:
    spec = Preprocess("crop", 16, 3, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert Preprocess.from_dict(spec.to_dict()) == spec
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 40, 3), dtype=np.uint8))
    from lrlab.data.sources import materialize

    stored = materialize([(image, 0)], 16).images.float() / 255
    assert torch.allclose(spec(image), (stored[0] - 0.5) / 0.5, atol=1e-6)


def test_an_older_checkpoint_without_a_description_is_explained(tmp_path: Path) -> None:
    save_atomic({"model": {}, "epoch": 0}, tmp_path / "old.pt")
    with pytest.raises(CheckpointError, match="no model description"):
        load_model(tmp_path / "old.pt")


@pytest.mark.slow
def test_train_evaluate_and_predict_from_a_checkpoint(run_cli, tmp_path: Path) -> None:
    """One smoke training; its end-of-training evaluation files (also in MLflow); task=evaluate on
    last.pt reproduces the test metrics; task=predict writes a CSV, skipping unreadable files."""
    trained = run_cli("experiment=smoke", "epochs=1", "train.checkpoints=true")
    assert trained.returncode == 0, trained.stderr[-2000:]
    best = next((tmp_path / "outputs").rglob("best.pt"))
    run_dir = best.parent.parent
    for name in ("per_class.csv", "confusion_matrix.png", "reliability.png", "top_losses.png"):
        assert (run_dir / "evaluation" / name).is_file(), name
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    logged = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    assert {
        "evaluation/confusion_matrix.png",
        "evaluation/reliability.png",
        "evaluation/top_losses.png",
        "evaluation/per_class.csv",
        "evaluation/test_predictions.csv",
    } <= logged
    console = client.download_artifacts(run.info.run_id, "logs/lrlab.log", str(tmp_path))
    assert "test: the final model" in Path(console).read_text()  # the run's console, in the UI too
    evaluated = run_cli("task=evaluate", f"checkpoint={run_dir / 'checkpoints' / 'last.pt'}")
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    accuracy, ece = run.data.metrics["test/accuracy"], run.data.metrics["test/ece"]
    assert f"accuracy {accuracy:.4f}" in evaluated.stdout + evaluated.stderr
    assert f"calibration error {ece:.4f}" in evaluated.stdout + evaluated.stderr and 0 <= ece <= 1
    # task=evaluate is its own MLflow run beside the training run, pointing back at it
    runs = client.search_runs([run.info.experiment_id], filter_string="tags.task = 'evaluate'")
    assert len(runs) == 1 and runs[0].data.tags["source_run_id"] == run.info.run_id
    assert runs[0].info.status == "FINISHED" and runs[0].data.metrics["test/accuracy"] == accuracy
    assert {a.path for a in client.list_artifacts(runs[0].info.run_id, "evaluation")} == logged
    console = client.download_artifacts(runs[0].info.run_id, "logs/lrlab.log", str(tmp_path / "eval_log"))
    assert f"accuracy {accuracy:.4f}" in Path(console).read_text()
    assert len(list((tmp_path / "outputs").rglob("confusion_matrix.png"))) == 2
    # Other labelled data with the same classes: its test split, tagged with what was evaluated.
    from sklearn.datasets import load_digits

    digits = load_digits()
    folder = tmp_path / "digit_folder"
    for i, (image, label) in enumerate(zip(digits.images[:100], digits.target[:100])):
        (folder / str(label)).mkdir(parents=True, exist_ok=True)
        pixels = np.rint(image * (255.0 / 16.0)).astype(np.uint8)
        Image.fromarray(pixels, mode="L").save(folder / str(label) / f"{i}.png")
    other = run_cli("task=evaluate", f"checkpoint={best}", "data=imagefolder", f"data.root={folder}")
    assert other.returncode == 0, other.stderr[-2000:]
    assert f"{best} on the test split of imagefolder, 20 held-out images" in other.stdout + other.stderr
    (tagged,) = client.search_runs([run.info.experiment_id], filter_string="tags.evaluated_on != ''")
    assert tagged.data.tags["evaluated_on"] == f"name=imagefolder root={folder}"
    # Per-image predictions, each image's file named: a test image's row matches the model's answer.
    table = client.download_artifacts(
        tagged.info.run_id, "evaluation/test_predictions.csv", str(tmp_path / "t")
    )
    with open(table, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 20 and [int(r["index"]) for r in rows] == list(range(20))
    first = Path(rows[0]["path"])
    assert first.parent.parent == folder and rows[0]["actual"] == first.parent.name
    probability = load_model(best).predict_proba([Image.open(first)])[0]
    assert float(rows[0][f"p_{rows[0]['predicted']}"]) == pytest.approx(float(probability.max()), abs=1e-5)
    assert float(rows[0]["loss"]) == pytest.approx(
        -np.log(float(probability[int(rows[0]["actual"])])), abs=1e-4
    )
    (folder / "extra").mkdir()
    for i in range(10):
        Image.fromarray(np.zeros((8, 8), dtype=np.uint8), mode="L").save(folder / "extra" / f"{i}.png")
    wrong = run_cli("task=evaluate", f"checkpoint={best}", "data=imagefolder", f"data.root={folder}")
    assert wrong.returncode == 2 and "evaluation needs the same classes in the same order" in wrong.stderr
    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.full((8, 8), 40 * i, dtype=np.uint8), mode="L").save(images / "sub" / f"{i}.png")
    (images / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg" * 10)
    (images / "empty.png").write_bytes(b"")
    proc = run_cli("task=predict", f"checkpoint={best}", f"input={images}", "tracking=none")
    assert proc.returncode == 0, proc.stderr[-2000:]
    console = proc.stdout + proc.stderr
    assert "predicted 3 of 5 image(s)" in console and "skipped 2 unreadable file(s)" in console
    assert "corrupt.jpg" in console and "empty.png" in console
    out = next((tmp_path / "outputs").rglob("predictions.csv"))
    with out.open() as handle:
        rows = list(csv.DictReader(handle))
    assert [Path(r["path"]).name for r in rows] == ["0.png", "1.png", "2.png"]
    grid = Image.open(out.parent / "predictions.png")  # the three readable images with their classes
    assert grid.width >= 440 and "predictions.png" in console
    for row in rows:
        probs = [float(row[f"p_{d}"]) for d in range(10)]
        assert sum(probs) == pytest.approx(1, abs=1e-5) and float(row["probability"]) == max(probs)
        assert row["predicted"] == str(int(np.argmax(probs)))
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg" * 10)
    nothing = run_cli("task=predict", f"checkpoint={best}", f"input={junk}", "tracking=none")
    assert nothing.returncode == 1 and "none of the 1 file(s) under input=" in nothing.stderr
    assert "Traceback" not in nothing.stderr
    missing = run_cli("task=predict", f"checkpoint={tmp_path / 'nope.pt'}", f"input={images}")
    assert missing.returncode == 2 and "task=predict needs checkpoint=PATH" in missing.stderr


def test_a_checkpoint_whose_metadata_does_not_fit_its_weights_is_named(tmp_path: Path) -> None:
    import timm

    from lrlab.models.checkpoint import CheckpointError, load_model, save_atomic

    model = timm.create_model("test_resnet", num_classes=3)
    meta = {"model_name": "test_efficientnet", "class_names": ["a", "b", "c"], "preprocess": {}}
    path = tmp_path / "mixed.pt"
    save_atomic({"model": model.state_dict(), "meta": meta}, path)
    with pytest.raises(
        CheckpointError, match=r"metadata says test_efficientnet with 3 classes, but its weights"
    ):
        load_model(path)


def test_evaluate_reads_other_data_from_the_command_line_and_the_checkpoints_own_otherwise(
    compose_cfg, tmp_path: Path, caplog
) -> None:
    from lrlab.app.tasks.evaluate import data_to_evaluate

    path, _ = _saved(compose_cfg, tmp_path)
    loaded = load_model(path)
    own = data_to_evaluate(compose_cfg("task=evaluate"), ["task=evaluate"], loaded)
    assert own is None  # the composed default (ELPV) is not the checkpoint's data (digits)
    args = ["task=evaluate", "data=imagefolder", f"data.root={tmp_path}"]
    other = data_to_evaluate(compose_cfg(*args), args, loaded)
    assert other["name"] == "imagefolder" and other["root"] == str(tmp_path)
    assert other["image_size"] == loaded.preprocess.image_size != compose_cfg(*args).data.image_size
    args = [*args, "data.image_size=48"]
    assert data_to_evaluate(compose_cfg(*args), args, loaded)["image_size"] == 48
    with caplog.at_level("WARNING", logger="lrlab"):
        args = ["task=evaluate", "data.split_seed=3", "data.augment.hflip=0"]
        resplit = data_to_evaluate(compose_cfg(*args), args, loaded)
    assert resplit["name"] == "digits" and resplit["split_seed"] == 3 and resplit["augment"]["hflip"] == 0
    assert "data.split_seed differs from the checkpoint's run" in caplog.text
