import numpy as np

from autolab.stats import compare, hedges_g, one_sided_p
from benchmarks.protocol import Direction, MetricSpec

LOWER = MetricSpec(name="bpb", direction=Direction.MINIMIZE)
HIGHER = MetricSpec(name="score", direction=Direction.MAXIMIZE)


def test_clear_improvement_is_accepted_with_p_and_effect():
    c = compare([1.00, 1.01, 0.99], [1.20, 1.21, 1.19, 1.2, 1.22], LOWER, 0.01, 3, 5)
    assert c.decision == "accept"
    assert c.p_value < 0.01
    assert c.effect_size > 1  # signed so that positive means better
    assert c.delta < 0


def test_direction_matters():
    assert compare([1.2, 1.21, 1.19], [1.0, 1.01, 0.99], HIGHER, 0.01, 3, 5).decision == "accept"
    assert compare([1.2, 1.21, 1.19], [1.0, 1.01, 0.99], LOWER, 0.01, 3, 5).decision == "reject"


def test_worse_candidate_stops_for_futility():
    c = compare([1.3, 1.31, 1.29], [1.2, 1.21, 1.19], LOWER, 0.01, 3, 5)
    assert c.decision == "reject" and "futility" in c.reason


def test_promising_but_unclear_asks_for_more_seeds_until_max():
    rng = np.random.default_rng(0)
    ref = list(1.0 + 0.02 * rng.standard_normal(5))
    mine = [v - 0.015 for v in ref[:3]]
    first = compare(mine, ref, LOWER, 0.01, 3, 5)
    assert first.decision in ("more", "accept")
    at_max = compare(list(1.0 + 0.02 * rng.standard_normal(5)), ref, LOWER, 1e-9, 3, 5)
    assert at_max.decision == "reject"


def test_too_few_seeds_is_more_and_empty_is_failed():
    assert compare([1.0, 1.1], [1.2, 1.3, 1.25], LOWER, 0.01, 3, 5).decision == "more"
    assert compare([], [1.0, 1.1], LOWER, 0.01, 3, 5).decision == "failed"


def test_zero_variance_is_not_called_significant():
    c = compare([1.0, 1.0, 1.0], [1.0, 1.0, 1.0], LOWER, 0.01, 3, 5)
    assert c.decision == "reject" and c.p_value is None


def test_p_value_matches_welch_by_hand():
    a, b = [1.0, 1.1, 0.9, 1.05], [1.2, 1.3, 1.15]
    from scipy import stats

    ref = stats.ttest_ind(a, b, equal_var=False).pvalue / 2  # a is lower: one-sided half
    assert abs(one_sided_p(a, b, LOWER) - ref) < 1e-12
    assert hedges_g(np.array([2.0, 2.1, 1.9]), np.array([1.0, 1.1, 0.9])) > 0


def test_matched_seeds_use_the_paired_test():
    from autolab.stats import compare_seeds

    # a large shared seed effect hides a small consistent gain from Welch, not from pairing
    ref = {1000: 3.40, 1001: 3.55, 1002: 3.48, 1003: 3.62}
    mine = {s: v - 0.02 for s, v in ref.items()}
    mine[1002] -= 0.005
    paired = compare_seeds(mine, ref, LOWER, 0.01, 3, 6)
    assert paired.test == "paired" and paired.decision == "accept"
    welch = compare(list(mine.values()), list(ref.values()), LOWER, 0.01, 3, 6)
    assert welch.decision != "accept"
    # unmatched seeds fall back to Welch's test
    other = compare_seeds({1: 3.0, 2: 3.1, 3: 3.05}, ref, LOWER, 0.01, 3, 6)
    assert other.test == "welch"
    # pairs are the seeds both ran when one side has more seeds than the other
    longer = {**ref, 1004: 3.5, 1005: 3.6}
    assert compare_seeds(mine, longer, LOWER, 0.01, 3, 6).test == "paired"
