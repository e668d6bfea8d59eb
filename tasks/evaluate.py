"""evaluate: compare a candidate's seeds with a reference at the configured alpha."""

from __future__ import annotations

from prefect import task

from autolab.lab import Lab
from autolab.records import Evaluation, Trial, content_key
from autolab.stats import compare_seeds


def by_seed(trials: list[Trial], metric: str) -> dict[int, float]:
    return {t.seed: t.metrics[metric] for t in trials if t.status == "ok" and metric in t.metrics}


def reference_trials(lab: Lab, candidate_id: str, split: str = "val") -> list[Trial]:
    return [
        t for t in lab.archive.all(Trial) if t.candidate_id == candidate_id and t.split == split
    ]


def first_failure(trials: list[Trial]) -> Trial | None:
    return next((t for t in trials if t.status != "ok"), None)


def compare_trials(
    lab: Lab, candidate_id: str, trials: list[Trial], reference_id: str, ref: list[Trial]
) -> Evaluation:
    """Paired on seeds where the reference ran the same seeds; Welch's test otherwise."""
    ev, metric = lab.params.evaluation, lab.bench.metric
    mine, theirs = by_seed(trials, metric.name), by_seed(ref, metric.name)
    stats: dict = {}
    if (bad := first_failure(trials)) is not None:
        result = dict(decision="failed", reason=f"seed {bad.seed}: {bad.failure}: {bad.reason}")
    else:
        c = compare_seeds(mine, theirs, metric, ev.alpha, ev.min_seeds, ev.max_seeds)
        result = dict(decision=c.decision, reason=f"{c.test}: {c.reason}")
        stats = dict(
            mean=c.mean,
            reference_mean=c.reference_mean,
            delta=c.delta,
            effect_size=c.effect_size,
            p_value=c.p_value,
            test=c.test,
        )
    return Evaluation(
        id=content_key(
            "evaluation", candidate_id, reference_id, sorted(t.id for t in trials + ref)
        ),
        candidate_id=candidate_id,
        reference_id=reference_id,
        metric=metric.name,
        values=[mine[s] for s in sorted(mine)],
        reference_values=[theirs[s] for s in sorted(theirs)],
        alpha=ev.alpha,
        **stats,
        **result,
    )


@task(name="evaluate")
def evaluate(lab: Lab, candidate_id: str, trials: list[Trial], reference_id: str) -> Evaluation:
    evaluation = compare_trials(
        lab, candidate_id, trials, reference_id, reference_trials(lab, reference_id)
    )
    lab.archive.put(evaluation)
    return evaluation
