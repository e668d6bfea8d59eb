"""The search policy: which thread, which parent(s), which operator. Derived from the archive.

Exploit each thread's best accepted candidate most of the time, explore under-tried
accepted nodes otherwise, and cross two threads' heads when they have diverged. A proposer
that writes code of its own may also draft afresh from the seed and debug a recent failure
of its thread (operators a proposer does not have are never weighed).
"""

from __future__ import annotations

import bisect
import random
import threading
import weakref
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from autolab.archive import Archive
from autolab.db.cache import order_key
from autolab.records import AuditVerdict, Candidate, Decision, Evaluation, Proposal, Trial
from benchmarks.protocol import MetricSpec

EXPLORE_PROB = 0.25
DEBUG_WINDOW = 3  # a failure among its thread's last few is still worth debugging
MAX_DEBUG_DEPTH = 2  # a fix of a fix may be debugged once more, not again


@dataclass(frozen=True)
class Node:
    """A candidate in the search tree. Never changed once made: a state's nodes are shared
    with the states made after it (`Tree`)."""

    id: str
    parents: list[str]
    thread: int | None
    mean: float | None = None
    n: int = 0
    accepted: bool = False
    children_tried: int = 0
    operator: str = "seed"
    debuggable: bool = False  # failed on its merits in a way a fix may address


@dataclass(frozen=True)
class TreeIndex:
    """What a `Tree` hands out with a state, so that reads need not pass over every node:
    the accepted nodes as (archive order, id), in order, of each thread and of all; the
    seed's; and the ids of the nodes the tree made, in the order it made them (a list it
    only adds to; the state's are those before `made_upto`)."""

    accepted: dict[int | None, list[tuple[tuple, str]]]
    accepted_all: list[tuple[tuple, str]]
    seed: tuple[tuple, str] | None
    made: list[str]
    made_upto: int


@dataclass
class SearchState:
    seed_id: str
    champion_id: str
    nodes: dict[str, Node] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)  # debuggable failures, oldest first
    index: TreeIndex | None = field(default=None, repr=False, compare=False)

    def accepted_in(self, thread: int) -> list[Node]:
        """The seed and the thread's accepted nodes, in the order of `nodes`."""
        if self.index is None:
            return [
                n
                for n in self.nodes.values()
                if n.id == self.seed_id or (n.accepted and n.thread == thread)
            ]
        return self._with_seed(self.index.accepted.get(thread, []))

    def scored(self) -> list[Node]:
        """The seed and every accepted node, those with a mean, in the order of `nodes`."""
        if self.index is None:
            return [n for n in self.nodes.values()
                    if n.mean is not None and (n.accepted or n.id == self.seed_id)]
        return [n for n in self._with_seed(self.index.accepted_all) if n.mean is not None]

    def _with_seed(self, entries: list[tuple[tuple, str]]) -> list[Node]:
        if (seed := self.index.seed) is not None:
            at = bisect.bisect_left(entries, seed)
            if at == len(entries) or entries[at] != seed:
                entries = [*entries[:at], seed, *entries[at:]]
        return [self.nodes[cid] for _, cid in entries]

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


def val_means(trials: Iterable[Trial], metric: MetricSpec,
              setup_key: str) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for t in trials:
        ok = t.status == "ok" and metric.name in t.metrics
        if ok and t.split == "val" and t.setup_key == setup_key:
            out.setdefault(t.candidate_id, []).append(t.metrics[metric.name])
    return out


def search_state(
    archive: Archive, seed_id: str, metric: MetricSpec, setup_key: str
) -> SearchState:
    """The search tree from records alone, so a resumed campaign needs nothing else. Kept
    for each open archive and brought up to date from the records added since the last
    call: the same state as one built from every record (`Tree`)."""
    trees = _TREES.setdefault(archive, {})
    key = (seed_id, metric.name, setup_key)
    tree = trees.get(key) or trees.setdefault(key, Tree(seed_id, metric, setup_key))
    return tree.update(archive)


_TREES: weakref.WeakKeyDictionary[Archive, dict[tuple, Tree]] = weakref.WeakKeyDictionary()


class Tree:
    """One campaign's search state, kept up to date. Each update reads the records added
    since the last one and makes again only the nodes they touch, from indexes of what
    each node is derived from:

    - a node's thread and operator come from its proposal, its mean from its val trials
      under the setup, `accepted` and `debuggable` from the decisions on it, and
      `children_tried` from the decisions on proposals that name it as a parent;
    - `failed` lists, in decision order, the failed decisions whose candidate is a node and
      whose failure may be fixed; the champion is the candidate crowned last.

    Records may come in any order (a decision before its proposal, a candidate before
    one made earlier); a record replaced or removed starts the state over from every
    record. Nodes are replaced, never changed, so a state handed out stays as it was: its
    nodes are shared with the states made after it."""

    KINDS = (Proposal, AuditVerdict, Candidate, Decision)

    def __init__(self, seed_id: str, metric: MetricSpec, setup_key: str):
        self.seed_id, self.metric, self.setup_key = seed_id, metric, setup_key
        self.lock = threading.Lock()
        self.marks: dict[type, tuple[int, int]] = {}
        self.trials_mark: tuple[int, int] | None = None
        self.values: dict[str, list[float]] = {}  # candidate -> its val trials' values
        self.clear()

    def clear(self) -> None:
        self.proposals: dict[str, Proposal] = {}
        self.verdicts: dict[str, AuditVerdict] = {}
        self.order: list[tuple[tuple, str]] = []  # (archive order, id) of every candidate
        self.entry: dict[str, tuple[tuple, str]] = {}  # candidate -> its place in `order`
        self.parents: dict[str, list[str]] = {}
        self.made_by: dict[str, str] = {}  # candidate -> proposal id
        self.made: dict[str, list[str]] = {}  # proposal id -> its candidates
        self.decided: dict[str, list[Decision]] = {}  # candidate -> the decisions on it
        self.waiting: dict[str, list[Decision]] = {}  # proposal id not seen yet -> decisions
        self.audited: dict[str, list[str]] = {}  # audit id -> candidates decided with it
        self.tried: Counter[str] = Counter()
        self.crowned: list[tuple[tuple, str]] = []  # (decision's archive order, candidate)
        self.failures: list[tuple[tuple, Decision]] = []  # failed decisions, in order
        self.nodes: dict[str, Node] = {}
        self.accepted: dict[int | None, list[tuple[tuple, str]]] = {}  # thread -> entries
        self.accepted_all: list[tuple[tuple, str]] = []
        self.log: list[str] = []  # ids of the nodes made, in order (a new list: start over)
        self.failed: list[str] = []

    def update(self, archive: Archive) -> SearchState:
        with self.lock:
            changes = archive.since({k: self.marks.get(k) for k in self.KINDS})
            if any(c.whole for c in changes.values()):
                self.clear()
                changes |= archive.since({k: None for k, c in changes.items() if not c.whole})
            self.marks = {k: c.mark for k, c in changes.items()}
            dirty, refresh = self.read(*(changes[k].records for k in self.KINDS))
            groups, whole, self.trials_mark = archive.trials_since(self.trials_mark)
            if whole:
                dirty.update(self.values)
                self.values = {}
            for cid, trials in groups.items():
                vals = val_means(trials, self.metric, self.setup_key).get(cid)
                if vals is None:
                    self.values.pop(cid, None)
                else:
                    self.values[cid] = vals
                dirty.add(cid)
            for cid in dirty:
                if cid in self.entry:
                    self.renew(cid)
            if refresh:
                self.failed = [d.candidate_id for _, d in self.failures
                               if d.candidate_id in self.nodes and _fixable(self.verdicts, d)]
            index = TreeIndex(dict(self.accepted), self.accepted_all, self.entry.get(self.seed_id),
                              self.log, len(self.log))
            return SearchState(
                seed_id=self.seed_id,
                champion_id=self.crowned[-1][1] if self.crowned else self.seed_id,
                nodes=dict(self.nodes), failed=list(self.failed), index=index)

    def read(self, proposals: list[Proposal], verdicts: list[AuditVerdict],
             candidates: list[Candidate], decisions: list[Decision]) -> tuple[set[str], bool]:
        """Index new records: the candidates whose node is to be made again, and whether
        `failed` is to be made again (else the new failures are added at its end)."""
        dirty: set[str] = set()
        refresh = False
        for p in proposals:
            self.proposals[p.id] = p
            dirty.update(self.made.get(p.id, ()))
            for _ in self.waiting.pop(p.id, ()):
                dirty.update(self.try_parents(p))
        for v in verdicts:
            self.verdicts[v.id] = v
            if v.id in self.audited:
                dirty.update(self.audited[v.id])
                refresh = True
        for c in candidates:
            entry = (order_key(c), c.id)
            at = bisect.bisect(self.order, entry)
            self.order.insert(at, entry)
            self.entry[c.id], self.parents[c.id] = entry, list(c.parents)
            if c.proposal_id:
                self.made_by[c.id] = c.proposal_id
                self.made.setdefault(c.proposal_id, []).append(c.id)
            refresh = refresh or c.id in self.decided
            self.renew(c.id)  # its node goes last: those it comes before go after it
            for _, later in self.order[at + 1:]:
                self.nodes[later] = self.nodes.pop(later)
        for d in decisions:
            cid, key = d.candidate_id, order_key(d)
            if d.champion and cid:
                bisect.insort(self.crowned, (key, cid))
            if cid is not None:
                self.decided.setdefault(cid, []).append(d)
                dirty.add(cid)
                if d.audit_id is not None:
                    self.audited.setdefault(d.audit_id, []).append(cid)
            if d.outcome == "failed":
                at = bisect.bisect(self.failures, (key,))
                self.failures.insert(at, (key, d))
                if at != len(self.failures) - 1:
                    refresh = True
                elif not refresh and cid in self.nodes and _fixable(self.verdicts, d):
                    self.failed.append(cid)
            if (p := self.proposals.get(d.proposal_id)) is not None:
                dirty.update(self.try_parents(p))
            else:
                self.waiting.setdefault(d.proposal_id, []).append(d)
        return dirty, refresh

    def try_parents(self, proposal: Proposal) -> list[str]:
        """One more decision on a proposal: a child tried on each of its parents."""
        self.tried.update(proposal.parents)
        return proposal.parents

    def renew(self, cid: str) -> None:
        """Make the candidate's node again from the indexes; replace it if it changed."""
        made_by = self.proposals.get(self.made_by.get(cid, ""))
        vals = self.values.get(cid, [])
        decided = self.decided.get(cid, ())
        node = Node(
            cid, list(self.parents[cid]), made_by.thread if made_by else None,
            sum(vals) / len(vals) if vals else None, len(vals),
            accepted=any(d.outcome == "accepted" for d in decided),
            children_tried=self.tried[cid],
            operator=made_by.operator if made_by else "seed",
            debuggable=any(d.outcome == "failed" and _fixable(self.verdicts, d)
                           for d in decided),
        )  # fmt: skip
        old = self.nodes.get(cid)
        if old == node:
            return
        self.nodes[cid] = node
        self.log.append(cid)
        was = (old.accepted, old.thread) if old is not None else (False, None)
        if was != (node.accepted, node.thread):
            self.index(cid, was, node)

    def index(self, cid: str, was: tuple[bool, int | None], node: Node) -> None:
        """The accepted lists with the node as it is now. A list handed out is never
        changed: it is replaced."""
        entry = self.entry[cid]
        if was[0]:
            self.accepted[was[1]] = _without(self.accepted[was[1]], entry)
            self.accepted_all = _without(self.accepted_all, entry)
        if node.accepted:
            self.accepted[node.thread] = _with(self.accepted.get(node.thread, []), entry)
            self.accepted_all = _with(self.accepted_all, entry)


def _with(entries: list, entry: tuple) -> list:
    at = bisect.bisect(entries, entry)
    return [*entries[:at], entry, *entries[at:]]


def _without(entries: list, entry: tuple) -> list:
    at = bisect.bisect_left(entries, entry)
    return [*entries[:at], *entries[at + 1:]] if entries[at:at + 1] == [entry] else entries


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
    above = state.ancestors(mine.id)
    mates = [
        o for o in others
        if o.id != mine.id and o.id not in above and mine.id not in state.ancestors(o.id)
    ]  # fmt: skip
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
