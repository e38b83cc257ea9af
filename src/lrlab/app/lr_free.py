"""The command line and config check for learning-rate-free optimizers (Prodigy, Schedule-Free
AdamW): they set their own step size, so a range test has nothing to find, and Schedule-Free
replaces the LR schedule. `optimizer=NAME` alone brings the settings each runs with (what the
command line leaves unset); the check refuses what makes no sense. The engine drives them (see
`lrlab.core.lr_free`)."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from lrlab.app.tasks import override_key
from lrlab.errors import ConfigError
from lrlab.train.stage import uses_range_test

# Optimizers that set their own step size: how lrlab refers to each and the fixed lr it takes.
LR_FREE = {
    "prodigyopt.Prodigy": ("optimizer=prodigy", "lr=1 (its documented lr: it estimates the step size)"),
    "schedulefree.AdamWScheduleFree": (
        "optimizer=schedulefree_adamw",
        "a fixed lr, e.g. lr=0.0025 (its default)",
    ),
}


# What `optimizer=NAME` adds to a command line that does not set the key itself: the fixed LR each
# runs at, Prodigy's one LR for every group, and the constant schedule both need on short runs.
SETTINGS = {
    "prodigy": {"schedule": "constant", "lr": "1", "lr_spread": "1"},
    "schedulefree_adamw": {"schedule": "constant", "lr": "0.0025"},
}


def complete_lr_free_args(args: list[str]) -> tuple[list[str], list[str]]:
    """`args` with the settings `optimizer=prodigy` or `optimizer=schedulefree_adamw` runs with
    added where the command line leaves them unset (`SETTINGS`), and the added overrides. A sweep
    over optimizers, or an lr searched by a `search=` preset, gets nothing added."""
    choices = [a.split("=", 1)[1] for a in args if a.startswith("optimizer=")]
    if len(choices) != 1 or choices[0] not in SETTINGS:
        return args, []
    given = {override_key(a) for a in args}
    searched = {"lr"} if any(a.startswith("search=") for a in args) else set()
    added = [f"{key}={value}" for key, value in SETTINGS[choices[0]].items() if key not in given | searched]
    return [*added, *args], added  # before any flag: Hydra takes the overrides as one run of words


def check_lr_free(cfg: DictConfig) -> None:
    """A learning-rate-free optimizer takes a fixed lr (a range test has nothing to find), Prodigy
    one lr for all parameter groups and no one-cycle schedule, Schedule-Free AdamW no LR schedule:
    ConfigError naming the setting otherwise."""
    target = str(OmegaConf.select(cfg, "optimizer._target_", default=""))
    if target not in LR_FREE:
        return
    name, fixed = LR_FREE[target]
    finds = [i for i, stage in enumerate(cfg.stages) if uses_range_test(stage.lr)]
    if cfg.task == "lr_find" or finds:
        where = "task=lr_find" if cfg.task == "lr_find" else f"stages.{finds[0]}.lr={cfg.stages[finds[0]].lr}"
        raise ConfigError(f"{where} does not apply to {name}, which sets its own step size; pass {fixed}.")
    spread = [i for i, stage in enumerate(cfg.stages) if stage.lr_spread != 1 and stage.epochs > 0]
    if target.startswith("prodigyopt.") and spread:
        raise ConfigError(
            f"stages.{spread[0]}.lr_spread={cfg.stages[spread[0]].lr_spread:g} does not apply to {name}: "
            "Prodigy takes one lr for every parameter group (no discriminative LRs); pass lr_spread=1."
        )
    if target.startswith("prodigyopt.") and cfg.train.layer_decay is not None:
        raise ConfigError(
            f"train.layer_decay does not apply to {name}: Prodigy takes one lr for every parameter "
            "group; set train.layer_decay=null."
        )
    schedule = str(OmegaConf.select(cfg, "schedule._target_", default=""))
    if target.startswith("prodigyopt.") and schedule.endswith(".one_cycle"):
        raise ConfigError(
            f"schedule=one_cycle does not suit {name}: its warm-up from lr/25 holds Prodigy's step-size "
            "estimate near d0 until the LR is decaying again (on digits, train loss 1.69 after 330 steps "
            "against 0.013 with a constant LR); use schedule=constant, or schedule=cosine for long runs."
        )
    if target.startswith("schedulefree.") and not schedule.endswith(".constant"):
        raise ConfigError(
            f"{name} replaces the LR schedule, so schedule={schedule.rsplit('.', 1)[-1]} does not apply: "
            "use schedule=constant (warm-up: optimizer.warmup_steps)."
        )
