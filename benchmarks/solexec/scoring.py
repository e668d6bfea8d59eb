"""SOL-ExecBench scores: per workload, per problem, across the suite.

The per-workload score is SOL-ExecBench's anchored score (NVIDIA/SOL-ExecBench,
src/sol_execbench/sol_score.py):

    S = 1 / (1 + (T_k - T_SOL) / (T_b - T_SOL))

0.5 at the scoring baseline T_b, 1.0 at the speed of light T_SOL, falling towards 0 as the
kernel gets slower than T_b (it never goes negative there, so no lower clamp is needed).

Aggregation follows the SOL-ExecBench paper (arXiv:2603.19173), whose benchmark score is the
correctness-gated mean over problems, and the public ports of its harness: a workload that
failed (did not build, crashed, timed out, or was numerically incorrect) scores 0; a
problem's score is the arithmetic mean over all of its workloads, failures included, so the
denominator is fixed; the suite score is the unweighted mean over problems, a problem with no
result at all counting 0. The public harness publishes only the per-workload formula, so the
per-problem mean is the paper's description rather than code read from the harness.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass


def sol_score(t_k: float, t_b: float, t_sol: float, *, cap: bool = True) -> float:
    """Anchored SOL score of one workload (times in any one unit).

    Degenerate anchors (T_b <= T_SOL: the baseline already at or beyond the speed of light,
    so there is no gap to close) score as the public code does: 1.0 if the kernel reaches
    T_SOL, else 0.0.

    A kernel faster than T_SOL means T_SOL was not a true lower bound. The public formula
    then exceeds 1 and is undefined once T_k <= 2*T_SOL - T_b; with ``cap`` (the default) the
    score stops at 1.0, the top of the range the public code documents. ``cap=False``
    returns the public formula's value and raises where it is undefined.
    """
    for name, value in (("t_k", t_k), ("t_b", t_b), ("t_sol", t_sol)):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a finite, non-negative time, not {value!r}")
    gap = t_b - t_sol
    if gap <= 0:
        return 1.0 if t_k <= t_sol else 0.0
    if cap and t_k <= t_sol:
        return 1.0
    denominator = 1.0 + (t_k - t_sol) / gap
    if denominator <= 0:
        raise ValueError(f"score undefined: t_k={t_k} is more than t_b - t_sol below t_sol={t_sol}")
    return 1.0 / denominator


@dataclass(frozen=True)
class WorkloadResult:
    """One evaluated workload. ``passed`` is False for any failure (compile, runtime,
    timeout, incorrect output); timings may then be missing."""

    problem: str
    workload: str
    passed: bool
    t_k: float | None = None
    t_b: float | None = None
    t_sol: float | None = None


def workload_score(result: WorkloadResult) -> float:
    """0.0 for a failed workload or one without all three timings, else its SOL score."""
    if not result.passed or None in (result.t_k, result.t_b, result.t_sol):
        return 0.0
    return sol_score(result.t_k, result.t_b, result.t_sol)


def problem_scores(results: Iterable[WorkloadResult]) -> dict[str, float]:
    """Mean workload score per problem, over every workload given for it."""
    by_problem: dict[str, list[float]] = defaultdict(list)
    for result in results:
        by_problem[result.problem].append(workload_score(result))
    return {problem: sum(s) / len(s) for problem, s in sorted(by_problem.items())}


def suite_score(results: Iterable[WorkloadResult], problems: Iterable[str] | None = None) -> float:
    """Unweighted mean of problem scores.

    ``problems`` fixes the denominator (the whole suite): a listed problem with no results
    scores 0. Without it, the problems seen in ``results`` are the suite.
    """
    scores = problem_scores(results)
    names = sorted(set(problems)) if problems is not None else sorted(scores)
    if not names:
        raise ValueError("no problems to score")
    unknown = set(scores) - set(names)
    if unknown:
        raise ValueError(f"results for problems outside the suite: {sorted(unknown)}")
    return sum(scores.get(name, 0.0) for name in names) / len(names)
