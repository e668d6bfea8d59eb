"""The MLflow mirror: one parent run per campaign, one child per candidate, no duplicates.

One sqlite store is shared by the whole module: MLflow's first database set-up is slow.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest
from test_report import METRIC, PARAMS, build_archive

from autolab.records import (
    AuditVerdict,
    CampaignRecord,
    Candidate,
    Decision,
    Evaluation,
    Proposal,
    Trial,
)
from autolab.tracking import Tracker, tracking_uri

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")
CAMPAIGN_C1 = "tags.`autolab.role` = 'campaign' AND tags.`autolab.campaign` = 'c1'"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("tracking")
    archive, ids = build_archive(root / "archive")
    tracker = Tracker(root / "mlruns")
    parent = tracker.sync(archive, PARAMS, METRIC)
    return SimpleNamespace(root=root, archive=archive, ids=ids, tracker=tracker, parent=parent)


def runs(lab: SimpleNamespace, where: str) -> list:
    exp = lab.tracker.client.get_experiment_by_name("tinylm")
    return list(lab.tracker.client.search_runs([exp.experiment_id], where))


def children(lab: SimpleNamespace) -> dict[str, object]:
    found = runs(lab, f"tags.`mlflow.parentRunId` = '{lab.parent}'")
    return {r.data.tags["autolab.candidate_id"]: r for r in found}


def log_again(
    lab: SimpleNamespace,
    tracker: Tracker,
    label: str,
    n: int,
    campaign: CampaignRecord | None = None,
) -> str | None:
    a, cid = lab.archive, lab.ids[label]
    return tracker.log_candidate(
        campaign or a.campaign(),
        a.get(Candidate, cid),
        a.get(Proposal, f"prop{n}"),
        [t for t in a.all(Trial) if t.candidate_id == cid],
        a.get(Evaluation, f"ev{n}"),
        a.get(AuditVerdict, f"au{n}"),
        a.get(Decision, f"dec{n}"),
        METRIC,
    )


def test_tracking_uri_is_sqlite_in_mlruns(tmp_path: Path):
    assert tracking_uri(tmp_path / "m") == f"sqlite:///{tmp_path.resolve()}/m/mlflow.db"


def test_experiment_per_benchmark_with_artifacts_under_mlruns(lab):
    exp = lab.tracker.client.get_experiment_by_name("tinylm")
    assert exp.artifact_location == (lab.root / "mlruns" / "artifacts" / "tinylm").as_uri()
    assert (lab.root / "mlruns" / "mlflow.db").exists()


def test_parent_run_has_params_and_final_figures(lab):
    parents = runs(lab, CAMPAIGN_C1)
    assert [r.info.run_id for r in parents] == [lab.parent]
    run = parents[0]
    assert run.info.run_name == "c1" and run.info.status == "FINISHED"
    assert run.data.params["campaign.max_proposals"] == "6"
    assert "proposer.operators.tune" in run.data.params
    m = run.data.metrics
    assert m["test_p_value"] == pytest.approx(0.00031)
    assert m["test_gain"] == pytest.approx(0.19)
    assert m["champion_val_bpb"] == pytest.approx(1.80) and m["val_gain"] == pytest.approx(0.2)
    assert run.data.tags["champion"] == lab.ids["c4"]
    assert (run.data.tags["isolation"], run.data.tags["unisolated"]) == ("bwrap", "False")
    history = lab.tracker.client.get_metric_history(lab.parent, "champion_bpb")
    assert [p.step for p in history] == [0, 1, 2]
    assert [p.value for p in history] == pytest.approx([2.0, 1.9, 1.8])  # the seed, c1, c4


def test_one_child_run_per_candidate(lab):
    kids = children(lab)
    assert sorted(kids) == sorted(lab.ids.values())  # seed + 4 evaluated candidates
    c1 = kids[lab.ids["c1"]]
    tags, params, metrics = c1.data.tags, c1.data.params, c1.data.metrics
    assert (tags["operator"], tags["outcome"], tags["champion"], tags["thread"]) == (
        "tune",
        "accepted",
        "true",
        "0",
    )
    assert params["edit_steps"] == "set_lr(LR=0.02)" and params["proposer"] == "offline"
    assert metrics["p_value"] == pytest.approx(0.0012) and metrics["bpb_mean"] == pytest.approx(1.9)
    assert metrics["bpb_seed2"] == pytest.approx(1.89) and metrics["effect_size"] == 2.0
    seeds = lab.tracker.client.get_metric_history(c1.info.run_id, "bpb")
    assert sorted((p.step, p.value) for p in seeds) == [(0, 1.90), (1, 1.91), (2, 1.89)]
    failed = kids[lab.ids["c3"]]
    assert failed.info.status == "FAILED" and failed.data.metrics["n_failed_trials"] == 1
    c4 = kids[lab.ids["c4"]]
    assert c4.data.params["parents"] == f"{lab.ids['c1']},{lab.ids['c2']}"
    assert c4.data.metrics["test_bpb_seed0"] == pytest.approx(1.82)


def test_candidate_artifacts(lab):
    kids = children(lab)
    client = lab.tracker.client
    names = {a.path for a in client.list_artifacts(kids[lab.ids["c1"]].info.run_id)}
    assert {"candidate.diff", "audit.json", "evaluation.json", "decision.json"} <= names
    failed = kids[lab.ids["c3"]]
    assert "failures.txt" in {a.path for a in client.list_artifacts(failed.info.run_id)}
    on_disk = lab.root / "mlruns" / "artifacts" / "tinylm" / failed.info.run_id / "artifacts"
    assert "RuntimeError: boom" in (on_disk / "failures.txt").read_text()
    assert "+LR = 0.05" in (on_disk / "candidate.diff").read_text()


def test_replaying_does_not_duplicate(lab):
    before = children(lab)[lab.ids["c1"]].info.run_id
    assert log_again(lab, lab.tracker, "c1", 1) == before
    fresh = Tracker(lab.root / "mlruns")  # a resumed process: no in-memory cache
    assert log_again(lab, fresh, "c1", 1) == before
    assert fresh.sync(lab.archive, PARAMS, METRIC) == lab.parent
    resumed = lab.archive.campaign().model_copy(update={"mlflow_run_id": lab.parent})
    assert Tracker(lab.root / "mlruns").start_campaign(resumed, PARAMS) == lab.parent
    assert len(runs(lab, CAMPAIGN_C1)) == 1
    assert len(children(lab)) == 5
    seeds = lab.tracker.client.get_metric_history(before, "bpb")
    assert len(seeds) == 3
    champ = lab.tracker.client.get_metric_history(lab.parent, "champion_bpb")
    assert len(champ) == 3


def test_refused_duplicate_does_not_relabel_the_known_run(lab):
    a, cid = lab.archive, lab.ids["c1"]
    dup = Decision(
        id="dup",
        campaign="c1",
        thread=1,
        proposal_id="prop9",
        candidate_id=cid,
        outcome="refused",
        reason="duplicate",
    )
    cand = a.get(Candidate, cid)
    assert lab.tracker.log_candidate(a.campaign(), cand, None, [], None, None, dup, METRIC) is None
    assert children(lab)[cid].data.tags["outcome"] == "accepted"


def test_loop_order_then_late_seed(lab):
    """As the loop logs: candidates as they are decided, the end, then the seed's run late."""
    final = lab.archive.campaign().model_copy(update={"name": "c1-live", "mlflow_run_id": None})
    live = final.model_copy(update={"status": "running", "finished_at": None, "test": None})
    tracker = Tracker(lab.root / "mlruns")
    parent = tracker.start_campaign(live, PARAMS)
    for n in (1, 2, 3, 4):
        log_again(lab, tracker, f"c{n}", n, live)
    tracker.finish_campaign(final, METRIC)
    seed = lab.archive.get(Candidate, lab.ids["seed"])
    seed_trials = [t for t in lab.archive.all(Trial) if t.candidate_id == seed.id]
    tracker.log_candidate(final, seed, None, seed_trials, None, None, None, METRIC)
    run = tracker.client.get_run(parent)
    assert run.data.tags["champion"] == lab.ids["c4"] and run.info.status == "FINISHED"
    curve = tracker.client.get_metric_history(parent, "champion_bpb")
    assert [p.value for p in curve] == pytest.approx([1.9, 1.8])  # the late seed is not appended
    assert run.data.metrics["test_gain"] == pytest.approx(0.19)


def test_disabled_tracker_does_nothing(tmp_path: Path):
    archive, ids = build_archive(tmp_path / "archive")
    tracker = Tracker(tmp_path / "mlruns", enabled=False)
    campaign = archive.campaign()
    assert tracker.start_campaign(campaign, PARAMS) is None
    assert tracker.sync(archive, PARAMS, METRIC) is None
    seed = archive.get(Candidate, ids["seed"])
    assert tracker.log_candidate(campaign, seed, None, [], None, None, None, METRIC) is None
    tracker.log_champion(campaign, ids["c1"], 1.9, METRIC, campaign.started_at)
    tracker.finish_campaign(campaign, METRIC)
    assert not (tmp_path / "mlruns").exists()


def test_an_unusable_store_is_moved_aside_and_rebuilt_from_the_archive(tmp_path: Path):
    archive, ids = build_archive(tmp_path / "archive")
    mlruns = tmp_path / "mlruns"
    mlruns.mkdir()
    garbage = b"not an sqlite database\n" * 50
    (mlruns / "mlflow.db").write_bytes(garbage)
    tracker = Tracker(mlruns)
    parent = tracker.sync(archive, PARAMS, METRIC)
    assert tracker.rebuilt and tracker.rebuilt.startswith("DatabaseError")
    (damaged,) = mlruns.glob("mlflow.db.damaged-*")
    assert damaged.read_bytes() == garbage
    client = tracker.client
    exp = client.get_experiment_by_name("tinylm")
    kids = client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent}'")
    assert sorted(r.data.tags["autolab.candidate_id"] for r in kids) == sorted(ids.values())
    assert Tracker(mlruns).client.get_run(parent).info.status == "FINISHED"  # usable again
