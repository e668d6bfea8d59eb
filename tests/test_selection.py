import random

from autolab.archive import Archive
from autolab.records import Candidate, Decision, Proposal, Trial
from autolab.selection import head, lowest_common_ancestor, plan_next, search_state
from benchmarks.protocol import Direction, MetricSpec

METRIC = MetricSpec(name="bpb", direction=Direction.MINIMIZE)


def add(archive, cid, parents, thread, values, outcome, champion=False):
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
                id=f"{cid}-{i}",
                candidate_id=cid,
                seed=i,
                split="val",
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
    return search_state(a, "seed", METRIC)


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
    s = search_state(a, "seed", METRIC)
    plan = plan_next(s, 0, 2, {"crossover": 1.0}, METRIC, random.Random(0))
    assert plan.operator != "crossover"
