"""The search policy: which thread, which parent(s), which operator. Derived from the archive.

Exploit each thread's best accepted candidate most of the time, explore under-tried
accepted nodes otherwise, and cross two threads' heads when they have diverged.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from autolab.archive import Archive
from autolab.records import Candidate, Decision, Proposal, Trial
from benchmarks.protocol import MetricSpec

EXPLORE_PROB = 0.25


@dataclass
class Node:
    id: str
    parents: list[str]
    thread: int | None
    mean: float | None = None
    n: int = 0
    accepted: bool = False
    children_tried: int = 0


@dataclass
class SearchState:
    seed_id: str
    champion_id: str
    nodes: dict[str, Node] = field(default_factory=dict)

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


def val_means(trials: list[Trial], metric: MetricSpec) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for t in trials:
        if t.split == "val" and t.status == "ok" and metric.name in t.metrics:
            out.setdefault(t.candidate_id, []).append(t.metrics[metric.name])
    return out


def search_state(archive: Archive, seed_id: str, metric: MetricSpec) -> SearchState:
    """Rebuild the search tree from records alone, so a resumed campaign needs nothing else."""
    proposals = {p.id: p for p in archive.all(Proposal)}
    values = val_means(archive.all(Trial), metric)
    state = SearchState(seed_id=seed_id, champion_id=seed_id)
    for c in archive.all(Candidate):
        thread = proposals[c.proposal_id].thread if c.proposal_id in proposals else None
        vals = values.get(c.id, [])
        state.nodes[c.id] = Node(
            c.id, list(c.parents), thread, sum(vals) / len(vals) if vals else None, len(vals)
        )
    for d in archive.all(Decision):
        if d.candidate_id in state.nodes and d.outcome == "accepted":
            state.nodes[d.candidate_id].accepted = True
        if d.champion and d.candidate_id:
            state.champion_id = d.candidate_id
        for parent in proposals[d.proposal_id].parents if d.proposal_id in proposals else []:
            if parent in state.nodes:
                state.nodes[parent].children_tried += 1
    return state


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
    ops = {op: w for op, w in weights.items() if w > 0 and (op != "crossover" or mates)}
    if not ops:
        ops = {"improve": 1.0}
    operator = rng.choices(list(ops), weights=list(ops.values()))[0]
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
