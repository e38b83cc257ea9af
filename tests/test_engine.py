"""The train/eval loop: accumulation, precision, read-back batching, divergence, checkpoints."""

from __future__ import annotations

import collections
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from lrlab.core.engine import Engine, TrainingDiverged
from lrlab.core.schedules import constant
from lrlab.core.types import Callback
from lrlab.data.loaders import TensorLoader
from lrlab.data.sources import load_digits
from lrlab.data.types import Normalization
from lrlab.train.checkpoints import CheckpointCallback, CheckpointError, load_checkpoint, save_atomic

NORM = Normalization((0.5,), (0.5,))


@pytest.fixture(scope="module")
def digits():
    return load_digits(image_size=8)


def _mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def _loaders(digits, batch_size: int):
    train = TensorLoader(digits.train, batch_size, NORM, shuffle=True, drop_last=True, seed=0)
    return train, TensorLoader(digits.valid, 256, NORM)


class Recorder(Callback):
    def __init__(self):
        self.chunks: list[int] = []
        self.steps: list[int] = []

    def on_steps(self, engine, records):
        self.chunks.append(len(records))
        self.steps += [r.step for r in records]


def test_gradient_accumulation_matches_the_big_batch(digits) -> None:
    results = []
    for batch, accum in ((64, 1), (32, 2), (16, 4)):
        model = _mlp()
        train, _ = _loaders(digits, 64)
        engine = Engine(model, grad_accum=accum)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        # the same images in the same order: draw the 64-batches and split them
        big = list(train)
        micro = [(x[i : i + batch], y[i : i + batch]) for x, y in big for i in range(0, 64, batch)]
        assert engine.steps_per_epoch(micro) == len(big)
        engine.train_epoch(micro, opt)
        results.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.allclose(results[0], results[1], atol=1e-6) and torch.allclose(
        results[0], results[2], atol=1e-6
    )


def test_losses_are_read_back_in_chunks_of_log_every(digits) -> None:
    model, rec = _mlp(), Recorder()
    train, valid = _loaders(digits, 64)
    engine = Engine(model, log_every=5, callbacks=[rec])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    engine.fit(train, valid, opt, constant(opt, [1e-3], len(train)), epochs=1)
    # digits' 1,077 training images (60/20/20) in batches of 64: 16 steps
    assert rec.chunks == [5, 5, 5, 1] and rec.steps == list(range(16))


class NormRecorder(Callback):
    def __init__(self):
        self.norms: list[float] = []

    def on_steps(self, engine, records):
        self.norms += [r.grad_norm for r in records]


def _manual_norms(digits, trainable: str, clip: float | None, precision: str = "32") -> list[float]:
    """The gradient norm of each SGD step, computed by hand on a twin model."""
    model = _mlp()
    model[1].requires_grad_(trainable == "all")
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    norms = []
    for x, y in list(_loaders(digits, 64)[0])[:6]:
        nn.functional.cross_entropy(model(x), y).backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return norms


@pytest.mark.parametrize(("trainable", "clip"), [("all", None), ("last", None), ("all", 0.5)])
def test_each_steps_gradient_norm_before_clipping_reaches_the_callbacks(digits, trainable, clip) -> None:
    model, rec = _mlp(), NormRecorder()
    model[1].requires_grad_(trainable == "all")  # frozen parameters have no gradient: not counted
    engine = Engine(model, log_every=4, callbacks=[rec], grad_clip=clip)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    batches = list(_loaders(digits, 64)[0])[:6]
    engine.fit(batches, _loaders(digits, 64)[1], opt, None, epochs=1)
    expected = _manual_norms(digits, trainable, clip)
    np.testing.assert_allclose(rec.norms, expected, rtol=1e-5)
    if clip:
        assert max(rec.norms) > clip, "the norm before clipping, not after"


def test_progress_bars_show_running_loss_speed_and_evaluation_only_when_asked(digits, capsys) -> None:
    train, valid = _loaders(digits, 64)
    for progress in (True, False):
        model = _mlp()
        engine = Engine(model, log_every=4, progress=progress)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        engine.fit(train, valid, opt, constant(opt, [1e-3], len(train)), epochs=1)
        err = capsys.readouterr().err
        if progress:
            assert "epoch 0" in err and "batch/s" in err and "loss=" in err and "evaluate" in err
        else:
            assert err == ""


@pytest.mark.parametrize("precision", ["bf16", "16"])
def test_mixed_precision_on_cpu_trains(digits, precision: str) -> None:
    model = _mlp()
    train, valid = _loaders(digits, 64)
    engine = Engine(model, precision=precision)
    assert (engine.scaler is not None) == (precision == "16")
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    before = engine.evaluate(valid)["valid_loss"]
    results = engine.fit(train, valid, opt, constant(opt, [3e-3], len(train)), epochs=2)
    assert results[-1].valid_loss < before * 0.5 and results[-1].accuracy > 0.8


def test_non_finite_loss_stops_training(digits) -> None:
    model = _mlp()
    train, valid = _loaders(digits, 64)
    batches = list(train)[:8]
    batches[4] = (torch.full_like(batches[4][0], float("nan")), batches[4][1])
    engine = Engine(model, log_every=3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(TrainingDiverged, match="lower the learning rate"):
        engine.fit(batches, valid, opt, None, epochs=1)


def test_channels_last_conv_net_matches_contiguous(digits) -> None:
    outs = []
    for channels_last in (False, True):
        torch.manual_seed(0)
        model = nn.Sequential(
            nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10)
        )
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        engine = Engine(model, channels_last=channels_last)
        outs.append(engine.evaluate(TensorLoader(digits.valid, 128, NORM))["valid_loss"])
    assert outs[0] == pytest.approx(outs[1], rel=1e-5)


def test_checkpoints_are_atomic_best_by_valid_loss_and_weights_only(digits, tmp_path: Path) -> None:
    model = _mlp()
    train, valid = _loaders(digits, 64)
    ckpt = CheckpointCallback(tmp_path)
    engine = Engine(model, callbacks=[ckpt])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    results = engine.fit(train, valid, opt, constant(opt, [3e-3], 2 * len(train)), epochs=2)
    best = load_checkpoint(tmp_path / "best.pt")
    assert best["metrics"]["valid_loss"] == min(r.valid_loss for r in results)
    assert torch.equal(load_checkpoint(tmp_path / "last.pt")["model"]["3.weight"], model[3].weight.detach())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "last.pt"]

    evil = tmp_path / "evil.pt"
    torch.save({"obj": collections.Counter(a=1), "f": partial(print)}, evil)
    with pytest.raises(CheckpointError, match=r"evil\.pt is damaged or not a checkpoint \(UnpicklingError"):
        load_checkpoint(evil)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        save_atomic({"x": Unpicklable()}, tmp_path / "last.pt")
    assert torch.equal(load_checkpoint(tmp_path / "last.pt")["model"]["3.weight"], model[3].weight.detach())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "evil.pt", "last.pt"]


def test_damaged_empty_or_foreign_checkpoints_are_named_in_one_paragraph(tmp_path: Path) -> None:
    path = save_atomic({"model": {"w": torch.arange(4096, dtype=torch.float32)}}, tmp_path / "best.pt")
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.arange(4096, dtype=torch.float32))
    raw = bytearray(path.read_bytes())
    start = raw.find(np.arange(8, dtype=np.float32).tobytes())  # the tensor's data inside the file
    assert start > 0
    for i in range(100):
        raw[start + 100 + i] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=r"best\.pt is damaged: its payload does not match the SHA-256"):
        load_checkpoint(path)
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"best\.pt is empty \(0 bytes\)"):
        load_checkpoint(path)
    path.write_bytes(b"not a checkpoint at all" * 10)
    with pytest.raises(CheckpointError, match=r"best\.pt is damaged or not a checkpoint"):
        load_checkpoint(path)
    torch.save({"model": {}}, path)
    with pytest.raises(CheckpointError, match="not an lrlab checkpoint"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")


def test_predict_returns_labels_targets_and_the_evaluate_loss(digits) -> None:
    model = _mlp()
    train, valid = _loaders(digits, 64)
    engine = Engine(model)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    engine.fit(train, valid, opt, constant(opt, [3e-3], len(train)), epochs=1)
    test = TensorLoader(digits.test, 100, NORM)  # 360 images: batches of 100, 100, 100, 60
    predictions, targets, loss, probs = engine.predict(test)
    assert probs is None
    assert predictions.dtype == targets.dtype == torch.int64 and predictions.device.type == "cpu"
    assert torch.equal(targets, digits.test.labels) and predictions.shape == (360,)
    with torch.no_grad():
        x = torch.cat([xb for xb, _ in test])
        assert torch.equal(predictions, model(x).argmax(1))
    metrics = engine.evaluate(test)
    assert loss == pytest.approx(metrics["valid_loss"], rel=1e-9)
    assert (predictions == targets).float().mean().item() == pytest.approx(metrics["accuracy"])
    assert model.training, "predict leaves the model in the mode it found it"
    with_probs = engine.predict(test, probabilities=True)
    assert with_probs.probabilities.shape == (360, 10) and torch.equal(with_probs.predictions, predictions)
    assert torch.allclose(with_probs.probabilities.sum(1), torch.ones(360), atol=1e-5)
    with torch.no_grad():
        assert torch.allclose(with_probs.probabilities, model(x).softmax(1), atol=1e-6)
    empty = engine.predict([])
    assert len(empty.predictions) == 0 and empty.loss != empty.loss  # nan


def test_compile_settings_map_to_torch_compile_modes(compose_cfg) -> None:
    from lrlab.app.schema import validate
    from lrlab.core.compiling import compile_mode
    from lrlab.errors import ConfigError

    assert [compile_mode(s) for s in (False, "false", True, "true")] == [None, None, "default", "default"]
    assert compile_mode("reduce-overhead") == "reduce-overhead"
    with pytest.raises(ConfigError, match=r"train\.compile='fast'.*reduce-overhead"):
        validate(compose_cfg("experiment=smoke", "train.compile=fast"))
    assert (
        validate(compose_cfg("experiment=smoke", "train.compile=max-autotune")).train.compile
        == "max-autotune"
    )


def test_compiled_evaluation_pads_a_partial_last_batch_to_one_shape(digits) -> None:
    """With compile on, the model sees every evaluation batch at the first batch's size (no second
    graph for the last, partial batch), and the metrics and predictions are those of eager mode."""
    model = _mlp()
    eager, compiled = Engine(model), Engine(model, compile="default")
    shapes = []

    def recording_forward(x: torch.Tensor) -> torch.Tensor:
        shapes.append(tuple(x.shape))
        return model(x)

    compiled.forward_model = recording_forward  # stands in for the compiled module: records shapes
    valid = TensorLoader(digits.valid, 64, NORM)
    assert len(digits.valid) % 64 and len(valid) > 1
    assert compiled.evaluate(valid) == pytest.approx(eager.evaluate(valid))
    assert set(shapes) == {(64, *digits.valid.images.shape[1:])}
    got, want = compiled.predict(valid, probabilities=True), eager.predict(valid, probabilities=True)
    assert torch.equal(got.predictions, want.predictions) and len(got.targets) == len(digits.valid)
    torch.testing.assert_close(got.probabilities, want.probabilities)


@pytest.mark.slow
def test_compiled_training_matches_eager(digits) -> None:
    """torch.compile (inductor on the CPU) changes speed, not the arithmetic beyond float rounding."""
    weights = []
    for setting in (False, "default"):
        model = _mlp()
        train, _ = _loaders(digits, 64)
        engine = Engine(model, compile=setting)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        engine.train_epoch(train, opt)
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.allclose(weights[0], weights[1], atol=1e-5)


def test_compiling_on_the_cpu_silences_torchs_no_cuda_runtime_notice() -> None:
    """Inductor's C++ build logs "No CUDA runtime is found" on machines without CUDA, in the middle
    of the epoch table; compiling for the CPU needs none."""
    import logging

    notice = logging.getLogger("torch.utils.cpp_extension")
    notice.setLevel(logging.NOTSET)
    Engine(_mlp(), compile=False)
    assert notice.getEffectiveLevel() <= logging.WARNING, "eager engines leave torch's logging alone"
    engine = Engine(_mlp(), compile="default")  # torch.compile is lazy: nothing compiles here
    assert engine.forward_model is not engine.model and notice.getEffectiveLevel() == logging.ERROR


def test_progress_defaults_to_auto_on_in_notebooks_and_off_in_logs(monkeypatch) -> None:
    import sys

    from lrlab.core.settings import StepOptions
    from lrlab.errors import ConfigError

    assert StepOptions().progress is False  # pytest's stderr is no terminal
    monkeypatch.setitem(sys.modules, "ipykernel", object())
    assert StepOptions().progress is True and StepOptions(progress=False).progress is False
    with pytest.raises(ConfigError, match=r"train\.progress='sometimes' is not valid"):
        StepOptions(progress="sometimes")
