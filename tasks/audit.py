"""audit: level 1, runtime integrity, over the trials the evaluation used."""

from __future__ import annotations

from prefect import task

from autolab.audit import runtime_verdict, static_check
from autolab.lab import Lab
from autolab.records import AuditVerdict, Evaluation


@task(name="audit", persist_result=False)
def audit(lab: Lab, candidate_id: str, evaluation: Evaluation) -> AuditVerdict:
    static = static_check(lab.bench, lab.archive.read_files(candidate_id),
                          lab.params.audit.static_scan)
    verdict = runtime_verdict(candidate_id, lab.comparable(candidate_id), lab.harness_version,
                              lab.budget, lab.required_isolation, earlier=[static])
    lab.archive.put(verdict)
    return verdict
