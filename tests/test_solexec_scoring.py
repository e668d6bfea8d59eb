"""SOL-ExecBench scores: the anchored per-workload score and its aggregation."""

from __future__ import annotations

import pytest

from benchmarks.solexec.scoring import (
    WorkloadResult,
    problem_scores,
    sol_score,
    suite_score,
    workload_score,
)


def test_the_anchors():
    assert sol_score(t_k=10.0, t_b=10.0, t_sol=2.0) == pytest.approx(0.5)
    assert sol_score(t_k=2.0, t_b=10.0, t_sol=2.0) == pytest.approx(1.0)
    assert sol_score(t_k=6.0, t_b=10.0, t_sol=2.0) == pytest.approx(1 / (1 + 4 / 8))
    slower = sol_score(t_k=100.0, t_b=10.0, t_sol=2.0)
    assert 0 < slower < 0.1  # far slower than the baseline: towards 0, never negative


def test_faster_than_light_is_capped_or_refused():
    assert sol_score(t_k=1.0, t_b=10.0, t_sol=2.0) == 1.0
    assert sol_score(t_k=1.0, t_b=10.0, t_sol=2.0, cap=False) > 1.0
    with pytest.raises(ValueError, match="undefined"):
        sol_score(t_k=0.0, t_b=3.0, t_sol=2.0, cap=False)


def test_degenerate_anchors_and_bad_times():
    assert sol_score(t_k=1.0, t_b=1.0, t_sol=2.0) == 1.0  # baseline beyond T_SOL: reached
    assert sol_score(t_k=3.0, t_b=1.0, t_sol=2.0) == 0.0
    for bad in (float("nan"), float("inf"), -1.0):
        with pytest.raises(ValueError):
            sol_score(t_k=bad, t_b=10.0, t_sol=2.0)


def test_failed_workloads_count_zero_and_problems_average_evenly():
    results = [
        WorkloadResult("a", "w1", True, t_k=10.0, t_b=10.0, t_sol=2.0),  # 0.5
        WorkloadResult("a", "w2", True, t_k=2.0, t_b=10.0, t_sol=2.0),  # 1.0
        WorkloadResult("a", "w3", False),  # 0
        WorkloadResult("b", "w1", True, t_k=6.0, t_b=10.0, t_sol=2.0),  # 2/3
        WorkloadResult("b", "w2", True, t_k=6.0, t_b=None, t_sol=2.0),  # no baseline: 0
    ]
    assert workload_score(results[2]) == 0.0 and workload_score(results[4]) == 0.0
    scores = problem_scores(results)
    assert scores == pytest.approx({"a": 0.5, "b": 1 / 3})
    assert suite_score(results) == pytest.approx((0.5 + 1 / 3) / 2)
    # a problem of the suite with no result at all counts 0 and keeps its place
    assert suite_score(results, problems=["a", "b", "c"]) == pytest.approx((0.5 + 1 / 3) / 3)
    with pytest.raises(ValueError, match="outside the suite"):
        suite_score(results, problems=["a"])
    with pytest.raises(ValueError):
        suite_score([])
