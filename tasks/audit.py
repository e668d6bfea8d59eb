"""audit (level 1): the harness is intact, the metric is the harness's, the budget held."""

from __future__ import annotations

from prefect import task

from autolab.lab import Lab
from autolab.records import AuditVerdict, Trial, content_key
from benchmarks.protocol import CheckResult

LEVEL = 1


def harness_intact(lab: Lab, trials: list[Trial]) -> CheckResult:
    bad = [
        t.seed
        for t in trials
        if t.harness_hash_before != t.harness_hash_after or not t.harness_hash_before
    ]
    return CheckResult(
        name="harness_unchanged",
        passed=not bad,
        evidence=f"harness {lab.harness_version}; changed during seeds {bad}"
        if bad
        else f"harness {lab.harness_version} identical before and after {len(trials)} trials",
    )


def metric_from_harness(lab: Lab, trials: list[Trial]) -> CheckResult:
    """The only metric keys are the scorer's, and every ok trial has one."""
    name = lab.bench.metric.name
    bad = [
        t.seed
        for t in trials
        if t.status == "ok" and set(t.metrics) - {name} | ({name} - set(t.metrics))
    ]
    return CheckResult(
        name="metric_from_harness",
        passed=not bad,
        evidence=f"unexpected metric keys on seeds {bad}"
        if bad
        else f"'{name}' computed by the trusted scorer for every trial",
    )


def budget_respected(lab: Lab, trials: list[Trial]) -> CheckResult:
    b = lab.budget
    over = [
        t.seed for t in trials if t.budget_used > b.amount or t.workload_s > b.wall_clock_s * 1.05
    ]
    return CheckResult(
        name="budget_respected",
        passed=not over,
        evidence=f"over {b.amount} {b.unit} or {b.wall_clock_s}s on seeds {over}"
        if over
        else f"<= {b.amount} {b.unit} and <= {b.wall_clock_s}s per trial",
    )


def benchmark_checks(trials: list[Trial]) -> list[CheckResult]:
    """The benchmark's own checks ran inside each trial; fold them per check name."""
    by_name: dict[str, list[CheckResult]] = {}
    for t in trials:
        for c in t.checks:
            by_name.setdefault(c.name, []).append(c)
    return [
        CheckResult(
            name=name,
            passed=all(c.passed for c in results),
            evidence=next((c.evidence for c in results if not c.passed), results[0].evidence),
        )
        for name, results in by_name.items()
    ]


def level1(lab: Lab, candidate_id: str, trials: list[Trial]) -> AuditVerdict:
    checks = [
        harness_intact(lab, trials),
        metric_from_harness(lab, trials),
        budget_respected(lab, trials),
    ]
    checks += benchmark_checks(trials)
    isolation = sorted({t.isolation for t in trials if t.isolation})
    checks.append(
        CheckResult(name="isolation", passed=True, evidence=", ".join(isolation) or "unknown")
    )
    return AuditVerdict(
        id=content_key("audit", LEVEL, candidate_id, sorted(t.id for t in trials)),
        candidate_id=candidate_id,
        level=LEVEL,
        checks=checks,
        passed=all(c.passed for c in checks),
    )


@task(name="audit")
def audit(lab: Lab, candidate_id: str, trials: list[Trial]) -> AuditVerdict:
    verdict = level1(lab, candidate_id, trials)
    lab.archive.put(verdict)
    return verdict
