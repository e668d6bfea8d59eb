"""evaluate: a candidate's comparable trials against its reference's, per the design."""

from __future__ import annotations

from prefect import task

from autolab.evaluation import evaluate as compare
from autolab.lab import Lab
from autolab.records import Evaluation
from autolab.stats import Design


def evaluation_of(
    lab: Lab, candidate_id: str, reference_id: str, split: str = "val",
    design: Design | None = None,
) -> Evaluation:
    evaluation = compare(
        candidate_id, lab.comparable(candidate_id, split), reference_id,
        lab.comparable(reference_id, split), lab.bench.metric, design or lab.design, split,
    )  # fmt: skip
    lab.archive.put(evaluation)
    return evaluation


@task(name="evaluate", persist_result=False)
def evaluate(lab: Lab, candidate_id: str, reference_id: str) -> Evaluation:
    return evaluation_of(lab, candidate_id, reference_id)
