"""The test report's metrics on hand-made predictions: accuracy, per-class recall, balanced
accuracy (a class missing from the targets, a class never predicted), grouped (2-class) accuracy
metric keys made from class names, and the calibration error with its reliability diagram."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lrlab.app.interpret import Interpretation
from lrlab.core.metrics import (
    accuracy,
    balanced_accuracy,
    calibration,
    class_keys,
    classification_report,
    confusion_matrix,
    grouped_accuracy,
    metric_key,
    per_class_recall,
)

#                 class:  0  0  0  0  1  1  2  2  2  3
TARGETS = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, 3])
PREDICTIONS = np.array([0, 0, 0, 1, 1, 0, 2, 3, 3, 3])


def test_confusion_matrix_rows_are_true_classes() -> None:
    matrix = confusion_matrix(PREDICTIONS, TARGETS, 4)
    assert matrix.tolist() == [[3, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 2], [0, 0, 0, 1]]


def test_accuracy_and_per_class_recall() -> None:
    assert accuracy(PREDICTIONS, TARGETS) == pytest.approx(0.6)
    assert per_class_recall(PREDICTIONS, TARGETS, 4) == pytest.approx([0.75, 0.5, 1 / 3, 1.0])
    assert math.isnan(accuracy([], []))


def test_balanced_accuracy_is_the_mean_recall() -> None:
    assert balanced_accuracy(PREDICTIONS, TARGETS, 4) == pytest.approx((0.75 + 0.5 + 1 / 3 + 1.0) / 4)
    # a majority-class predictor: plain accuracy 0.8, balanced 0.5
    assert balanced_accuracy([0] * 10, [0] * 8 + [1] * 2) == pytest.approx(0.5)


def test_balanced_accuracy_leaves_out_a_class_with_no_samples() -> None:
    targets = np.array([0, 0, 1, 1, 3, 3])  # class 2 has no samples
    predictions = np.array([0, 2, 1, 1, 3, 0])  # class 2 is predicted once, wrongly
    recall = per_class_recall(predictions, targets, 4)
    assert recall[[0, 1, 3]] == pytest.approx([0.5, 1.0, 0.5]) and math.isnan(recall[2])
    assert balanced_accuracy(predictions, targets, 4) == pytest.approx((0.5 + 1.0 + 0.5) / 3)


def test_a_class_never_predicted_counts_zero() -> None:
    assert balanced_accuracy([0, 0, 0, 0], [0, 0, 1, 1], 2) == pytest.approx(0.5)


def test_grouped_accuracy_scores_the_coarse_classes_of_fine_predictions() -> None:
    elpv = [[0, 1], [2, 3]]  # functional: p in {0, 1/3}; defective: p in {2/3, 1}
    # wrong 4-class predictions that stay in the right group count as right: 0<->1 and 2<->3
    assert grouped_accuracy(PREDICTIONS, TARGETS, elpv) == pytest.approx(1.0)
    assert grouped_accuracy([1, 2, 3, 0], [0, 1, 2, 3], elpv) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="none of the groups"):
        grouped_accuracy([0, 2], [0, 2], [[0], [1]])


def test_metric_keys_from_class_names() -> None:
    assert [metric_key(n) for n in ("p=0", "p=1/3", "p=2/3", "p=1")] == ["p_0", "p_1_3", "p_2_3", "p_1"]
    assert metric_key("golden retriever") == "golden_retriever" and metric_key("a.b-c") == "a.b-c"
    assert class_keys(["a b", "a/b", "c"]) == ["a_b", "a_b_1", "c"]


def test_classification_report_takes_tensors_and_names_every_key() -> None:
    names = ["p=0", "p=1/3", "p=2/3", "p=1"]
    groups = {"functional": [0, 1], "defective": [2, 3]}
    report = classification_report(torch.as_tensor(PREDICTIONS), torch.as_tensor(TARGETS), names, groups)
    assert report == pytest.approx(
        {
            "accuracy": 0.6,
            "error_rate": 0.4,
            "balanced_accuracy": (0.75 + 0.5 + 1 / 3 + 1.0) / 4,
            "recall/p_0": 0.75,
            "recall/p_1_3": 0.5,
            "recall/p_2_3": 1 / 3,
            "recall/p_1": 1.0,
            "accuracy_2class": 1.0,
        }
    )
    without = classification_report([0, 0], [0, 0], ["a", "b"])
    assert "recall/b" not in without and "accuracy_2class" not in without


def test_per_class_f1_is_scikit_learns_and_zero_for_a_class_never_hit() -> None:
    """A class predicted and present but never hit has precision 0 and recall 0: its F1 is 0, as
    2TP / (2TP + FP + FN) gives (as scikit-learn); nan only for a class neither predicted nor present."""
    from sklearn.metrics import f1_score

    from lrlab.app.interpret import Interpretation

    targets = np.array([0, 0, 1, 1, 2, 2])
    predictions = np.array([0, 1, 0, 0, 2, 2])
    rows = Interpretation(["a", "b", "c", "d"], predictions, targets, np.eye(4)[predictions]).per_class()
    expected = f1_score(targets, predictions, labels=[0, 1, 2], average=None, zero_division=0)
    assert [r["f1"] for r in rows[:3]] == pytest.approx(expected.tolist())
    assert rows[1]["precision"] == 0 and rows[1]["recall"] == 0 and rows[1]["f1"] == 0
    assert math.isnan(rows[3]["f1"])


def test_test_predictions_csv_has_a_row_per_image_with_its_loss(tmp_path) -> None:
    """Without files (array sources) the rows are indexed only; each row's loss is -log of the
    probability of the actual class, ready to sort for the worst images."""
    import csv

    from lrlab.app.interpret import Interpretation

    probabilities = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    path = Interpretation(
        ["a", "b", "c"], np.array([0, 2]), np.array([0, 1]), probabilities
    ).write_predictions(tmp_path / "test_predictions.csv")
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["index", "actual", "predicted", "probability", "loss", "p_a", "p_b", "p_c"]
    assert [(r["actual"], r["predicted"]) for r in rows] == [("a", "a"), ("b", "c")]
    assert float(rows[1]["probability"]) == 0.6
    assert float(rows[1]["loss"]) == pytest.approx(-math.log(0.3), rel=1e-5)


def test_calibration_bins_by_top_probability_and_weighs_each_gap_by_its_bin() -> None:
    probabilities = np.array([[0.95, 0.05], [0.9, 0.1], [0.3, 0.7], [0.42, 0.58], [0.5, 0.5]])
    targets = [0, 1, 1, 1, 0]
    bins = calibration(probabilities, targets, bins=5)
    # Bins (0.8, 1]: 0.95 right, 0.9 wrong; (0.6, 0.8]: 0.7 right; (0.4, 0.6]: 0.58 right and the
    # tie 0.5 (argmax: class 0, right).
    assert bins.counts.tolist() == [0, 0, 2, 1, 2]
    np.testing.assert_allclose(bins.confidence[2:], [0.54, 0.7, 0.925])
    np.testing.assert_allclose(bins.accuracy[2:], [1.0, 1.0, 0.5])
    assert math.isnan(bins.accuracy[0]) and math.isnan(bins.confidence[1])
    assert bins.ece == pytest.approx((2 * 0.46 + 1 * 0.3 + 2 * 0.425) / 5)
    assert calibration(np.eye(3), [0, 1, 2]).ece == 0.0  # certain and right
    assert calibration(np.eye(3), [1, 2, 0]).ece == 1.0  # certain and wrong
    assert math.isnan(calibration(np.zeros((0, 3)), []).ece)


def test_reliability_diagram_is_written_with_the_evaluation_files(tmp_path) -> None:
    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet(np.ones(4), size=200)
    targets = rng.integers(0, 4, size=200)
    interpretation = Interpretation(["a", "b", "c", "d"], probabilities.argmax(1), targets, probabilities)
    written = {p.name for p in interpretation.write(tmp_path)}
    assert "reliability.png" in written and (tmp_path / "reliability.png").read_bytes()[:4] == b"\x89PNG"
    assert interpretation.calibration().ece == pytest.approx(calibration(probabilities, targets).ece)


def test_top_losses_name_the_file_of_each_image_read_from_files(tmp_path, monkeypatch) -> None:
    import lrlab.app.interpret as interpret

    drawn, draw = {}, interpret.image_grid

    def grid(pictures, titles, header, columns=8):
        drawn["titles"] = list(titles)
        return draw(pictures, titles, header, columns)

    monkeypatch.setattr(interpret, "image_grid", grid, raising=True)
    probabilities = np.array([[0.1, 0.9], [0.8, 0.2]])
    images = np.zeros((2, 8, 8, 3))
    paths = ["/data/cells/cell0001.png", "/data/cells/cell0002.png"]
    with_files = Interpretation(["a", "b"], np.array([1, 0]), np.array([0, 1]), probabilities, paths)
    with_files.plot_top_losses(images, [0, 1], tmp_path / "top.png")
    assert drawn["titles"] == ["b / a\n0.90 / 0.10\ncell0001.png", "a / b\n0.80 / 0.20\ncell0002.png"]
    Interpretation(["a", "b"], np.array([1, 0]), np.array([0, 1]), probabilities).plot_top_losses(
        images, [0], tmp_path / "top.png"
    )
    assert drawn["titles"] == ["b / a\n0.90 / 0.10"]
