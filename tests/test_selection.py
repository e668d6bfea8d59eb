import random

import pytest

from autolab.archive import Archive
from autolab.records import AuditVerdict, Candidate, Decision, Evaluation, Proposal, Trial
from autolab.selection import (
    Challenge,
    decide,
    head,
    lowest_common_ancestor,
    plan_next,
    search_state,
)
from benchmarks.protocol import CheckResult, Direction, MetricSpec

METRIC = MetricSpec(name="bpb", direction=Direction.MINIMIZE)
SETUP = "setup-a"  # the TrialSetup key of the trials that count


def add(archive, cid, parents, thread, values, outcome, champion=False, setup=SETUP):
    pid = f"p-{cid}" if parents else None
    if pid:
        archive.put(
            Proposal(
                id=pid,
                campaign="c",
                thread=thread,
                operator="improve",
                parents=parents,
                rationale="",
                edits=[],
                proposer="t",
            )
        )
    archive.put(Candidate(id=cid, benchmark="b", parents=parents, proposal_id=pid, files={}))
    for i, v in enumerate(values):
        archive.put(
            Trial(
                id=f"{cid}-{setup}-{i}",
                candidate_id=cid,
                seed=i,
                split="val",
                setup_key=setup,
                status="ok",
                metrics={"bpb": v},
            )
        )
    if pid:
        archive.put(
            Decision(
                id=f"d-{cid}",
                campaign="c",
                thread=thread,
                proposal_id=pid,
                candidate_id=cid,
                outcome=outcome,
                reason="",
                champion=champion,
            )
        )


def tree(tmp_path):
    a = Archive(tmp_path)
    add(a, "seed", [], None, [2.0, 2.0], None)
    add(a, "a1", ["seed"], 0, [1.9, 1.9], "accepted", champion=True)
    add(a, "a2", ["a1"], 0, [1.8, 1.8], "accepted", champion=True)
    add(a, "bad", ["a1"], 0, [2.5], "rejected")
    add(a, "b1", ["seed"], 1, [1.95], "accepted")
    return search_state(a, "seed", METRIC, SETUP)


def test_state_from_archive(tmp_path):
    s = tree(tmp_path)
    assert s.champion_id == "a2"
    assert head(s, 0, METRIC).id == "a2"
    assert head(s, 1, METRIC).id == "b1"
    assert s.nodes["a1"].children_tried == 2
    assert lowest_common_ancestor(s, "a2", "b1") == "seed"
    assert lowest_common_ancestor(s, "a2", "bad") == "a1"


def test_rejected_nodes_are_never_parents(tmp_path):
    s = tree(tmp_path)
    rng = random.Random(0)
    for _ in range(200):
        plan = plan_next(s, 0, 2, {"tune": 1, "improve": 1, "crossover": 1}, METRIC, rng)
        assert "bad" not in plan.parents
        if plan.operator == "crossover":
            assert set(plan.parents) == {"a2", "b1"} and plan.base == "seed"


def test_mostly_exploits_the_head(tmp_path):
    s = tree(tmp_path)
    rng = random.Random(1)
    parents = [plan_next(s, 0, 2, {"improve": 1}, METRIC, rng).parents[0] for _ in range(400)]
    assert parents.count("a2") > 0.6 * len(parents)
    assert {"seed", "a1"} & set(parents)  # and sometimes explores


def test_crossover_needs_diverged_threads(tmp_path):
    a = Archive(tmp_path)
    add(a, "seed", [], None, [2.0], None)
    s = search_state(a, "seed", METRIC, SETUP)
    plan = plan_next(s, 0, 2, {"crossover": 1.0}, METRIC, random.Random(0))
    assert plan.operator != "crossover"


def test_only_trials_of_the_current_setup_count(tmp_path):
    a = Archive(tmp_path)
    add(a, "seed", [], None, [2.0, 2.0], None)
    add(a, "a1", ["seed"], 0, [1.9, 1.9], "accepted")
    add(a, "b1", ["seed"], 0, [1.95], "accepted")
    # b1 also ran, much better, under another setup (other budget, library, device...)
    for i in range(3):
        a.put(Trial(id=f"b1-old-{i}", candidate_id="b1", seed=10 + i, split="val",
                    setup_key="setup-b", status="ok", metrics={"bpb": 1.0}))  # fmt: skip
    s = search_state(a, "seed", METRIC, SETUP)
    assert (s.nodes["b1"].n, s.nodes["b1"].mean) == (1, pytest.approx(1.95))
    assert head(s, 0, METRIC).id == "a1"
    other = search_state(a, "seed", METRIC, "setup-b")
    assert other.nodes["b1"].mean == pytest.approx(1.0) and other.nodes["a1"].n == 0
    assert head(other, 0, METRIC).id == "b1"


# -- decide: the outcome of an evaluated candidate ----------------------------------------------


def ev(decision="accept", p=0.001, reference="parent", reason="paired: p small"):
    return Evaluation(id=f"ev-{reference}-{decision}", candidate_id="c", reference_id=reference,
                      metric="bpb", values=[1.0, 1.1], reference_values=[1.2, 1.3], p_value=p,
                      alpha=0.01, decision=decision, reason=reason)  # fmt: skip


def audit(*failed_levels, levels=(1,)):
    checks = [CheckResult(name=f"check{lv}", level=lv, passed=lv not in failed_levels)
              for lv in sorted(set(levels) | set(failed_levels))]  # fmt: skip
    return AuditVerdict(id="au", candidate_id="c", level=max(c.level for c in checks),
                        checks=checks, passed=not failed_levels,
                        caught_at=min(failed_levels) if failed_levels else None)  # fmt: skip


def test_decide_needs_the_gain_and_the_audit():
    assert decide(ev("reject", 0.4, reason="paired: futility"), audit(), None) == (
        "rejected", "paired: futility", False)
    assert decide(ev("failed", None, reason="seed 3: crash"), audit(), None)[0] == "rejected"
    outcome, reason, crowned = decide(ev(), audit(1), None)
    assert (outcome, crowned) == ("rejected", False)
    assert reason == "audit level 1 failed: check1"
    assert decide(ev(), audit(), None) == ("accepted", "paired: p small", False)


def test_decide_crowns_only_after_beating_the_champion_and_replicating():
    vs = ev(p=0.2, reference="champion")
    outcome, reason, crowned = decide(ev(), audit(), Challenge(vs_champion=vs))
    assert (outcome, crowned) == ("accepted", False)
    assert "vs champion champion: p=0.2" in reason and "not better than the champion" in reason
    won = ev(p=0.001, reference="champion")
    replicated = ev(p=0.3, reference="champion")
    failed = Challenge(vs_champion=won, replication=replicated, verdict=audit(2, levels=(1, 2)))
    outcome, reason, crowned = decide(ev(), audit(), failed)
    assert (outcome, crowned) == ("accepted", False)
    assert "not crowned: audit level 2 check2" in reason
    passed = Challenge(vs_champion=won, replication=ev(reference="champion"),
                       verdict=audit(levels=(1, 2)))
    outcome, reason, crowned = decide(ev(), audit(), passed)
    assert (outcome, crowned) == ("accepted", True) and reason.endswith("replicated at level 2")


def with_failures(tmp_path):
    """Thread 0: a crash under a2 (debuggable), a hack caught at runtime (not debuggable)."""
    tree(tmp_path)
    a = Archive(tmp_path)
    add(a, "crash", ["a2"], 0, [], "failed")
    add(a, "hack", ["a2"], 0, [], "failed")
    caught = AuditVerdict(id="v-hack", candidate_id="hack", level=1, caught_at=1, passed=False,
                          checks=[CheckResult(name="integrity", passed=False)])
    a.put(caught)
    d = a.get(Decision, "d-hack").model_copy(update={"audit_id": caught.id})
    a.put(d)
    return a


def test_debug_takes_up_a_recent_fixable_failure_of_the_thread(tmp_path):
    a = with_failures(tmp_path)
    s = search_state(a, "seed", METRIC, SETUP)
    assert s.failed == ["crash"] and not s.nodes["hack"].debuggable
    weights = {"improve": 1.0, "debug": 1.0}
    plans = {plan_next(s, 0, 2, weights, METRIC, random.Random(i)) for i in range(40)}
    debug = [p for p in plans if p.operator == "debug"]
    assert debug and {p.parents for p in debug} == {("a2", "crash")}  # last good, then failed
    # thread 1 has no failure: debug is never picked there
    assert all(plan_next(s, 1, 2, weights, METRIC, random.Random(i)).operator == "improve"
               for i in range(20))
    # once a fix was tried, the failure is taken up no more
    add(a, "fix", ["a2", "crash"], 0, [1.7, 1.7], "rejected")
    s = search_state(a, "seed", METRIC, SETUP)
    assert all(plan_next(s, 0, 2, weights, METRIC, random.Random(i)).operator == "improve"
               for i in range(20))


def test_draft_starts_from_the_seed(tmp_path):
    s = tree(tmp_path)
    plan = plan_next(s, 0, 2, {"draft": 1.0}, METRIC, random.Random(0))
    assert plan.operator == "draft" and plan.parents == ("seed",)


def test_operators_a_proposer_lacks_change_no_draw(tmp_path):
    """The offline proposer's odds (no draft, no debug) draw exactly as before, failures or
    not: the new operators leave its search untouched."""
    clean = tree(tmp_path / "clean")
    broken = search_state(with_failures(tmp_path / "broken"), "seed", METRIC, SETUP)
    offline = {"tune": 0.3, "improve": 0.55, "crossover": 0.15}
    for i in range(30):
        a = plan_next(clean, i % 2, 2, offline, METRIC, random.Random(i))
        b = plan_next(broken, i % 2, 2, offline, METRIC, random.Random(i))
        assert a == b
