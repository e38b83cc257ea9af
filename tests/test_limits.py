"""The one table of valid ranges (lrlab.core.limits): every entry refuses a value outside its range
before any work, the config check, the engine and the schedule read the same entries, and every
numeric key of the schemas has an entry."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

from lrlab.core.limits import LIMITS, Limit, check_limits
from lrlab.errors import ConfigError

# Overrides that give the default config the key an entry checks.
NEEDS = {
    "optimizer.momentum": ("optimizer=sgd",),
    "optimizer.d_coef": ("optimizer=prodigy", "schedule=constant", "lr=1", "lr_spread=1"),
    "optimizer.warmup_steps": ("optimizer=schedulefree_adamw", "schedule=constant", "lr=0.0025"),
}


def _bad_values(limit: Limit) -> list[object]:
    """Values just outside the entry's range (and the wrong shape for a list)."""
    bad: list[object] = []
    if limit.low is not None:
        bad.append(limit.low if limit.low_open else limit.low - 1)
    if limit.high is not None:
        bad.append(limit.high if limit.high_open else limit.high + 1)
    if limit.length is not None:
        good = limit.low + 0.5 * ((limit.high or limit.low + 1) - limit.low)
        bad = [[v] * limit.length for v in bad] + [[good] * (limit.length + 1)]
        if limit.ordered:
            bad.append([limit.high, limit.low + 0.1 * (limit.high - limit.low)])
    return bad


def _override(key: str, value: object) -> str:
    key = key.replace("*", "0")
    text = "[" + ",".join(str(v) for v in value) + "]" if isinstance(value, list) else str(value)
    return f"{key}={text}"


# A fraction where a whole number belongs: typed keys (epochs) are refused by Hydra already.
CASES = [(key, value) for key, limit in LIMITS.items() for value in _bad_values(limit)]
CASES.append(("optimizer.warmup_steps", 1.5))


@pytest.mark.parametrize(("key", "value"), CASES, ids=[f"{k}={v}" for k, v in CASES])
def test_every_entry_refuses_values_outside_its_range(compose_cfg, key: str, value: object) -> None:
    from lrlab.app.schema import validate

    cfg = compose_cfg("experiment=smoke", "stages=fine_tune", *NEEDS.get(key, ()), _override(key, value))
    with pytest.raises(ConfigError, match=rf"{key.replace('*', '0')}=.* is not valid: it must be"):
        validate(cfg)


@pytest.mark.parametrize(
    "override",
    [
        "train.grad_clip=-1",  # a negative norm reversed the gradients and the run finished
        "data.augment.hflip=2",
        "data.augment.scale=[1.0,0.1]",
        "model.drop_rate=2",
        "schedule.pct_start=2",
        "schedule.div=0",
        "optimizer.weight_decay=-1",
        "optimizer.betas=[2,0.99]",
    ],
)
def test_the_reported_bad_values_are_refused_naming_key_value_and_range(compose_cfg, override: str) -> None:
    from lrlab.app.schema import validate

    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=rf"^{key}=.* is not valid: it must be .*\.$"):
        validate(compose_cfg("experiment=smoke", override))


def test_good_values_pass_and_messages_read_as_ranges() -> None:
    for key, limit in LIMITS.items():
        if limit.length is None:
            if limit.low is not None and limit.high is not None:
                value = math.ceil(limit.low) if limit.integer else (limit.low + limit.high) / 2
            else:
                value = (limit.low or 0) + 1
            limit.check(value, key)
            for end, is_open in ((limit.low, limit.low_open), (limit.high, limit.high_open)):
                if end is not None and not is_open:
                    limit.check(end, key)  # a closed end is valid itself
    assert (
        LIMITS["train.grad_clip"].describe() == "a number > 0 or null (the largest gradient norm; null: off)"
    )
    assert LIMITS["data.augment.hflip"].describe() == "a number in [0, 1]"
    assert LIMITS["schedule.pct_start"].describe() == "a number in [0, 1)"
    assert LIMITS["data.augment.scale"].describe() == (
        "a list of 2 values, each a number in (0, 1], not decreasing (the crop's area range)"
    )
    with pytest.raises(ConfigError, match=r"data.augment.scale=\[1.0, 0.1\] is not valid"):
        check_limits({"data": {"augment": {"scale": [1.0, 0.1]}}})
    check_limits({"stages": [{"pct_start": None}, {"pct_start": 0.3}]})
    with pytest.raises(ConfigError, match=r"stages.1.pct_start=1.5"):
        check_limits({"stages": [{"pct_start": None}, {"pct_start": 1.5}]})


def test_the_engine_and_the_schedule_read_the_same_table() -> None:
    import torch

    from lrlab.core.engine import Engine
    from lrlab.core.schedules import one_cycle

    with pytest.raises(ConfigError, match=r"train.grad_clip=-1 is not valid"):
        Engine(torch.nn.Linear(2, 2), grad_clip=-1)
    optimizer = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1, momentum=0.9)
    with pytest.raises(ConfigError, match=r"schedule.pct_start=2 is not valid"):
        one_cycle(optimizer, [0.1], 10, pct_start=2)


EXEMPT = {"seed", "split_seed", "image_size", "batch_size", "num_workers", "valid_pct", "test_pct",
          "system_metrics_interval", "number"}  # fmt: skip


def test_every_numeric_key_of_the_schemas_has_an_entry() -> None:
    from lrlab.app.schema import ModelConfig, TrainConfig
    from lrlab.data.registry import AugmentConfig

    missing = []
    for prefix, schema in (("model", ModelConfig), ("train", TrainConfig), ("data.augment", AugmentConfig)):
        for field in dataclasses.fields(schema):
            numeric = any(t in str(field.type) for t in ("int", "float")) and str(field.type) != "bool"
            if numeric and field.name not in EXEMPT and f"{prefix}.{field.name}" not in LIMITS:
                missing.append(f"{prefix}.{field.name}")
    assert not missing, f"no valid range in lrlab.core.limits.LIMITS for: {missing}"


def test_a_bad_value_exits_2_in_one_paragraph_before_any_run(run_cli, tmp_path: Path) -> None:
    proc = run_cli("experiment=smoke", "train.grad_clip=-1", seed_store=False)
    assert proc.returncode == 2
    assert "train.grad_clip=-1.0 is not valid: it must be a number > 0 or null" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "mlflow.db").exists()
