"""Baseline trials run before the search: one per range-test rule (`enqueue: [lr_finder]`) and any
mappings of params. A finder trial runs what a user of the range test gets (the range test at
each stage whose LR is searched or `find`, then training with the rule's suggestion); the LRs its
range tests chose become the trial's params, so the sampler learns from them too."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from lrlab.sweep.search_space import SearchSpace
from lrlab.sweep.settings import FINDER_ENTRY
from lrlab.sweep.study import SEARCH_SOURCE, SOURCE

log = logging.getLogger("lrlab.sweep")

FINDER_SOURCE = "lr_finder:"
ENQUEUED_SOURCE = "enqueued"
_QUEUED_OR_DONE = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)


def finder_rule(source: str) -> str | None:
    """The rule of a finder trial's source (`lr_finder:<rule>`); None for other trials."""
    return source[len(FINDER_SOURCE) :] if source.startswith(FINDER_SOURCE) else None


def baseline_sources(entries: Sequence[Any], rules: Sequence[str]) -> list[str]:
    """The source of every baseline `entries` ask for, in running order: the default rule's
    first, then the other rules as given, then mappings (`enqueued`, one each)."""
    from lrlab.finder.config import DEFAULT_RULE

    out = []
    for entry in entries:
        if entry == FINDER_ENTRY:
            ordered = sorted(rules, key=lambda rule: rule != DEFAULT_RULE)
            out += [f"{FINDER_SOURCE}{rule}" for rule in ordered]
        else:
            out.append(ENQUEUED_SOURCE)
    return out


def enqueue_baselines(
    study: optuna.Study, entries: Sequence[Any], rules: Sequence[str], n_trials: int | None = None
) -> list[str]:
    """Enqueue `entries` once per study (a re-run does not add them again; a failed one is re-run):
    `lr_finder` gives one trial per rule in `rules` (the default rule's first), a mapping one trial
    with those params. Baselines take at most half of `n_trials`, so the search keeps the other
    half; those left out are named in a warning. Returns the sources enqueued now. It reads, then
    writes: concurrent workers call it under the study's lock (`study_lock`), as `SweepSession.open` does."""
    present = [t.user_attrs.get(SOURCE) for t in study.get_trials(deepcopy=False, states=_QUEUED_OR_DONE)]
    budget = len(baseline_sources(entries, rules)) if n_trials is None else n_trials // 2
    taken = sum(1 for source in present if source and source != SEARCH_SOURCE)
    mappings = iter(dict(e) for e in entries if e != FINDER_ENTRY)
    added, skipped, mapped = [], [], present.count(ENQUEUED_SOURCE)
    for source in baseline_sources(entries, rules):
        if source == ENQUEUED_SOURCE and mapped > 0:
            mapped, _ = mapped - 1, next(mappings)  # this mapping is in the study already
            continue
        if source != ENQUEUED_SOURCE and source in present:
            continue
        if taken >= budget:
            skipped.append(source)
            continue
        if source == ENQUEUED_SOURCE:
            study.enqueue_trial(next(mappings), user_attrs={SOURCE: ENQUEUED_SOURCE}, skip_if_exists=True)
        else:
            study.enqueue_trial({}, user_attrs={SOURCE: source})
            log.info(f"enqueued the range test's {finder_rule(source)} suggestion as a baseline trial")
        added.append(source)
        taken += 1
    if skipped:
        names = ", ".join(finder_rule(s) or s for s in skipped)
        log.warning(
            f"n_trials={n_trials} keeps at least half of the trials for the search, so {budget} "
            f"baseline(s) run and these do not: {names}. Raise n_trials to "
            f"{2 * len(baseline_sources(entries, rules))} to run every baseline, or name the rules "
            "wanted in hydra.sweeper.finder_rules."
        )
    return added


@dataclass(frozen=True)
class FinderBaselines:
    """How finder trials run and are recorded: the stages whose LR the range test decides, and the
    config's value of each searched key (a finder trial's param where it sets no value itself)."""

    stages: tuple[int, ...] = ()
    defaults: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def for_space(
        cls, space: SearchSpace, stages: Sequence[Mapping[str, Any]], defaults: Mapping[str, Any]
    ) -> FinderBaselines:
        """The stages whose lr is searched, or `find` in the config, train with the range test."""
        searched = {int(key.split(".")[1]) for key in space.lr_keys()}
        found = {
            i for i, s in enumerate(stages) if str(s.get("lr")) == "find" and int(s.get("epochs", 1)) > 0
        }
        return cls(tuple(sorted(searched | found)), dict(defaults))

    def overrides(self, rule: str) -> list[str]:
        """The job overrides of rule `rule`'s trial."""
        out = []
        for index in self.stages:
            out += [f"stages.{index}.lr=find", f"++stages.{index}.lr_rule={rule}"]
        return out

    def record_params(
        self,
        storage: optuna.storages.BaseStorage,
        trial_id: int,
        summary: Mapping[str, Any],
        space: SearchSpace,
    ) -> None:
        """Set the finder trial's params: each stage's LR the job reports, else the config's value."""
        used = {f"stages.{s['index']}.lr": s["lr"] for s in summary.get("stages") or []}
        for key, dist in space.params.items():
            value = used.get(key, self.defaults.get(key))
            widened = widen(dist, value)
            if widened is not None:
                storage.set_trial_param(trial_id, key, widened.to_internal_repr(value), widened)


def widen(dist: BaseDistribution, value: Any) -> BaseDistribution | None:
    """`dist` widened to contain `value` (a finder's LR may fall outside the searched interval);
    None when `value` cannot belong to it."""
    if isinstance(dist, FloatDistribution) and isinstance(value, int | float) and not isinstance(value, bool):
        if dist.log and value <= 0:
            return None
        if dist.step is not None:
            return dist if dist.low <= value <= dist.high else None
        return FloatDistribution(min(dist.low, float(value)), max(dist.high, float(value)), log=dist.log)
    if isinstance(dist, IntDistribution) and isinstance(value, int) and not isinstance(value, bool):
        return dist if dist.low <= value <= dist.high else None
    if isinstance(dist, CategoricalDistribution) and value in dist.choices:
        return dist
    return None
