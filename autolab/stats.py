"""Is a candidate really better than its reference? Multi-seed, one-sided, sequential.

A trial's seed fixes its initialisation and its data order, so a candidate and its
reference run on the same seeds are matched pairs: the paired t-test (scipy.stats) on
per-seed differences removes the seed-to-seed variance both share. Where the seeds do
not match, Welch's t-test on the two samples is used. Both are one-sided in the metric's
direction. Seeds are added in rounds until the answer is clear: accept at p < alpha,
reject at the maximum number of seeds, or earlier when the candidate is not even ahead
on average (a futility stop that saves compute).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from benchmarks.protocol import Direction, MetricSpec

FUTILITY_P = 0.3


@dataclass(frozen=True)
class Comparison:
    mean: float | None
    reference_mean: float | None
    delta: float | None
    effect_size: float | None
    p_value: float | None
    decision: str
    reason: str
    test: str = "welch"


def hedges_g(better: np.ndarray, worse: np.ndarray) -> float | None:
    """Standardised mean difference with the small-sample correction."""
    n1, n2 = len(better), len(worse)
    if n1 < 2 or n2 < 2:
        return None
    pooled = ((n1 - 1) * better.var(ddof=1) + (n2 - 1) * worse.var(ddof=1)) / (n1 + n2 - 2)
    if pooled <= 0:
        return None
    d = (better.mean() - worse.mean()) / math.sqrt(pooled)
    return float(d * (1 - 3 / (4 * (n1 + n2) - 9)))


def one_sided_p(values: list[float], reference: list[float], metric: MetricSpec) -> float | None:
    """p-value of 'values are better than reference'; None when the test is undefined."""
    if len(values) < 2 or len(reference) < 2:
        return None
    alternative = "less" if metric.direction is Direction.MINIMIZE else "greater"
    result = stats.ttest_ind(values, reference, equal_var=False, alternative=alternative)
    p = float(result.pvalue)
    return None if math.isnan(p) else p


def paired_p(values: list[float], reference: list[float], metric: MetricSpec) -> float | None:
    """p-value of 'values are better than their matched reference values'."""
    if len(values) < 2 or len(values) != len(reference):
        return None
    alternative = "less" if metric.direction is Direction.MINIMIZE else "greater"
    p = float(stats.ttest_rel(values, reference, alternative=alternative).pvalue)
    return None if math.isnan(p) else p


def paired_effect(diffs: np.ndarray) -> float | None:
    """Mean difference over the spread of differences (Cohen's d_z), signed: >0 is better."""
    sd = diffs.std(ddof=1) if len(diffs) > 1 else 0.0
    return float(diffs.mean() / sd) if sd > 0 else None


def compare_seeds(
    values: dict[int, float],
    reference: dict[int, float],
    metric: MetricSpec,
    alpha: float,
    min_seeds: int,
    max_seeds: int,
) -> Comparison:
    """Paired on the seeds both ran when one side's seeds contain the other's; else Welch."""
    common = sorted(set(values) & set(reference))
    if len(common) >= 2 and len(common) == min(len(values), len(reference)):
        return compare(
            [values[s] for s in common],
            [reference[s] for s in common],
            metric, alpha, min_seeds, max_seeds, paired=True,
        )  # fmt: skip
    return compare(
        list(values.values()), list(reference.values()), metric, alpha, min_seeds, max_seeds
    )


def compare(
    values: list[float],
    reference: list[float],
    metric: MetricSpec,
    alpha: float,
    min_seeds: int,
    max_seeds: int,
    paired: bool = False,
) -> Comparison:
    """Decide accept / reject / more from the seeds measured so far."""
    if not values or not reference:
        return Comparison(None, None, None, None, None, "failed", "no successful trials to compare")
    a, b = np.asarray(values, float), np.asarray(reference, float)
    sign = -1.0 if metric.direction is Direction.MINIMIZE else 1.0
    delta = float(a.mean() - b.mean())
    if paired:
        g, p = paired_effect((a - b) * sign), paired_p(values, reference, metric)
    else:
        g, p = hedges_g(a * sign, b * sign), one_sided_p(values, reference, metric)
    base = dict(
        mean=float(a.mean()),
        reference_mean=float(b.mean()),
        delta=delta,
        effect_size=g,
        test="paired" if paired else "welch",
    )
    ahead = metric.better(float(a.mean()), float(b.mean()))
    if len(values) < min_seeds:
        return Comparison(
            **base, p_value=p, decision="more", reason=f"{len(values)} of {min_seeds} seeds"
        )
    if p is None:
        return Comparison(
            **base,
            p_value=None,
            decision="reject",
            reason="no variance across seeds: test undefined",
        )
    if p < alpha:
        return Comparison(**base, p_value=p, decision="accept", reason=f"p={p:.2g} < alpha={alpha}")
    if len(values) >= max_seeds:
        return Comparison(
            **base,
            p_value=p,
            decision="reject",
            reason=f"p={p:.2g} >= alpha={alpha} at {len(values)} seeds",
        )
    if not ahead or p > FUTILITY_P:
        return Comparison(
            **base, p_value=p, decision="reject", reason=f"futility: p={p:.2g}, delta={delta:+.4g}"
        )
    return Comparison(
        **base, p_value=p, decision="more", reason=f"promising: p={p:.2g}; adding seeds"
    )
