"""Workloads a candidate has not seen, to catch a solution specialised to the visible ones.

Before a candidate counts as champion it is evaluated on workloads of the same definition
that it was never shown; one that hard-codes the visible shapes fails there. Two sources:

- `held_out_workloads`: a seeded split of workload.jsonl; search sees one part, the
  champion check the other.
- `hidden_workloads`: new workloads with other values of the definition's var axes. A
  definition declares var axes without bounds, so "within the declared axes" is taken as:
  each var axis between half its smallest and twice its largest listed value, in steps of
  its granule (the gcd of its listed values; for a single value, half the largest power of
  two dividing it, so that not only its own multiples come up); any order two axes keep
  in every listed workload is kept (kv_len >= q_len; axes equal in every one are drawn
  as one); every expr axis stays at least 1;
  no drawn workload's inputs and outputs take more bytes than the largest listed one's
  (axes drawn independently multiply: unbounded, a draw could need terabytes); and no
  listed combination is drawn again. A drawn workload takes its input kinds and
  tolerance from a listed one; a scalar input that restates an axis follows its new value.
  Values a definition only accepts for reasons it does not state (a var axis that must be
  a multiple of another) can still be drawn: the reference then fails on them and the
  evaluation skips the workload with that reason, which costs the candidate nothing.
"""

from __future__ import annotations

import math
import random
from dataclasses import replace
from pathlib import Path

from benchmarks.solexec.evaluate import Launch, Timing, evaluate_problem
from benchmarks.solexec.launch import launch_subprocess
from benchmarks.solexec.material import estimate_bytes
from benchmarks.solexec.problems import (
    Problem,
    ProblemFormatError,
    Workload,
    resolve_axes,
    skip_reason,
)
from benchmarks.solexec.results import ProblemEval


def held_out_workloads(problem: Problem, fraction: float, *, seed: int
                       ) -> tuple[list[Workload], list[Workload]]:
    """(shown, held out): the runnable workloads split at random, at least one held out and
    one shown where there are two or more."""
    runnable = [w for w in problem.workloads if skip_reason(problem, w) is None]
    order = random.Random(seed).sample(runnable, len(runnable))
    k = min(max(1, round(fraction * len(order))), len(order) - 1) if len(order) > 1 else 0
    return order[k:], order[:k]


def hidden_workloads(problem: Problem, count: int, *, seed: int) -> list[Workload]:
    """Up to `count` new workloads of the problem (fewer where the axes leave no room)."""
    listed = [w for w in problem.workloads if skip_reason(problem, w) is None]
    var = [n for n, a in problem.axes.items() if a.kind == "var"]
    if not listed or not var:
        return []
    seen = {tuple(w.axes.get(n) for n in var) for w in problem.workloads}
    ranges = {n: _range([w.axes[n] for w in listed]) for n in var}
    order = [(a, b) for a in var for b in var
             if a != b and all(w.axes[a] >= w.axes[b] for w in listed)]
    # axes equal in every listed workload (height and width of square images) are drawn
    # as one: drawn apart, they would almost never meet the order kept both ways
    tied = {b: a for a, b in order if (b, a) in order and var.index(a) < var.index(b)}

    def leader(n: str) -> str:
        while n in tied:
            n = tied[n]
        return n

    largest = max(estimate_bytes(problem, w) for w in listed)
    rng, out = random.Random(seed), []
    for _ in range(50 * count):
        if len(out) == count:
            break
        free = {n: lo + step * rng.randrange((hi - lo) // step + 1)
                for n, (lo, hi, step) in ranges.items() if n not in tied}
        axes = {n: free[leader(n)] for n in var}
        combo = tuple(axes[n] for n in var)
        if combo in seen or not all(axes[a] >= axes[b] for a, b in order):
            continue
        workload = _from_template(problem, rng.choice(listed), axes, len(out))
        if workload is not None and estimate_bytes(problem, workload) <= largest:
            seen.add(combo)
            out.append(workload)
    return out


def _range(values: list[int]) -> tuple[int, int, int]:
    """(lowest, highest, step) for one var axis, from its listed values."""
    distinct = sorted(set(values))
    if len(distinct) > 1:
        step = math.gcd(*distinct) or 1
    else:
        v = distinct[0]
        step = max(1, (v & -v) // 2) if v > 0 else 1
    lo = max(step, -(-(distinct[0] // 2) // step) * step)
    return lo, max(lo, 2 * distinct[-1] // step * step), step


def _from_template(problem: Problem, template: Workload, axes: dict[str, int], k: int
                   ) -> Workload | None:
    inputs = dict(template.inputs)
    for axis, value in axes.items():
        twin = inputs.get(f"{axis}_scalar")
        if twin is not None and twin.kind == "scalar" and twin.value == template.axes[axis]:
            inputs[f"{axis}_scalar"] = replace(twin, value=value)
    label = "-".join(f"{n}{v}" for n, v in axes.items())
    workload = replace(template, uuid=f"hidden-{k}-{label}", axes={**template.axes, **axes},
                       inputs=inputs, line=0, shrunk_from=None)
    try:
        resolved = resolve_axes(problem, workload)
    except ProblemFormatError:
        return None
    if any(resolved[n] < 1 for n, a in problem.axes.items() if a.kind == "expr"):
        return None
    return workload if skip_reason(problem, workload) is None else None


def evaluate_hidden(
    problem: Problem,
    solution_dir: Path,
    timing: Timing | None = None,
    *,
    count: int = 4,
    seed: int,
    workloads: list[Workload] | None = None,
    launch: Launch = launch_subprocess,
    build_dir: Path | None = None,
) -> ProblemEval:
    """The candidate on hidden workloads (drawn here, or the held-out ones given), marked
    hidden; `passed` on the result is the champion gate."""
    chosen = workloads if workloads is not None else hidden_workloads(problem, count, seed=seed)
    result = evaluate_problem(problem, solution_dir, timing, workloads=chosen, launch=launch,
                              build_dir=build_dir)
    return result.model_copy(update={
        "workloads": [w.model_copy(update={"hidden": True}) for w in result.workloads]})
