"""Staged transfer training on a real timm model: freezing, train_bn, discriminative LRs, the
one-cycle end point, optimizer-state clearing, finder-driven LRs and gradual unfreezing."""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

from lrlab.core.engine import Engine
from lrlab.core.optim import build_optimizer
from lrlab.core.schedules import one_cycle
from lrlab.core.types import Callback
from lrlab.data.loaders import TensorLoader
from lrlab.errors import ConfigError
from lrlab.finder.config import FinderConfig
from lrlab.models.factory import create_model, normalization
from lrlab.models.groups import layer_groups
from lrlab.train.stage import Stage
from lrlab.train.stages import NORM_TYPES, Training, run_stages, spread_lrs, trainable_group_indices

ADAMW = partial(torch.optim.AdamW, betas=(0.9, 0.99), eps=1e-5, weight_decay=0.01)


class Spy(Callback):
    """Records stage decisions, the optimizer state size at each stage start, and applied LRs."""

    def __init__(self, optimizer):
        self.starts, self.state_sizes, self.lrs = [], [], []
        self.optimizer = optimizer
        optimizer.register_step_pre_hook(
            lambda opt, a, k: self.lrs.append([g["lr"] for g in opt.param_groups])
        )

    def on_stage_start(self, engine, start):
        self.starts.append(start)
        self.state_sizes.append(len(self.optimizer.state))


def _setup(digits, seed=0):
    torch.manual_seed(seed)
    model = create_model("test_efficientnet", num_classes=10)
    groups = layer_groups(model, 2)
    norm = normalization(model)
    train = TensorLoader(digits.train, 32, norm, shuffle=True, drop_last=True, seed=seed)
    valid = TensorLoader(digits.valid, 64, norm)
    optimizer = build_optimizer(ADAMW, model, groups, lr=1e-3)
    spy = Spy(optimizer)
    return model, groups, train, valid, optimizer, Engine(model, callbacks=[spy]), spy


def _norm_param_names(model) -> set[str]:
    return {
        f"{m}.{p}"
        for m, mod in model.named_modules()
        if isinstance(mod, NORM_TYPES)
        for p, _ in mod.named_parameters(recurse=False)
    }


@pytest.mark.parametrize("train_bn", [True, False])
def test_head_stage_leaves_frozen_groups_bit_identical(digits, train_bn: bool) -> None:
    model, groups, train, valid, optimizer, engine, _ = _setup(digits)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    stages = [Stage("head", 1, lr=1e-2, trainable="head", train_bn=train_bn)]
    run_stages(engine, Training(groups, train, valid, optimizer, one_cycle), stages)
    after = model.state_dict()
    norms = _norm_param_names(model)
    head = set(groups[-1].param_names)
    body_params = [n for g in groups[:-1] for n in g.param_names]
    for name in body_params:
        same = torch.equal(before[name], after[name])
        assert same != (train_bn and name in norms), name
    running = [k for k in before if k.endswith("running_mean")]
    assert running and all(torch.equal(before[k], after[k]) != train_bn for k in running)
    assert all(not torch.equal(before[n], after[n]) for n in head)


def test_discriminative_lrs_are_geometric_and_one_cycle_ends_at_div_final(digits) -> None:
    assert spread_lrs(1e-3, 3, 100) == pytest.approx([1e-5, 1e-4, 1e-3], rel=1e-12)
    assert spread_lrs(2e-3, 3, 10, "slice_hi") == pytest.approx([2e-4, 2e-4, 2e-3])
    assert spread_lrs(1e-3, 4, 1000) == pytest.approx([1e-6, 1e-5, 1e-4, 1e-3])
    _, groups, train, valid, optimizer, engine, spy = _setup(digits)
    stage = Stage("all", 1, lr=1e-3, trainable="all", lr_spread=100, pct_start=0.3, div=5, div_final=1e5)
    run_stages(engine, Training(groups, train, valid, optimizer, one_cycle), [stage])
    layer = [g["layer_group"] for g in optimizer.param_groups]
    rows = np.array(spy.lrs)
    peaks = rows.max(axis=0)
    expected = [1e-5, 1e-4, 1e-3]
    np.testing.assert_allclose(peaks, [expected[k] for k in layer], rtol=1e-9)
    np.testing.assert_allclose(rows[0], [expected[k] / 5 for k in layer], rtol=1e-9)
    np.testing.assert_allclose(rows[-1], [expected[k] / 1e5 for k in layer], rtol=1e-6)
    assert spy.starts[0].layer_lrs == pytest.approx(dict(zip(["body0", "body1", "head"], expected)))


def test_unfreezing_clears_optimizer_state_and_gradual_unfreezes_in_order(digits) -> None:
    model, groups, train, valid, optimizer, engine, spy = _setup(digits)
    stages = [
        Stage("head", 1, lr=1e-2, trainable="head"),
        Stage("from_body1", 1, lr=1e-3, trainable="from:-2"),
        Stage("again", 1, lr=1e-3, trainable="from:1"),
        Stage("all", 1, lr=1e-3, trainable="all", lr_spread=10),
    ]
    run_stages(engine, Training(groups, train, valid, optimizer, one_cycle), stages)
    assert [s.trainable_groups for s in spy.starts] == [
        ["head"],
        ["body1", "head"],
        ["body1", "head"],
        ["body0", "body1", "head"],
    ]
    assert [s.cleared_optimizer_state for s in spy.starts] == [False, True, False, True]
    assert (
        spy.state_sizes[0] == 0
        and spy.state_sizes[1] == 0
        and spy.state_sizes[2] > 0
        and spy.state_sizes[3] == 0
    )
    counts = [s.trainable_params for s in spy.starts]
    assert counts[0] < counts[1] == counts[2] < counts[3] == sum(p.numel() for p in model.parameters())
    assert trainable_group_indices("from:0", 3) == [0, 1, 2] and trainable_group_indices("from:-1", 3) == [2]
    with pytest.raises(ConfigError, match="from:K with -3 <= K < 3"):
        trainable_group_indices("from:5", 3)


def test_find_stage_uses_the_suggestion_times_lr_scale(digits) -> None:
    _, groups, train, valid, optimizer, engine, spy = _setup(digits)
    stage = Stage("head", 1, lr="find", trainable="head", lr_rule="minimum", lr_scale=0.5, lr_spread=10)
    finder = FinderConfig(num_iter=30, end_lr=1.0)
    run_stages(engine, Training(groups, train, valid, optimizer, one_cycle, finder), [stage])
    start = spy.starts[0]
    assert start.rule == "minimum" and start.finder is not None
    assert start.lr == pytest.approx(start.finder.suggestions["minimum"] * 0.5, rel=1e-12)
    assert start.layer_lrs["head"] == pytest.approx(start.lr) and start.layer_lrs["body0"] == pytest.approx(
        start.lr / 10
    )
    head_col = [g["layer_group"] for g in optimizer.param_groups].index(2)
    assert optimizer.param_groups[head_col]["max_lr"] == pytest.approx(start.lr, rel=1e-12)


def test_a_flagged_suggestion_is_warned_about_and_recorded(digits, caplog, tmp_path: Path) -> None:
    """A ramp that starts too high rises from its first step: `minimum` lands at the ramp's start,
    and the stage's console lines, its StageLog entry and the range test's flags all say so."""
    from lrlab.app.console import ConsoleTable
    from lrlab.app.hooks import StageLog

    _, groups, train, valid, optimizer, engine, spy = _setup(digits)
    log = StageLog(tmp_path)
    engine.callbacks += [ConsoleTable(), log]
    stage = Stage("head", 1, lr="find", trainable="all", lr_rule="minimum")
    finder = FinderConfig(start_lr=0.05, end_lr=500.0, num_iter=30, stop_div=False)
    with caplog.at_level("INFO", logger="lrlab"):
        run_stages(engine, Training(groups, train, valid, optimizer, one_cycle, finder), [stage])
    assert spy.starts[0].finder.flags["minimum"] == "ramp start"
    assert log.stages[0]["flag"] == "ramp start"
    text = caplog.text
    assert re.search(r"minimum \S+\* \[ramp start\]", text)
    assert "warning: the minimum suggestion lies in the curve's ramp start" in text
    assert "set stages.0.lr" in text


def test_a_flagged_suggestion_is_a_run_param_from_the_cli(run_cli, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    ramp = ["lr_finder.start_lr=0.05", "lr_finder.end_lr=500", "lr_finder.stop_div=false"]
    args = ["experiment=smoke", "stages=head_only", "lr=find", "epochs=1", "lr_finder.num_iter=30"]
    proc = run_cli(*args, *ramp, "stages.0.lr_rule=minimum")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "warning: the minimum suggestion lies in the curve's ramp start" in proc.stdout
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert run.data.params["stage.head.suggestion_flag"] == "ramp start"


def test_an_unflagged_suggestion_gets_no_warning(digits, caplog, tmp_path: Path) -> None:
    from lrlab.app.console import ConsoleTable
    from lrlab.app.hooks import StageLog

    _, groups, train, valid, optimizer, engine, spy = _setup(digits)
    log = StageLog(tmp_path)
    engine.callbacks += [ConsoleTable(), log]
    stage = Stage("head", 1, lr="find", trainable="head", lr_rule="minimum")
    with caplog.at_level("INFO", logger="lrlab"):
        run_stages(
            engine, Training(groups, train, valid, optimizer, one_cycle, FinderConfig(num_iter=30)), [stage]
        )
    assert spy.starts[0].finder.flags["minimum"] is None and log.stages[0]["flag"] is None
    assert "range test: 30 steps" in caplog.text and "warning:" not in caplog.text


def test_a_range_test_passing_over_few_images_many_times_is_warned_about(digits, caplog) -> None:
    from lrlab.app.console import ConsoleTable

    _, groups, train, valid, optimizer, engine, _ = _setup(digits)  # 10 steps per epoch
    engine.callbacks += [ConsoleTable()]
    finder = FinderConfig(num_iter=120, stop_div=False)
    stage = Stage("head", 1, lr="find", trainable="head")
    with caplog.at_level("INFO", logger="lrlab"):
        run_stages(engine, Training(groups, train, valid, optimizer, one_cycle, finder), [stage])
    assert "warning: the range test's 120 steps passed over the training images 12 times" in caplog.text


@pytest.mark.parametrize("preset", ["fastai_fine_tune", "gradual"])
def test_stage_presets_run_and_log_from_the_cli(run_cli, tmp_path: Path, preset: str) -> None:
    from mlflow.tracking import MlflowClient

    args = ["experiment=smoke", f"stages={preset}", "epochs=1", "freeze_epochs=1", "lr_finder.num_iter=30"]
    if preset == "gradual":
        args.append("lr=find")
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert run.info.status == "FINISHED"
    names = ["head", "unfrozen"] if preset == "fastai_fine_tune" else ["head", "from_body1", "all"]
    for i, name in enumerate(names):
        assert f"stage {name}:" in proc.stdout
        assert f"stage.{name}.peak_lr.head" in run.data.params
        history = client.get_metric_history(run.info.run_id, f"{name}/valid_loss")
        assert [m.step for m in history] == [i]
    if preset == "fastai_fine_tune":
        assert run.data.params["stage.head.peak_lr.body0"] == "0.0002"
        assert run.data.params["stage.unfrozen.peak_lr.body0"] == "1e-05"
    else:
        assert "range test:" in proc.stdout
        files = {a.path for a in client.list_artifacts(run.info.run_id, "lr_finder/from_body1")}
        assert files == {
            "lr_finder/from_body1/lr_find_from_body1.png",
            "lr_finder/from_body1/lr_find_from_body1.csv",
        }
    assert len(client.get_metric_history(run.info.run_id, "valid_loss")) == len(names)


def test_a_stage_unfreezing_groups_the_model_lacks_fails_in_build(compose_cfg) -> None:
    from lrlab.app.build import build
    from lrlab.errors import ConfigError

    with pytest.raises(
        ConfigError, match=r"stages\.0\.trainable='from:99' is not valid.*layer groups: body0"
    ):
        build(compose_cfg("experiment=smoke", "stages=fine_tune", "stages.0.trainable=from:99"))
