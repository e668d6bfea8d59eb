"""The iteration loop on the noop benchmark with its realistic noise, driven by a scripted
proposer: sequential looks, futility, pairing and Welch's test, the champion rule with
its level-2 replication, the audit catching planted violations at levels 0, 1 and 2, and
the confirmation on the test split (once per champion).

One campaign is shared by most tests: started, run again once finished (nothing new may
happen), then resumed with one more proposal that crowns a new champion. Each test reads
the archive it left. Effects are set relative to the parent: 0.5 or 0.2 is clear against
the noise (paired sd about 0.028), 0.1 worse is clearly behind, and the small effect is
0.03 on a noise realisation (noise is keyed by the candidate's content) whose first look
is undecided.
"""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
from helpers import noop_solution, prefect_test_server, write_params

from autolab.archive import Archive
from autolab.audit import replication_level as real_level
from autolab.config import load_params
from autolab.proposers.base import Draft, ProposalRequest
from autolab.proposers.knobs import read_knobs
from autolab.records import (
    AuditVerdict,
    Candidate,
    Decision,
    EditStep,
    Evaluation,
    FileEdit,
    Proposal,
    Trial,
)
from autolab.records import TestResult as Confirmation
from autolab.stats import Design, compare_seeds
from autolab.workspace import make_candidate
from benchmarks.noop.benchmark import KNOBS, Noop, check_budget, noise
from benchmarks.protocol import CheckResult

pytestmark = pytest.mark.slow

BASE = 1000  # evaluation.seeds_base
EVALUATION = {"min_seeds": 3, "max_seeds": 4, "test_seeds": 3, "parallel_trials": 2}
DESIGN = Design(alpha=0.01, min_seeds=3, max_seeds=4, step=2)  # the params' default alpha
METRIC = Noop.metric
VAL_SEEDS = set(range(BASE, BASE + 4))
PLANTED = "# PLANTED: the benchmark's probe flags this candidate\n"


@pytest.fixture(scope="module")
def prefect_api(request):
    prefect_test_server(request)


def cid_of(text: str) -> str:
    return make_candidate("noop", {"solution.py": text}, [], None).id


def raw(files: dict[str, str]) -> float:
    k = read_knobs(files, KNOBS)
    return k["VALUE"] + k["OFFSET"]


def parent_value(request: ProposalRequest) -> float:
    return read_knobs(request.parents[0].files, KNOBS)["VALUE"]


def undecided_at_first_look(request: ProposalRequest, delta: float) -> str:
    """A solution `delta` better than the parent whose noise makes the first look say
    'more' (ahead, not significant at that look's level, not futile)."""
    parent = request.parents[0]
    seeds = range(BASE, BASE + DESIGN.min_seeds)
    theirs = {s: raw(parent.files) + noise(s, parent.id) for s in seeds}
    for i in range(2000):
        text = noop_solution(parent_value(request) - delta, extra=f"# variant {i}\n")
        cid, mine_raw = cid_of(text), raw({"solution.py": text})
        mine = {s: mine_raw + noise(s, cid) for s in seeds}
        if compare_seeds(mine, theirs, METRIC, DESIGN).decision == "more":
            return text
    raise AssertionError("no noise realisation leaves the first look undecided")


class Script:
    """Proposal `index` (= rng_seed with campaign.random_seed 0) comes from PLAN[index]."""

    name = "script"
    operators = frozenset({"tune", "improve", "crossover"})
    free_form = False

    def __init__(self, plan: dict[int, tuple[str, object]]):
        self.plan, self.texts = plan, {}

    def propose(self, request: ProposalRequest) -> Draft:
        label, make = self.plan[request.rng_seed]
        text = make(self, request)
        self.texts[label] = text
        return Draft(operator="improve", rationale=f"scripted: {label}",
                     steps=[EditStep(name=label)],
                     edits=[FileEdit(path="solution.py", replace=text)])  # fmt: skip


def by(delta: float, extra: str = ""):
    """VALUE of the parent minus delta (delta > 0 is better: the metric is minimised)."""
    return lambda _s, req: noop_solution(parent_value(req) - delta, extra=extra)


PLAN = {  # with two threads, even indices are thread 0, odd ones thread 1
    0: ("crowned", by(0.5)),  # seed -> champion after level-2 replication
    1: ("not-crowned", by(0.2)),  # thread 1 from the seed: beats it, not the champion
    2: ("futile", by(-0.1)),  # behind the champion, its parent
    3: ("small", lambda _s, req: undecided_at_first_look(req, 0.03)),
    4: ("replication-planted", by(0.5)),  # beats the champion; replication made impossible
    5: ("runtime-planted", by(0.3, PLANTED)),
    6: ("static", lambda _s, req: "import os\n" + noop_solution(parent_value(req) - 0.3)),
    7: ("duplicate", lambda s, _req: s.texts["futile"]),  # the same code, another proposal
    8: ("new-champion", by(0.5)),  # run 3 only: crowned, so the test split is looked at again
}


def planted_probe(ctx, score) -> CheckResult:
    """A benchmark check that fails for the planted candidate (read by trusted code)."""
    flagged = "PLANTED" in (ctx.workspace / "solution.py").read_text()
    return CheckResult(name="planted_probe", passed=not flagged,
                       evidence="planted violation" if flagged else "clean")


def trial_times(archive: Archive) -> dict[str, object]:
    return {t.id: t.started_at for t in archive.all(Trial)}


@pytest.fixture(scope="module")
def loop(prefect_api, tmp_path_factory) -> SimpleNamespace:
    from flows.campaign import campaign

    tmp = tmp_path_factory.mktemp("loop")
    params = write_params(tmp, max_proposals=8, evaluation=EVALUATION,
                          proposer={"operators": {"improve": 1.0}}, tracking={"mlflow": False})
    ev = load_params(params).evaluation  # the design the campaign's looks follow
    assert DESIGN == Design(ev.alpha, ev.min_seeds, ev.max_seeds, ev.parallel_trials, ev.screen)
    archive = Archive(tmp / "runs" / "test-noop" / "archive")
    script = Script(PLAN)
    ns = SimpleNamespace(tmp=tmp, params=params, archive=archive, script=script)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("autolab.lab.make_proposer", lambda _params: script)
        mp.setattr("autolab.selection.EXPLORE_PROB", 0.0)  # each thread extends its head
        mp.setattr(Noop, "audit_checks", lambda self: [check_budget, planted_probe])
        with pytest.MonkeyPatch.context() as planted:  # the second champion cannot replicate
            planted.setattr("tasks.challenge.replication_level",
                            lambda a, k: 1e-12 if k >= 1 else real_level(a, k))
            ns.first = campaign(params_path=str(params))
        ns.trials_1, ns.tests_1 = trial_times(archive), archive.all(Confirmation)
        ns.second = campaign(params_path=str(params))  # finished: nothing left to do
        ns.trials_2, ns.tests_2 = trial_times(archive), archive.all(Confirmation)
        ns.third = campaign(params_path=str(params), overrides={"campaign": {"max_proposals": 9}})
    ns.record = archive.campaign()
    ns.decisions = {}
    for d in archive.all(Decision):
        ns.decisions[archive.get(Proposal, d.proposal_id).steps[0].name] = d
    return ns


def trials_of(archive: Archive, cid: str, split: str = "val") -> list[Trial]:
    return sorted((t for t in archive.all(Trial) if t.candidate_id == cid and t.split == split),
                  key=lambda t: t.seed)


def evaluation(ns, label: str) -> Evaluation:
    return ns.archive.get(Evaluation, ns.decisions[label].evaluation_id)


def verdict(ns, label: str) -> AuditVerdict:
    return ns.archive.get(AuditVerdict, ns.decisions[label].audit_id)


def test_every_proposal_was_decided_as_planned(loop):
    outcomes = {k: (d.outcome, d.champion) for k, d in loop.decisions.items()}
    expected = {
        "crowned": ("accepted", True), "not-crowned": ("accepted", False),
        "futile": ("rejected", False), "replication-planted": ("accepted", False),
        "runtime-planted": ("failed", False), "static": ("failed", False),
        "duplicate": ("refused", False), "new-champion": ("accepted", True),
    }  # fmt: skip
    assert {k: v for k, v in outcomes.items() if k != "small"} == expected, outcomes
    assert loop.decisions["small"].outcome in ("accepted", "rejected")
    assert loop.record.status == "finished"
    assert loop.third["champion"] == loop.decisions["new-champion"].candidate_id


def test_crowned_only_after_level_2_replication(loop):
    d = loop.decisions["crowned"]
    assert d.champion and "replicated at level 2" in d.reason
    v = verdict(loop, "crowned")
    assert v.passed and v.level == 2
    (check,) = [c for c in v.checks if c.level == 2]
    assert check.name == "replicates_on_fresh_seeds" and check.passed
    seed = loop.record.seed_candidate
    mine = {t.seed for t in trials_of(loop.archive, d.candidate_id, "audit")}
    # its own challenge: one block of audit.replication_seeds (4) fresh seeds; as champion
    # it then ran each later challenger's fresh block too
    first = min(mine)
    assert first >= BASE + 100_000 and (first - BASE) % 4 == 0
    assert set(range(first, first + 4)) <= mine and len(mine) % 4 == 0
    rep = [e for e in loop.archive.all(Evaluation)
           if e.candidate_id == d.candidate_id and e.split == "audit"]
    assert len(rep) == 1 and len(rep[0].values) == len(rep[0].reference_values) == 4
    champion_then = {t.seed for t in trials_of(loop.archive, seed, "audit")}
    assert set(range(first, first + 4)) <= champion_then  # the champion ran the same seeds
    for cid in (d.candidate_id, seed):
        assert all(t.status == "ok" for t in trials_of(loop.archive, cid, "audit"))
    assert not mine & VAL_SEEDS


def test_accepted_but_not_better_than_the_champion_is_not_crowned(loop):
    d = loop.decisions["not-crowned"]
    assert d.outcome == "accepted" and not d.champion
    assert "not better than the champion" in d.reason
    ev = evaluation(loop, "not-crowned")
    assert ev.reference_id == loop.record.seed_candidate and ev.decision == "accept"
    champion = loop.decisions["crowned"].candidate_id
    vs = [e for e in loop.archive.all(Evaluation)
          if e.candidate_id == d.candidate_id and e.reference_id == champion]
    assert vs and vs[-1].p_value > 0.5  # it is behind the champion
    assert not trials_of(loop.archive, d.candidate_id, "audit")  # no replication was run
    assert verdict(loop, "not-crowned").level == 1


def test_futility_stops_at_the_first_look(loop):
    d = loop.decisions["futile"]
    assert d.outcome == "rejected" and "futility" in d.reason
    ev = evaluation(loop, "futile")
    assert len(ev.values) == DESIGN.min_seeds < DESIGN.max_seeds
    assert ev.reference_id == loop.decisions["crowned"].candidate_id
    assert [t.seed for t in trials_of(loop.archive, d.candidate_id)] == [1000, 1001, 1002]


def test_a_small_effect_needs_a_second_look(loop):
    d = loop.decisions["small"]
    ev = evaluation(loop, "small")
    assert len(ev.values) == len(ev.reference_values) == DESIGN.max_seeds > DESIGN.min_seeds
    assert ev.test == "paired" and ev.decision in ("accept", "reject")
    assert "look at 4 seeds" in ev.reason or "at 4 seeds" in ev.reason
    looks = [e for e in loop.archive.all(Evaluation)
             if e.candidate_id == d.candidate_id and e.reference_id == ev.reference_id]
    first = [e for e in looks if len(e.values) == DESIGN.min_seeds]
    assert first and first[0].decision == "more" and first[0].test == "paired"
    # the parent ran the added seed too: the pairs stay matched
    assert [t.seed for t in trials_of(loop.archive, d.candidate_id)] == sorted(VAL_SEEDS)
    assert 1003 in {t.seed for t in trials_of(loop.archive, ev.reference_id)}


def test_paired_test_when_the_seeds_match(loop):
    for label in ("crowned", "not-crowned", "futile", "small", "replication-planted",
                  "new-champion"):
        ev = evaluation(loop, label)
        assert ev.test == "paired" and ev.reason.startswith("paired:"), label


def test_a_replication_failure_is_not_crowned(loop):
    d = loop.decisions["replication-planted"]
    assert d.outcome == "accepted" and not d.champion
    assert "not crowned: audit level 2" in d.reason
    v = verdict(loop, "replication-planted")
    assert not v.passed and v.caught_at == 2
    (check,) = [c for c in v.checks if not c.passed]
    assert check.name == "replicates_on_fresh_seeds" and "needs < 1e-12" in check.evidence
    # it did beat its parent, the champion, on val: only the replication stopped it
    assert evaluation(loop, "replication-planted").decision == "accept"


def test_runtime_audit_catches_a_planted_violation(loop):
    d = loop.decisions["runtime-planted"]
    assert d.outcome == "failed" and "planted_probe" in d.reason
    v = verdict(loop, "runtime-planted")
    assert not v.passed and v.caught_at == 1
    failed = {c.name for c in v.checks if not c.passed}
    assert "planted_probe" in failed and failed <= {"planted_probe", "trials_intact"}
    bad = [t for t in trials_of(loop.archive, d.candidate_id) if t.status == "failed"]
    assert bad and bad[0].failure == "integrity"
    assert len(trials_of(loop.archive, d.candidate_id)) < DESIGN.min_seeds  # halted at once


def test_static_scan_halts_before_any_trial(loop):
    d = loop.decisions["static"]
    assert d.outcome == "failed" and d.reason.startswith("build:") and "'os'" in d.reason
    v = verdict(loop, "static")
    assert not v.passed and v.caught_at == 0 and v.level == 0
    assert loop.archive.get(Candidate, d.candidate_id) is not None
    assert not [t for t in loop.archive.all(Trial) if t.candidate_id == d.candidate_id]


def test_the_same_code_under_another_proposal_is_refused(loop):
    d, futile = loop.decisions["duplicate"], loop.decisions["futile"]
    assert d.outcome == "refused" and "evaluated before" in d.reason
    assert d.candidate_id == futile.candidate_id and d.proposal_id != futile.proposal_id
    assert d.evaluation_id is None


# -- the test split -------------------------------------------------------------------------


def test_test_split_uses_fresh_seeds(loop):
    (first, *_) = loop.tests_1
    assert first.champion_id == loop.decisions["crowned"].candidate_id
    assert first.seed_id == loop.record.seed_candidate
    replication = set(range(BASE + 100_000, BASE + 100_004))
    assert len(first.seeds) == 3 and not set(first.seeds) & (VAL_SEEDS | replication)
    test_trials = [t for t in loop.archive.all(Trial) if t.split == "test"]
    assert {t.seed for t in test_trials} <= set().union(*(r.seeds for r in loop.tests_2))
    selection = {t.seed for t in loop.archive.all(Trial) if t.split in ("val", "audit")}
    assert not selection & {t.seed for t in test_trials}
    assert first.evaluation.split == "test" and first.evaluation.test == "paired"


def test_the_same_champion_is_confirmed_once(loop):
    assert len(loop.tests_1) == 1
    assert [t.id for t in loop.tests_2] == [t.id for t in loop.tests_1]  # still one look
    assert loop.trials_2 == loop.trials_1  # and no trial ran again
    assert loop.second["stop_reason"] == loop.first["stop_reason"]


def test_a_new_champion_adds_a_look(loop):
    tests = loop.archive.all(Confirmation)
    assert len(tests) == 2
    assert tests[-1].champion_id == loop.decisions["new-champion"].candidate_id
    assert loop.record.test.champion_id == tests[-1].champion_id
    # the second look at the held-out split is judged at half the first's level
    alpha = load_params(loop.params).evaluation.alpha
    assert [t.evaluation.level for t in tests] == pytest.approx([alpha, alpha / 2])
    import json

    summary = json.loads((loop.tmp / "artifacts" / "noop" / "champion.json").read_text())
    assert summary["test_split_looks"] == 2 and summary["champion"] == tests[-1].champion_id


# -- what status and the report show ------------------------------------------------------------


def test_status_and_report_show_isolation_looks_audit_levels_and_resolution(loop):
    from autolab.report import build_report, campaign_status

    params = load_params(loop.params)
    s = campaign_status(loop.archive, params, METRIC)
    assert s["isolation"] == loop.record.isolation
    assert loop.record.isolation in ("bwrap", "unshare", "none")
    assert s["unisolated"] == loop.record.unisolated
    assert s["test_looks"] == 2
    assert s["caught_by_level"] == {"L0 static": 1, "L1 runtime": 1, "L2 replication": 1}
    assert 0.01 < s["paired_sd"] < 0.1  # the noop's per-trial noise, sqrt(2) * 0.02
    assert s["smallest_detectable_gain"] > s["paired_sd"] / 2
    text = build_report(loop.archive, params, METRIC, loop.tmp / "report").read_text()
    assert f"Sandbox: `{loop.record.isolation}`" in text
    held = "holds" if loop.record.test.evaluation.decision == "accept" else "does not hold"
    assert re.search(r"Test-split gain: .*; judged at level [\d.e-]+: " + held + r" \(", text)
    assert "L0 static: 1, L1 runtime: 1, L2 replication: 1" in text
    assert "looked at 2 time(s)" in text
    assert "smallest gain detected with 80% power is" in text


def test_status_command_prints_them(loop):
    from typer.testing import CliRunner

    from autolab.cli import app

    result = CliRunner().invoke(app, ["status", "--params", str(loop.params)],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for row in ("sandbox", "caught by audit", "L1 runtime: 1", "test split looks",
                "smallest detectable gain"):
        assert row in result.output


# -- Welch's test -----------------------------------------------------------------------------


def test_welch_when_the_seeds_do_not_match(prefect_api, tmp_path, monkeypatch):
    """The seed's trial on seed 1001 is not comparable (as if made under another setup):
    its seeds {1000, 1002, 1003} and the candidate's {1000, 1001, 1002} do not nest, so
    there are no matched pairs and Welch's test decides."""
    from autolab import history
    from flows.campaign import campaign

    seed_id = cid_of(Noop().seed_files()["solution.py"])
    real = history.comparable_trials

    def comparable(trials, candidate_id, split, setup_key):
        found = real(trials, candidate_id, split, setup_key)
        if candidate_id == seed_id and split == "val":
            found = [t for t in found if t.seed != BASE + 1]
        return found

    monkeypatch.setattr(history, "comparable_trials", comparable)
    monkeypatch.setattr("autolab.lab.make_proposer", lambda _p: Script({0: ("clear", by(0.5))}))
    params = write_params(tmp_path, max_proposals=1, evaluation=EVALUATION,
                          tracking={"mlflow": False})
    campaign(params_path=str(params), confirm=False)
    archive = Archive(tmp_path / "runs" / "test-noop" / "archive")
    (d,) = archive.all(Decision)
    ev = archive.get(Evaluation, d.evaluation_id)
    assert ev.test == "welch" and ev.reason.startswith("welch:")
    assert len(ev.values) == 3 and len(ev.reference_values) == 3
    assert d.outcome == "accepted"
    assert archive.all(Confirmation) == []  # confirm=False: the test split is never looked at
