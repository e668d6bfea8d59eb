"""The speedrun's decision rule: faster than the parent and below the target, both at p <
alpha; a run that misses the target is never a gain, however fast."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.speedrun.constraint import (
    Run,
    decide,
    loss_p_value,
    run_of,
    time_p_value,
)

TARGET = 3.28


def runs(times, losses) -> list[Run]:
    return [Run(time_s=t, loss=v, reached=v <= TARGET) for t, v in zip(times, losses,
                                                                       strict=True)]


PARENT = runs([100.0, 101.0, 99.5, 100.4, 100.8], [3.270, 3.272, 3.268, 3.271, 3.269])


def test_faster_and_below_the_target_is_a_gain():
    cand = runs([95.1, 96.0, 94.8, 95.5, 95.9], [3.271, 3.273, 3.270, 3.272, 3.270])
    v = decide(cand, PARENT, TARGET, alpha=0.01)
    assert v.accept and v.loss_p < 0.01 and v.time_p < 0.01, v


def test_a_miss_is_not_a_gain_however_fast():
    cand = runs([10.0, 11.0, 10.5, 10.2, 10.8], [3.270, 3.300, 3.271, 3.270, 3.269])
    v = decide(cand, PARENT, TARGET, alpha=0.01)
    assert not v.accept and v.time_p == 1.0 and "missed" in v.reason


def test_faster_but_too_close_to_the_target_is_not_a_gain():
    """Every run reached the target, but their mean is not clearly below it."""
    cand = runs([90.0, 91.0, 90.5, 90.2, 90.8], [3.2799, 3.2795, 3.2760, 3.2798, 3.2700])
    v = decide(cand, PARENT, TARGET, alpha=0.01)
    assert v.time_p < 0.01 and v.loss_p >= 0.01 and not v.accept
    assert "not below the target" in v.reason


def test_below_the_target_but_not_clearly_faster_is_not_a_gain():
    cand = runs([99.9, 101.2, 99.0, 100.9, 100.1], [3.270, 3.272, 3.268, 3.271, 3.269])
    v = decide(cand, PARENT, TARGET, alpha=0.01)
    assert v.loss_p < 0.01 and not v.accept and "not faster" in v.reason


def test_the_p_values_are_one_sided_t_tests():
    from scipy import stats

    losses = [3.25, 3.26, 3.27]
    assert loss_p_value(losses, TARGET) == pytest.approx(
        stats.ttest_1samp(losses, TARGET, alternative="less").pvalue)
    assert loss_p_value([3.30, 3.31, 3.29], TARGET) > 0.5
    assert loss_p_value([3.2], TARGET) == 1.0  # one seed says nothing
    assert loss_p_value([3.2, 3.2], TARGET) == 0.0 and loss_p_value([3.3, 3.3], TARGET) == 1.0
    a, b = [1.0, 2.0, 3.0], [2.0, 2.5, 4.0]
    assert time_p_value(a, b, paired=True) == pytest.approx(
        stats.ttest_rel(a, b, alternative="less").pvalue)
    assert time_p_value(a, b, paired=False) == pytest.approx(
        stats.ttest_ind(a, b, equal_var=False, alternative="less").pvalue)
    assert time_p_value(a, b[:2], paired=True) == 1.0


def test_the_rule_accepts_an_equal_candidate_rarely():
    """Candidates equal to their parent in time, reaching the target: accepted at a rate
    of at most alpha (the time test alone decides)."""
    rng = np.random.default_rng(0)
    accepted = 0
    for _ in range(300):
        shared = rng.normal(100, 2, size=5)
        cand = runs(shared + rng.normal(0, 0.5, 5), rng.normal(3.25, 0.005, 5))
        parent = runs(shared + rng.normal(0, 0.5, 5), rng.normal(3.25, 0.005, 5))
        accepted += decide(cand, parent, TARGET, alpha=0.1).accept
    assert accepted / 300 <= 0.16  # alpha plus three standard errors


def test_a_run_from_trial_metrics():
    assert run_of({"train_s": 12.5, "val_loss": 3.1, "reached": 1.0}) == Run(12.5, 3.1, True)
    assert not run_of({"train_s": 40.0, "val_loss": 3.5, "reached": 0.0}).reached
