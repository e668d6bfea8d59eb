"""The audit levels: each runtime check fails when its violation is planted in a trial and
passes on clean trials; replication needs p below its level; verdicts name the level."""

from __future__ import annotations

import pytest

from autolab.audit import (
    WALL_SLACK,
    merge,
    replication_check,
    replication_level,
    runtime_checks,
    runtime_verdict,
    static_check,
    verdict,
)
from autolab.records import Evaluation, Trial
from benchmarks import get_benchmark
from benchmarks.protocol import Budget, CheckResult

HARNESS = "h" * 64
BUDGET = Budget(unit="calls", amount=10, wall_clock_s=30, memory_mb=512)


def make_trial(seed: int = 1, **update) -> Trial:
    base = dict(
        id=f"t{seed}", candidate_id="cand", seed=seed, split="val", status="ok",
        metrics={"value": 1.0}, budget_used=10, workload_s=29.0,
        harness_hash_before=HARNESS, harness_hash_after=HARNESS, isolation="bwrap",
        checks=[CheckResult(name="causal", passed=True, evidence="max change 0")],
    )  # fmt: skip
    return Trial(**{**base, **update})


def failed(checks: list[CheckResult]) -> list[str]:
    return [c.name for c in checks if not c.passed]


def test_clean_trials_pass_every_check() -> None:
    trials = [make_trial(s) for s in (1, 2, 3)]
    checks = runtime_checks(trials, HARNESS, BUDGET, "bwrap")
    assert [c.name for c in checks] == ["trials_intact", "harness_unchanged", "budget_respected",
                                        "isolation", "causal"]
    assert failed(checks) == [] and all(c.level == 1 for c in checks)


PLANTED = {
    "harness changed during a trial": (dict(harness_hash_after="x" * 64), "harness_unchanged"),
    "harness differs from the current one": (
        dict(harness_hash_before="x" * 64, harness_hash_after="x" * 64), "harness_unchanged"),
    "budget over": (dict(budget_used=11), "budget_respected"),
    "workload over the wall clock": (dict(workload_s=30 * WALL_SLACK + 0.1),
                                     "budget_respected"),
    "weaker isolation": (dict(isolation="unshare"), "isolation"),
    "unknown isolation": (dict(isolation=""), "isolation"),
    "failed benchmark check": (
        dict(checks=[CheckResult(name="causal", passed=False, evidence="max change 3.2")]),
        "causal"),
    "integrity failure": (dict(status="failed", failure="integrity", reason="guard: open"),
                          "trials_intact"),
    "budget failure": (dict(status="failed", failure="budget", reason="used 11"),
                       "trials_intact"),
}


@pytest.mark.parametrize("planted", list(PLANTED))
def test_a_planted_violation_fails_its_check(planted: str) -> None:
    update, name = PLANTED[planted]
    trials = [make_trial(1), make_trial(2, **update), make_trial(3)]
    checks = runtime_checks(trials, HARNESS, BUDGET, "bwrap")
    assert name in failed(checks)
    assert set(failed(checks)) <= {name, "trials_intact"}
    bad = next(c for c in checks if c.name == name)
    if name in ("harness_unchanged", "budget_respected", "isolation", "trials_intact"):
        assert "val:2" in bad.evidence  # which trial
    v = runtime_verdict("cand", trials, HARNESS, BUDGET, "bwrap")
    assert not v.passed and v.caught_at == 1


def test_workload_within_the_slack_passes() -> None:
    trials = [make_trial(1, workload_s=30 * WALL_SLACK - 0.01)]
    assert failed(runtime_checks(trials, HARNESS, BUDGET, "bwrap")) == []


def test_required_isolation_is_a_floor() -> None:
    trials = [make_trial(1, isolation="unshare"), make_trial(2, isolation="bwrap")]
    assert failed(runtime_checks(trials, HARNESS, BUDGET, "unshare")) == []
    assert failed(runtime_checks(trials, HARNESS, BUDGET, "none")) == []
    assert failed(runtime_checks(trials, HARNESS, BUDGET, "bwrap")) == ["isolation"]


def test_static_check(tmp_path) -> None:
    noop = get_benchmark("noop")
    clean = static_check(noop, noop.seed_files())
    assert clean.passed and clean.level == 0 and clean.name == "static_scan"
    dirty = static_check(noop, {"solution.py": "import os\nVALUE = os.environ['X']\n",
                                "notes.txt": "import os"})
    assert not dirty.passed and "imports 'os'" in dirty.evidence
    off = static_check(noop, {"solution.py": "import os\n"}, enabled=False)
    assert off.passed and "not run" in off.evidence  # says so, never claims a clean scan


def evaluation(p: float | None, decision: str = "accept", delta: float | None = -0.1):
    return Evaluation(id="e", candidate_id="cand", reference_id="champion0",
                      metric="value", values=[1.0] * 4, reference_values=[1.1] * 4,
                      delta=delta, p_value=p, alpha=0.05, decision=decision,
                      reason="no successful trials to compare" if decision == "failed" else "")


def test_replication_check() -> None:
    level = replication_level(0.05, 0)
    assert level == 0.05 and replication_level(0.05, 1) == 0.025
    assert replication_level(0.05, 4) == pytest.approx(0.01)
    ok = replication_check(evaluation(0.01), level)
    assert ok.passed and ok.level == 2 and "p=0.01" in ok.evidence
    assert not replication_check(evaluation(0.05), 0.05).passed  # p must be below the level
    assert not replication_check(evaluation(0.2, "reject"), level).passed
    assert not replication_check(evaluation(0.03), replication_level(0.05, 1)).passed
    assert not replication_check(evaluation(None, "reject"), level).passed
    gone = replication_check(evaluation(0.001, "failed", None), level)
    assert not gone.passed and "no successful trials" in gone.evidence


def test_verdict_levels() -> None:
    static = CheckResult(name="static_scan", level=0, passed=True)
    runtime = CheckResult(name="trials_intact", level=1, passed=True)
    replicated = CheckResult(name="replicates_on_fresh_seeds", level=2, passed=False)
    v = verdict("cand", [static, runtime])
    assert v.passed and v.level == 1 and v.caught_at is None
    w = merge(v, [replicated])
    assert not w.passed and w.level == 2 and w.caught_at == 2 and w.id != v.id
    caught_early = verdict("cand", [static.model_copy(update={"passed": False}), runtime,
                                    replicated])
    assert caught_early.caught_at == 0
    assert verdict("cand", []).passed and verdict("cand", []).level == 0
    earlier = [static.model_copy(update={"passed": False})]
    rv = runtime_verdict("cand", [make_trial(1)], HARNESS, BUDGET, "bwrap", earlier)
    assert not rv.passed and rv.caught_at == 0 and rv.checks[0].name == "static_scan"


def test_the_same_trials_judged_by_another_design_are_another_evaluation() -> None:
    """The campaign's end re-judges the champion's trials with a single look; that record
    must not replace the one whose decision accepted it."""
    from autolab.evaluation import evaluate as compare
    from autolab.stats import Design
    from benchmarks.protocol import Direction, MetricSpec

    metric = MetricSpec(name="value", direction=Direction.MINIMIZE)
    mine = [make_trial(s, id=f"c{s}", metrics={"value": 0.5 - 0.001 * s}) for s in (1, 2, 3, 4)]
    ref = [make_trial(s, id=f"r{s}", candidate_id="ref", metrics={"value": 1.0 + 0.01 * s})
           for s in (1, 2, 3, 4)]
    sequential = compare("cand", mine, "ref", ref, metric, Design(0.01, 4, 6, step=2))
    single = compare("cand", mine, "ref", ref, metric, Design(0.01, 6, 6))
    assert sequential.decision == "accept" and single.decision != "accept"
    assert sequential.id != single.id
