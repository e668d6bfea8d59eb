"""Whole campaigns, in process, on the fast no-op benchmark."""

from __future__ import annotations

import json

import pytest
from helpers import ScriptedProposer, free_form_off, prefect_test_server, write_params

from autolab.archive import Archive
from autolab.config import load_params
from autolab.records import AuditVerdict, Decision, Proposal, Trial
from autolab.records import TestResult as Confirmation
from autolab.sandbox import isolation_mode
from benchmarks import get_benchmark

VALUE_FN = "\n\ndef value():\n    return VALUE + OFFSET\n"
GOOD = "VALUE = 1.0\nOFFSET = 0.5\n" + VALUE_FN
CRASH = 'raise RuntimeError("candidate exploded")\n'
HANG = "while True:\n    pass\n"
NAN = 'VALUE = float("nan")\nOFFSET = 0.5\n' + VALUE_FN


@pytest.fixture(scope="module")
def prefect_api(request):
    prefect_test_server(request)


def archive_of(tmp_path, name="test-noop") -> Archive:
    return Archive(tmp_path / "runs" / name / "archive")


def test_campaign_end_to_end_on_noop(tmp_path, prefect_api):
    from flows.campaign import campaign

    params = write_params(tmp_path, max_proposals=6)
    result = campaign(params_path=str(params))
    archive = archive_of(tmp_path)
    record = archive.campaign()
    assert record.status == "finished" and "max_proposals" in record.stop_reason
    assert record.isolation == isolation_mode("auto") and record.unisolated is False
    decisions = archive.all(Decision)
    assert len(decisions) == 6 == len(archive.all(Proposal))
    assert record.test is not None and record.test.champion_id == result["champion"]
    assert any(t.split == "test" for t in archive.all(Trial))
    # val trials of every evaluated candidate used at least min_seeds seeds
    for d in decisions:
        if d.outcome in ("accepted", "rejected"):
            n = sum(
                t.candidate_id == d.candidate_id and t.split == "val" for t in archive.all(Trial)
            )
            assert n >= 3
    # the catalogue's edits are large gains: something was crowned, each after replicating
    crowned = [d for d in decisions if d.champion]
    assert crowned and result["champion"] == crowned[-1].candidate_id
    for d in crowned:
        verdict = archive.get(AuditVerdict, d.audit_id)
        assert verdict.passed and verdict.level == 2
    summary = json.loads((tmp_path / "artifacts" / "noop" / "champion.json").read_text())
    assert summary["champion"] == result["champion"] and summary["test_split_looks"] == 1
    assert summary["isolation"] == record.isolation
    # resuming a finished campaign runs nothing again, and looks at the test split no more
    before = {t.id: t.started_at for t in archive.all(Trial)}
    campaign(params_path=str(params))
    assert {t.id: t.started_at for t in archive.all(Trial)} == before
    assert [c.id for c in archive.all(Confirmation)] == [record.test.id]


def test_failures_are_recorded_and_the_campaign_goes_on(tmp_path, prefect_api, monkeypatch):
    """A crash, a hang past the time limit, a NaN and an edit outside the editable files
    each become a decision with its reason; the good candidate after them still wins."""
    from flows.campaign import campaign

    scripted = ScriptedProposer(
        "solution.py",
        [
            ("crash", CRASH),
            ("hang", HANG),
            ("nan", NAN),
            ("other:harness.py", "x = 1\n"),
            ("good", GOOD),
        ],
    )
    free_form_off(scripted)
    monkeypatch.setattr("autolab.lab.make_proposer", lambda _params: scripted)
    params = write_params(tmp_path, max_proposals=5, budget={"wall_clock_s": 3},
                          tracking={"mlflow": False})
    campaign(params_path=str(params))

    archive = archive_of(tmp_path)
    by_label = {}
    for d in archive.all(Decision):
        proposal = archive.get(Proposal, d.proposal_id)
        by_label[proposal.steps[0].name] = d
    assert by_label["crash"].outcome == "failed"
    assert "crash" in by_label["crash"].reason and "candidate exploded" in by_label["crash"].reason
    assert by_label["hang"].outcome == "failed" and "timeout" in by_label["hang"].reason
    assert by_label["nan"].outcome == "failed" and "nan" in by_label["nan"].reason
    assert by_label["other:harness.py"].outcome == "refused"
    assert "non-editable" in by_label["other:harness.py"].reason
    assert by_label["good"].outcome == "accepted" and by_label["good"].champion
    assert archive.campaign().status == "finished"


class OnlyTunes:
    """Has nothing to offer but `tune`: the other operators must yield to it."""

    name = "only-tunes"
    operators = frozenset({"tune", "improve", "crossover"})
    free_form = False

    def __init__(self):
        self.calls = 0

    def propose(self, request):
        from autolab.proposers.base import Draft, ProposalError
        from autolab.records import EditStep, FileEdit

        if request.operator != "tune":
            raise ProposalError(f"nothing left for {request.operator}")
        self.calls += 1
        text = f"VALUE = {3.0 - 0.25 * self.calls}\nOFFSET = 0.5\n" + VALUE_FN
        return Draft(operator="tune", rationale="lower VALUE", steps=[EditStep(name="tune")],
                     edits=[FileEdit(path="solution.py", replace=text)])  # fmt: skip


def test_an_exhausted_operator_yields_to_the_others(tmp_path, prefect_api, monkeypatch):
    monkeypatch.setattr("autolab.lab.make_proposer", lambda _params: OnlyTunes())
    from flows.campaign import campaign

    campaign(params_path=str(write_params(tmp_path, max_proposals=3, tracking={"mlflow": False})))
    archive = archive_of(tmp_path)
    proposals = archive.all(Proposal)
    assert [p.operator for p in proposals] == ["tune"] * 3
    assert all(d.outcome == "accepted" for d in archive.all(Decision))


class FreeForm(OnlyTunes):
    """Writes code of its own: it needs filesystem isolation unless the user opts out."""

    name = "free-form"
    free_form = True


def test_free_form_code_needs_bwrap_unless_allowed(tmp_path, prefect_api, monkeypatch):
    from autolab.report import build_report, campaign_status
    from flows.campaign import campaign
    from tasks.prepare import CampaignRefused

    monkeypatch.setattr("autolab.lab.make_proposer", lambda _params: FreeForm())
    params = write_params(tmp_path, max_proposals=0, sandbox={"isolation": "none"},
                          tracking={"mlflow": False})
    with pytest.raises(CampaignRefused, match="sandbox.allow_unisolated"):
        campaign(params_path=str(params), confirm=False)
    archive = archive_of(tmp_path)
    assert archive.campaign() is None and archive.all(Trial) == []

    campaign(params_path=str(params), overrides={"sandbox": {"allow_unisolated": True}},
             confirm=False)
    record = archive.campaign()
    assert (record.isolation, record.unisolated) == ("none", True)
    assert {t.isolation for t in archive.all(Trial)} == {"none"}
    summary = json.loads((tmp_path / "artifacts" / "noop" / "champion.json").read_text())
    assert summary["unisolated"] is True
    p, metric = load_params(params), get_benchmark("noop").metric
    assert campaign_status(archive, p, metric)["unisolated"] is True
    text = build_report(archive, p, metric, tmp_path / "report").read_text()
    assert "**Unisolated results.**" in text and "Sandbox: `none` (unisolated)" in text
