"""Heads for ordered classes (`model.head=regress|ordinal`): their class probabilities, their
losses, and a real run of each through training, evaluation, predict, export and MLflow's model."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from conftest import predict_to_csv
from lrlab.core.losses import LevelRegressionLoss, training_loss
from lrlab.errors import ConfigError
from lrlab.models.factory import create_model
from lrlab.models.groups import layer_groups
from lrlab.models.heads import OrdinalHead, RegressionHead


def test_the_ordinal_head_gives_rank_consistent_probabilities_and_cross_entropy_is_corns_loss() -> None:
    torch.manual_seed(0)
    head = OrdinalHead(5, 4)
    x = torch.randn(16, 5)
    log_probs = head(x)
    probs = log_probs.exp()
    torch.testing.assert_close(probs.sum(1), torch.ones(16))
    above = 1 - probs.cumsum(1)[:, :-1]  # P(y > k)
    assert (above[:, 1:] <= above[:, :-1] + 1e-6).all()  # never more likely above k+1 than above k
    torch.testing.assert_close(log_probs.log_softmax(1), log_probs)  # softmax gives the probabilities back
    labels = torch.tensor([0, 1, 2, 3] * 4)
    f = head.fc(x)
    corn = torch.zeros(16)  # the conditional tasks k = 0..min(y, K-2), each a binary cross-entropy
    for i, y in enumerate(labels.tolist()):
        for k in range(min(y + 1, 3)):
            corn[i] += nn.functional.binary_cross_entropy_with_logits(f[i, k], torch.tensor(float(y > k)))
    assert training_loss(4, head="ordinal")(log_probs, labels).item() == pytest.approx(
        corn.mean().item(), rel=1e-5
    )


def test_the_regression_head_rounds_to_the_nearest_level_and_trains_on_squared_error() -> None:
    head = RegressionHead(3, 4)
    with torch.no_grad():
        head.fc.weight.zero_()
        head.fc.bias.fill_(0.6)
    out = head(torch.zeros(2, 3))
    assert out.argmax(1).tolist() == [2, 2]  # 0.6 is nearest to 2/3
    torch.testing.assert_close(RegressionHead.value(out), torch.tensor([0.6, 0.6]))
    levels = torch.tensor([0.0, 0.1, 0.2, 0.45, 0.6, 0.9, 1.2, -0.3])
    scores = -((levels[:, None] - head.levels) ** 2) / (2 * (0.5 / 3) ** 2)
    torch.testing.assert_close(RegressionHead.value(scores), levels)
    assert scores.argmax(1).tolist() == [0, 0, 1, 1, 2, 3, 3, 0]  # nearest of 0, 1/3, 2/3, 1
    labels = torch.tensor([0, 0, 1, 1, 2, 3, 3, 0])
    expected = ((levels - labels / 3) ** 2).mean()
    assert LevelRegressionLoss(4)(scores, labels).item() == pytest.approx(expected.item(), rel=1e-5)
    weights = torch.tensor([1.0, 2.0, 3.0, 4.0])
    weighted = ((levels - labels / 3) ** 2 * weights[labels]).sum() / weights[labels].sum()
    assert training_loss(4, class_weights=weights, head="regress")(scores, labels).item() == pytest.approx(
        weighted.item(), rel=1e-5
    )


@pytest.mark.parametrize("head, outputs", [("regress", 1), ("ordinal", 3)])
def test_a_head_replaces_timms_classifier_and_is_the_head_layer_group(head: str, outputs: int) -> None:
    model = create_model("resnet18", 4, head=head)
    assert model.get_classifier().fc.out_features == outputs
    groups = layer_groups(model, 2)
    assert groups[-1].param_names == ["fc.fc.weight", "fc.fc.bias"]
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 4)


def test_bad_head_settings_are_refused_before_work(compose_cfg) -> None:
    from lrlab.app.schema import validate

    with pytest.raises(ConfigError, match=r"model.head='cumulative' is not valid; choose one of: classify"):
        validate(compose_cfg("model.head=cumulative"))
    with pytest.raises(ConfigError, match=r"model.head=regress .* train.label_smoothing=0.1 does not apply"):
        validate(compose_cfg("model.head=regress"))  # ELPV's recipe smooths labels
    assert validate(compose_cfg("model.head=regress", "train.label_smoothing=0")).model.head == "regress"


@pytest.mark.slow
@pytest.mark.parametrize("head", ["regress", "ordinal"])
def test_a_head_runs_through_training_evaluation_predict_export_and_mlflow(
    head: str, run_cli, compose_cfg, tmp_path: Path
) -> None:
    import mlflow
    import pandas as pd
    from mlflow.tracking import MlflowClient

    from lrlab import load_model
    from lrlab.app.build import build
    from lrlab.models.export import export_model

    smoke = ("experiment=smoke", "epochs=1", f"model.head={head}", "stages.0.lr=find")
    trained = run_cli(*smoke, "train.checkpoints=true")
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "range test:" in trained.stderr + trained.stdout  # the range test ran on the head's own loss
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert run.data.params["model.head"] == head
    best = next((tmp_path / "outputs").rglob("best.pt"))
    loaded = load_model(best)

    evaluated = run_cli("task=evaluate", f"checkpoint={best}")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    runs = client.search_runs([run.info.experiment_id])
    (evaluation,) = [r for r in runs if r.info.run_name.endswith("-evaluate")]
    assert evaluation.data.metrics["test/accuracy"] == pytest.approx(run.data.metrics["test/accuracy"])

    setup = build(compose_cfg(*smoke, "tracking=none"))
    folder = tmp_path / "images"
    folder.mkdir()
    x, _ = next(iter(setup.test_loader))
    for i, image in enumerate(x[:4]):
        (folder / f"{i}.png").write_bytes(setup.preprocess.to_png(image))
    _, csv_probs = predict_to_csv(run_cli, best, folder, tmp_path / "outputs", loaded.class_names)
    columns = [f"p_{name}" for name in loaded.class_names]
    files = sorted(folder.iterdir())
    expected = loaded.predict_proba([Image.open(f) for f in files]).numpy()
    assert np.abs(expected - csv_probs).max() <= 1e-5

    mlflow.set_tracking_uri(uri)
    served = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    answer = served.predict(pd.DataFrame({"image": [f.read_bytes() for f in files]}))
    assert np.abs(answer[columns].to_numpy() - expected).max() <= 1e-5

    pytest.importorskip("onnxruntime")
    import onnxruntime

    done = export_model(loaded, tmp_path / "onnx", "onnx")
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(done.path, alone / "model.onnx")
    session = onnxruntime.InferenceSession(str(alone / "model.onnx"), providers=["CPUExecutionProvider"])
    inputs = torch.stack([loaded.preprocess(Image.open(f)) for f in files]).numpy()
    assert np.abs(session.run(None, {"image": inputs})[0] - expected).max() <= 1e-5
