"""confirm: audit level 3, the champion against the seed on the held-out test split.

Test-split trials run only here, after selection, on seeds selection never used. A
champion is confirmed once: a later run that ends with the same champion reuses its
result, and each confirmation counts as one look at the test split. The k-th look is
judged at alpha / k, the way the audit's replication bar tightens with each champion: a
campaign resumed until its test half agrees gets no free draws.
"""

from __future__ import annotations

import json
import shutil

from prefect import task

from autolab.archive import atomic_write
from autolab.lab import Lab
from autolab.records import CampaignRecord, TestResult, content_key, now
from tasks.evaluate import evaluation_of
from tasks.run import run_matched


@task(name="confirm-on-test", persist_result=False)
def confirm_on_test(lab: Lab) -> TestResult:
    seed, champ = lab.campaign.seed_candidate, lab.champion()
    rid = content_key("test", champ, seed, lab.setup.key())
    if (done := lab.archive.get(TestResult, rid)) is not None:
        return done
    n = lab.params.evaluation.test_seeds
    level = test_level(lab.params.evaluation.alpha, test_looks(lab))
    seeds = lab.test_seeds(n)
    run_matched(lab, None, champ, seed, seeds, split="test")
    evaluation = evaluation_of(lab, champ, seed, split="test",
                               design=lab.single_look(level, n))
    result = TestResult(id=rid, champion_id=champ, seed_id=seed, seeds=seeds,
                        evaluation=evaluation)
    lab.archive.put(result)
    return result


@task(name="finish", persist_result=False)
def finish(lab: Lab, test: TestResult | None, stop_reason: str) -> CampaignRecord:
    seed, champion = lab.campaign.seed_candidate, lab.champion()
    n = max(2, len(lab.comparable(champion)))  # one look, on the seeds the champion ran
    design = lab.single_look(lab.params.evaluation.alpha, n)
    val = evaluation_of(lab, champion, seed, design=design)
    record = lab.campaign.model_copy(update={
        "status": "finished", "stop_reason": stop_reason, "val": val,
        # a run that does not confirm keeps the last confirmation (it names its champion)
        "test": test if test is not None else lab.campaign.test, "finished_at": now(),
    })  # fmt: skip
    lab.archive.put_campaign(record)
    export_champion(lab, record)
    try:
        lab.tracker.finish_campaign(record, lab.bench.metric, test_looks=test_looks(lab))
    except Exception as err:  # noqa: BLE001 - MLflow is a mirror; the archive is the truth
        print(f"warning: MLflow could not record the campaign's end: {err}")
    return record


def test_looks(lab: Lab) -> int:
    return sum(t.is_look for t in lab.archive.all(TestResult))


def test_level(alpha: float, looks_before: int) -> float:
    """The level of the next look at the test split, after `looks_before` of them."""
    return alpha / (looks_before + 1)


def export_champion(lab: Lab, record: CampaignRecord) -> None:
    """The champion's files and numbers, a DVC-tracked output of the campaign stage."""
    out = lab.params.paths.prepared_dir.resolve() / lab.bench.name / "champion"
    if out.exists():
        shutil.rmtree(out)  # an earlier champion's files must not linger beside the new one
    champ = record.test.champion_id if record.test else lab.champion()
    for path, text in lab.archive.read_files(champ).items():
        atomic_write(out / path, text.encode())
    metric = lab.bench.metric.name
    val, test = record.val, record.test.evaluation if record.test else None
    summary = {
        "campaign": record.name,
        "champion": champ,
        "isolation": record.isolation,
        "unisolated": record.unisolated,
        f"val_{metric}": val.mean if val else None,
        f"val_{metric}_seed": val.reference_mean if val else None,
        "val_p_value": val.p_value if val else None,
        f"test_{metric}": test.mean if test else None,
        f"test_{metric}_seed": test.reference_mean if test else None,
        "test_p_value": test.p_value if test else None,
        "test_seeds": record.test.seeds if record.test else [],
        "test_split_looks": test_looks(lab),
    }
    for split, e in (("val", val), ("test", test)):
        if e is not None and e.constraints:
            summary[f"{split}_constraint_p_values"] = {c.bound: c.p_value for c in e.constraints}
    atomic_write(out.parent / "champion.json", json.dumps(summary, indent=1).encode())
