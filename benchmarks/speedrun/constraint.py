"""The speedrun's decision rule: a time to minimise under a constraint on the loss.

A candidate is a gain over its parent only when both claims hold, each one-sided:

1. it reaches the target: the mean final validation loss over its seeds is below the
   target (one-sample t-test, H0: mean >= target);
2. it is faster: its times to the target are below its parent's (paired t-test on the
   seeds both ran, Welch's otherwise; H0: its mean time >= the parent's).

Accepting only when both tests reject at level alpha is an intersection-union test: the
chance of accepting when either claim is false is at most alpha, with no share of alpha
given to each. In a sequential evaluation alpha is the look's nominal level.

A run that missed the target has no time to the target. A candidate with such a run is
never faster, however fast its other runs were; a parent's miss counts as the time the
run reported for it (the budget plus the time to finish, a lower bound of its true time),
which can only make the parent look faster. Pure functions: they belong with the
evaluation layer's statistics.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Run:
    """One seed's result: time to the target (or the miss time), final loss, reached."""

    time_s: float
    loss: float
    reached: bool


@dataclass(frozen=True)
class Verdict:
    accept: bool
    loss_p: float
    time_p: float
    reason: str


def run_of(metrics: Mapping[str, float]) -> Run:
    """A Run from a trial's metrics (train_s, val_loss, reached)."""
    return Run(time_s=float(metrics["train_s"]), loss=float(metrics["val_loss"]),
               reached=bool(metrics["reached"] >= 0.5))


def loss_p_value(losses: list[float], target: float) -> float:
    """p-value of 'the mean loss is below the target' (one-sample, one-sided t-test)."""
    x = np.asarray(losses, dtype=float)
    if len(x) < 2:
        return 1.0
    if np.ptp(x) == 0:  # no spread: every run is on the same side of the target
        return 0.0 if x[0] < target else 1.0
    p = float(stats.ttest_1samp(x, target, alternative="less").pvalue)
    return 1.0 if math.isnan(p) else p


def time_p_value(times: list[float], reference: list[float], paired: bool) -> float:
    """p-value of 'these times are below the reference's' (one-sided t-test; paired on
    matched seeds)."""
    a, b = np.asarray(times, dtype=float), np.asarray(reference, dtype=float)
    if len(a) < 2 or len(b) < 2 or (paired and len(a) != len(b)):
        return 1.0
    if paired:
        result = stats.ttest_rel(a, b, alternative="less")
    else:
        result = stats.ttest_ind(a, b, equal_var=False, alternative="less")
    p = float(result.pvalue)
    return 1.0 if math.isnan(p) else p


def decide(candidate: list[Run], parent: list[Run], target: float, alpha: float,
           paired: bool = True) -> Verdict:
    """Both claims at level alpha; `paired` when candidate[i] and parent[i] share a seed."""
    loss_p = loss_p_value([r.loss for r in candidate], target)
    misses = sum(not r.reached for r in candidate)
    if misses:
        time_p = 1.0
    else:
        time_p = time_p_value([r.time_s for r in candidate], [r.time_s for r in parent],
                              paired)
    accept = loss_p < alpha and time_p < alpha
    mean_loss = float(np.mean([r.loss for r in candidate])) if candidate else math.nan
    if misses:
        reason = f"{misses} of {len(candidate)} runs missed the target {target:g}"
    elif loss_p >= alpha:
        reason = (f"mean loss {mean_loss:.4f} not below the target {target:g} at "
                  f"p={loss_p:.2g} >= {alpha:g}")
    elif time_p >= alpha:
        reason = f"not faster than the parent at p={time_p:.2g} >= {alpha:g}"
    else:
        reason = (f"below the target (p={loss_p:.2g}) and faster than the parent "
                  f"(p={time_p:.2g}), both < {alpha:g}")
    return Verdict(accept=accept, loss_p=loss_p, time_p=time_p, reason=reason)
