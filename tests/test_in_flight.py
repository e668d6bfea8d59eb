"""A proposer that runs ahead of the trials sees the proposals still in flight, and the
same code proposed twice at once is evaluated once: the second proposal is refused at
its patch step, before any trial."""

from __future__ import annotations

from autolab.config import parse_params
from autolab.lab import Lab, open_lab
from autolab.proposing import Memory, history, next_proposal, search_state
from autolab.records import Candidate, Decision, FileEdit, Proposal, content_key
from tasks import Halt
from tasks.patch import patch
from tasks.prepare import register_seed


def lab_for(tmp_path) -> Lab:
    params = parse_params({
        "campaign": {"name": "ahead", "benchmark": "noop", "threads": 1, "random_seed": 3},
        "proposer": {"kind": "offline", "operators": {"improve": 1.0}},
        "paths": {"workdir": str(tmp_path / "runs"), "prepared_dir": str(tmp_path / "data"),
                  "mlruns": str(tmp_path / "mlruns"), "reports": str(tmp_path / "reports"),
                  "data_dir": str(tmp_path / "no-data")},
        "tracking": {"mlflow": False},
    }, "test")
    lab = open_lab(params)
    register_seed.fn(lab)
    return lab


def steps(p: Proposal) -> list[tuple[str, dict]]:
    return [(s.name, s.params) for s in p.steps]


def test_the_proposal_ahead_differs_from_the_one_in_flight(tmp_path):
    lab = lab_for(tmp_path)
    first = next_proposal(lab, 0)
    assert first.edits
    state = search_state(lab.archive, lab.campaign.seed_candidate, lab.bench.metric,
                         lab.setup.key())
    shown = history(lab, state, Memory.load(lab.archive))
    assert [(h.proposal_id, h.outcome) for h in shown] == [(first.id, "pending")]
    second = next_proposal(lab, 1)  # iteration 0 undecided: its trials still run
    assert second.edits and steps(second) != steps(first)


def test_the_same_code_twice_at_once_is_evaluated_once(tmp_path):
    lab = lab_for(tmp_path)
    first = next_proposal(lab, 0)
    twin = first.model_copy(update={"id": content_key("proposal", "twin")})
    lab.archive.put(twin)
    made = patch.fn(lab, first)
    assert isinstance(made, Candidate)
    halt = patch.fn(lab, twin)  # the first is in flight, undecided
    assert isinstance(halt, Halt) and halt.outcome == "refused"
    assert f"being evaluated for proposal {first.id}" in halt.reason
    assert halt.candidate_id is None  # the candidate's record is the first proposal's
    # a resume of the first proposal's iteration finds its own candidate again
    again = patch.fn(lab, first)
    assert isinstance(again, Candidate) and again.id == made.id
    # once decided, the same code is refused as evaluated before, naming the outcome
    lab.archive.put(Decision(id=content_key("decision", first.id), campaign=lab.name,
                             thread=0, proposal_id=first.id, candidate_id=made.id,
                             outcome="rejected", reason="no gain"))
    late = patch.fn(lab, twin)
    assert isinstance(late, Halt) and "evaluated before (rejected)" in late.reason


def test_two_patches_of_the_same_code_at_once_make_one_candidate(tmp_path, monkeypatch):
    import threading
    import time

    lab = lab_for(tmp_path)
    first = next_proposal(lab, 0)
    twin = first.model_copy(update={"id": content_key("proposal", "twin")})
    lab.archive.put(twin)
    get = lab.archive.get

    def slow_get(kind, key):  # both would read "no candidate yet" without the lock
        found = get(kind, key)
        time.sleep(0.3)
        return found

    monkeypatch.setattr(lab.archive, "get", slow_get)
    results: dict[str, object] = {}
    threads = [threading.Thread(target=lambda p=p: results.__setitem__(p.id, patch.fn(lab, p)))
               for p in (first, twin)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    made = [r for r in results.values() if isinstance(r, Candidate)]
    halted = [r for r in results.values() if isinstance(r, Halt)]
    assert len(made) == 1 and len(halted) == 1, results
    owner = lab.archive.get(Candidate, made[0].id).proposal_id
    assert halted[0].proposal.id != owner and owner in halted[0].reason


def test_reproducing_the_seed_says_so_every_time(tmp_path):
    from tasks.select import record_halt

    lab = lab_for(tmp_path)
    first = next_proposal(lab, 0)
    made = patch.fn(lab, first)
    seed_files = lab.archive.read_files(lab.campaign.seed_candidate)
    for name in ("back-1", "back-2"):  # from the new candidate back to the seed's code
        back = first.model_copy(update={
            "id": content_key("proposal", name), "parents": [made.id],
            "edits": [FileEdit(path=p, replace=t) for p, t in seed_files.items()]})
        lab.archive.put(back)
        halt = patch.fn(lab, back)
        assert isinstance(halt, Halt) and "which no proposal made (the seed)" in halt.reason
        record_halt.fn(lab, halt)
