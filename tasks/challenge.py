"""challenge: an accepted candidate against the champion; audit level 2 if it would win.

It must beat the champion at alpha on the val seeds, then replicate against it in fresh
processes on fresh seeds and on inputs the selection never scored, at a level that
tightens with every champion crowned (autolab.audit.replication_level).
"""

from __future__ import annotations

from prefect import task

from autolab import history
from autolab.audit import merge, replication_check, replication_level
from autolab.lab import Lab
from autolab.records import AuditVerdict, Decision, Evaluation
from autolab.selection import Challenge
from tasks.evaluate import evaluation_of
from tasks.run import run_matched


@task(name="challenge", persist_result=False)
def challenge_champion(
    lab: Lab, candidate_id: str, evaluation: Evaluation, verdict: AuditVerdict
) -> Challenge | None:
    if evaluation.decision != "accept" or not verdict.passed:
        return None
    alpha = lab.params.evaluation.alpha
    champion = lab.champion()
    vs = evaluation
    if champion != evaluation.reference_id:
        n = len(evaluation.values)
        vs = evaluation_of(lab, candidate_id, champion, design=lab.single_look(alpha, n))
    if vs.p_value is None or vs.p_value >= alpha:
        return Challenge(vs_champion=vs)
    a = lab.params.audit
    seeds = lab.replication_seeds(a.replication_seeds, block=lab.replication_block())
    run_matched(lab, None, candidate_id, champion, seeds, split="audit")
    crowned = len(history.champions(lab.archive.all(Decision)))
    level = replication_level(a.replication_alpha, crowned)
    replication = evaluation_of(lab, candidate_id, champion, split="audit",
                                design=lab.single_look(level, len(seeds)))
    full = merge(verdict, [replication_check(replication, level)], against=champion)
    lab.archive.put(full)
    return Challenge(vs_champion=vs, replication=replication, verdict=full)
