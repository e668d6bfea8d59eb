"""A metric with constraints, judged by the evaluation layer for any benchmark: a gain
counts only if it is significant and every constraint holds (an intersection-union test),
through the sequential looks, screening, the records, the report and MLflow."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pydantic import ValidationError
from test_report import PARAMS, build_archive

from autolab.audit import replication_check
from autolab.evaluation import constraint_results, constraint_warning, evaluate
from autolab.records import CampaignRecord, Decision, Evaluation, Trial
from autolab.report import build_report
from autolab.stats import Design, compare_seeds, constraint_p
from autolab.tracking import Entry, constraint_figures
from benchmarks.protocol import Constraint, Direction, MetricSpec

ACCURACY = Constraint(metric="accuracy", op=">=", target=0.9)
LATENCY = MetricSpec(name="latency_ms", direction=Direction.MINIMIZE, unit="ms",
                     constraints=(ACCURACY,))
DESIGN = Design(alpha=0.01, min_seeds=5, max_seeds=5)
SEEDS = list(range(1000, 1010))
PARENT_MS = [20.0, 21.0, 19.5, 20.4, 20.8, 20.1, 19.9, 20.6, 20.2, 20.3]


def trials(cid: str, latency, accuracy=None) -> list[Trial]:
    accuracy = accuracy if accuracy is not None else [0.95] * len(latency)
    out = []
    for s, ms, acc in zip(SEEDS, latency, accuracy, strict=False):
        metrics = {"latency_ms": ms} | ({} if acc is None else {"accuracy": acc})
        out.append(Trial(id=f"{cid}-{s}", candidate_id=cid, seed=s, split="val",
                         status="ok", metrics=metrics))
    return out


def judge(latency, accuracy=None, design: Design = DESIGN, metric: MetricSpec = LATENCY):
    n = len(latency)
    return evaluate("cand", trials("cand", latency, accuracy), "parent",
                    trials("parent", PARENT_MS[:n]), metric, design)


FASTER = [18.0, 18.9, 17.6, 18.5, 18.7]


# -- the protocol ------------------------------------------------------------------------------


def test_no_constraint_by_default_and_old_specs_still_parse():
    assert MetricSpec(name="bpb", direction=Direction.MINIMIZE).constraints == ()
    old = MetricSpec.model_validate_json('{"name": "bpb", "direction": "minimize", "unit": ""}')
    assert old.constraints == ()
    spec = MetricSpec.model_validate_json(LATENCY.model_dump_json())
    assert spec == LATENCY and str(spec.constraints[0]) == "accuracy >= 0.9"


def test_a_constraint_is_frozen_and_checked():
    with pytest.raises(ValidationError):
        Constraint(metric="x", op="<", target=1.0)
    with pytest.raises(ValidationError):
        Constraint(metric="x", op="<=", target=1.0, alpha=0.7)
    with pytest.raises(ValidationError):
        Constraint(metric="x", op="<=", target=float("nan"))
    with pytest.raises(ValidationError):
        ACCURACY.target = 0.5  # type: ignore[misc]
    assert ACCURACY.holds_for(0.9) and not ACCURACY.holds_for(0.89)


# -- the decision --------------------------------------------------------------------------------


def test_faster_and_accurate_is_a_gain():
    ev = judge(FASTER, [0.95, 0.96, 0.94, 0.95, 0.955])
    assert ev.decision == "accept" and ev.constraints_hold, ev.reason
    (c,) = ev.constraints
    assert (c.metric, c.op, c.target, c.level) == ("accuracy", ">=", 0.9, 0.01)
    assert c.p_value < 0.01 and c.values == [0.95, 0.96, 0.94, 0.95, 0.955]
    assert "accuracy >= 0.9: p=" in ev.reason


def test_faster_but_not_clearly_accurate_is_not_a_gain_however_fast():
    ev = judge([2.0, 2.1, 1.9, 2.05, 2.0], [0.91, 0.90, 0.905, 0.89, 0.93])
    assert ev.p_value < 1e-6 and ev.decision == "reject"
    (c,) = ev.constraints
    assert c.p_value >= 0.01 and not c.holds
    assert f"latency_ms gain p={ev.p_value:.2g}" in ev.reason
    assert f"accuracy >= 0.9 only at p={c.p_value:.2g}" in ev.reason


def test_accurate_but_not_clearly_faster_is_not_a_gain():
    ev = judge([20.1, 20.9, 19.4, 20.5, 20.7], [0.95, 0.96, 0.94, 0.95, 0.955])
    assert ev.constraints_hold and ev.decision == "reject"
    assert ev.p_value >= 0.01


def test_the_constraint_p_value_is_scipy_s_one_sample_test():
    from scipy import stats

    acc = [0.91, 0.93, 0.92, 0.95]
    assert constraint_p(acc, ACCURACY) == pytest.approx(
        stats.ttest_1samp(acc, 0.9, alternative="greater").pvalue)
    below = Constraint(metric="memory_mb", op="<=", target=100.0)
    mem = [90.0, 95.0, 97.0]
    assert constraint_p(mem, below) == pytest.approx(
        stats.ttest_1samp(mem, 100.0, alternative="less").pvalue)


def test_a_maximised_metric_with_an_upper_bound():
    score = MetricSpec(name="score", direction=Direction.MAXIMIZE, constraints=(
        Constraint(metric="memory_mb", op="<=", target=100.0, alpha=0.05),))
    base = dict.fromkeys(range(5), 1.0)
    better = {s: 1.5 + s / 100 for s in range(5)}
    fits = {"memory_mb": {s: 90.0 + s for s in range(5)}}
    too_big = {"memory_mb": {s: 99.0 + s for s in range(5)}}
    assert compare_seeds(better, base, score, DESIGN, fits).decision == "accept"
    c = compare_seeds(better, base, score, DESIGN, too_big)
    assert c.decision == "reject" and c.constraints[0].level == 0.05
    assert "memory_mb <= 100 only at p=" in c.reason


def test_a_missing_constraint_metric_is_never_a_gain():
    ev = judge(FASTER, [0.95, None, 0.94, 0.95, 0.955])
    assert ev.decision == "reject" and ev.constraints[0].missing == 1
    assert "accuracy missing from 1 trial(s)" in ev.reason


def test_the_combined_test_is_at_level_alpha():
    """A real gain whose constraint sits exactly at its target (its null hypothesis true):
    accepted at a rate of at most alpha, not alpha plus the gain's."""
    rng = np.random.default_rng(1)
    design = Design(alpha=0.1, min_seeds=3, max_seeds=6, step=1)
    accepted, gains, draws = 0, 0, 600
    for _ in range(draws):
        ref = dict(enumerate(rng.normal(20, 1, 6)))
        cand = {s: v - 5 + rng.normal(0, 0.5) for s, v in ref.items()}  # clearly faster
        acc = {"accuracy": dict(enumerate(rng.normal(0.9, 0.02, 6)))}
        c = compare_seeds(cand, ref, LATENCY, design, acc)
        gains += c.p_value is not None and c.p_value < c.level
        accepted += c.decision == "accept"
    assert gains > 0.9 * draws  # the gain's test alone would accept nearly all
    assert 0 < accepted / draws <= 0.1 + 3 * (0.1 * 0.9 / draws) ** 0.5


# -- sequential looks and screening -----------------------------------------------------------


def test_a_gain_waiting_on_its_constraint_gets_more_seeds():
    design = Design(alpha=0.01, min_seeds=3, max_seeds=6, step=1)
    first = judge(FASTER[:3], [0.94, 0.97, 0.92], design)
    assert first.decision == "more" and "so far; adding seeds" in first.reason
    assert first.constraints[0].level == pytest.approx(design.nominal_alpha(3))
    last = judge(FASTER + [18.1], [0.94, 0.97, 0.92, 0.95, 0.96, 0.94], design)
    assert last.decision == "accept", last.reason


def test_a_constraint_out_of_reach_stops_for_futility():
    design = Design(alpha=0.01, min_seeds=3, max_seeds=6, step=1)
    ev = judge(FASTER[:3], [0.85, 0.88, 0.86], design)
    assert ev.decision == "reject" and ev.reason.startswith("paired: futility:")
    assert "accuracy >= 0.9 only at p=" in ev.reason


def test_a_constraint_spends_its_own_alpha_over_the_looks():
    design = Design(alpha=0.01, min_seeds=3, max_seeds=6, step=1)
    levels = [design.constraint_level(n, 0.05) for n in design.looks()]
    assert sum(levels) == pytest.approx(0.05)
    assert [design.constraint_level(n) for n in design.looks()] == [
        design.nominal_alpha(n) for n in design.looks()]


def test_screening_rejects_a_first_seed_outside_the_bound():
    design = Design(alpha=0.01, min_seeds=3, max_seeds=5, screen=True)
    out = judge(FASTER[:1], [0.8], design)
    assert out.decision == "reject"
    assert "screened out: its first seed is outside accuracy >= 0.9 (0.8)" in out.reason
    assert judge(FASTER[:1], [0.95], design).decision == "more"
    behind = judge([25.0], [0.95], design)  # the gain's own screening comes first
    assert behind.decision == "reject" and "not ahead" in behind.reason


# -- the seed, the audit, the records ------------------------------------------------------------


def test_the_seed_is_checked_and_flagged_when_it_misses():
    good = constraint_results(trials("seed", PARENT_MS[:5], [0.95, 0.96, 0.94, 0.95, 0.97]),
                              LATENCY, alpha=0.01)
    assert good[0].holds and constraint_warning(good) is None
    bad = constraint_results(trials("seed", PARENT_MS[:5], [0.85, 0.86, 0.91, 0.84, 0.88]),
                             LATENCY, alpha=0.01)
    warning = constraint_warning(bad)
    assert not bad[0].holds and warning.startswith("WARNING: the seed does not meet")
    assert "accuracy >= 0.9 only at p=" in warning


def test_replication_needs_the_constraints_too():
    ok = judge(FASTER, [0.95, 0.96, 0.94, 0.95, 0.955])
    assert replication_check(ok, 0.01).passed
    poor = ok.model_copy(update={"constraints": [
        ok.constraints[0].model_copy(update={"p_value": 0.2, "holds": False})]})
    check = replication_check(poor, 0.01)
    assert not check.passed and "accuracy >= 0.9: p=0.2" in check.evidence


def test_records_without_the_new_fields_still_load():
    old_evaluation = {
        "id": "e1", "candidate_id": "c", "reference_id": "r", "metric": "value",
        "values": [3.44, 3.55], "reference_values": [3.49, 3.50], "mean": 3.5,
        "reference_mean": 3.49, "delta": 0.01, "effect_size": -0.1, "p_value": 0.6,
        "test": "paired", "alpha": 0.01, "level": 0.003, "split": "val", "decision": "reject",
        "reason": "paired: futility: p=0.6", "created_at": "2026-11-22T08:43:56.300356Z",
    }  # fmt: skip
    old_decision = {
        "id": "d1", "campaign": "c", "thread": 0, "proposal_id": "p", "candidate_id": "c",
        "outcome": "rejected", "reason": "futility", "champion": False,
        "evaluation_id": "e1", "audit_id": "a1", "created_at": "2026-11-22T08:39:58Z",
    }  # fmt: skip
    old_campaign = {"name": "c", "benchmark": "noop", "params_hash": "h",
                    "seed_candidate": "s", "val": old_evaluation}
    ev = Evaluation.model_validate_json(json.dumps(old_evaluation))
    assert ev.constraints == [] and ev.constraints_hold
    d = Decision.model_validate_json(json.dumps(old_decision))
    assert d.p_value is None and d.constraint_p_values == {}
    record = CampaignRecord.model_validate_json(json.dumps(old_campaign))
    assert record.seed_constraints == [] and record.val.constraints == []
    again = Evaluation.model_validate_json(judge(FASTER).model_dump_json())
    assert again.constraints[0].bound == "accuracy >= 0.9"


# -- where people see it -----------------------------------------------------------------------


def test_mlflow_figures_of_the_constraints():
    ev = judge(FASTER, [0.95, 0.96, 0.94, 0.95, 0.955])
    figures = constraint_figures(ev.constraints, prefix="test_")
    assert set(figures) == {"test_constraint_accuracy_ge_p_value",
                            "test_constraint_accuracy_ge_mean"}
    from autolab.records import Candidate

    cand = Candidate(id="cand", benchmark="toy", parents=["parent"], proposal_id=None,
                     files={})
    entry = Entry(cand, None, trials("cand", FASTER), ev, None, None)
    points = {k: v for k, v, _step, _when in entry.metrics(LATENCY)}
    assert points["constraint_accuracy_ge_p_value"] == ev.constraints[0].p_value
    assert points["p_value"] == ev.p_value


def test_the_report_shows_each_constraint_and_flags_a_seed_that_misses(tmp_path):
    """The report's synthetic campaign (bpb: seed about 2.0, champion about 1.8), judged
    under a bound the seed misses and the champion meets."""
    archive, ids = build_archive(tmp_path / "archive")
    metric = MetricSpec(name="bpb", direction=Direction.MINIMIZE, unit="bits/byte",
                        constraints=(Constraint(metric="bpb", op="<=", target=1.95),))
    champ_trials = [t for t in archive.all(Trial)
                    if t.candidate_id == ids["c4"] and t.split == "val"]
    seed_trials = [t for t in archive.all(Trial)
                   if t.candidate_id == ids["seed"] and t.split == "val"]
    archive.put(evaluate(ids["c4"], champ_trials, ids["seed"], seed_trials, metric,
                         Design(0.01, 3, 3)))
    text = build_report(archive, PARAMS, metric, tmp_path / "out").read_text()
    assert "**The seed does not meet its constraint(s)**: bpb <= 1.95 only at p=" in text
    assert "- Constraints of the seed (val): bpb <= 1.95: p=" in text
    assert "FAILS at 0.01" in text and "holds at 0.01" in text
    assert "- Constraints of the champion (val): bpb <= 1.95: p=" in text
    assert "| p (vs reference) | p of bpb <= 1.95 |" in text
    assert "| reason | cost |" in text and "| p | p of bpb <= 1.95 |" in text
    plain = build_report(archive, PARAMS, metric.model_copy(update={"constraints": ()}),
                         tmp_path / "plain").read_text()
    assert "Constraint" not in plain and "p of" not in plain


# -- a whole campaign ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prefect_api(request):
    from helpers import prefect_test_server

    prefect_test_server(request)


QUALITY = Constraint(metric="quality", op=">=", target=0.5)


@pytest.mark.slow
def test_a_campaign_judges_the_constraint_and_flags_the_seed(tmp_path, prefect_api,
                                                               monkeypatch, capsys):
    """noop with a second metric, `quality` (QUALITY in the solution, 0.3 when absent, plus
    trusted noise), constrained to >= 0.5: the seed misses it and is flagged; a much lower
    value with QUALITY 0.2 is rejected; the same with QUALITY 0.9 is crowned."""
    import re

    from helpers import ScriptedProposer, free_form_off, noop_solution, write_params

    from autolab.archive import Archive
    from autolab.config import load_params
    from autolab.records import Proposal
    from autolab.summary import campaign_summary
    from autolab.tracking import Tracker
    from benchmarks.noop.benchmark import Noop, noise
    from flows.campaign import campaign

    score = Noop.score

    def with_quality(self, ctx):
        source = (ctx.workspace / "solution.py").read_text()
        found = re.search(r"^QUALITY = ([0-9.]+)$", source, re.M)
        quality = float(found.group(1)) if found else 0.3
        quality += 0.2 * noise(ctx.seed, ctx.candidate_id)
        s = score(self, ctx)
        return s.model_copy(update={"metrics": s.metrics | {"quality": quality}})

    monkeypatch.setattr(Noop, "metric", MetricSpec(name="value", direction=Direction.MINIMIZE,
                                                   constraints=(QUALITY,)))
    monkeypatch.setattr(Noop, "score", with_quality)
    scripted = free_form_off(ScriptedProposer("solution.py", [
        ("fast-poor", noop_solution(1.0, extra="QUALITY = 0.2\n")),
        ("fast-good", noop_solution(1.0, extra="QUALITY = 0.9\n")),
    ]))  # fmt: skip
    monkeypatch.setattr("autolab.lab.make_proposer", lambda _params: scripted)
    params = write_params(tmp_path, max_proposals=2, proposer={"operators": {"improve": 1.0}})
    campaign(params_path=str(params), confirm=False)

    assert "WARNING: the seed does not meet its constraint(s): quality >= 0.5" in (
        capsys.readouterr().out)
    archive = Archive(tmp_path / "runs" / "test-noop" / "archive")
    record = archive.campaign()
    (seed_check,) = record.seed_constraints
    assert not seed_check.holds and seed_check.p_value > 0.99
    decisions = {archive.get(Proposal, d.proposal_id).steps[0].name: d
                 for d in archive.all(Decision)}
    poor, good = decisions["fast-poor"], decisions["fast-good"]
    assert poor.outcome == "rejected" and poor.p_value < 0.01
    assert "value gain p=" in poor.reason and "quality >= 0.5 only at p=" in poor.reason
    assert poor.constraint_p_values["quality >= 0.5"] > 0.99
    assert good.outcome == "accepted" and good.champion
    assert good.constraint_p_values["quality >= 0.5"] < 0.01 and good.p_value < 0.01
    assert record.val.candidate_id == good.candidate_id and record.val.constraints_hold

    summary = json.loads((tmp_path / "artifacts" / "noop" / "champion.json").read_text())
    assert summary["val_constraint_p_values"]["quality >= 0.5"] < 0.01
    text = campaign_summary(load_params(params))
    assert "seed quality >= 0.5: p=1" in text and "FAILS" in text
    assert "val  quality >= 0.5: p=" in text

    p = load_params(params)
    report = build_report(archive, p, Noop.metric, tmp_path / "report").read_text()
    assert "**The seed does not meet its constraint(s)**: quality >= 0.5 only at p=1" in report

    tracker = Tracker(tmp_path / "mlruns")
    exp = tracker.client.get_experiment_by_name("noop")
    runs = tracker.client.search_runs([exp.experiment_id])
    parent = next(r for r in runs if r.data.tags.get("autolab.role") == "campaign")
    assert parent.data.tags["seed_meets_constraints"] == "false"
    assert parent.data.metrics["seed_constraint_quality_ge_p_value"] > 0.99
    child = next(r for r in runs
                 if r.data.tags.get("autolab.candidate_id") == good.candidate_id)
    assert child.data.metrics["constraint_quality_ge_p_value"] < 0.01
    assert child.data.tags["constraints"] == "hold"
