"""A campaign over a family of problems: each member its own lineage, archive and
champion; the suite's aggregate as the headline; what won on one problem tried first on
the related ones."""

from __future__ import annotations

import json

import pytest
from helpers import prefect_test_server, write_params

from autolab.archive import campaign_archive
from autolab.config import ParamsError, load_params
from autolab.family import (
    chosen_members,
    member_campaign,
    member_params,
    related_members,
    transfers,
)
from autolab.proposers.base import RelatedResult
from autolab.records import Decision, Proposal
from benchmarks import get_benchmark, get_family


@pytest.fixture(scope="module")
def prefect_api(request):
    prefect_test_server(request)


def test_members_are_benchmarks_of_their_own_and_relations_group_them():
    family = get_family("noop-family")
    a1, b2 = get_benchmark("noop-family/a1"), get_benchmark("noop-family/b2")
    assert a1.name == "noop-family/a1" and "VALUE = 3.0" in a1.seed_files()["solution.py"]
    assert "VALUE = 1.5" in b2.seed_files()["solution.py"]
    with pytest.raises(KeyError, match="no member 'zz'"):
        get_benchmark("noop-family/zz")
    members = chosen_members(family, None)
    assert related_members(family, members) == {
        "a1": ["a2"], "a2": ["a1"], "b1": ["b2"], "b2": ["b1"]}
    with pytest.raises(KeyError, match="zz"):
        chosen_members(family, ["a1", "zz"])


def test_params_accept_a_family_and_its_members_and_name_a_bad_one(tmp_path):
    for name in ("noop-family", "noop-family/a2"):
        path = write_params(tmp_path, benchmark=name, campaign={"name": "suite"})
        assert load_params(path).campaign.benchmark == name
    with pytest.raises(ParamsError, match="campaign.benchmark"):
        load_params(write_params(tmp_path, benchmark="no-family/a1"))
    with pytest.raises(ParamsError, match="family.rounds"):
        load_params(write_params(tmp_path, benchmark="noop-family", family={"rounds": 0}))


def _r(member, steps, outcome, at):
    return RelatedResult(member=member, steps=steps, outcome=outcome, decided_at=at)


def test_a_transfer_is_a_later_try_on_a_related_member():
    results = {
        "a1": [_r("a1", ["drop_offset"], "accepted", "2026-01-01T00:00:01")],
        "a2": [_r("a2", ["drop_offset"], "accepted", "2026-01-01T00:00:02"),
               _r("a2", ["shrink_value"], "accepted", "2026-01-01T00:00:03")],
        "b1": [_r("b1", ["drop_offset"], "rejected", "2026-01-01T00:00:04"),
               _r("b1", ["shrink_value"], "rejected", "2026-01-01T00:00:05")],
        "b2": [_r("b2", ["shrink_value"], "rejected", "2026-01-01T00:00:00")],  # before a2's
    }
    related = {"a1": ["a2", "b1"], "a2": ["a1", "b2"], "b1": ["a1"], "b2": ["a2"]}
    got = {(t.technique, t.target): (t.source, t.outcome) for t in transfers(results, related)}
    assert got == {
        ("drop_offset", "a2"): ("a1", "accepted"),
        ("drop_offset", "b1"): ("a1", "rejected"),
        # b1 is not related to a2, and b2 tried shrink_value before a2 accepted it
    }


def test_member_names_that_would_break_paths_or_collide_are_refused():
    for bad in ("..", "a/../b", "x__y", "a b", "/abs", "a/", "x" * 121):
        with pytest.raises(KeyError, match="not usable"):
            member_campaign("suite", bad)
    assert member_campaign("suite", "L1/001_x") == "suite--L1__001_x"


@pytest.mark.slow
def test_family_campaign_keeps_lineages_apart_and_carries_what_won(tmp_path, prefect_api):
    from flows.campaign import campaign

    params_path = write_params(
        tmp_path, benchmark="noop-family", max_proposals=99,
        campaign={"name": "suite", "threads": 1},
        evaluation={"min_seeds": 2, "max_seeds": 3, "test_seeds": 2},
        audit={"replication_seeds": 2},
        proposer={"kind": "offline", "operators": {"improve": 1.0}},
        family={"members": ["a1", "a2"], "rounds": 2, "proposals_per_round": 1},
    )
    result = campaign(params_path=str(params_path))
    params = load_params(params_path)

    seeds, first_steps = set(), {}
    for m in ("a1", "a2"):
        archive = campaign_archive(member_params(params, "noop-family", m), create=False)
        record = archive.campaign()
        assert record.benchmark == f"noop-family/{m}" and record.status == "finished"
        assert record.test is not None  # the last round confirmed each member's champion
        seeds.add(record.seed_candidate)
        proposals = sorted(archive.all(Proposal), key=lambda p: p.created_at)
        assert len(proposals) == 2 == len(archive.all(Decision))  # 2 rounds x 1 proposal
        first_steps[m] = proposals[0]
    assert len(seeds) == 2  # each member has its own seed, hence its own lineage

    # a2's first proposal came after a1's first round: it tries what won on a1 first
    a1 = campaign_archive(member_params(params, "noop-family", "a1"), create=False)
    won = [d for d in a1.all(Decision) if d.outcome == "accepted"]
    assert won, "dropping the offset is a large gain on a1"
    won_steps = [s.name for s in a1.get(Proposal, won[0].proposal_id).steps]
    a2_first = first_steps["a2"]
    assert [s.name for s in a2_first.steps] == won_steps
    assert "related problem" in a2_first.rationale

    summary = json.loads((tmp_path / "reports" / "suite" / "family.json").read_text())
    assert result["family"] == "noop-family" and summary["campaign"] == "suite"
    rows = {r["member"]: r for r in summary["members"]}
    assert set(rows) == {"a1", "a2"}
    for r in rows.values():
        assert r["champion"] < r["seed"]  # lower is better: both improved
    # the headline is on the test split; the val figures are the selection's
    assert summary["before"] == pytest.approx(
        (rows["a1"]["test_seed"] + rows["a2"]["test_seed"]) / 2)
    assert summary["after"] == pytest.approx((rows["a1"]["test"] + rows["a2"]["test"]) / 2)
    assert summary["after"] < summary["before"]
    assert summary["val_after"] == pytest.approx(
        (rows["a1"]["champion"] + rows["a2"]["champion"]) / 2)
    assert summary["by_relation"]["group:a"]["after"] == pytest.approx(summary["after"])
    assert {"technique": won_steps[0], "source": "a1", "target": "a2",
            "outcome": "accepted"} in summary["transfers"]
    report = (tmp_path / "reports" / "suite" / "report.md").read_text()
    assert "Techniques carried to related problems" in report and "| a2 |" in report
    for m in ("a1", "a2"):  # each member's own report, linked from the family's
        assert f"(../{member_campaign('suite', m)}/report.md)" in report
        assert (tmp_path / "reports" / member_campaign("suite", m) / "report.md").is_file()

    from typer.testing import CliRunner

    from autolab.cli import app

    shown = CliRunner().invoke(app, ["status", "--params", str(params_path)])
    assert shown.exit_code == 0 and "suite--a1" in shown.output, shown.output
    written = CliRunner().invoke(app, ["report", "--params", str(params_path)])
    assert written.exit_code == 0, written.output
    assert "suite/report.md" in "".join(written.output.split()), written.output

    from mlflow.tracking import MlflowClient

    from autolab.tracking import tracking_uri

    client = MlflowClient(tracking_uri=tracking_uri(tmp_path / "mlruns"))
    exp = client.get_experiment_by_name("noop-family")
    runs = client.search_runs([exp.experiment_id], "tags.`autolab.role` = 'family'")
    assert len(runs) == 1 and runs[0].data.metrics["suite_after"] == pytest.approx(
        summary["after"])
    campaigns = client.search_runs([exp.experiment_id], "tags.`autolab.role` = 'campaign'")
    assert {r.data.tags["autolab.campaign"] for r in campaigns} == {
        member_campaign("suite", "a1"), member_campaign("suite", "a2")}


@pytest.mark.slow
def test_a_member_that_cannot_run_is_recorded_and_the_others_go_on(tmp_path, prefect_api,
                                                                   monkeypatch):
    from benchmarks.noop import family as noop_family
    from flows.campaign import campaign

    monkeypatch.setitem(noop_family.MEMBERS, "broken", ("a", float("nan"), 0.5))  # VALUE = nan
    params_path = write_params(
        tmp_path, benchmark="noop-family", max_proposals=99,
        campaign={"name": "suite", "threads": 1},
        evaluation={"min_seeds": 2, "max_seeds": 2, "test_seeds": 2},
        proposer={"kind": "offline", "operators": {"improve": 1.0}},
        family={"members": ["broken", "a1"], "rounds": 1, "proposals_per_round": 1},
    )
    result = campaign(params_path=str(params_path))
    rows = {r["member"]: r for r in result["members"]}
    assert "seed" in rows["broken"]["error"] and rows["broken"]["champion"] is None
    assert rows["a1"]["error"] is None and rows["a1"]["champion"] is not None
    assert result["after"] is None  # no suite figure while a member has none
    report = (tmp_path / "reports" / "suite" / "report.md").read_text()
    assert "| broken | group:a | failed:" in report


def test_the_memory_gate_admits_what_fits_and_says_who_ran_alone():
    import threading
    import time

    from autolab.family import MemoryGate

    def run(budget, jobs):
        gate, spans, alone, lock = MemoryGate(budget), {}, {}, threading.Lock()

        def work(name: str, need: float, hold_s: float) -> None:
            with gate.hold(need) as ran_alone:
                start = time.monotonic()
                time.sleep(hold_s)
                end = time.monotonic()
            with lock:
                spans[name], alone[name] = (need, start, end), ran_alone()

        threads = [threading.Thread(target=work, args=j) for j in jobs]
        for t in threads:
            t.start()
            time.sleep(0.02)
        for t in threads:
            t.join(10)
        return spans, alone

    def beside(spans, name):
        _, s0, e0 = spans[name]
        return {o for o, (_, s1, e1) in spans.items() if o != name and s1 < e0 and s0 < e1}

    spans, alone = run(10.0, [("a", 6, 0.3), ("b", 6, 0.1), ("c", 3, 0.1), ("big", 40, 0.1),
                              ("zero", 0, 0.1), ("d", -5, 0.1)])
    for name, (need, *_) in spans.items():  # never more declared at once than the budget
        share = [min(max(0, n), 10.0) for n in [need, *(spans[o][0] for o in beside(spans, name))]]
        assert sum(share) <= 10.0, (name, beside(spans, name))
    assert beside(spans, "big") == set() and alone["big"] is True  # over the budget: alone
    assert alone["a"] is False and alone["c"] is False
    assert "c" in beside(spans, "a") and "b" not in beside(spans, "a")  # 6 + 3 fit, 6 + 6 not
    spans, alone = run(None, [("x", 1e18, 0.2), ("y", 1e18, 0.2)])  # no budget: all go in
    assert beside(spans, "x") == {"y"} and not alone["x"] and not alone["y"]


def test_a_member_whose_memory_estimate_fails_runs_alone_and_the_others_go_on(tmp_path,
                                                                               monkeypatch):
    import autolab.family as fam
    from autolab.config import load_params
    from benchmarks.noop.benchmark import Noop

    def estimate(self, folder):
        if self.name.endswith("a2"):
            raise ValueError("cannot say")
        return float("nan") if self.name.endswith("b1") else 1.0

    monkeypatch.setattr(Noop, "prewarm", lambda self, d: "", raising=False)
    monkeypatch.setattr(Noop, "prewarm_memory", estimate, raising=False)
    monkeypatch.setattr(fam, "_prewarm_process", lambda f, m, d, **k: "compiled")
    family = get_family("noop-family")
    members = list(family.members())[:3]
    params = load_params(write_params(tmp_path, benchmark="noop-family",
                                      family={"members": members, "prewarm_jobs": 3,
                                              "prewarm_memory_gb": 1}))
    assert fam.prewarm_members(params, family, members, 3) == {m: "compiled" for m in members}
    budget = 2.0**30
    assert fam._prewarm_need(family.member(members[1]), str(tmp_path), budget) == budget
    assert fam._prewarm_need(family.member(members[2]), str(tmp_path), budget) == budget
    assert fam._prewarm_need(family.member(members[0]), str(tmp_path), budget) == 1.0


def test_a_prewarm_out_of_memory_beside_others_is_tried_again_alone(tmp_path, monkeypatch):
    """Side by side, prewarms on one GPU can run out of its memory; the ones that did are
    run again at the end, one at a time, and their line says so."""
    import threading
    import time

    import autolab.family as fam
    from autolab.config import load_params

    running, calls = [0], []
    lock = threading.Lock()

    def fake(family: str, member: str, prepared_dir: str, **kw) -> str:
        with lock:
            running[0] += 1
            crowded = running[0] > 1
            calls.append((member, crowded))
        time.sleep(0.2)
        with lock:
            running[0] -= 1
        return "failed: CUDA error: out of memory" if crowded else "compiled"

    family = get_family("noop-family")
    members = list(family.members())[:3]
    from benchmarks.noop.benchmark import Noop

    monkeypatch.setattr(Noop, "prewarm", lambda self, d: "", raising=False)
    monkeypatch.setattr(fam, "_prewarm_process", fake)
    params = load_params(write_params(tmp_path, benchmark="noop-family",
                                      family={"members": members, "prewarm_jobs": 3}))
    out = fam.prewarm_members(params, family, members, 3)
    assert set(out) == set(members)
    lines = sorted(out.values())  # the first to start had the GPU to itself until others came
    assert lines[0] == "compiled", out
    assert all(line.startswith("compiled (alone, after beside others: failed: CUDA error: out "
                               "of memory") for line in lines[1:]), out
    assert [c for _, c in calls[3:]] == [False, False]  # the retries: one at a time


def test_prewarming_goes_a_window_at_a_time_just_before_the_members_turns(tmp_path,
                                                                          monkeypatch):
    """With family.prewarm_jobs: N, the untimed preparation of the next N members runs just
    before the first of them starts, once, in the first round only: a campaign stopped
    part-way has prewarmed nothing it did not reach."""
    import flows.campaign
    import flows.family

    events: list = []
    monkeypatch.setattr(flows.family, "prewarm_members",
                        lambda p, fam, members, jobs: events.append(("prewarm", list(members)))
                        or {m: "compiled" for m in members})
    monkeypatch.setattr(flows.campaign, "campaign",
                        lambda params_path, overrides, confirm: events.append(
                            ("run", overrides["campaign"]["name"].rsplit("-", 1)[-1])))
    members = ["a1", "a2", "b1"]
    params_path = write_params(
        tmp_path, benchmark="noop-family", campaign={"name": "suite"},
        family={"members": members, "rounds": 2, "proposals_per_round": 1, "prewarm_jobs": 2})
    flows.family.family_campaign.fn(params_path=str(params_path))
    assert events == [("prewarm", ["a1", "a2"]), ("run", "a1"), ("run", "a2"),
                      ("prewarm", ["b1"]), ("run", "b1"),
                      ("run", "a1"), ("run", "a2"), ("run", "b1")]
    # resumed with a1's first round done: a1 is prewarmed before its next round
    events.clear()
    monkeypatch.setattr(flows.family, "judged", lambda p, fam, m: 1 if m == "a1" else 0)
    flows.family.family_campaign.fn(params_path=str(params_path))
    assert events == [("prewarm", ["a2", "b1"]), ("run", "a2"), ("run", "b1"),
                      ("prewarm", ["a1"]), ("run", "a1"), ("run", "a2"), ("run", "b1")]
