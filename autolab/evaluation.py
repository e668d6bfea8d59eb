"""Comparing a candidate's trials with a reference's, and the decision that follows.

The statistics are in autolab.stats; this turns trials into the values it compares and
its answer into an Evaluation record. A metric with constraints is judged on them too:
accepted only if the gain is significant and every constraint holds (stats.constrain).
"""

from __future__ import annotations

import dataclasses

from autolab.records import ConstraintResult, Evaluation, Split, Trial, content_key
from autolab.stats import Design, check_constraint, compare_seeds, shortfall
from benchmarks.protocol import MetricSpec


def by_seed(trials: list[Trial], metric: str) -> dict[int, float]:
    return {t.seed: t.metrics[metric] for t in trials if t.status == "ok" and metric in t.metrics}


def first_failure(trials: list[Trial]) -> Trial | None:
    return next((t for t in trials if t.status != "ok"), None)


def evaluate(
    candidate_id: str,
    trials: list[Trial],
    reference_id: str,
    reference: list[Trial],
    metric: MetricSpec,
    design: Design,
    split: Split = "val",
) -> Evaluation:
    """Paired on seeds where the reference ran the same seeds; Welch's test otherwise.
    A failed trial of the candidate fails the evaluation."""
    mine, theirs = by_seed(trials, metric.name), by_seed(reference, metric.name)
    stats: dict = {}
    if (bad := first_failure(trials)) is not None:
        result = dict(decision="failed", reason=f"seed {bad.seed}: {bad.failure}: {bad.reason}")
    else:
        constrained = {k.metric: by_seed(trials, k.metric) for k in metric.constraints}
        c = compare_seeds(mine, theirs, metric, design, constrained)
        if c.test == "paired":  # record the matched pairs the test compared, seed by seed
            mine = {s: v for s, v in mine.items() if s in theirs}
            theirs = {s: v for s, v in theirs.items() if s in mine}
        result = dict(decision=c.decision, reason=f"{c.test}: {c.reason}")
        stats = dict(mean=c.mean, reference_mean=c.reference_mean, delta=c.delta,
                     effect_size=c.effect_size, p_value=c.p_value, test=c.test, level=c.level,
                     constraints=list(c.constraints))
    ids = sorted(t.id for t in trials + reference)
    return Evaluation(
        # the design is part of the key: the same trials judged by another plan (a single
        # look at the end, a confirmation) are another evaluation, never an overwrite
        id=content_key("evaluation", candidate_id, reference_id, split, ids,
                       dataclasses.asdict(design)),
        candidate_id=candidate_id,
        reference_id=reference_id,
        metric=metric.name,
        values=[mine[s] for s in sorted(mine)],
        reference_values=[theirs[s] for s in sorted(theirs)],
        alpha=design.alpha,
        split=split,
        **stats,
        **result,
    )


def constraint_results(trials: list[Trial], metric: MetricSpec, alpha: float
                       ) -> list[ConstraintResult]:
    """A candidate's own successful trials tested against the metric's constraints in one
    look at alpha (a constraint's own alpha where it sets one): how the seed solution is
    checked before it serves as the first baseline."""
    ok = sorted((t for t in trials if t.status == "ok"), key=lambda t: t.seed)
    return [check_constraint([t.metrics.get(k.metric) for t in ok], k,
                             alpha if k.alpha is None else k.alpha)
            for k in metric.constraints]


def constraint_warning(results: list[ConstraintResult]) -> str | None:
    """A loud line when the seed misses its constraints; None when it meets them."""
    failing = [r for r in results if not r.holds]
    if not failing:
        return None
    return ("WARNING: the seed does not meet its constraint(s): "
            + "; ".join(shortfall(r) for r in failing)
            + ". Its results are no valid baseline: a candidate is still judged against it, "
            "but the seed itself would not count.")
