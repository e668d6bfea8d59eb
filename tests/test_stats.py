"""Sequential one-sided comparisons: the looks, the alpha each spends, the tests, and the
false-accept rate of whole designs checked by simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from autolab.stats import (
    FUTILITY_P,
    Design,
    compare,
    compare_seeds,
    hedges_g,
    next_seed_count,
    one_sided_p,
    paired_p,
    simulate,
    smallest_detectable_gain,
    wilson,
)
from benchmarks.protocol import Direction, MetricSpec

LOWER = MetricSpec(name="bpb", direction=Direction.MINIMIZE)
HIGHER = MetricSpec(name="score", direction=Direction.MAXIMIZE)
D35 = Design(alpha=0.01, min_seeds=3, max_seeds=5)
ALPHA = 0.01
DESIGNS = {
    "looks-4-6": Design(ALPHA, 4, 6, step=2),
    "looks-4-5-6": Design(ALPHA, 4, 6, step=1),
    "looks-2-to-8": Design(ALPHA, 2, 8, step=1),
    "looks-4-6-screened": Design(ALPHA, 4, 6, step=2, screen=True),
    "fixed-6": Design(ALPHA, 6, 6),
}


# -- the design ------------------------------------------------------------------------------


def test_looks():
    assert DESIGNS["looks-4-6"].looks() == [4, 6]
    assert DESIGNS["looks-4-5-6"].looks() == [4, 5, 6]
    assert DESIGNS["looks-2-to-8"].looks() == list(range(2, 9))
    assert DESIGNS["fixed-6"].looks() == [6]
    assert Design(ALPHA, 3, 8, step=3).looks() == [3, 6, 8]  # the last look is max_seeds


@pytest.mark.parametrize("design", [*DESIGNS.values(), Design(0.05, 2, 20, step=3),
                                    Design(0.2, 3, 4)], ids=str)
def test_per_look_alphas_add_up_to_alpha(design):
    levels = [design.nominal_alpha(n) for n in design.looks()]
    assert all(lv > 0 for lv in levels)
    assert sum(levels) == pytest.approx(design.alpha, rel=1e-12)
    assert design.spent() == pytest.approx(design.alpha, rel=1e-12)
    assert design.nominal_alpha(design.min_seeds - 1) == 0.0  # before the first look
    # spending alpha * t^3: early looks spend little, the last one the most
    if len(levels) > 1:
        assert levels[0] < levels[-1]
        assert levels[0] == pytest.approx(design.alpha * (design.min_seeds /
                                                          design.max_seeds) ** 3)


@pytest.mark.parametrize("name", list(DESIGNS))
def test_simulated_false_accept_rate_is_at_most_alpha(name):
    """100k equal candidates through the whole sequential design: the rate at which one is
    accepted must not exceed alpha (its 95% Wilson interval must reach down to alpha)."""
    design = DESIGNS[name]
    result = simulate(design, effect=0.0, draws=100_000, seed=1)
    assert result["ci_low"] <= design.alpha, result
    assert result["accept_rate"] < 1.2 * design.alpha
    lo, hi = wilson(round(result["accept_rate"] * 100_000), 100_000)
    assert (lo, hi) == pytest.approx((result["ci_low"], result["ci_high"]))


def test_looking_at_every_seed_at_full_alpha_would_not_hold_the_rate():
    """The control: the same looks, each tested at the full alpha, accept too often, and
    the simulation sees it (so the check above can fail)."""

    class Naive(Design):
        def nominal_alpha(self, n: int) -> float:
            return self.alpha if n >= self.min_seeds else 0.0

    naive = Naive(ALPHA, 2, 8, step=1)
    result = simulate(naive, draws=100_000, seed=1)
    assert result["ci_low"] > ALPHA, result


@pytest.mark.parametrize("name", list(DESIGNS))
def test_real_effects_are_found(name):
    design = DESIGNS[name]
    null = simulate(design, effect=0.0, draws=20_000, seed=2)
    strong = simulate(design, effect=3.0, draws=20_000, seed=2)
    weak = simulate(design, effect=1.0, draws=20_000, seed=2)
    assert strong["accept_rate"] > 0.5
    assert strong["accept_rate"] > weak["accept_rate"] > 5 * null["accept_rate"]
    assert design.min_seeds <= strong["mean_seeds"] <= design.max_seeds


def test_futility_and_screening_save_seeds():
    plain, screened = DESIGNS["looks-4-6"], DESIGNS["looks-4-6-screened"]
    null_plain = simulate(plain, draws=20_000, seed=3)
    null_screened = simulate(screened, draws=20_000, seed=3)
    # about half of the equal candidates are behind after one seed and stop there
    assert null_screened["mean_seeds"] < null_plain["mean_seeds"] - 1
    assert null_plain["mean_seeds"] < plain.max_seeds  # futility stops some at the first look
    assert simulate(DESIGNS["fixed-6"], draws=2000)["mean_seeds"] == 6


def sequential(design: Design, cand: np.ndarray, ref: np.ndarray) -> tuple[str, int]:
    """What an evaluation does with one candidate: add seeds per next_seed_count and ask
    compare (paired) after each round, until it decides."""
    n = 0
    while True:
        n = next_seed_count(design, n)
        c = compare(list(cand[:n]), list(ref[:n]), LOWER, design, paired=True)
        if c.decision != "more":
            return c.decision, n
        assert n < design.max_seeds, "compare asked for more seeds after the last look"


@pytest.mark.parametrize("name", list(DESIGNS))
@pytest.mark.parametrize("effect", [0.0, 1.5])
def test_vectorised_simulation_agrees_with_compare(name, effect):
    """simulate() draws its candidates as below; deciding each draw with the scalar
    compare() must give the same acceptances and the same seeds used, draw for draw."""
    design, draws, seed = DESIGNS[name], 300, 11
    rng = np.random.default_rng(seed)
    shared = rng.standard_normal((draws, design.max_seeds))
    cand = shared + rng.standard_normal((draws, design.max_seeds)) - effect
    ref = shared + rng.standard_normal((draws, design.max_seeds))
    decisions = [sequential(design, cand[i], ref[i]) for i in range(draws)]
    accepted = sum(d == "accept" for d, _ in decisions)
    assert {d for d, _ in decisions} <= {"accept", "reject"}
    result = simulate(design, effect=effect, draws=draws, seed=seed)
    assert result["accept_rate"] == accepted / draws
    assert result["mean_seeds"] == pytest.approx(np.mean([n for _, n in decisions]))
    if effect:
        assert accepted > 0


def test_next_seed_count():
    d = DESIGNS["looks-4-6"]
    assert [next_seed_count(d, n) for n in (0, 3, 4, 5, 6)] == [4, 4, 6, 6, 6]
    s = DESIGNS["looks-4-6-screened"]
    assert [next_seed_count(s, n) for n in (0, 1, 4)] == [1, 4, 6]
    assert [next_seed_count(DESIGNS["looks-2-to-8"], n) for n in (0, 2, 7)] == [2, 3, 8]


def test_smallest_detectable_gain():
    d = DESIGNS["looks-4-6"]
    g = smallest_detectable_gain(0.1, d)
    assert g > 0 and smallest_detectable_gain(0.2, d) == pytest.approx(2 * g)
    assert smallest_detectable_gain(0.1, Design(ALPHA, 4, 12, step=2)) < g
    assert smallest_detectable_gain(0.1, d, power=0.95) > g
    # a gain of that size is found about `power` of the time at the last look alone
    fixed = DESIGNS["fixed-6"]
    gain = smallest_detectable_gain(1.0, fixed)
    hit = simulate(fixed, effect=gain, sd_shared=0.0, sd_trial=1 / math.sqrt(2),
                   draws=20_000)["accept_rate"]
    assert hit == pytest.approx(0.8, abs=0.05)


def test_wilson():
    assert wilson(0, 0) == (0.0, 1.0)
    lo, hi = wilson(10, 1000)
    assert lo < 0.01 < hi and hi - lo < 0.015
    assert wilson(0, 100)[0] == 0.0 and wilson(100, 100)[1] == 1.0


# -- one comparison ---------------------------------------------------------------------------


def test_clear_improvement_is_accepted_with_p_and_effect():
    c = compare([1.00, 1.01, 0.99], [1.20, 1.21, 1.19, 1.2, 1.22], LOWER, D35)
    assert c.decision == "accept" and c.test == "welch"
    assert c.p_value < c.level == D35.nominal_alpha(3)
    assert c.effect_size > 1  # signed so that positive means better
    assert c.delta < 0


def test_direction_matters():
    assert compare([1.2, 1.21, 1.19], [1.0, 1.01, 0.99], HIGHER, D35).decision == "accept"
    assert compare([1.2, 1.21, 1.19], [1.0, 1.01, 0.99], LOWER, D35).decision == "reject"


def test_worse_candidate_stops_for_futility():
    c = compare([1.3, 1.31, 1.29], [1.2, 1.21, 1.19], LOWER, D35)
    assert c.decision == "reject" and "futility" in c.reason


def test_ahead_but_unpromising_stops_for_futility():
    ref = [1.0, 1.2, 0.8]
    mine = [0.99, 1.21, 0.78]  # a little ahead on average, p well above FUTILITY_P
    c = compare(mine, ref, LOWER, D35)
    assert c.p_value > FUTILITY_P and c.decision == "reject" and "futility" in c.reason


def test_promising_but_unclear_asks_for_more_until_the_last_look():
    ref = [1.00, 1.02, 0.98]
    mine = [0.99, 1.00, 0.975]
    first = compare(mine, ref, LOWER, D35, paired=True)
    assert D35.nominal_alpha(3) < first.p_value <= FUTILITY_P
    assert first.decision == "more" and "promising" in first.reason
    last = compare([*mine, 1.0, 1.0], [*ref, 1.0, 1.0], LOWER, D35, paired=True)
    assert last.decision in ("accept", "reject") and last.level == D35.nominal_alpha(5)


def test_too_few_seeds_is_more_and_empty_is_failed():
    assert compare([1.0, 1.1], [1.2, 1.3, 1.25], LOWER, D35).decision == "more"
    assert compare([], [1.0, 1.1], LOWER, D35).decision == "failed"


def test_screening_rejects_a_candidate_behind_after_one_seed():
    screened = Design(0.01, 3, 5, screen=True)
    behind = compare([1.1], [1.0], LOWER, screened, paired=True)
    assert behind.decision == "reject" and "screened out" in behind.reason
    assert compare([0.9], [1.0], LOWER, screened, paired=True).decision == "more"
    assert compare([1.1], [1.0], LOWER, D35, paired=True).decision == "more"  # not screening
    assert compare([1.1], [1.0], LOWER, screened).decision == "more"  # unmatched: no screen


@pytest.mark.filterwarnings("ignore:Precision loss occurred")
def test_zero_variance_is_not_called_significant():
    c = compare([1.0, 1.0, 1.0], [1.0, 1.0, 1.0], LOWER, D35)
    assert c.decision == "reject" and c.p_value is None


def test_p_values_match_scipy_by_hand():
    a, b = [1.0, 1.1, 0.9, 1.05], [1.2, 1.3, 1.15]
    ref = stats.ttest_ind(a, b, equal_var=False).pvalue / 2  # a is lower: one-sided half
    assert abs(one_sided_p(a, b, LOWER) - ref) < 1e-12
    c, r = [1.0, 1.1, 0.9], [1.2, 1.25, 1.0]
    assert paired_p(c, r, LOWER) == pytest.approx(stats.ttest_rel(c, r).pvalue / 2)
    assert paired_p(c, r[:2], LOWER) is None
    assert hedges_g(np.array([2.0, 2.1, 1.9]), np.array([1.0, 1.1, 0.9])) > 0


def test_matched_seeds_use_the_paired_test():
    design = Design(0.01, 3, 6)
    # a large shared seed effect hides a small consistent gain from Welch, not from pairing
    ref = {1000: 3.40, 1001: 3.55, 1002: 3.48, 1003: 3.62}
    mine = {s: v - 0.02 for s, v in ref.items()}
    mine[1002] -= 0.005
    paired = compare_seeds(mine, ref, LOWER, design)
    assert paired.test == "paired" and paired.decision == "accept"
    welch = compare(list(mine.values()), list(ref.values()), LOWER, design)
    assert welch.test == "welch" and welch.decision != "accept"
    # unmatched seeds fall back to Welch's test
    assert compare_seeds({1: 3.0, 2: 3.1, 3: 3.05}, ref, LOWER, design).test == "welch"
    # pairs are the seeds both ran when one side has more seeds than the other
    longer = {**ref, 1004: 3.5, 1005: 3.6}
    both = compare_seeds(mine, longer, LOWER, design)
    assert both.test == "paired" and both.reference_mean == pytest.approx(np.mean(
        list(ref.values())))


def test_min_gain_refuses_a_consistent_but_negligible_gain():
    """A deterministic tweak gains a little on every seed: the paired test calls it
    significant; with a minimum gain above it, it is not accepted."""
    from autolab.stats import Design, compare

    metric = MetricSpec(name="bpb", direction=Direction.MINIMIZE)
    ref = [3.50, 3.62, 3.44, 3.57, 3.51, 3.60]
    mine = [r - 0.002 + 1e-5 * i for i, r in enumerate(ref)]
    assert compare(mine, ref, metric, Design(0.01, 6, 6), paired=True).decision == "accept"
    strict = Design(0.01, 6, 6, min_gain=0.005)
    assert compare(mine, ref, metric, strict, paired=True).decision == "reject"
    bigger = [r - 0.05 + 1e-3 * (i % 2) for i, r in enumerate(ref)]
    assert compare(bigger, ref, metric, strict, paired=True).decision == "accept"


def test_simulation_and_resolution_honour_min_gain():
    """The simulation tests the same H0 as `compare` (gain <= min_gain): a candidate whose
    true gain equals min_gain is accepted at about alpha, one with no gain far less often;
    and the smallest detectable gain sits min_gain above the plain design's."""
    from autolab.stats import Design

    plain, strict = Design(0.05, 6, 6), Design(0.05, 6, 6, min_gain=0.5)
    at_boundary = simulate(strict, effect=0.5, draws=40_000, seed=3)
    assert at_boundary["ci_low"] <= 0.05 <= at_boundary["ci_high"] + 0.005
    assert simulate(strict, effect=0.0, draws=40_000, seed=4)["accept_rate"] < 0.01
    assert smallest_detectable_gain(1.0, strict) == pytest.approx(
        smallest_detectable_gain(1.0, plain) + 0.5)
