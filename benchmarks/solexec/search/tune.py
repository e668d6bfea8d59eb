"""Launch-parameter search for one technique on one problem, with Optuna (TPE).

The caller supplies the evaluation: `evaluate_fn(files, params)` gets the candidate's
files rendered for `params` and returns its time (lower is better) or None when it failed
(did not build, was incorrect, timed out); the campaign plugs in the trusted evaluator.
The technique's defaults are tried first; parameters outside what the hardware can run
(`technique.feasible`) are never evaluated; a parameter set already evaluated is not
evaluated again (the same code measured twice is a second look, not a new candidate).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState

from benchmarks.solexec.problems import Problem
from benchmarks.solexec.search.techniques import Technique

EvaluateFn = Callable[[dict[str, str], dict[str, Any]], float | None]


@dataclass
class TuneResult:
    technique: str
    best_params: dict[str, Any] | None  # None: no trial succeeded
    best_time: float | None
    trials: list[tuple[dict[str, Any], float | None]] = field(default_factory=list)

    @property
    def failures(self) -> int:
        return sum(t is None for _, t in self.trials)


def tune(problem: Problem, technique: Technique, n_trials: int, evaluate_fn: EvaluateFn,
         *, seed: int = 0) -> TuneResult:
    """At most n_trials evaluations of the technique's candidates on the problem; the
    best parameters found and every evaluation made, in order."""
    result = TuneResult(technique.name, None, None)
    if not technique.params:  # nothing to tune: one candidate
        t = evaluate_fn(technique.render(problem), {})
        result.trials.append(({}, t))
        result.best_params, result.best_time = ({}, t) if t is not None else (None, None)
        return result
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(8, n_trials))
    study = optuna.create_study(direction="minimize", sampler=sampler)
    study.enqueue_trial({k: v for k, v in technique.defaults.items() if k in technique.params})
    seen: dict[tuple, float | None] = {}
    asked = 0
    while len(result.trials) < n_trials and asked < 20 * n_trials:
        asked += 1
        trial = study.ask(technique.params)
        params = dict(trial.params)
        key = tuple(sorted(params.items()))
        if not technique.feasible(params):
            study.tell(trial, state=TrialState.PRUNED)
            continue
        if key in seen:  # told again so the sampler learns, never evaluated twice
            _tell(study, trial, seen[key])
            continue
        t = evaluate_fn(technique.render(problem, params), params)
        seen[key] = t
        result.trials.append((params, t))
        _tell(study, trial, t)
        if t is not None and (result.best_time is None or t < result.best_time):
            result.best_params, result.best_time = params, t
    return result


def _tell(study: optuna.Study, trial: optuna.Trial, value: float | None) -> None:
    if value is None:
        study.tell(trial, state=TrialState.FAIL)
    else:
        study.tell(trial, value)


def space_size(params: Mapping[str, Any]) -> int:
    """How many parameter sets a space of categorical distributions holds."""
    size = 1
    for dist in params.values():
        size *= len(getattr(dist, "choices", (None,)))
    return size
