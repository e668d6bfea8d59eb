"""The speedrun's rule, as its metric declares it and the evaluation layer applies it:
faster than the parent (paired t-test) and below the target (one-sample t-test), both at
p < alpha; a run that misses the target is not a gain, however fast."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import stats

from autolab.evaluation import evaluate
from autolab.records import Evaluation, Trial
from autolab.stats import Design, compare_seeds, constraint_p
from benchmarks import get_benchmark
from benchmarks.speedrun.benchmark import SPEEDRUN_ALPHA, speedrun_metric
from benchmarks.speedrun.contract import PRESETS
from benchmarks.speedrun.score import miss_time

TARGET = 3.28
PRESET = dataclasses.replace(PRESETS["short"], target=TARGET)
METRIC = speedrun_metric(PRESET)
DESIGN = Design(alpha=0.01, min_seeds=5, max_seeds=5)  # one look at alpha, on five seeds
SEEDS = range(1000, 1005)
VAL_LOSS, REACHED = METRIC.constraints


def runs(cid: str, times, losses, reached=None) -> list[Trial]:
    """Trials as the speedrun scorer reports them; `reached` defaults to loss <= target."""
    reached = reached or [v <= TARGET for v in losses]
    return [Trial(id=f"{cid}-{s}", candidate_id=cid, seed=s, split="val", status="ok",
                  metrics={"train_s": t, "val_loss": v, "reached": float(r)})
            for s, t, v, r in zip(SEEDS, times, losses, reached, strict=True)]  # fmt: skip


PARENT = runs("parent", [100.0, 101.0, 99.5, 100.4, 100.8], [3.270, 3.272, 3.268, 3.271, 3.269])


def judge(cand: list[Trial], parent: list[Trial] = PARENT, design: Design = DESIGN) -> Evaluation:
    return evaluate("cand", cand, "parent", parent, METRIC, design)


def by_bound(ev: Evaluation) -> dict[str, float | None]:
    return {c.bound: c.p_value for c in ev.constraints}


def test_the_benchmark_declares_the_rule_with_its_presets_target():
    for name, preset in (("speedrun", "short"), ("speedrun-full", "full"),
                         ("speedrun-cpu", "cpu")):
        bench = get_benchmark(name)
        loss, reached = bench.metric.constraints
        assert (bench.metric.name, bench.metric.direction.value) == ("train_s", "minimize")
        assert (loss.metric, loss.op, loss.target) == ("val_loss", "<=", PRESETS[preset].target)
        assert loss.alpha == SPEEDRUN_ALPHA == 0.01  # the public rules' level
        assert (reached.metric, reached.op, reached.target) == ("reached", ">=", 1.0)
        assert not any(p.name == "constraint.py" for p in bench.harness_files())


def test_faster_and_below_the_target_is_a_gain():
    cand = runs("cand", [95.1, 96.0, 94.8, 95.5, 95.9], [3.271, 3.273, 3.270, 3.272, 3.270])
    ev = judge(cand)
    assert ev.decision == "accept", ev.reason
    assert ev.p_value < 0.01 and all(p < 0.01 for p in by_bound(ev).values()), ev
    assert ev.constraints_hold and "val_loss <= 3.28: p=" in ev.reason


def test_a_miss_is_not_a_gain_however_fast():
    """One run of five missed the target (3.300): even reported as fast, never a gain."""
    cand = runs("cand", [10.0, 11.0, 10.5, 10.2, 10.8], [3.270, 3.300, 3.271, 3.270, 3.269])
    ev = judge(cand)
    assert ev.p_value < 0.01  # the time alone would pass
    assert ev.decision == "reject" and not ev.constraints_hold
    assert by_bound(ev)["reached >= 1"] > 0.5  # any miss: the mean of reached is below 1
    assert "train_s gain p=" in ev.reason and "reached >= 1 only at p=" in ev.reason


def test_much_faster_but_above_the_target_is_not_a_gain():
    """Every run ends above the target, yet the scorer's times are tiny: a run that misses
    the target is not a gain."""
    cand = runs("cand", [1.0, 1.2, 1.1, 0.9, 1.05], [3.31, 3.30, 3.32, 3.305, 3.31],
                reached=[True] * 5)
    ev = judge(cand)
    assert ev.decision == "reject" and ev.p_value < 1e-4
    assert by_bound(ev)["val_loss <= 3.28"] > 0.99
    assert "val_loss <= 3.28 only at p=" in ev.reason


def test_faster_but_too_close_to_the_target_is_not_a_gain():
    """Every run reached the target, but their mean is not clearly below it."""
    cand = runs("cand", [90.0, 91.0, 90.5, 90.2, 90.8], [3.2799, 3.2795, 3.2760, 3.2798, 3.2700])
    ev = judge(cand)
    p_loss = by_bound(ev)["val_loss <= 3.28"]
    assert ev.p_value < 0.01 and p_loss >= 0.01 and ev.decision == "reject"
    # the reason says which part failed, with both p-values
    assert f"train_s gain p={ev.p_value:.2g}" in ev.reason
    assert f"val_loss <= 3.28 only at p={p_loss:.2g}" in ev.reason


def test_below_the_target_but_not_clearly_faster_is_not_a_gain():
    cand = runs("cand", [99.9, 101.2, 99.0, 100.9, 100.1], [3.270, 3.272, 3.268, 3.271, 3.269])
    ev = judge(cand)
    assert by_bound(ev)["val_loss <= 3.28"] < 0.01 and ev.p_value >= 0.01
    assert ev.decision == "reject" and ev.reason.startswith("paired: p=")


def test_the_p_values_are_scipy_s_one_sided_t_tests():
    cand = runs("cand", [95.1, 96.0, 94.8, 95.5, 95.9], [3.25, 3.26, 3.27, 3.262, 3.258])
    ev = judge(cand)
    times = [t.metrics["train_s"] for t in cand]
    losses = [t.metrics["val_loss"] for t in cand]
    assert ev.p_value == pytest.approx(stats.ttest_rel(
        times, [t.metrics["train_s"] for t in PARENT], alternative="less").pvalue)
    assert by_bound(ev)["val_loss <= 3.28"] == pytest.approx(
        stats.ttest_1samp(losses, TARGET, alternative="less").pvalue)
    assert constraint_p([3.30, 3.31, 3.29], VAL_LOSS) > 0.5
    assert constraint_p([3.2], VAL_LOSS) is None  # one seed says nothing
    assert constraint_p([3.2, 3.2], VAL_LOSS) == 0.0
    assert constraint_p([3.3, 3.3], VAL_LOSS) == 1.0
    assert constraint_p([1.0] * 5, REACHED) == 0.0 and constraint_p([0.0] * 5, REACHED) == 1.0


def test_a_real_miss_scores_the_slowest_time_and_fails_both_constraints():
    """As the scorer reports it: the miss's time is the budget plus the time to finish."""
    slow = miss_time(240, PRESET)
    cand = runs("cand", [50.0, 51.0, slow, 50.5, 49.8], [3.27, 3.271, 3.45, 3.269, 3.27])
    ev = judge(cand)
    assert ev.decision == "reject" and not ev.constraints_hold


def test_the_rule_accepts_an_equal_candidate_rarely():
    """Candidates equal to their parent in time, reaching the target: accepted at a rate
    of at most alpha (the time test alone decides)."""
    rng = np.random.default_rng(0)
    design = Design(alpha=0.1, min_seeds=5, max_seeds=5)
    accepted = 0
    for _ in range(300):
        shared = rng.normal(100, 2, size=5)
        cand = dict(zip(SEEDS, shared + rng.normal(0, 0.5, 5), strict=True))
        parent = dict(zip(SEEDS, shared + rng.normal(0, 0.5, 5), strict=True))
        losses = dict(zip(SEEDS, rng.normal(3.25, 0.005, 5), strict=True))
        constrained = {"val_loss": losses, "reached": dict.fromkeys(SEEDS, 1.0)}
        accepted += compare_seeds(cand, parent, METRIC, design, constrained).decision == "accept"
    assert accepted / 300 <= 0.16  # alpha plus three standard errors
