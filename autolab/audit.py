"""The audit, in levels, cheapest first; a candidate becomes champion only if all pass.

0. static: the scan of its code before any trial (autolab.static_scan).
1. runtime integrity: the harness hashed the same, the budget was counted by trusted
   code and held, isolation was as strong as the campaign requires, and the
   benchmark's own checks (e.g. causality probes) passed in every trial.
2. replication: a would-be champion and the champion, re-run in fresh processes on
   fresh seeds and on inputs selection never scored, must show the gain again. It gets
   stricter as the search gets stronger: the k-th champion must replicate at
   p < replication_alpha / k.
3. the held-out split, once, for the campaign's final champion (tasks/confirm.py).

Each check says at which level it ran; a verdict says which level caught the candidate.
"""

from __future__ import annotations

from collections.abc import Iterable

from autolab.records import AuditVerdict, Evaluation, Trial, content_key
from autolab.sandbox import STRENGTH
from autolab.static_scan import static_findings
from benchmarks.protocol import Benchmark, Budget, CheckResult

WALL_SLACK = 1.05  # the sandbox's poll interval can overshoot a time limit a little


def verdict(candidate_id: str, checks: list[CheckResult], key: object = None) -> AuditVerdict:
    failed = [c.level for c in checks if not c.passed]
    return AuditVerdict(
        id=content_key("audit", candidate_id, key if key is not None else
                       [c.model_dump() for c in checks]),
        candidate_id=candidate_id,
        level=max((c.level for c in checks), default=0),
        checks=checks,
        passed=not failed,
        caught_at=min(failed) if failed else None,
    )


def merge(first: AuditVerdict, more: list[CheckResult], against: str = "") -> AuditVerdict:
    """`first` with more checks; `against` (the champion a replication challenged) keeps
    apart the verdicts of one candidate's challenges of different champions."""
    key = (first.id, len(more), against) if against else (first.id, len(more))
    return verdict(first.candidate_id, [*first.checks, *more], key=key)


# -- level 0 ------------------------------------------------------------------------------


def static_check(bench: Benchmark, files: dict[str, str], enabled: bool = True) -> CheckResult:
    if not enabled:
        return CheckResult(name="static_scan", level=0, passed=True,
                           evidence="not run: audit.static_scan is off")
    findings: list[str] = []
    allowed_attrs = getattr(bench, "allowed_attrs", frozenset())
    for path, source in sorted(files.items()):
        if path.endswith(".py"):
            findings += static_findings(path, source, bench.allowed_imports, allowed_attrs)
    return CheckResult(
        name="static_scan", level=0, passed=not findings,
        evidence="; ".join(findings[:5]) if findings else f"{len(files)} file(s) clean",
    )


# -- level 1 ------------------------------------------------------------------------------


def _check(name: str, bad: list, ok_text: str, bad_text: str) -> CheckResult:
    return CheckResult(name=name, level=1, passed=not bad,
                       evidence=bad_text.format(bad=bad) if bad else ok_text)


def runtime_checks(
    trials: list[Trial], harness_hash: str, budget: Budget, required_isolation: str
) -> list[CheckResult]:
    """What trusted code measured around each trial, and the benchmark's own checks."""
    seeds = lambda pred: [f"{t.split}:{t.seed}" for t in trials if pred(t)]  # noqa: E731
    checks = [
        _check("trials_intact", seeds(lambda t: t.failure in ("integrity", "budget")),
               f"no trial of {len(trials)} failed an integrity or budget check",
               "integrity or budget failure on {bad}: " + next(
                   (t.reason for t in trials if t.failure in ("integrity", "budget")), "")),
        _check("harness_unchanged", seeds(lambda t: not (
            t.harness_hash_before == t.harness_hash_after == harness_hash)),
               f"harness {harness_hash[:12]} identical before and after every trial",
               "harness changed during, or differs from the current one for, trials {bad}"),
        _check("budget_respected", seeds(lambda t: t.budget_used > budget.amount or
                                         t.workload_s > budget.wall_clock_s * WALL_SLACK),
               f"<= {budget.amount} {budget.unit} and <= {budget.wall_clock_s:g} s of sandboxed "
               "time per trial, both counted by trusted code",
               "over the budget on {bad}"),
        _check("isolation", seeds(lambda t: STRENGTH.get(t.isolation, -1) <
                                  STRENGTH[required_isolation]),
               f"every trial ran under {required_isolation} or stronger",
               f"weaker isolation than the campaign's {required_isolation} on " + "{bad}"),
    ]
    by_name: dict[str, list[CheckResult]] = {}
    for t in trials:
        for c in t.checks:
            by_name.setdefault(c.name, []).append(c)
    for name, results in by_name.items():
        bad = [c for c in results if not c.passed]
        checks.append(CheckResult(name=name, level=1, passed=not bad,
                                  evidence=(bad or results)[0].evidence))
    return checks


def runtime_verdict(
    candidate_id: str, trials: list[Trial], harness_hash: str, budget: Budget,
    required_isolation: str, earlier: Iterable[CheckResult] = (),
) -> AuditVerdict:
    checks = [*earlier, *runtime_checks(trials, harness_hash, budget, required_isolation)]
    return verdict(candidate_id, checks, key=(sorted(t.id for t in trials), required_isolation))


# -- level 2 ------------------------------------------------------------------------------


def replication_level(replication_alpha: float, champions_so_far: int) -> float:
    """The k-th champion must replicate at replication_alpha / k."""
    return replication_alpha / (champions_so_far + 1)


def replication_check(evaluation: Evaluation, level: float) -> CheckResult:
    """The gain again at `level`, and the metric's constraints again on the fresh seeds."""
    p = evaluation.p_value
    ok = (evaluation.decision != "failed" and p is not None and p < level
          and evaluation.constraints_hold)
    n = len(evaluation.values)
    p_text = "undefined" if p is None else f"{p:.3g}"
    constraints = "".join(f"; {c.summary()} (needs < {c.level:.3g})"
                          for c in evaluation.constraints)
    return CheckResult(
        name="replicates_on_fresh_seeds", level=2, passed=ok,
        evidence=f"{n} fresh seeds on unseen inputs vs {evaluation.reference_id[:8]}: "
        f"delta {evaluation.delta if evaluation.delta is not None else float('nan'):+.4g}, "
        f"p={p_text} (needs < {level:.3g})" + constraints + (
            f"; {evaluation.reason}" if evaluation.decision == "failed" else ""),
    )
