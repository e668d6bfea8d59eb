"""propose: choose thread, parent(s) and operator, build the context, ask the proposer."""

from __future__ import annotations

import random
import time

from prefect import task

from autolab.history import lineage
from autolab.lab import Lab
from autolab.proposers.base import CandidateView, HistoryItem, ProposalError, ProposalRequest
from autolab.proposers.knobs import read_knobs
from autolab.records import Candidate, Decision, EditStep, Proposal, content_key
from autolab.selection import Plan, SearchState, plan_next, search_state
from tasks import INFRA_RETRIES, INFRA_RETRY_DELAY_S, Halt


def proposal_id(campaign: str, index: int) -> str:
    return content_key("proposal", campaign, index)


def lineage_steps(lab: Lab, candidate_id: str) -> list[EditStep]:
    """Named steps from the seed down to this candidate, following first parents."""
    candidates = {c.id: c for c in lab.archive.all(Candidate)}
    proposals = {p.id: p for p in lab.archive.all(Proposal)}
    steps: list[EditStep] = []
    for cid in lineage(candidates, candidate_id):
        prop = proposals.get(candidates[cid].proposal_id or "")
        steps += prop.steps if prop else []
    return steps


def view(lab: Lab, state: SearchState, candidate_id: str) -> CandidateView:
    node = state.nodes[candidate_id]
    return CandidateView(
        id=candidate_id,
        files=lab.archive.read_files(candidate_id),
        mean=node.mean,
        n_trials=node.n,
        lineage_steps=lineage_steps(lab, candidate_id),
    )


def history(lab: Lab, state: SearchState) -> list[HistoryItem]:
    """Every past proposal with its fate, so the proposer learns from failures too."""
    knobs = lab.bench.search_space().knobs
    proposals = {p.id: p for p in lab.archive.all(Proposal)}
    items = []
    for d in lab.archive.all(Decision):
        p = proposals.get(d.proposal_id)
        if p is None:
            continue
        node = state.nodes.get(d.candidate_id or "")
        parent = state.nodes.get(p.parents[0]) if p.parents else None
        files = lab.archive.read_files(d.candidate_id) if node else {}
        items.append(
            HistoryItem(
                candidate_id=d.candidate_id,
                parent_id=p.parents[0] if p.parents else state.seed_id,
                operator=p.operator,
                steps=p.steps,
                outcome=d.outcome,
                reason=d.reason,
                mean=node.mean if node else None,
                parent_mean=parent.mean if parent else None,
                knobs=read_knobs(files, knobs) if files else {},
            )
        )
    return items


def request_for(lab: Lab, plan: Plan, state: SearchState, rng_seed: int) -> ProposalRequest:
    return ProposalRequest(
        benchmark=lab.bench.name,
        operator=plan.operator,
        thread=plan.thread,
        parents=[view(lab, state, p) for p in plan.parents],
        base=view(lab, state, plan.base) if plan.base else None,
        editable_files=list(lab.bench.editable_files),
        metric=lab.bench.metric,
        search_space=lab.bench.search_space(),
        history=history(lab, state),
        rng_seed=rng_seed,
    )


@task(name="propose", retries=INFRA_RETRIES, retry_delay_seconds=INFRA_RETRY_DELAY_S,
      persist_result=False)
def propose(lab: Lab, index: int) -> Proposal | Halt:
    """The proposal for iteration `index`; an existing one is reused on resume."""
    pid = proposal_id(lab.name, index)
    if (existing := lab.archive.get(Proposal, pid)) is not None:
        return existing if existing.edits else Halt("failed", existing.rationale, existing)
    state = search_state(lab.archive, lab.campaign.seed_candidate, lab.bench.metric,
                         lab.setup.key())
    rng_seed = lab.params.campaign.random_seed * 100_003 + index
    draft, plan, errors, started = None, None, [], time.monotonic()
    weights = dict(lab.params.proposer.operators)
    rng = random.Random(rng_seed)
    threads = lab.params.campaign.threads
    for _ in range(len(weights) + 1):
        if draft is not None or not any(w > 0 for w in weights.values()):
            break
        # an operator with nothing left to try here yields to the others this iteration
        plan = plan_next(state, index % threads, threads, weights, lab.bench.metric, rng)
        try:
            draft = lab.proposer.propose(request_for(lab, plan, state, rng_seed))
        except ProposalError as err:
            errors.append(f"{plan.operator}: {err}")
            weights[plan.operator] = 0.0
    if draft is None:
        failed = Proposal(
            id=pid, campaign=lab.name, thread=plan.thread, operator=plan.operator,
            parents=list(plan.parents), rationale="proposer gave no edit: " + "; ".join(errors),
            edits=[], proposer=lab.proposer.name,
        )  # fmt: skip
        lab.archive.put(failed)
        return Halt("failed", failed.rationale, failed)
    draft.cost.seconds = draft.cost.seconds or time.monotonic() - started
    proposal = Proposal(
        id=pid,
        campaign=lab.name,
        thread=plan.thread,
        operator=draft.operator,
        parents=list(plan.parents),
        rationale=draft.rationale,
        steps=draft.steps,
        edits=draft.edits,
        proposer=lab.proposer.name,
        cost=draft.cost,
    )
    lab.archive.put(proposal)
    return proposal
