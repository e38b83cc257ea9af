"""The configurations and contenders of the finder benchmark v2 (`finder_vs_grid.py`).

Each configuration varies something that moves the best learning rate (architecture, pretrained
or not, optimizer, batch size, linear probe vs full fine-tune, problem); each contender is one way
a user would choose the LR, trained at its own choice. The confirmation row was named before any
v2 result existed and no development decision reads it (`finder_vs_grid.py run` leaves it out
unless asked with `--confirmation`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

SEEDS = (0, 1, 2)


@dataclass(frozen=True)
class BenchConfig:
    """One benchmark configuration: lrlab overrides on a `bench_<problem>` preset, the stage
    whose LR is graded, the optimizer family (which LR grid applies) and the grid's decades."""

    name: str
    problem: str  # experiment=bench_<problem>
    description: str
    optimizer: str  # adamw | sgd
    overrides: tuple[str, ...]
    stage: int = 0  # index of the stage whose LR the contenders choose
    stages: int = 1  # how many stages the run has
    grid: tuple[float, float] = (-5.0, -1.0)  # log10 of the grid's lowest and highest LR
    confirmation: bool = False

    @property
    def settings(self) -> dict[str, str]:
        """The overrides as key -> value."""
        return dict(o.split("=", 1) for o in self.overrides if "=" in o)

    def prior_seconds(self) -> float:
        """A trial's wall-clock seconds on 2 idle CPU cores before any has run, scaled from the
        one measured there (digits, Lite0 at 32 px, 10 full fine-tuning epochs: ~75 s, 150 train
        images/s) by training images, model size and a frozen body (a probe ~3x faster)."""
        values = self.settings
        model = MODEL_COST.get(values.get("model", "efficientnet_lite0"), 1.0)
        size = (int(values.get("data.image_size", 32)) / 32) ** 2
        probe = 1 / 3 if values.get("stages") == "head_only" else 1.0
        images = self.train_epochs * TRAIN_IMAGES[self.problem]
        return 5.0 + images * model * size * probe / 150.0

    @property
    def train_epochs(self) -> int:
        """Epochs of all stages together (from the `epochs=` and `freeze_epochs=` overrides)."""
        values = self.settings
        return int(values.get("epochs", 0)) + (int(values.get("freeze_epochs", 0)) if self.stages > 1 else 0)


def _full(epochs: int) -> tuple[str, ...]:
    return ("stages=full", f"epochs={epochs}")


def _probe(epochs: int) -> tuple[str, ...]:
    return ("stages=head_only", f"epochs={epochs}")


PLAIN_SGD = ("optimizer.momentum=0", "optimizer.nesterov=false")  # torch refuses Nesterov without momentum
ADAMW_GRID, SGD_GRID, PLAIN_SGD_GRID = (-5.0, -1.0), (-4.0, 0.0), (-3.0, 1.0)
TRAIN_IMAGES = {"digits": 1077, "mnist5k": 3000, "elpv4": 1574, "elpv2": 1574}  # the 60% train splits
MODEL_COST = {"efficientnet_lite0": 1.0, "efficientnet_lite1": 1.5, "efficientnet_lite2": 2.2}  # ~FLOPs

CONFIGS: tuple[BenchConfig, ...] = (
    BenchConfig(
        "digits-lite0-adamw",
        "digits",
        "digits 32 px, ImageNet Lite0, AdamW, batch 32, full fine-tune 10 epochs",
        "adamw",
        (*_full(10), "data.batch_size=32"),
    ),
    BenchConfig(
        "digits-lite0-sgd",
        "digits",
        "digits 32 px, ImageNet Lite0, SGD momentum 0.9, batch 32, full fine-tune 10 epochs",
        "sgd",
        (*_full(10), "data.batch_size=32", "optimizer=sgd"),
        grid=SGD_GRID,
    ),
    BenchConfig(
        "digits-scratch-adamw",
        "digits",
        "digits 32 px, Lite0 from scratch (random init), AdamW, batch 32, 6 epochs",
        "adamw",
        (*_full(6), "data.batch_size=32", "model.pretrained=false"),
    ),
    BenchConfig(
        "digits-lite2-adamw-probe",
        "digits",
        "digits 32 px, ImageNet Lite2, AdamW, batch 32, linear probe 6 epochs",
        "adamw",
        (*_probe(6), "data.batch_size=32", "model=efficientnet_lite2"),
        grid=SGD_GRID,
    ),
    BenchConfig(
        "mnist5k-lite0-adamw-b16",
        "mnist5k",
        "MNIST-5k 32 px, ImageNet Lite0, AdamW, batch 16, full fine-tune 6 epochs",
        "adamw",
        (*_full(6), "data.batch_size=16"),
    ),
    BenchConfig(
        "mnist5k-lite0-adamw-b128",
        "mnist5k",
        "MNIST-5k 32 px, ImageNet Lite0, AdamW, batch 128, full fine-tune 6 epochs",
        "adamw",
        (*_full(6), "data.batch_size=128"),
    ),
    BenchConfig(
        "mnist5k-lite0-sgd-b128-probe",
        "mnist5k",
        "MNIST-5k 32 px, ImageNet Lite0, SGD momentum 0.9, batch 128, linear probe 6 epochs",
        "sgd",
        (*_probe(6), "data.batch_size=128", "optimizer=sgd"),
        grid=SGD_GRID,
    ),
    # Added after the first seven development grids ran (their best LRs spanned 5.6e-3..0.1, 1.25
    # decades): plain SGD without momentum steps about 1/(1 - 0.9) = 10x shorter at the same LR,
    # so its probe's best LR should sit near 1, as a user switching optimizer would find.
    BenchConfig(
        "digits-lite0-plainsgd-probe",
        "digits",
        "digits 32 px, ImageNet Lite0, plain SGD (no momentum), batch 32, linear probe 6 epochs",
        "sgd",
        (*_probe(6), "data.batch_size=32", "optimizer=sgd", *PLAIN_SGD),
        grid=PLAIN_SGD_GRID,
    ),
    # Added when eight of the nine development grids had run and their best LRs spanned 1.75 decades
    # (5.6e-3..0.316): the same probe at batch 128 takes 9 steps an epoch instead of 34, so its best
    # LR should sit higher (a one-seed look at 0.316 / 1 / 3.16 put it near 1).
    BenchConfig(
        "digits-lite0-plainsgd-b128-probe",
        "digits",
        "digits 32 px, ImageNet Lite0, plain SGD (no momentum), batch 128, linear probe 6 epochs",
        "sgd",
        (*_probe(6), "data.batch_size=128", "optimizer=sgd", *PLAIN_SGD),
        grid=PLAIN_SGD_GRID,
    ),
    BenchConfig(
        "elpv4-lite1-adamw-ft",
        "elpv4",
        "ELPV 4 classes 32 px, ImageNet Lite1, AdamW, batch 32, head 1 epoch at 0.01 then 6 unfrozen",
        "adamw",
        (
            "model=efficientnet_lite1",
            "data.image_size=32",
            "data.batch_size=32",
            "freeze_epochs=1",
            "epochs=6",
            "stages.0.lr=0.01",
        ),
        stage=1,
        stages=2,
    ),
    BenchConfig(
        "mnist5k-lite1-sgd-b32",
        "mnist5k",
        "CONFIRMATION: MNIST-5k 32 px, ImageNet Lite1, SGD momentum 0.9, batch 32, full fine-tune 6 epochs",
        "sgd",
        (*_full(6), "data.batch_size=32", "optimizer=sgd", "model=efficientnet_lite1"),
        grid=SGD_GRID,
        confirmation=True,
    ),
)
BY_NAME = {c.name: c for c in CONFIGS}
CONFIRMATION = next(c.name for c in CONFIGS if c.confirmation)

SCHEDULEFREE_LR = 0.0025  # schedulefree's documented AdamWScheduleFree default


def _every_stage(config: BenchConfig, setting: str) -> tuple[str, ...]:
    return tuple(f"stages.{i}.{setting}" for i in range(config.stages))


def _find(rule: str | None) -> Callable[[BenchConfig], tuple[str, ...]]:
    def overrides(config: BenchConfig) -> tuple[str, ...]:
        rule_key = (f"stages.{config.stage}.lr_rule={rule}",) if rule else ()
        return (f"stages.{config.stage}.lr=find", *rule_key)

    return overrides


def _auto(config: BenchConfig) -> tuple[str, ...]:
    return (f"stages.{config.stage}.lr=auto",)


def _prodigy(config: BenchConfig) -> tuple[str, ...]:
    """Prodigy at its documented defaults with a constant LR: its step-size estimate grows from
    d0 over a couple of hundred steps, which a decaying schedule cuts short at these budgets."""
    spread = ("lr_spread=1",) if config.stages > 1 else ()
    return ("optimizer=prodigy", "schedule=constant", *spread, *_every_stage(config, "lr=1"))


def _schedulefree(config: BenchConfig) -> tuple[str, ...]:
    return (
        "optimizer=schedulefree_adamw",
        "schedule=constant",
        *_every_stage(config, f"lr={SCHEDULEFREE_LR}"),
    )


# Contender -> its overrides (after the configuration's). The constant is not here: it is a grid
# LR (chosen leave-one-configuration-out on valid), so the grid has already trained it.
CONTENDERS: dict[str, Callable[[BenchConfig], tuple[str, ...]]] = {
    "lrlab": _find(None),
    "valley": _find("valley"),
    "steepest": _find("lightning"),
    "auto": _auto,
    "prodigy": _prodigy,
    "schedulefree": _schedulefree,
}
