"""The LR range test on real timm models and bundled digits: state restore, NaN, AMP,
accumulation, parameter groups, repeats, plot and CSV."""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

from lrlab.core.engine import Engine
from lrlab.core.optim import build_optimizer, group_lrs, set_lrs
from lrlab.core.schedules import constant
from lrlab.data.loaders import TensorLoader
from lrlab.data.sources import load_digits
from lrlab.data.types import ImageSource, TensorSplit
from lrlab.finder.range_test import diverged, find_lr, lr_schedule
from lrlab.finder.rules import RULES, suggest
from lrlab.finder.smoothing import ema_smooth
from lrlab.models.factory import create_model, normalization
from lrlab.models.groups import layer_groups

ADAMW = partial(torch.optim.AdamW, betas=(0.9, 0.99), eps=1e-5, weight_decay=0.01)


@pytest.fixture(scope="module")
def digits():
    full = load_digits(image_size=8)
    subset = TensorSplit(full.train.images[:480], full.train.labels[:480])
    return ImageSource(
        subset, TensorSplit(full.valid.images[:128], full.valid.labels[:128]), full.class_names
    )


def _setup(digits, seed: int = 0, batch_size: int = 32):
    torch.manual_seed(seed)
    model = create_model("test_efficientnet", num_classes=10)
    groups = layer_groups(model, 2)
    loader = TensorLoader(
        digits.train,
        batch_size,
        normalization(model),
        shuffle=True,
        drop_last=True,
        seed=seed,
        augment={"hflip": 0.5, "scale": [0.8, 1.0]},
    )
    optimizer = build_optimizer(ADAMW, model, groups, lr=3e-3)
    return model, groups, loader, optimizer


class LrSpy:
    """Records every param group's LR at each optimizer step (a real optimizer hook)."""

    def __init__(self, optimizer):
        self.rows: list[list[float]] = []
        optimizer.register_step_pre_hook(
            lambda opt, args, kwargs: self.rows.append([g["lr"] for g in opt.param_groups])
        )


def _train_one_epoch(model, loader, optimizer, valid) -> list[torch.Tensor]:
    engine = Engine(model)
    engine.fit(
        loader,
        TensorLoader(valid, 256, normalization(model)),
        optimizer,
        constant(optimizer, group_lrs(optimizer, [3e-3] * 3), len(loader)),
        epochs=1,
    )
    return [p.detach().clone() for p in model.parameters()] + [b.clone() for b in model.buffers()]


def test_training_after_find_lr_is_bit_identical(digits) -> None:
    model, _, loader, optimizer = _setup(digits)
    plain = _train_one_epoch(model, loader, optimizer, digits.valid)

    model, _, loader, optimizer = _setup(digits)
    result = find_lr(model, loader, optimizer, num_iter=30, end_lr=1.0)
    assert len(result.lrs) > 10
    after = _train_one_epoch(model, loader, optimizer, digits.valid)
    assert len(plain) == len(after)
    assert all(torch.equal(a, b) for a, b in zip(plain, after)), "find_lr leaked state into training"


def test_ramp_is_exponential_and_keeps_group_ratios(digits) -> None:
    model, _, loader, optimizer = _setup(digits)
    set_lrs(optimizer, group_lrs(optimizer, [1e-3, 1e-2, 1e-1]))
    spy = LrSpy(optimizer)
    result = find_lr(model, loader, optimizer, start_lr=1e-6, end_lr=1e-2, num_iter=12, stop_div=False)
    np.testing.assert_allclose(result.lrs, lr_schedule(1e-6, 1e-2, 12))
    rows = np.array(spy.rows)
    layer = [g["layer_group"] for g in optimizer.param_groups]
    np.testing.assert_allclose(rows[:, layer.index(2)], result.lrs)
    np.testing.assert_allclose(rows[:, layer.index(0)], result.lrs / 100)
    np.testing.assert_allclose(rows[:, layer.index(1)], result.lrs / 10)
    assert [g["lr"] for g in optimizer.param_groups] == group_lrs(optimizer, [1e-3, 1e-2, 1e-1])


def test_group_lrs_equal_ramps_every_group_at_the_same_lr(digits) -> None:
    """fastai's lr_find: one LR for all parameter groups, whatever their ratios were."""
    model, _, loader, optimizer = _setup(digits)
    set_lrs(optimizer, group_lrs(optimizer, [1e-3, 1e-2, 1e-1]))
    spy = LrSpy(optimizer)
    result = find_lr(model, loader, optimizer, group_lrs="equal", end_lr=1e-2, num_iter=12, stop_div=False)
    rows = np.array(spy.rows)
    assert rows.shape == (12, len(optimizer.param_groups))
    for column in rows.T:
        np.testing.assert_allclose(column, result.lrs)
    assert [g["lr"] for g in optimizer.param_groups] == group_lrs(optimizer, [1e-3, 1e-2, 1e-1])


def test_fastai_rules_read_the_ema_curve_whatever_curve_is_shown(digits) -> None:
    """With the zero-lag curve displayed, fastai's four rules still equal fastai's definitions
    applied to fastai's causal debiased EMA (beta 0.98) of the recorded raw losses; lrlab's
    descent rule reads the zero-lag curve."""
    model, _, loader, optimizer = _setup(digits)
    result = find_lr(model, loader, optimizer, num_iter=60, end_lr=10.0, smoothing="zero_lag")
    ema = ema_smooth(result.losses, 0.98)
    assert result.rule_curves["valley"] == "ema" and result.rule_curves["descent"] == "zero_lag"
    for rule in ("valley", "steep", "minimum", "slide"):
        expected = suggest(result.lrs, ema, "all")[rule]
        assert result.suggestions[rule] == expected or (
            np.isnan(expected) and np.isnan(result.suggestions[rule])
        )
    assert result.suggestions["descent"] == suggest(result.lrs, result.smoothed, "all")["descent"]
    forced = find_lr(
        model, loader, optimizer, num_iter=60, end_lr=10.0, smoothing="zero_lag", rule_curve="zero_lag"
    )
    assert set(forced.rule_curves.values()) == {"zero_lag"}
    assert forced.suggestions["valley"] == suggest(forced.lrs, forced.smoothed, "valley")
    assert "ema" in result.table() and "zero_lag" in result.table()


def test_a_result_shows_as_one_line_and_as_its_plot_in_a_notebook(digits, tmp_path: Path) -> None:
    """`repr` names the rule in use and its suggestion instead of printing the arrays; Jupyter's
    `_repr_png_` hook gets the plot (what fastai's lr_find shows), leaving no figure open."""
    import matplotlib.pyplot as plt

    model, _, loader, optimizer = _setup(digits)
    result = find_lr(model, loader, optimizer, num_iter=30, end_lr=10.0)
    line = repr(result)
    assert line.startswith(f"LRFinderResult(lrlab suggests {result.suggestion:.2e}") and "\n" not in line
    assert f"{len(result.lrs)} steps over 1.0e-07.." in line and "array" not in line
    png = result._repr_png_()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000 and not plt.get_fignums()
    # The lag-free curve is drawn beside fastai's EMA, and each marker sits on the curve its rule read.
    figure = result.plot()
    lines = {line.get_label(): line for line in figure.axes[0].get_lines()}
    assert np.isnan(result.suggestions["descent"])  # 30 steps are too few for it: not drawn, not named
    lag_free = lines["loss (zero_lag smoothed: bottom)"]
    np.testing.assert_array_equal(lag_free.get_ydata(), result.curves["zero_lag"])
    for rule, curve in (("bottom", result.curves["zero_lag"]), ("valley", result.smoothed)):
        (marker,) = [line for label, line in lines.items() if label.startswith(f"{rule}: ")]
        lr = result.suggestions[rule]
        expected = np.interp(np.log(lr), np.log(result.lrs), curve)
        assert marker.get_ydata()[0] == pytest.approx(expected)
    plt.close(figure)
    # The CSV holds every curve a rule read, as the plot draws them.
    import csv

    with result.to_csv(tmp_path / "lr_find.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == [
        "step",
        "lr",
        "loss",
        "smoothed_loss",
        "zero_lag_loss",
        "lightning_loss",
        "torch_lr_finder_loss",
    ]
    np.testing.assert_allclose([float(r["zero_lag_loss"]) for r in rows], result.curves["zero_lag"])


def test_non_finite_loss_stops_and_is_excluded(digits) -> None:
    model, _, loader, optimizer = _setup(digits)
    batches = (list(loader) * 3)[:40]
    x, y = batches[25]
    batches[25] = (torch.full_like(x, float("nan")), y)
    result = find_lr(model, batches, optimizer, num_iter=40, end_lr=1e-2, read_every=7)
    assert result.stop_reason == "non-finite loss"
    assert len(result.losses) == 26 and math.isnan(result.losses[-1])
    assert np.isfinite(result.smoothed[:25]).all()
    assert all(math.isfinite(v) for v in result.suggestions.values())
    assert max(result.suggestions.values()) <= result.lrs[24]


def test_divergence_test_handles_zero_and_negative_losses() -> None:
    assert not diverged(-1.0, -2.0, 4.0) and diverged(7.0, -2.0, 4.0)
    assert not diverged(0.0, 0.0, 4.0) and diverged(1.0, 0.0, 4.0)
    assert not diverged(3.9, 1.0, 4.0) and diverged(4.1, 1.0, 4.0)
    assert diverged(5.0, 1.0, 4.0) and diverged(float("nan"), 1.0, 4.0) and diverged(float("inf"), 1.0, 4.0)


def test_bf16_autocast_on_cpu(digits) -> None:
    model, _, loader, optimizer = _setup(digits)
    engine = Engine(model, precision="bf16")
    result = find_lr(model, loader, optimizer, engine=engine, num_iter=25, end_lr=1.0)
    assert len(result.lrs) >= 20 and np.isfinite(result.losses[:20]).all()
    assert all(math.isfinite(v) for v in result.suggestions.values())


def test_grad_scaler_overflow_does_not_advance_the_ramp(digits) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(192, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10)
    )
    loader = TensorLoader(
        digits.train, 32, normalization(create_model("test_efficientnet", 10)), shuffle=True, seed=0
    )
    optimizer = ADAMW(model.parameters(), lr=1e-3)
    engine = Engine(model, precision="16")
    engine.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**40)
    attempted: list[float] = []
    step = engine.optimizer_step

    def counting_step(opt):
        attempted.append(opt.param_groups[-1]["lr"])
        step(opt)

    engine.optimizer_step = counting_step
    spy = LrSpy(optimizer)
    result = find_lr(model, loader, optimizer, engine=engine, num_iter=20, end_lr=1e-2, stop_div=False)
    np.testing.assert_allclose(result.lrs, lr_schedule(1e-7, 1e-2, 20))
    skipped = len(attempted) - 20
    assert skipped >= 10, "a 2**40 loss scale must overflow fp16 gradients for a while"
    assert attempted[:skipped] == [1e-7] * skipped and len(spy.rows) == 20
    np.testing.assert_allclose(np.array(spy.rows)[:, -1], result.lrs)
    assert engine.scaler.get_scale() == 2.0**40, "the GradScaler's state is restored"


def test_gradient_accumulation_records_one_point_per_optimizer_step(digits) -> None:
    model, _, loader, optimizer = _setup(digits)

    class Counting:
        def __init__(self, inner):
            self.inner, self.count = inner, 0
            self.generator = inner.generator

        def __len__(self):
            return len(self.inner)

        def __iter__(self):
            for batch in self.inner:
                self.count += 1
                yield batch

    counting = Counting(loader)
    spy = LrSpy(optimizer)
    engine = Engine(model, grad_accum=3)
    result = find_lr(model, counting, optimizer, engine=engine, num_iter=10, stop_div=False)
    assert len(result.lrs) == 10 and len(spy.rows) == 10 and counting.count == 30


def test_per_group_sweeps_each_group_with_the_others_fixed(digits) -> None:
    model, groups, loader, optimizer = _setup(digits)
    spy = LrSpy(optimizer)
    results = find_lr(model, loader, optimizer, per_group=True, num_iter=10, end_lr=1e-1, stop_div=False)
    assert list(results) == [g.name for g in groups]
    layer = [g["layer_group"] for g in optimizer.param_groups]
    rows = np.array(spy.rows)
    for k, name in enumerate(results):
        block = rows[10 * k : 10 * (k + 1)]
        for col, group in enumerate(layer):
            if group == k:
                np.testing.assert_allclose(block[:, col], results[name].lrs)
            else:
                assert (block[:, col] == 3e-3).all()
        assert results[name].group == name and set(results[name].suggestions) == set(RULES)


def test_repeats_report_median_and_spread_and_plot(digits, tmp_path: Path) -> None:
    model, _, loader, optimizer = _setup(digits)
    result = find_lr(model, loader, optimizer, repeats=3, num_iter=30, end_lr=1.0, seed=5)
    assert len(result.repeats) == 3
    curves = [r.losses[:10] for r in result.repeats]
    assert not np.array_equal(curves[0], curves[1]), "repeats must use different data orders"
    for rule, spread in result.spread.items():
        values = [r.suggestions[rule] for r in result.repeats]
        assert spread["median"] == pytest.approx(float(np.median(values)), rel=1e-9)
        assert spread["log10_iqr"] >= 0 and spread["min"] == min(values) and spread["max"] == max(values)
        assert result.suggestions[rule] == spread["median"]
    assert "log10 IQR" in result.table()
    png = tmp_path / "curve.png"
    result.plot(png)
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"
    rows = result.to_csv(tmp_path / "curve.csv").read_text().splitlines()
    assert rows[0] == "step,lr,loss,smoothed_loss" and len(rows) == len(result.lrs) + 1


def test_held_out_loss_is_recorded(digits) -> None:
    model, _, loader, optimizer = _setup(digits)
    valid = TensorLoader(digits.valid, 64, normalization(model))
    result = find_lr(model, loader, optimizer, val_loader=valid, val_batches=2, num_iter=8, stop_div=False)
    assert (
        result.val_losses is not None and len(result.val_losses) == 8 and np.isfinite(result.val_losses).all()
    )


def test_lr_find_from_the_cli_logs_plot_csv_and_suggestions(run_cli, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    proc = run_cli("task=lr_find", "experiment=smoke", "lr_finder.suggest=all", "lr_finder.num_iter=40")
    assert proc.returncode == 0, proc.stderr[-3000:]
    for rule in ("valley", "steep", "minimum", "slide"):
        assert rule in proc.stdout
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert run.info.status == "FINISHED" and run.data.tags["task"] == "lr_find"
    files = {a.path for a in client.list_artifacts(run.info.run_id, "lr_finder")}
    assert files == {"lr_finder/lr_find.png", "lr_finder/lr_find.csv"}
    assert float(run.data.params["lr_find.suggestion.valley"]) == pytest.approx(
        run.data.metrics["lr_find/suggested_valley"], rel=1e-5
    )
    assert run.data.metrics["lr_find/seconds"] > 0
    described = run.data.tags["mlflow.note.content"]  # the run page's top: what was tested, every rule
    assert "range test of stage 0 (full), as its lr=find runs it" in described
    valley = run.data.metrics["lr_find/suggested_valley"]
    assert f"| valley | {valley:.3g} |" in described and "| **lrlab** (in use) |" in described


def test_every_preset_uses_the_benchmarks_pair_and_fastai_keeps_valley(compose_cfg) -> None:
    # experiments/finder_benchmark/: lrlab (minimum_or_valley x 2.5) on fastai's EMA curve had the
    # lowest mean test regret, scored leave-one-dataset-out.
    for preset in ([], ["experiment=smoke"], ["experiment=elpv_gpu"], ["data=digits"]):
        finder = compose_cfg(*preset).lr_finder
        assert (finder.suggest, finder.smoothing) == ("lrlab", "ema")
        assert finder.rule_curve == "calibrated"
    fastai = compose_cfg("lr_finder=fastai").lr_finder
    assert (fastai.suggest, fastai.smoothing) == ("valley", "ema")


def test_task_lr_find_tests_what_the_first_stage_trains_and_suggests_its_lr(compose_cfg, tmp_path) -> None:
    """`lrlab task=lr_find` gives the suggestion the first stage's `lr=find` takes: under
    fine_tune that is the head with the body frozen (fastai's `lr_find` on a fresh learner), not
    the whole model, whose curve suggests another LR."""
    from lrlab.app.run import run_experiment

    quick = ("experiment=smoke", "tracking=none", "lr_finder.num_iter=30", "lr=find", "seed=3")
    staged = (*quick, "stages=fine_tune", "freeze_epochs=1", "epochs=0")
    found = run_experiment(compose_cfg(*staged, "task=lr_find"), tmp_path / "find", launch_dir=tmp_path)
    trained = run_experiment(compose_cfg(*staged), tmp_path / "train", launch_dir=tmp_path)
    (stage,) = trained.summary()["stages"]
    suggestion = found.extra["lr_finder"]["all"].suggestions["lrlab"]
    assert stage["name"] == "head" and stage["lr"] == pytest.approx(suggestion, rel=1e-9)
    whole = run_experiment(
        compose_cfg(*quick, "stages=full", "task=lr_find"), tmp_path / "w", launch_dir=tmp_path
    )
    assert whole.extra["lr_finder"]["all"].suggestions["lrlab"] != pytest.approx(suggestion, rel=1e-3)
    # Per layer group, the groups not swept stay at the ramp's start (at 1, they diverged at once).
    per_group = compose_cfg(*staged, "task=lr_find", "lr_finder.per_group=true", "lr_finder.num_iter=20")
    curves = run_experiment(per_group, tmp_path / "groups", launch_dir=tmp_path).extra["lr_finder"]
    assert set(curves) == {"body0", "body1", "head"}
    assert all(c.stop_reason == "completed" and len(c.lrs) == 20 for c in curves.values())
