"""build: cheap gates before any trial: syntax and a static scan for escape hatches."""

from __future__ import annotations

from prefect import task

from autolab.lab import Lab
from autolab.records import Candidate
from autolab.workspace import static_findings
from tasks import Halt


@task(name="build")
def build(lab: Lab, candidate: Candidate) -> Halt | None:
    findings: list[str] = []
    for path, source in lab.archive.read_files(candidate.id).items():
        if path.endswith(".py"):
            findings += static_findings(path, source)
    if findings:
        return Halt("failed", "build: " + "; ".join(findings[:5]))
    return None
