"""Is a candidate really better than its reference? Multi-seed, one-sided, sequential.

A trial's seed fixes its initialisation and its data order, so a candidate and its
reference run on the same seeds are matched pairs: the paired t-test on per-seed
differences removes the seed-to-seed variance both share. Where the seeds do not match,
Welch's t-test is used. Both are one-sided in the metric's direction.

Seeds are added in looks fixed in advance by the design (min_seeds, then `step` more at a
time up to max_seeds). Looking several times at a test at level alpha would accept an
equal candidate more often than alpha, so each look spends a share of alpha from the
spending function alpha(t) = alpha * t**3 of the information fraction t = n / max_seeds
(O'Brien-Fleming-like: little early, most at the last look, so power stays close to a
fixed design's). The look at n seeds tests at alpha(n/N) - alpha(n_prev/N). The shares
add up to alpha, so by the union bound the chance that some look accepts an equal
candidate is <= alpha, however many looks there are and however they are placed.
A futility stop (the candidate is not ahead, or clearly unpromising) ends an unclear
evaluation early; stopping for futility never raises the false-accept rate. Optional
screening rejects after one seed a candidate that is not ahead of its reference on it by
at least min_gain.

A metric may carry constraints on other metrics of the same trials (a loss that must stay
below a target while the time is minimised): each is a one-sided one-sample t-test of the
candidate's own values against its target, and a gain counts only when they all hold too
(`constrain`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np
from scipy import stats

from autolab.records import ConstraintResult
from benchmarks.protocol import Constraint, Direction, MetricSpec

FUTILITY_P = 0.3
SPENDING_POWER = 3


@dataclass(frozen=True)
class Design:
    """A sequential evaluation plan: where the looks are and what each may spend."""

    alpha: float
    min_seeds: int
    max_seeds: int
    step: int = 1
    screen: bool = False
    min_gain: float = 0.0  # a gain must exceed this (in the metric's units) to be accepted

    def looks(self) -> list[int]:
        """Seed counts at which the test is run (screening's one seed is not a look)."""
        out = [self.min_seeds]
        while out[-1] < self.max_seeds:
            out.append(min(out[-1] + max(1, self.step), self.max_seeds))
        return out

    def nominal_alpha(self, n: int) -> float:
        """The level of the look at n seeds (the latest look at or below n)."""
        looks = self.looks()
        done = [k for k in looks if k <= n]
        if not done:
            return 0.0
        k = done[-1]
        prev = looks[looks.index(k) - 1] if looks.index(k) > 0 else 0
        return self.spend(k) - self.spend(prev)

    def spend(self, n: int) -> float:
        """Alpha spent once n seeds have been looked at."""
        return self.alpha * (min(n, self.max_seeds) / self.max_seeds) ** SPENDING_POWER

    def spent(self) -> float:
        """Total alpha over all looks: alpha itself, by construction."""
        return sum(self.nominal_alpha(n) for n in self.looks())

    def constraint_level(self, n: int, alpha: float | None = None) -> float:
        """The level of a constraint's test at the look at n seeds: its own alpha (the
        design's when None) spent over the looks in the same shares as the gain's, so
        that however many looks there are, it too is wrongly passed with probability at
        most its alpha."""
        return self.nominal_alpha(n) * (self.alpha if alpha is None else alpha) / self.alpha


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
    level: float | None = None  # the nominal alpha of this look
    constraints: tuple[ConstraintResult, ...] = ()


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


def _alternative(metric: MetricSpec) -> str:
    return "less" if metric.direction is Direction.MINIMIZE else "greater"


def one_sided_p(values: list[float], reference: list[float], metric: MetricSpec) -> float | None:
    """Welch: p-value of 'values are better than reference'; None when undefined."""
    if len(values) < 2 or len(reference) < 2:
        return None
    result = stats.ttest_ind(values, reference, equal_var=False, alternative=_alternative(metric))
    p = float(result.pvalue)
    return None if math.isnan(p) else p


def paired_p(values: list[float], reference: list[float], metric: MetricSpec) -> float | None:
    """p-value of 'values are better than their matched reference values'."""
    if len(values) < 2 or len(values) != len(reference):
        return None
    p = float(stats.ttest_rel(values, reference, alternative=_alternative(metric)).pvalue)
    return None if math.isnan(p) else p


def paired_effect(diffs: np.ndarray) -> float | None:
    """Mean difference over the spread of differences (Cohen's d_z), signed: >0 is better."""
    sd = diffs.std(ddof=1) if len(diffs) > 1 else 0.0
    return float(diffs.mean() / sd) if sd > 0 else None


def compare_seeds(
    values: Mapping[int, float], reference: Mapping[int, float], metric: MetricSpec,
    design: Design, constrained: Mapping[str, Mapping[int, float]] | None = None,
) -> Comparison:
    """Paired on the seeds both ran when one side's seeds contain the other's; else Welch.

    The metric's constraints are tested on the candidate's values of their metrics
    (`constrained`: metric -> seed -> value) on the seeds the comparison used."""
    common = sorted(set(values) & set(reference))
    if common and len(common) == min(len(values), len(reference)):
        seeds = common
        c = compare([values[s] for s in common], [reference[s] for s in common], metric,
                    design, paired=True)
    else:
        seeds = sorted(values)
        c = compare([values[s] for s in seeds], list(reference.values()), metric, design)
    if not metric.constraints:
        return c
    have = constrained or {}
    checks = [
        check_constraint([have.get(k.metric, {}).get(s) for s in seeds], k,
                         design.constraint_level(len(seeds), k.alpha))
        for k in metric.constraints
    ]  # fmt: skip
    return constrain(c, checks, metric, design, len(seeds))


def compare(
    values: list[float],
    reference: list[float],
    metric: MetricSpec,
    design: Design,
    paired: bool = False,
) -> Comparison:
    """Decide accept / reject / more from the seeds measured so far, per the design."""
    if not values or not reference:
        return Comparison(None, None, None, None, None, "failed", "no successful trials to compare")
    a, b = np.asarray(values, float), np.asarray(reference, float)
    sign = -1.0 if metric.direction is Direction.MINIMIZE else 1.0
    delta = float(a.mean() - b.mean())
    n = len(values)
    # H0: the gain is at most min_gain. Testing the candidate's values moved min_gain the
    # wrong way against the reference tests exactly that.
    moved = list(a - sign * design.min_gain)
    if paired:
        g, p = paired_effect((a - b) * sign), paired_p(moved, reference, metric)
    else:
        g, p = hedges_g(a * sign, b * sign), one_sided_p(moved, reference, metric)
    level = design.nominal_alpha(n)
    base = dict(mean=float(a.mean()), reference_mean=float(b.mean()), delta=delta,
                effect_size=g, test="paired" if paired else "welch", p_value=p, level=level)
    ahead = metric.better(float(np.mean(moved)), float(b.mean()))
    if n < design.min_seeds:
        if design.screen and n == 1 and paired and not ahead:
            return Comparison(**base, decision="reject",
                              reason=f"screened out: not ahead of its reference by min_gain "
                              f"{design.min_gain:g} on the first seed ({delta:+.4g})")
        return Comparison(**base, decision="more", reason=f"{n} of {design.min_seeds} seeds")
    if p is None:
        return Comparison(**base, decision="reject", reason="no variance across seeds: "
                          "test undefined")
    if p < level:
        return Comparison(**base, decision="accept",
                          reason=f"p={p:.2g} < {level:.3g} (look at {n} seeds, alpha "
                          f"{design.alpha} spent over {len(design.looks())} looks)")
    if n >= design.max_seeds:
        return Comparison(**base, decision="reject",
                          reason=f"p={p:.2g} >= {level:.3g} at {n} seeds")
    if not ahead or p > FUTILITY_P:
        return Comparison(**base, decision="reject",
                          reason=f"futility: p={p:.2g}, delta={delta:+.4g}")
    return Comparison(**base, decision="more", reason=f"promising: p={p:.2g}; adding seeds")


# -- constraints ----------------------------------------------------------------------------


def constraint_p(values: list[float], constraint: Constraint) -> float | None:
    """p-value of 'the mean is within the bound': a one-sided one-sample t-test against the
    target (H0: mean >= target for '<=', mean <= target for '>='). None on fewer than two
    values. Values without any spread leave the t statistic undefined but the question
    answered: p = 0 when they are within the bound, 1 when they are not (so a 0/1 metric
    such as `reached >= 1` holds exactly when every run has it)."""
    x = np.asarray(values, float)
    if len(x) < 2:
        return None
    if np.ptp(x) == 0:
        return 0.0 if constraint.holds_for(float(x[0])) else 1.0
    alternative = "less" if constraint.op == "<=" else "greater"
    p = float(stats.ttest_1samp(x, constraint.target, alternative=alternative).pvalue)
    return None if math.isnan(p) else p


def check_constraint(
    values: list[float | None], constraint: Constraint, level: float
) -> ConstraintResult:
    """The constraint tested at `level` on one value per seed (None: the trial lacked it;
    a constraint with a missing value cannot be shown to hold)."""
    got = [float(v) for v in values if v is not None]
    missing = len(values) - len(got)
    p = None if missing else constraint_p(got, constraint)
    return ConstraintResult(
        metric=constraint.metric, op=constraint.op, target=constraint.target, values=got,
        missing=missing, mean=float(np.mean(got)) if got else None, p_value=p, level=level,
        holds=p is not None and p < level,
    )  # fmt: skip


def shortfall(check: ConstraintResult) -> str:
    """Why a constraint does not hold (yet): 'val_loss <= 3.28 only at p=0.04 (...)'."""
    if check.missing:
        return f"{check.metric} missing from {check.missing} trial(s)"
    if check.p_value is None:
        return f"{check.bound} untested on {len(check.values)} seed(s)"
    return (f"{check.bound} only at p={check.p_value:.2g} (needs < {check.level:.3g}; "
            f"mean {check.mean:.4g})")


def constrain(
    c: Comparison, checks: list[ConstraintResult], metric: MetricSpec, design: Design, n: int
) -> Comparison:
    """The gain's decision `c` joined with the constraints' tests at the same look n.

    Accepted only when the gain's test and every constraint's test reject their null
    hypotheses: an intersection-union test. Each part is tested at level alpha (a
    constraint at its own alpha where it sets one); accepting when any one claim is false
    needs that claim's own test to reject wrongly, which happens with probability at most
    its level, so the whole decision is at level alpha (the largest part's, where a
    constraint sets its own) with no share of alpha divided among the parts. Each
    constraint spends its alpha over the looks as the gain does.

    The constraints only add reasons to reject or to wait, never to accept, so futility
    and screening on them cannot raise the false-accept rate: an evaluation stops when a
    constraint is unpromising (p > FUTILITY_P, or its mean outside the bound), and
    screening rejects after one seed a candidate whose value is outside a bound there.
    """
    out = replace(c, constraints=tuple(checks))
    if c.decision in ("failed", "reject"):
        tested = [k.summary() for k in checks if k.p_value is not None]
        return replace(out, reason="; ".join([c.reason, *tested]))
    if n < design.min_seeds:  # before the first look: screening may reject, nothing more
        if design.screen and n == 1:
            outside = [f"{k} ({v:.4g})" for k, check in zip(metric.constraints, checks,
                                                           strict=True)
                       for v in check.values if not k.holds_for(v)]  # fmt: skip
            if outside:
                return replace(out, decision="reject", reason="screened out: its first seed "
                               f"is outside {', '.join(outside)}")
        return out
    failing = [k for k in checks if not k.holds]
    if not failing:
        if c.decision == "accept":
            return replace(out, reason="; ".join([c.reason, *(k.summary() for k in checks)]))
        return out
    gain = "undefined" if c.p_value is None else f"{c.p_value:.2g}"
    short = " and ".join(shortfall(k) for k in failing)
    if c.decision == "accept":
        what = f"{metric.name} gain p={gain} < {c.level:.3g} but {short}"
    else:
        what = f"{metric.name} gain promising (p={gain}) but {short}"
    if n >= design.max_seeds:
        return replace(out, decision="reject", reason=f"{what} at {n} seeds")
    if any(k.p_value is None or k.p_value > FUTILITY_P for k in failing):
        return replace(out, decision="reject", reason=f"futility: {what}")
    return replace(out, decision="more", reason=f"{what} so far; adding seeds")


def next_seed_count(design: Design, n: int) -> int:
    """How many seeds the evaluation should have after the next round."""
    if n < 1 and design.screen:
        return 1
    return next((k for k in design.looks() if k > n), design.max_seeds)


# -- the design checked by simulation -------------------------------------------------------


def simulate(
    design: Design,
    effect: float = 0.0,
    sd_shared: float = 1.0,
    sd_trial: float = 1.0,
    draws: int = 100_000,
    seed: int = 0,
) -> dict[str, float]:
    """Run the sequential paired design on `draws` synthetic candidates (metric minimised):
    value = shared seed noise + own trial noise, minus `effect` for the candidate.

    Returns the acceptance rate, its 95% Wilson interval and the mean number of candidate
    seeds used. With effect 0 the acceptance rate is the false-accept rate. The same
    `compare` decides each draw's looks, vectorised over draws.
    """
    rng = np.random.default_rng(seed)
    n_max = design.max_seeds
    shared = rng.standard_normal((draws, n_max)) * sd_shared
    cand = shared + rng.standard_normal((draws, n_max)) * sd_trial - effect
    ref = shared + rng.standard_normal((draws, n_max)) * sd_trial
    diffs = cand - ref + design.min_gain  # negative is better; H0: gain <= min_gain
    accepted = np.zeros(draws, bool)
    open_ = np.ones(draws, bool)
    used = np.zeros(draws)
    if design.screen:
        used[:] = 1
        open_ &= diffs[:, 0] < 0
    for k in design.looks():
        d = diffs[open_, :k]
        mean, sd = d.mean(axis=1), d.std(axis=1, ddof=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = mean / (sd / math.sqrt(k))
        p = stats.t.cdf(t, df=k - 1)  # one-sided: candidate lower
        p = np.where(np.isfinite(p), p, np.nan)
        idx = np.flatnonzero(open_)
        used[idx] = k
        acc = p < design.nominal_alpha(k)
        accepted[idx[acc]] = True
        stop = acc | np.isnan(p) | (k >= n_max) | (mean >= 0) | (p > FUTILITY_P)
        open_[idx[stop]] = False
        if not open_.any():
            break
    rate = float(accepted.mean())
    lo, hi = wilson(int(accepted.sum()), draws)
    return {"accept_rate": rate, "ci_low": lo, "ci_high": hi, "mean_seeds": float(used.mean())}


def wilson(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a proportion."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def smallest_detectable_gain(sd_diff: float, design: Design, power: float = 0.8) -> float:
    """The gain the design detects with `power` at its last look (normal approximation of
    the paired t-test with the last look's level), above the design's min_gain: the
    resolution of the benchmark."""
    n = design.max_seeds
    level = design.nominal_alpha(n)
    return design.min_gain + float((stats.t.ppf(1 - level, n - 1) + stats.t.ppf(power, n - 1))
                                   * sd_diff / math.sqrt(n))
