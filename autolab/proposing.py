"""The propose step's logic: choose thread, parent(s) and operator, build the request from
the archive, ask the proposer, record the proposal, its cost and its transcript.

Also the reasons to stop proposing that belong to the proposer: a spending cap reached, a
proposer that keeps failing.
"""

from __future__ import annotations

import random
import statistics
import threading
import time
import weakref
from collections.abc import Sequence

from autolab.archive import Archive
from autolab.family import read_related
from autolab.history import lineage
from autolab.lab import Lab
from autolab.proposers.base import (
    AttemptFailed,
    CandidateView,
    Draft,
    FailureNote,
    HistoryItem,
    ProposalError,
    ProposalRequest,
    ProposerUnavailable,
)
from autolab.proposers.knobs import KnobValue, read_knobs
from autolab.proposers.memory import DIFF_CHARS
from autolab.proposers.transcript import render
from autolab.records import (
    Candidate,
    Cost,
    Decision,
    EditStep,
    Evaluation,
    Proposal,
    Spend,
    Transcript,
    Trial,
    content_key,
)
from autolab.selection import Plan, SearchState, plan_next, search_state
from autolab.spend import attempts_of, cap_reached, total, usd_left
from benchmarks.protocol import Knob

BEST_SHOWN = 3


def proposal_id(campaign: str, index: int) -> str:
    return content_key("proposal", campaign, index)


# -- the request ----------------------------------------------------------------------------


class Memory:
    """The archive as a proposal reads it: candidates, proposals and evaluations by id, and
    the decisions in archive order; every view and history item comes from here.

    One per open archive, shared, and brought up to date by each `load` from the records
    added since the last one. Records are only added (a record replaced or removed, or a
    decision added before the newest one, starts it over in new containers), so what a
    Memory held it still holds, with perhaps newer records. `log` lists the records in the
    order they came in, for what is derived from them (`Recall`)."""

    KINDS = (Candidate, Proposal, Evaluation, Decision)

    def __init__(self, archive: Archive) -> None:
        # weakly: the memory is kept by its archive (_MEMORIES), not the other way round,
        # so an archive nothing else uses is freed with what was kept for it
        self._archive = weakref.ref(archive)
        self.lock = threading.Lock()
        self.marks: dict[type, tuple[int, int]] = {}
        self.candidates: dict[str, Candidate] = {}
        self.proposals: dict[str, Proposal] = {}
        self.evaluations: dict[str, Evaluation] = {}
        self.decisions: list[Decision] = []
        self.log: list[Candidate | Proposal | Evaluation | Decision] = []

    @property
    def archive(self) -> Archive:
        archive = self._archive()
        if archive is None:
            raise RuntimeError("the archive of this memory was closed and freed")
        return archive

    @classmethod
    def load(cls, archive: Archive) -> Memory:
        memory = _MEMORIES.get(archive)
        if memory is None:
            memory = _MEMORIES.setdefault(archive, cls(archive))
        with memory.lock:
            memory.update()
        return memory

    def update(self) -> None:
        changes = self.archive.since({k: self.marks.get(k) for k in self.KINDS})
        if any(c.whole for c in changes.values()) or not changes[Decision].at_end:
            changes |= self.archive.since({k: None for k, c in changes.items() if not c.whole})
            # new containers, filled before they replace the old: a reader sees either whole
            held = ({}, {}, {}, [], [])
        else:
            held = (self.candidates, self.proposals, self.evaluations, self.decisions, self.log)
        candidates, proposals, evaluations, decisions, log = held
        for kind, by_id in ((Candidate, candidates), (Proposal, proposals),
                            (Evaluation, evaluations)):
            by_id.update((r.id, r) for r in changes[kind].records)
        decisions += changes[Decision].records
        for c in changes.values():
            log += c.records
        self.marks = {k: c.mark for k, c in changes.items()}
        self.candidates, self.proposals, self.evaluations, self.decisions, self.log = held

    def trials_of(self, candidate_id: str) -> list[Trial]:
        """Read only for what needs them (a failure's log, a profile)."""
        return self.archive.trials_of(candidate_id)


_MEMORIES: weakref.WeakKeyDictionary[Archive, Memory] = weakref.WeakKeyDictionary()


def view(lab: Lab, state: SearchState, memory: Memory, candidate_id: str) -> CandidateView:
    node = state.nodes[candidate_id]
    chain = lineage(memory.candidates, candidate_id)
    steps: list[EditStep] = []
    for cid in chain:
        prop = memory.proposals.get(memory.candidates[cid].proposal_id or "")
        steps += prop.steps if prop else []
    return CandidateView(id=candidate_id, files=lab.archive.read_files(candidate_id),
                         mean=node.mean, n_trials=node.n, lineage_steps=steps, lineage_ids=chain)


_KNOBS: weakref.WeakKeyDictionary[Archive, dict[tuple[Knob, ...], dict[str, dict]]] = \
    weakref.WeakKeyDictionary()


class KnobValues:
    """Candidates' knob values, each read once per open archive: a candidate's files never
    change (its id is their hash)."""

    def __init__(self, archive: Archive, knobs: Sequence[Knob]):
        self.archive, self.knobs = archive, knobs
        self.memo = _KNOBS.setdefault(archive, {}).setdefault(tuple(knobs), {})

    def prefetch(self, candidate_ids: list[str]) -> None:
        """Read, in one pass, those not read yet."""
        missing = list(dict.fromkeys(c for c in candidate_ids if c not in self.memo))
        for cid, files in self.archive.files_of(missing).items():
            self.memo[cid] = read_knobs(files, self.knobs)

    def __call__(self, candidate_id: str) -> dict[str, KnobValue]:
        if (found := self.memo.get(candidate_id)) is None:
            files = self.archive.read_files(candidate_id)
            found = read_knobs(files, self.knobs) if files else {}
            if files:
                self.memo[candidate_id] = found
        return found


def history(lab: Lab, state: SearchState, memory: Memory) -> list[HistoryItem]:
    """Every past proposal with its fate, so the proposer learns from failures too. Kept
    from one call to the next (`Recall`): an item is made again only when what it shows
    changed (a new record, a mean with more seeds)."""
    recall = _RECALLS.get(lab.archive)
    if recall is None:
        recall = _RECALLS.setdefault(lab.archive, Recall())
    with recall.lock:
        return recall.update(lab, state, memory) + pending(memory, state.seed_id)


def pending(memory: Memory, seed_id: str) -> list[HistoryItem]:
    """The proposals not yet decided (iterations in flight when the proposer runs ahead):
    shown so that the proposer does not propose the same change twice at once."""
    decided = {d.proposal_id for d in memory.decisions}
    return [
        HistoryItem(candidate_id=None, parent_id=p.parents[0] if p.parents else seed_id,
                    operator=p.operator, steps=p.steps, outcome="pending",
                    reason="in flight: its trials are queued or running",
                    proposal_id=p.id, thread=p.thread, rationale=p.rationale)
        for p in sorted(list(memory.proposals.values()), key=lambda p: (p.created_at, p.id))
        if p.id not in decided and p.edits
    ]  # fmt: skip


class Recall:
    """One campaign's history items, one per decision whose proposal is known, in decision
    order, kept from one call to the next. The items made again are those of new
    decisions, and of decisions whose proposal, evaluation or candidate came in since the
    last call (the memory's log) or whose node or parent's node was made again (the
    tree's log); a new memory or tree log (either started over), or another seed, makes
    every item again (those that show the same thing are reused)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.memo: dict[str, tuple] = {}  # decision id -> (what its item shows, the item)
        self.seen: tuple = (None, 0, None, 0, None)  # memory log, read up to; tree log, ..; seed
        self.items: list[HistoryItem | None] = []  # by decision; None: its proposal unknown
        self.gaps = 0
        self.of_proposal: dict[str, set[int]] = {}  # the places of the decisions on each
        self.of_evaluation: dict[str, set[int]] = {}
        self.of_candidate: dict[str, set[int]] = {}
        self.of_parent: dict[str, set[int]] = {}

    def update(self, lab: Lab, state: SearchState, memory: Memory) -> list[HistoryItem]:
        with memory.lock:  # a log and decisions that go together
            log, decisions = memory.log, memory.decisions
            logged, decided = len(log), len(decisions)
        made, made_upto = (state.index.made, state.index.made_upto) if state.index else (None, 0)
        todo = self.changed(log, logged, made, made_upto, state.seed_id)
        if todo is None:
            self.items, self.gaps, todo = [], 0, set()
            self.of_proposal, self.of_evaluation, self.of_candidate, self.of_parent = \
                {}, {}, {}, {}
        for at in range(len(self.items), decided):
            d = decisions[at]
            self.items.append(None)
            self.gaps += 1
            self.of_proposal.setdefault(d.proposal_id, set()).add(at)
            self.of_evaluation.setdefault(d.evaluation_id or "", set()).add(at)
            self.of_candidate.setdefault(d.candidate_id or "", set()).add(at)
            todo.add(at)
        todo = sorted(todo)
        knobs_of = KnobValues(lab.archive, lab.bench.search_space().knobs)
        knobs_of.prefetch([decisions[at].candidate_id for at in todo
                           if decisions[at].candidate_id in state.nodes])
        for at in todo:
            item = self.item(decisions[at], state, memory, knobs_of)
            self.gaps += (item is None) - (self.items[at] is None)
            self.items[at] = item
            p = memory.proposals.get(decisions[at].proposal_id)
            if p is not None and p.parents:
                self.of_parent.setdefault(p.parents[0], set()).add(at)
        self.seen = (log, logged, made, made_upto, state.seed_id)
        if self.gaps:
            return [item for item in self.items if item is not None]
        return list(self.items)

    def changed(self, log: list, logged: int, made: list[str] | None, made_upto: int,
                seed_id: str) -> set[int] | None:
        """The places of the decisions whose item may show something else now; None when
        every item is to be made again."""
        log_before, logged_before, made_before, made_upto_before, seed_before = self.seen
        if (log is not log_before or logged < logged_before or made is None
                or made is not made_before or made_upto < made_upto_before
                or seed_id != seed_before):
            return None
        todo: set[int] = set()
        places = {Proposal: self.of_proposal, Evaluation: self.of_evaluation,
                  Candidate: self.of_candidate}
        for record in log[logged_before:logged]:
            if (found := places.get(type(record))) is not None:
                todo.update(found.get(record.id, ()))
        for cid in made[made_upto_before:made_upto]:
            todo.update(self.of_candidate.get(cid, ()))
            todo.update(self.of_parent.get(cid, ()))
        return todo

    def item(self, d: Decision, state: SearchState, memory: Memory,
             knobs_of: KnobValues) -> HistoryItem | None:
        p = memory.proposals.get(d.proposal_id)
        if p is None:
            return None
        node = state.nodes.get(d.candidate_id or "")
        parent = state.nodes.get(p.parents[0]) if p.parents else None
        ev = memory.evaluations.get(d.evaluation_id or "")
        cand = memory.candidates.get(d.candidate_id or "")
        shown = (d, p, ev, cand, node is None, node.mean if node else None,
                 parent.mean if parent else None, state.seed_id)
        if (hit := self.memo.get(d.id)) is not None and hit[0] == shown:
            return hit[1]
        item = HistoryItem(
            candidate_id=d.candidate_id, parent_id=p.parents[0] if p.parents else state.seed_id,
            operator=p.operator, steps=p.steps, outcome=d.outcome, reason=d.reason,
            mean=node.mean if node else None, parent_mean=parent.mean if parent else None,
            knobs=knobs_of(d.candidate_id) if node else {}, proposal_id=p.id, thread=p.thread,
            rationale=p.rationale, p_value=ev.p_value if ev else None,
            diff=cand.diff[:DIFF_CHARS] if cand else "",
        )  # fmt: skip
        self.memo[d.id] = (shown, item)
        return item


_RECALLS: weakref.WeakKeyDictionary[Archive, Recall] = weakref.WeakKeyDictionary()


def failure_note(memory: Memory, candidate_id: str) -> FailureNote:
    decision = next((d for d in reversed(memory.decisions) if d.candidate_id == candidate_id),
                    None)
    # selection trials only: a log of an audit or test trial would tell the proposer about
    # data it must not tune on
    bad = [t for t in memory.trials_of(candidate_id) if t.status != "ok" and t.split == "val"]
    return FailureNote(candidate_id=candidate_id, reason=decision.reason if decision else "",
                       log_tail=bad[0].log_tail if bad else "")


def profile(memory: Memory, candidate_id: str, setup_key: str) -> dict[str, float]:
    """Means over the candidate's successful val trials: time, memory, and the numeric
    figures its benchmark reports (throughput, utilisation, ...)."""
    mine = [t for t in memory.trials_of(candidate_id) if t.status == "ok"
            and t.split == "val" and t.setup_key == setup_key]
    if not mine:
        return {}
    rows: dict[str, list[float]] = {}
    for t in mine:
        figures = {"trial_wall_s": t.wall_s, "workload_s": t.workload_s,
                   "peak_rss_mb": t.peak_rss_mb}
        figures |= {k: v for k, v in t.evidence.items()
                    if isinstance(v, int | float) and not isinstance(v, bool)}
        for k, v in figures.items():
            rows.setdefault(k, []).append(float(v))
    return {k: statistics.fmean(v) for k, v in rows.items()}


def request_for(lab: Lab, plan: Plan, state: SearchState, rng_seed: int,
                memory: Memory | None = None, setup_key: str = "") -> ProposalRequest:
    memory = memory or Memory.load(lab.archive)
    scored = state.scored()
    sign = 1 if lab.bench.metric.direction.value == "minimize" else -1
    best = sorted(scored, key=lambda n: sign * n.mean)[:BEST_SHOWN]
    free_form = getattr(lab.proposer, "free_form", False)
    return ProposalRequest(
        benchmark=lab.bench.name, operator=plan.operator, thread=plan.thread,
        parents=[view(lab, state, memory, p) for p in plan.parents],
        base=view(lab, state, memory, plan.base) if plan.base else None,
        editable_files=list(lab.bench.editable_files), metric=lab.bench.metric,
        search_space=lab.bench.search_space(), history=history(lab, state, memory),
        rng_seed=rng_seed,
        seed=view(lab, state, memory, state.seed_id) if free_form else None,
        best=[view(lab, state, memory, n.id) for n in best] if free_form else [],
        failure=failure_note(memory, plan.parents[1]) if plan.operator == "debug" else None,
        profile=profile(memory, plan.parents[0], setup_key) if free_form else {},
        usd_left=usd_left(lab.params.proposer, lab.archive, lab.root.parent)
        if getattr(lab.proposer, "spends", False) else None,
        budget=lab.budget, related=read_related(lab.root) + lab.learned,
    )  # fmt: skip


# -- asking and recording ---------------------------------------------------------------------


def operator_weights(lab: Lab) -> dict[str, float]:
    """The configured odds of the operators this proposer has (order kept: same draws)."""
    have = getattr(lab.proposer, "operators", frozenset())
    return {op: w for op, w in lab.params.proposer.operators.items() if op in have}


def next_proposal(lab: Lab, index: int, last_attempt: bool = True) -> Proposal:
    """The proposal of iteration `index`, recorded; a failed one carries no edit. An outage
    of the model is raised for the caller's retries unless this is the last attempt."""
    pid = proposal_id(lab.name, index)
    if (existing := lab.archive.get(Proposal, pid)) is not None:
        return existing
    # attempts are numbered from the ledger, so one interrupted by a kill is never overwritten
    attempt = 1 + len(attempts_of(lab.archive, pid))
    setup_key = lab.setup.key()
    state = search_state(lab.archive, lab.campaign.seed_candidate, lab.bench.metric, setup_key)
    memory = Memory.load(lab.archive)
    rng_seed = lab.params.campaign.random_seed * 100_003 + index
    rng, threads = random.Random(rng_seed), lab.params.campaign.threads
    weights = operator_weights(lab)
    draft, plan, errors, started = None, None, [], time.monotonic()
    failure: AttemptFailed | ProposerUnavailable | None = None
    for _ in range(len(weights) + 1):
        if draft is not None or failure is not None or not any(w > 0 for w in weights.values()):
            break
        # an operator with nothing left to try here yields to the others this iteration
        plan = plan_next(state, index % threads, threads, weights, lab.bench.metric, rng)
        request = request_for(lab, plan, state, rng_seed, memory, setup_key)
        try:
            draft = lab.proposer.propose(request)
        except AttemptFailed as err:
            failure = err
        except ProposerUnavailable as err:
            keep_attempt(lab, pid, attempt, "unavailable", err.cost, err.transcript)
            if not last_attempt:
                raise
            failure = err
        except ProposalError as err:
            errors.append(f"{plan.operator}: {err}")
            weights[plan.operator] = 0.0
    if plan is None:
        raise RuntimeError("the proposer has no operator with a positive weight")
    if draft is None:
        if isinstance(failure, AttemptFailed):
            keep_attempt(lab, pid, attempt, "failed", failure.cost, failure.transcript)
        why = (f"{plan.operator}: {failure}" if failure is not None else "; ".join(errors))
        return record(lab, pid, plan, Draft(operator=plan.operator, edits=[],
                                            rationale="proposer gave no edit: " + why), attempt)
    draft.cost.seconds = draft.cost.seconds or time.monotonic() - started
    if draft.transcript is not None or draft.cost.usd or draft.cost.input_tokens:
        keep_attempt(lab, pid, attempt, "ok", draft.cost, draft.transcript)
    return record(lab, pid, plan, draft, attempt)


def keep_attempt(lab: Lab, pid: str, attempt: int, outcome: str, cost: Cost,
                 transcript: Transcript | None) -> None:
    """The attempt's spend in the ledger and its transcript beside the records."""
    name = getattr(lab.proposer, "name", "?")
    lab.archive.put(Spend(id=Spend.key(pid, attempt), campaign=lab.name, proposal_id=pid,
                          attempt=attempt, proposer=name, outcome=outcome, cost=cost))
    if transcript is not None:
        t = transcript.model_copy(update={"proposal_id": pid, "attempt": attempt})
        lab.archive.put_text(transcript_path(pid, attempt, "json"), t.model_dump_json(indent=1))
        lab.archive.put_text(transcript_path(pid, attempt, "md"), render(t))


def transcript_path(pid: str, attempt: int, ext: str) -> str:
    return f"transcripts/{pid}-{attempt}.{ext}"


def record(lab: Lab, pid: str, plan: Plan, draft: Draft, attempt: int) -> Proposal:
    spent = attempts_of(lab.archive, pid)
    cost = draft.cost
    if spent:  # every attempt of this proposal, those cut short by an outage included
        cost = total(s.cost for s in spent)
    md = transcript_path(pid, attempt, "md")
    proposal = Proposal(
        id=pid, campaign=lab.name, thread=plan.thread, operator=draft.operator,
        parents=list(plan.parents), rationale=draft.rationale, steps=draft.steps,
        edits=draft.edits, proposer=getattr(lab.proposer, "name", "?"), cost=cost,
        transcript=md if lab.archive.has_text(md) else None,
    )  # fmt: skip
    lab.archive.put(proposal)
    return proposal


# -- when to stop proposing -------------------------------------------------------------------


def failure_streak(decisions: list[Decision], proposals: dict[str, Proposal]) -> list[Proposal]:
    """The latest proposals the proposer itself failed to make, newest last."""
    streak: list[Proposal] = []
    for d in reversed(decisions):
        p = proposals.get(d.proposal_id)
        if p is None or p.edits or d.outcome != "failed":
            break
        streak.append(p)
    return streak[::-1]


def proposer_stop(lab: Lab) -> str | None:
    """A spending cap reached (for a proposer that spends), or a proposer that failed too
    many times in a row."""
    params = lab.params.proposer
    if getattr(lab.proposer, "spends", False):
        if (reason := cap_reached(params, lab.archive, lab.root.parent)) is not None:
            return reason
    n = params.max_consecutive_failures
    if n:
        proposals = {p.id: p for p in lab.archive.all(Proposal)}
        streak = failure_streak(lab.archive.all(Decision), proposals)
        if len(streak) >= n:
            return (f"the {lab.proposer.name} proposer failed {len(streak)} times in a row "
                    f"(proposer.max_consecutive_failures={n}); last: "
                    f"{streak[-1].rationale[:200]}")
    return None
