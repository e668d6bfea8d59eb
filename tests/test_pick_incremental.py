"""What each proposal is built from is kept from one pick to the next and brought up to date
from the records added since (the search state, the research memory, the history and the
index of its sections, the spend): whatever order the records come in (a decision before
its proposal, a candidate dated before older ones, a record replaced, a trial moved
aside), it equals what is made from every record at once, in a fresh process."""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from autolab.archive import Archive
from autolab.config import parse_params
from autolab.lab import Lab, open_lab
from autolab.proposers import memory
from autolab.proposers.base import CandidateView, HistoryItem, ProposalRequest
from autolab.proposers.claude import claude_proposer
from autolab.proposers.knobs import set_knob
from autolab.proposers.memory import NEGATIVE, idea_of, outcome_line, short, tried_on_parent
from autolab.proposing import Memory, history, next_proposal, proposal_id
from autolab.records import (
    AuditVerdict,
    CampaignRecord,
    Candidate,
    Cost,
    Decision,
    EditStep,
    Evaluation,
    FileEdit,
    Proposal,
    Spend,
    Trial,
    content_key,
)
from autolab.selection import Node, SearchState, _fixable, search_state, val_means
from autolab.spend import attempts_of, campaign_costs, campaign_usd, day_spend
from autolab.workspace import make_candidate
from benchmarks import get_benchmark
from benchmarks.protocol import CheckResult

NOOP = get_benchmark("noop")
THREADS = 2
SETUP = "setup-a"
T0 = datetime.now(UTC).replace(hour=1, minute=0, second=0, microsecond=0)
DAY = T0.date()  # the day whose spend is counted (some records are dated the day before)


# -- the records of a campaign, as the loop writes them, and in other orders --------------


class Campaign:
    """A small campaign's records, one iteration at a time (a proposal, its attempt, the
    candidate with its trials, evaluation and audit, the decision), with ideas that come
    up again, failures of every kind, crowns, and later trials of older candidates."""

    def __init__(self, name: str, seed: int, setup: str = SETUP, failing: float = 0.15):
        self.name, self.rng, self.setup = name, random.Random(seed), setup
        self.failing = failing
        files = NOOP.seed_files()
        self.seed = make_candidate("noop", files, [], None).model_copy(update={"created_at": T0})
        self.files = {self.seed.id: files}
        self.heads = {t: [self.seed.id] for t in range(THREADS)}
        self.failed: list[str] = []
        self.ids = [self.seed.id]

    def campaign(self) -> CampaignRecord:
        return CampaignRecord(name=self.name, benchmark="noop", params_hash="h", fixed={},
                              seed_candidate=self.seed.id, started_at=T0)

    def trials(self, cid: str, seeds: range, when: datetime, split: str = "val",
               setup: str | None = None, failed: bool = False) -> list[Trial]:
        setup = setup or self.setup
        return [Trial(id=Trial.key(cid, s, split, setup), candidate_id=cid, seed=s, split=split,
                      setup_key=setup, status="failed" if failed and s == seeds[0] else "ok",
                      metrics={} if failed and s == seeds[0] else
                      {"value": round(self.rng.uniform(1.0, 4.0), 3)},
                      log_tail="Traceback: boom\n" if failed else "ok\n",
                      started_at=when + timedelta(seconds=s)) for s in seeds]

    def iteration(self, i: int) -> tuple[list, dict[str, dict[str, str]]]:
        rng, pid, thread = self.rng, proposal_id(self.name, i), i % THREADS
        when = T0 + timedelta(minutes=2 * (i + 1))
        operator = rng.choice(["improve", "improve", "tune", "crossover", "debug", "draft"])
        parent = rng.choice(self.heads[thread][-3:])
        parents = [parent]
        if operator == "crossover":
            parents.append(rng.choice(self.heads[1 - thread]))
        elif operator == "debug" and self.failed:
            parents.append(rng.choice(self.failed))
        idea = rng.choice(["shrink", "grow", "shift", "drop_offset", "tune"])
        value = rng.choice([0.5, 1.0, 1.5, 2.0, 2.5])
        cost = Cost(input_tokens=900, output_tokens=200, usd=rng.choice([0.1, 0.2, 0.3, 0.07]),
                    seconds=3.0, model="claude-sonnet-4-6")
        spend = Spend(id=Spend.key(pid, 1), campaign=self.name, proposal_id=pid,
                      proposer="claude", outcome="ok", cost=cost, created_at=when)
        edits = [] if rng.random() < 0.08 else [FileEdit(path="solution.py", search="V",
                                                         replace="V")]
        proposal = Proposal(id=pid, campaign=self.name, thread=thread, operator=operator,
                            parents=parents, rationale=f"try {idea} at {value}",
                            steps=[EditStep(name=idea, params={"VALUE": value})], edits=edits,
                            proposer="claude", cost=cost, created_at=when)
        decided = {"id": content_key("decision", pid), "campaign": self.name, "thread": thread,
                   "proposal_id": pid, "created_at": when + timedelta(seconds=50)}
        if not edits:
            return [spend, proposal, Decision(candidate_id=None, outcome="failed",
                                              reason="proposer gave no edit", **decided)], {}
        files = {"solution.py": set_knob(self.files[parent]["solution.py"], "VALUE",
                                         value + i / 1000)}
        cand = make_candidate("noop", files, parents, pid, self.files[parent])
        cand = cand.model_copy(update={"created_at": when})
        self.files[cand.id] = files
        self.ids.append(cand.id)
        failed = rng.random() < self.failing
        trials = self.trials(cand.id, range(3), when, failed=failed)
        trials += self.trials(cand.id, range(100, 102), when, split="audit")
        if rng.random() < 0.2:  # trials of another setup: they do not count
            trials += self.trials(cand.id, range(2), when, setup="setup-b")
        ev = Evaluation(id=content_key("evaluation", cand.id, i), candidate_id=cand.id,
                        reference_id=parent, metric="value", values=[1.0], reference_values=[1.1],
                        mean=1.0, reference_mean=1.1, delta=-0.1, p_value=rng.random(),
                        test="paired", alpha=0.05, level=0.05,
                        decision=rng.choice(["accept", "reject"]), reason="paired",
                        created_at=when + timedelta(seconds=40))
        caught = rng.choice([None, 0, 1]) if failed else None
        verdict = AuditVerdict(id=content_key("audit", cand.id), candidate_id=cand.id, level=1,
                               passed=not failed, checks=[CheckResult(name="x", passed=True)],
                               caught_at=caught, created_at=when + timedelta(seconds=45))
        outcome = "failed" if failed else ("accepted" if ev.decision == "accept" else "rejected")
        if outcome == "accepted":
            self.heads[thread].append(cand.id)
        if outcome == "failed":
            self.failed.append(cand.id)
        decision = Decision(candidate_id=cand.id, outcome=outcome, reason=f"{outcome} here",
                            champion=outcome == "accepted" and rng.random() < 0.4,
                            evaluation_id=ev.id, audit_id=verdict.id, **decided)
        return [spend, proposal, cand, *trials, ev, verdict, decision], {cand.id: files}


def write(archive: Archive, records: list, files: dict, rng: random.Random,
          look=lambda: None) -> None:
    """One iteration's records, each in its own transaction, in the loop's order or not:
    shuffled (a decision before its proposal), or dated before older records; `look` is
    called between some of them (a pick while the iteration is written)."""
    if rng.random() < 0.3:
        records = rng.sample(records, len(records))
    if rng.random() < 0.2:  # dated an hour before the last ones: added before the newest
        records = [r.model_copy(update={"started_at" if isinstance(r, Trial) else "created_at":
                                        (r.started_at if isinstance(r, Trial) else r.created_at)
                                        - timedelta(minutes=rng.choice([3, 60]))})
                   for r in records]
    for r in records:
        if isinstance(r, Candidate):
            archive.put_candidate(r, files[r.id])
        else:
            archive.put(r)
        if rng.random() < 0.2:
            look()


def disturb(archive: Archive, campaign: Campaign, rng: random.Random) -> None:
    """What else happens to an archive now and then."""
    roll = rng.random()
    if roll < 0.1 and (decisions := archive.all(Decision)):  # a decision written again
        d = rng.choice(decisions)
        archive.put(d.model_copy(update={"reason": d.reason + " (again)"}))
    elif roll < 0.15 and (spent := archive.all(Spend)):  # an attempt written again
        s = rng.choice(spent)
        archive.put(s.model_copy(update={"cost": s.cost.model_copy(update={"usd": 0.11})}))
    elif roll < 0.2 and (trials := archive.all(Trial)):  # a failure of the machine
        archive.supersede(Trial, rng.choice(trials).id)
    elif roll < 0.4:  # more seeds for an older candidate: its mean moves
        cid = rng.choice(campaign.ids)
        n = len(archive.trials_of(cid))
        for t in campaign.trials(cid, range(10 + n, 12 + n), T0 + timedelta(minutes=1)):
            archive.put(t)


# -- what every record gives at once: the definitions, written plainly ---------------------


def state_of(archive: Archive, seed_id: str) -> SearchState:
    """The search state from every record, in one pass."""
    proposals = {p.id: p for p in archive.all(Proposal)}
    values = val_means(archive.all(Trial), NOOP.metric, SETUP)
    decisions = archive.all(Decision)
    verdicts = {v.id: v for v in archive.all(AuditVerdict)}
    crowned = [d.candidate_id for d in decisions if d.champion and d.candidate_id]
    state = SearchState(seed_id=seed_id, champion_id=crowned[-1] if crowned else seed_id)
    fields: dict[str, dict] = {}
    for c in archive.all(Candidate):
        made_by = proposals.get(c.proposal_id or "")
        vals = values.get(c.id, [])
        fields[c.id] = dict(id=c.id, parents=list(c.parents),
                            thread=made_by.thread if made_by else None,
                            mean=sum(vals) / len(vals) if vals else None, n=len(vals),
                            operator=made_by.operator if made_by else "seed",
                            accepted=False, debuggable=False, children_tried=0)
    for d in decisions:
        if d.candidate_id in fields and d.outcome == "accepted":
            fields[d.candidate_id]["accepted"] = True
        if d.candidate_id in fields and d.outcome == "failed" and _fixable(verdicts, d):
            fields[d.candidate_id]["debuggable"] = True
            state.failed.append(d.candidate_id)
        for parent in proposals[d.proposal_id].parents if d.proposal_id in proposals else []:
            if parent in fields:
                fields[parent]["children_tried"] += 1
    state.nodes = {cid: Node(**f) for cid, f in fields.items()}
    return state


def plain_sections(request: ProposalRequest) -> dict[str, list[str] | dict | None]:
    """The sections that pick items out of the history, each by a pass over all of it."""
    here, unit = request.parents[0].id, request.metric.unit
    groups: dict[str, list[HistoryItem]] = defaultdict(list)
    for h in request.history:
        if h.parent_id != here and h.outcome in NEGATIVE and h.candidate_id is not None:
            groups[idea_of(h)].append(h)
    negative = [f"- tried {idea} ({len(hs)}x, last on {short(hs[-1].parent_id)}): "
                f"{outcome_line(hs[-1], unit)}"
                for idea, hs in sorted(groups.items(), key=lambda kv: -len(kv[1]))][:15]
    mine = [h for h in reversed(request.history) if h.parent_id == here]
    tried_here = [f"- [{idea_of(h)}] {outcome_line(h, unit)}. {h.rationale[:200]}"
                  for h in mine[:12]]
    by_candidate = {h.candidate_id: h for h in request.history if h.candidate_id}
    lineage = []
    for cid in request.parents[0].lineage_ids:
        h = by_candidate.get(cid)
        lineage.append(f"- {short(cid)}" if h is None else f"- {short(cid)} by {h.operator} "
                       f"[{idea_of(h)}]: {outcome_line(h, unit)}. {h.rationale[:300]}")
    failed = [h for h in reversed(request.history)
              if h.outcome in ("failed", "refused") and h.parent_id != here]
    failures = [f"- {short(h.proposal_id)} {h.operator} [{idea_of(h)}] on {short(h.parent_id)}: "
                f"{h.outcome}: {h.reason[:240]}" for h in failed[:8]]
    tried, fixing = {}, request.failure.candidate_id if request.failure else None
    for h in request.history:
        if h.parent_id == here and h.outcome in NEGATIVE and h.candidate_id != fixing:
            for s in h.steps:
                tried[memory.normalise_idea(s.name)] = outcome_line(h, unit)
    return {"negative": negative or None, "tried_here": tried_here or None,
            "lineage": lineage if len(lineage) > 1 else None, "failures": failures or None,
            "tried_on_parent": tried}


def kept_sections(request: ProposalRequest) -> dict[str, list[str] | dict | None]:
    """The same sections, from the index kept from one request to the next."""
    made = {"negative": memory.negative_section(request),
            "tried_here": memory.tried_here_section(request),
            "lineage": memory.lineage_section(request),
            "failures": memory.failures_section(request)}
    return {k: s.items if s else None for k, s in made.items()} | {
        "tried_on_parent": tried_on_parent(request)}


# -- the checks ------------------------------------------------------------------------------


def node_ids(nodes: list[Node]) -> list[str]:
    return [n.id for n in nodes]


def check_state(kept: SearchState, plain: SearchState) -> None:
    assert list(kept.nodes.items()) == list(plain.nodes.items())  # in the same order
    assert (kept.champion_id, kept.failed) == (plain.champion_id, plain.failed)
    for thread in (*range(THREADS), None):
        assert node_ids(kept.accepted_in(thread)) == node_ids(plain.accepted_in(thread))
    assert node_ids(kept.scored()) == node_ids(plain.scored())


def request_for(items: list[HistoryItem], parent: str, lineage: list[str]) -> ProposalRequest:
    view = CandidateView(id=parent, files=NOOP.seed_files(), lineage_ids=lineage)
    return ProposalRequest(benchmark="noop", operator="improve", thread=0, parents=[view],
                           editable_files=["solution.py"], metric=NOOP.metric,
                           search_space=NOOP.search_space(), history=items)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_kept_state_history_and_spend_equal_those_made_from_every_record(tmp_path, seed):
    """A campaign written as the loop writes it (with picks while an iteration is written,
    and the odd record out of order, written again or moved aside): what the picks keep
    equals, every few iterations, what a fresh process makes from every record; and so do
    the research memory's sections, from the index kept from one request to the next."""
    camp, rng = Campaign(f"c{seed}", seed), random.Random(seed)
    kept = Archive(tmp_path / "archive")
    kept.put_candidate(camp.seed, camp.files[camp.seed.id])
    kept.put_many(camp.trials(camp.seed.id, range(3), T0))
    lab = SimpleNamespace(archive=kept, bench=NOOP)

    def look() -> None:
        history(lab, search_state(kept, camp.seed.id, NOOP.metric, SETUP), Memory.load(kept))
        campaign_usd(kept)

    for i in range(40):
        write(kept, *camp.iteration(i), rng, look)
        disturb(kept, camp, rng)
        if i % 3 and i < 35:  # sometimes several iterations come in between two looks
            continue
        state = search_state(kept, camp.seed.id, NOOP.metric, SETUP)
        items = history(lab, state, Memory.load(kept))
        with Archive(tmp_path / "archive") as fresh:  # a new process: nothing kept yet
            check_state(state, state_of(fresh, camp.seed.id))
            check_state(search_state(fresh, camp.seed.id, NOOP.metric, SETUP), state)
            once = history(SimpleNamespace(archive=fresh, bench=NOOP),
                           search_state(fresh, camp.seed.id, NOOP.metric, SETUP),
                           Memory.load(fresh))
            assert items == once
            spent, proposals = fresh.all(Spend), fresh.all(Proposal)
            assert campaign_usd(kept) == campaign_costs(spent, proposals).usd  # exactly
            for p in proposals[-3:]:
                assert attempts_of(kept, p.id) == [s for s in spent if s.proposal_id == p.id]
            assert day_spend(tmp_path / "none", DAY, kept) == \
                sum(s.cost.usd for s in fresh.spend_on(DAY))
        for parent in dict.fromkeys([camp.seed.id, *rng.sample(camp.ids, min(4, len(camp.ids)))]):
            lineage = [cid for cid in camp.ids if rng.random() < 0.3] + [parent]
            request = request_for(items, parent, lineage)
            assert kept_sections(request) == plain_sections(request)


@pytest.mark.parametrize(("backend", "seed"), [("sqlite", 11), ("sqlite", 12), ("sqlite", 13),
                                             ("sqlite", 14), ("postgres", 15)])
def test_records_in_any_order_with_a_look_after_each(tmp_path, request, backend, seed):
    """Several iterations' records (and records written again, trials moved aside) put one
    at a time in a random order: after each, what is kept equals what is made at once."""
    url = request.getfixturevalue("postgres_url") if backend == "postgres" else None
    camp, rng = Campaign(f"c{seed}", seed, failing=0.4), random.Random(seed)
    kept = Archive(tmp_path / "archive", url=url)
    lab = SimpleNamespace(archive=kept, bench=NOOP)
    records, files = [camp.seed, *camp.trials(camp.seed.id, range(3), T0)], dict(camp.files)
    for i in range(8):
        batch, made = camp.iteration(i)
        records += batch
        files |= made
    records += [r.model_copy(update={"reason": "written again"}) for r in records
                if isinstance(r, Decision) and rng.random() < 0.2]
    records += [r.model_copy(update={"cost": Cost(usd=0.05)}) for r in records
                if isinstance(r, Spend) and rng.random() < 0.2]
    records = rng.sample(records, len(records))
    records = [r.model_copy(update={"created_at": r.created_at - timedelta(hours=2)})
               if not isinstance(r, Trial) and rng.random() < 0.2 else r for r in records]
    for r in records:
        if isinstance(r, Candidate):
            kept.put_candidate(r, files[r.id])
        else:
            kept.put(r)
        if isinstance(r, Trial) and rng.random() < 0.1:
            kept.supersede(Trial, r.id)
        state = search_state(kept, camp.seed.id, NOOP.metric, SETUP)
        items = history(lab, state, Memory.load(kept))
        with Archive(tmp_path / "archive", url=url) as fresh:
            check_state(state, state_of(fresh, camp.seed.id))
            assert items == history(SimpleNamespace(archive=fresh, bench=NOOP),
                                    search_state(fresh, camp.seed.id, NOOP.metric, SETUP),
                                    Memory.load(fresh))
            assert campaign_usd(kept) == campaign_costs(fresh.all(Spend),
                                                        fresh.all(Proposal)).usd
            assert day_spend(tmp_path / "none", DAY, kept) == \
                sum(s.cost.usd for s in fresh.spend_on(DAY))


def test_history_index_follows_items_made_again_dropped_and_reordered():
    """The index of the research memory's sections against a pass over every item, as the
    history grows, shrinks (an older request), and has items made again or moved."""
    rng = random.Random(5)
    ideas = [EditStep(name=n, params={"V": v}) for n in ("a", "b", "c") for v in (1, 2)]

    def item(k: int) -> HistoryItem:
        return HistoryItem(
            candidate_id=None if rng.random() < 0.1 else f"c{k}",
            parent_id=rng.choice(["p0", "p1", "p2"]), operator="improve",
            steps=[rng.choice(ideas)], outcome=rng.choice(["accepted", "rejected", "failed"]),
            mean=rng.random(), proposal_id="first" if k == 0 else f"pr{k}", reason=f"r{k}")

    items = [item(k) for k in range(30)]
    for _ in range(60):
        roll = rng.random()
        if roll < 0.4:
            items = items + [item(len(items) + k) for k in range(rng.randint(1, 3))]
        elif roll < 0.55:
            items = items[:-rng.randint(1, 4)]
        elif roll < 0.8:  # an item shown again with a new mean
            at = rng.randrange(1, len(items))
            items = [*items[:at], items[at].model_copy(update={"mean": rng.random()}),
                     *items[at + 1:]]
        else:  # another item in its place
            at = rng.randrange(1, len(items))
            items = [*items[:at], item(1000 + at), *items[at + 1:]]
        for parent in ("p0", "p1", "p2", "p3"):
            request = request_for(items, parent, ["c1", "c2", "c5", parent])
            assert kept_sections(request) == plain_sections(request)


# -- a whole pick: the request and the prompt ---------------------------------------------


class Asked(Exception):
    """The proposer got its request."""


class Capture:
    """The Claude proposer up to its first request: what it would send."""

    def __init__(self, llm):
        self.llm, self.asked = llm, []

    def __getattr__(self, name: str):
        return getattr(self.llm, name)

    def propose(self, request: ProposalRequest):
        self.asked.append((request.model_dump(), self.llm.prompt(request),
                           tried_on_parent(request)))
        raise Asked


def lab_for(tmp_path, name: str) -> Lab:
    params = parse_params({
        "campaign": {"name": name, "benchmark": "noop", "threads": THREADS},
        "proposer": {"kind": "claude", "max_usd_per_day": 1e6, "max_usd_per_campaign": 1e6},
        "paths": {"workdir": str(tmp_path / "runs"), "prepared_dir": str(tmp_path / "data"),
                  "mlruns": str(tmp_path / "mlruns"), "reports": str(tmp_path / "reports"),
                  "data_dir": str(tmp_path / "no-data")},
        "tracking": {"mlflow": False},
    }, "test")
    lab = open_lab(params)
    return replace(lab, proposer=Capture(claude_proposer(params.proposer)))


def ask(lab: Lab, index: int) -> tuple:
    with pytest.raises(Asked):
        next_proposal(lab, index)
    return lab.proposer.asked[-1]


def test_a_pick_asks_what_a_fresh_process_would_ask(tmp_path):
    lab = lab_for(tmp_path, "pick")
    camp, rng = Campaign(lab.name, 9, setup=lab.setup.key()), random.Random(9)
    lab.archive.put_candidate(camp.seed, camp.files[camp.seed.id])
    lab.archive.put_campaign(camp.campaign())
    lab.archive.put_many(camp.trials(camp.seed.id, range(3), T0))
    for i in range(30):
        write(lab.archive, *camp.iteration(i), rng)
        disturb(lab.archive, camp, rng)
        if i % 4 == 3 or i == 29:
            fresh = lab_for(tmp_path, "pick")
            try:
                assert ask(lab, 1000 + i) == ask(fresh, 1000 + i)
            finally:
                fresh.archive.close()


def test_what_is_kept_for_an_archive_goes_with_it(tmp_path):
    """The memory kept per archive must not keep its archive (and every record) alive."""
    import gc
    import weakref

    archive = Archive(tmp_path / "archive", campaign="kept")
    Memory.load(archive)
    gone = weakref.ref(archive)
    archive.close()
    del archive
    gc.collect()
    assert gone() is None
