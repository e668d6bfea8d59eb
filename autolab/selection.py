"""The search policy: which thread, which parent(s), which operator. Derived from the archive.

Exploit each thread's best accepted candidate most of the time, explore under-tried
accepted nodes otherwise, and cross two threads' heads when they have diverged. A proposer
that writes code of its own may also draft afresh from the seed and debug a recent failure
of its thread (operators a proposer does not have are never weighed).
"""

from __future__ import annotations

import random
import weakref
from dataclasses import dataclass, field

from autolab import history
from autolab.archive import Archive
from autolab.records import AuditVerdict, Candidate, Decision, Evaluation, Proposal, Trial
from benchmarks.protocol import MetricSpec

EXPLORE_PROB = 0.25
DEBUG_WINDOW = 3  # a failure among its thread's last few is still worth debugging
MAX_DEBUG_DEPTH = 2  # a fix of a fix may be debugged once more, not again


@dataclass
class Node:
    id: str
    parents: list[str]
    thread: int | None
    mean: float | None = None
    n: int = 0
    accepted: bool = False
    children_tried: int = 0
    operator: str = "seed"
    debuggable: bool = False  # failed on its merits in a way a fix may address


@dataclass
class SearchState:
    seed_id: str
    champion_id: str
    nodes: dict[str, Node] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)  # debuggable failures, oldest first

    def accepted_in(self, thread: int) -> list[Node]:
        return [
            n
            for n in self.nodes.values()
            if n.id == self.seed_id or (n.accepted and n.thread == thread)
        ]

    def ancestors(self, node_id: str) -> set[str]:
        seen, stack = set(), [node_id]
        while stack:
            cur = stack.pop()
            if cur in seen or cur not in self.nodes:
                continue
            seen.add(cur)
            stack.extend(self.nodes[cur].parents)
        return seen


@dataclass(frozen=True)
class Plan:
    thread: int
    operator: str
    parents: tuple[str, ...]
    base: str | None = None


def val_means(trials: list[Trial], metric: MetricSpec, setup_key: str) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for t in trials:
        ok = t.status == "ok" and metric.name in t.metrics
        if ok and t.split == "val" and t.setup_key == setup_key:
            out.setdefault(t.candidate_id, []).append(t.metrics[metric.name])
    return out


_VALUES: weakref.WeakKeyDictionary[Archive, dict] = weakref.WeakKeyDictionary()


def candidate_values(archive: Archive, metric: MetricSpec, setup_key: str) -> dict[str, list]:
    """val_means over the archive's trials, recomputed only for candidates whose trials
    changed since the last call on this archive."""
    memo = _VALUES.setdefault(archive, {}).setdefault((metric.name, setup_key), {})
    out = {}
    for cid, trials in archive.trials_by_candidate().items():
        hit = memo.get(cid)
        if hit is None or hit[0] is not trials:
            hit = memo[cid] = (trials, val_means(trials, metric, setup_key).get(cid))
        if hit[1] is not None:
            out[cid] = hit[1]
    return out


def search_state(
    archive: Archive, seed_id: str, metric: MetricSpec, setup_key: str
) -> SearchState:
    """Rebuild the search tree from records alone, so a resumed campaign needs nothing else."""
    proposals = {p.id: p for p in archive.all(Proposal)}
    values = candidate_values(archive, metric, setup_key)
    decisions = archive.all(Decision)
    verdicts = {v.id: v for v in archive.all(AuditVerdict)}
    state = SearchState(seed_id=seed_id, champion_id=history.champion_id(decisions, seed_id))
    for c in archive.all(Candidate):
        made_by = proposals.get(c.proposal_id or "")
        vals = values.get(c.id, [])
        state.nodes[c.id] = Node(
            c.id, list(c.parents), made_by.thread if made_by else None,
            sum(vals) / len(vals) if vals else None, len(vals),
            operator=made_by.operator if made_by else "seed",
        )
    for d in decisions:
        if d.candidate_id in state.nodes and d.outcome == "accepted":
            state.nodes[d.candidate_id].accepted = True
        if d.candidate_id in state.nodes and d.outcome == "failed" and _fixable(verdicts, d):
            state.nodes[d.candidate_id].debuggable = True
            state.failed.append(d.candidate_id)
        for parent in proposals[d.proposal_id].parents if d.proposal_id in proposals else []:
            if parent in state.nodes:
                state.nodes[parent].children_tried += 1
    return state


def _fixable(verdicts: dict[str, AuditVerdict], decision: Decision) -> bool:
    """A crash, a timeout or a build error may be fixed; a candidate caught by the runtime
    audit (integrity, budget) is a hack, not a bug."""
    if decision.audit_id is None:
        return True
    verdict = verdicts.get(decision.audit_id)
    return verdict is None or verdict.caught_at == 0


def debug_depth(state: SearchState, node_id: str) -> int:
    depth, node = 0, state.nodes.get(node_id)
    while node is not None and node.operator == "debug" and len(node.parents) > 1:
        depth += 1
        node = state.nodes.get(node.parents[1])
    return depth


def debug_target(state: SearchState, thread: int) -> str | None:
    """The newest of the thread's recent debuggable failures not yet taken up."""
    mine = [n for n in state.failed if state.nodes[n].thread == thread][-DEBUG_WINDOW:]
    for node_id in reversed(mine):
        node = state.nodes[node_id]
        if (node.children_tried == 0 and node.parents and node.parents[0] in state.nodes
                and debug_depth(state, node_id) < MAX_DEBUG_DEPTH):
            return node_id
    return None


def head(state: SearchState, thread: int, metric: MetricSpec) -> Node:
    """The thread's best accepted node (the seed until something is accepted)."""
    best = state.nodes[state.seed_id]
    for node in state.accepted_in(thread):
        if node.mean is not None and (best.mean is None or metric.better(node.mean, best.mean)):
            best = node
    return best


def lowest_common_ancestor(state: SearchState, a: str, b: str) -> str:
    common = state.ancestors(a) & state.ancestors(b)
    # the common ancestor with the most ancestors of its own is the deepest one
    return max(common, key=lambda n: (len(state.ancestors(n)), n)) if common else state.seed_id


def plan_next(
    state: SearchState,
    thread: int,
    threads: int,
    weights: dict[str, float],
    metric: MetricSpec,
    rng: random.Random,
) -> Plan:
    mine = head(state, thread, metric)
    others = [head(state, t, metric) for t in range(threads) if t != thread]
    mates = [
        o
        for o in others
        if o.id != mine.id
        and o.id not in state.ancestors(mine.id)
        and mine.id not in state.ancestors(o.id)
    ]
    broken = debug_target(state, thread)
    ops = {
        op: w for op, w in weights.items()
        if w > 0 and (op != "crossover" or mates) and (op != "debug" or broken)
    }  # fmt: skip
    if not ops:
        ops = {"improve": 1.0}
    operator = rng.choices(list(ops), weights=list(ops.values()))[0]
    if operator == "debug" and broken is not None:  # fixed against its last good ancestor
        return Plan(thread, "debug", (state.nodes[broken].parents[0], broken))
    if operator == "draft":
        return Plan(thread, "draft", (state.seed_id,))
    if operator == "crossover":
        mate = rng.choice(mates)
        return Plan(
            thread, "crossover", (mine.id, mate.id), lowest_common_ancestor(state, mine.id, mate.id)
        )
    parent = mine
    pool = [n for n in state.accepted_in(thread) if n.id != mine.id]
    if pool and rng.random() < EXPLORE_PROB:
        fewest = min(n.children_tried for n in pool)
        parent = rng.choice([n for n in pool if n.children_tried == fewest])
    return Plan(thread, operator, (parent.id,))


# -- what select decides ------------------------------------------------------------------


@dataclass(frozen=True)
class Challenge:
    """An accepted candidate against the champion: the val comparison and, if it won that,
    the level-2 replication and the audit verdict including it."""

    vs_champion: Evaluation
    replication: Evaluation | None = None
    verdict: AuditVerdict | None = None


def decide(
    evaluation: Evaluation, verdict: AuditVerdict, challenge: Challenge | None
) -> tuple[str, str, bool]:
    """(outcome, reason, crowned): accepted needs the gain over the parent and audit
    level 1; the crown also needs a gain over the champion and the level-2 replication."""
    if evaluation.decision != "accept":
        return "rejected", evaluation.reason, False
    if not verdict.passed:
        failed = [c.name for c in verdict.checks if not c.passed]
        return "rejected", f"audit level {verdict.caught_at} failed: {', '.join(failed)}", False
    if challenge is None:
        return "accepted", evaluation.reason, False
    vs = challenge.vs_champion
    p = "undefined" if vs.p_value is None else f"{vs.p_value:.2g}"
    why = f"{evaluation.reason}; vs champion {vs.reference_id[:8]}: p={p}"
    if challenge.verdict is None:
        return "accepted", why + " (not better than the champion)", False
    if not challenge.verdict.passed:
        bad = next(c for c in challenge.verdict.checks if not c.passed)
        return "accepted", f"{why}; not crowned: audit level 2 {bad.name}: {bad.evidence}", False
    return "accepted", f"{why}; replicated at level 2", True
