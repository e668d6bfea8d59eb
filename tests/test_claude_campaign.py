"""Campaigns with the Claude proposer against a scripted Messages API (httpx2.MockTransport),
on the no-op benchmark: what each way a conversation can go leaves in the archive."""

from __future__ import annotations

import json

import pytest
from helpers import noop_solution, prefect_test_server, write_params
from llm_mock import FAKE_KEY, MockClaude, error, message, text, tool, turn_of

from autolab.archive import Archive
from autolab.config import load_params
from autolab.proposers import make_proposer
from autolab.records import Candidate, Decision, Proposal, Spend, Transcript, Trial
from autolab.report import build_report, campaign_status
from benchmarks import get_benchmark

METRIC = get_benchmark("noop").metric


@pytest.fixture(scope="module")
def prefect_api(request):
    prefect_test_server(request)


def run(tmp_path, monkeypatch, script, max_proposals=1, mlflow=False, **proposer):
    """A campaign of one thread whose proposer is Claude behind the mock; auto picks it
    because a (fake) key is set."""
    from flows.campaign import campaign

    mock = MockClaude(script)
    monkeypatch.setenv("ANTHROPIC_API_KEY", FAKE_KEY)
    monkeypatch.setattr("autolab.lab.make_proposer",
                        lambda p: make_proposer(p, http_client=mock.client()))
    params = write_params(
        tmp_path, max_proposals=max_proposals, tracking={"mlflow": mlflow},
        campaign={"threads": 1}, sandbox={"allow_unisolated": True},
        proposer={"operators": {"improve": 1.0}, "max_retries": 1, **proposer},
    )
    campaign(params_path=str(params), confirm=False)
    return Archive(tmp_path / "runs" / "test-noop" / "archive"), mock, params


def improver(values, usage=(500, 300, 1500, 0), big: str = ""):
    """Each conversation: look at the file, rewrite it with the next VALUE, finish."""
    values = list(values)

    def step(body: dict) -> dict:
        turn = turn_of(body)
        if turn == 0:
            return message(text("Let me read the solution."), tool("view_file", path="solution.py"),
                           usage=usage)
        if turn == 1:
            value = values[0]
            return message(text(f"VALUE adds to the metric; {value} is lower."),
                           tool("write_file", path="solution.py",
                                content=big + noop_solution(value)), usage=usage)
        value = values.pop(0)
        return message(tool("finish", idea=f"value_{value}",
                            rationale="A lower VALUE lowers the metric directly."), usage=usage)

    return step


def transcript_of(archive: Archive, proposal: Proposal) -> Transcript:
    path = proposal.transcript.removesuffix(".md") + ".json"
    return Transcript.model_validate_json(archive.read_text(path))


def test_a_successful_multi_turn_edit_is_evaluated_priced_and_kept(tmp_path, prefect_api,
                                                                   monkeypatch):
    archive, mock, params = run(tmp_path, monkeypatch, improver([1.0, 0.5]), max_proposals=2,
                                mlflow=True)
    proposals = archive.all(Proposal)
    assert [p.proposer for p in proposals] == ["claude", "claude"]
    assert all(p.operator == "improve" and p.edits and p.transcript for p in proposals)
    decisions = archive.all(Decision)
    assert [d.outcome for d in decisions] == ["accepted", "accepted"]  # evaluated as any other
    assert all(len([t for t in archive.all(Trial) if t.candidate_id == d.candidate_id]) >= 3
               for d in decisions)
    spend = archive.all(Spend)
    assert [(s.outcome, s.attempt) for s in spend] == [("ok", 1), ("ok", 1)]
    one = (3 * 500 * 3 + 3 * 300 * 15 + 3 * 1500 * 3.75) / 1e6
    assert proposals[0].cost.usd == pytest.approx(one) == spend[0].cost.usd
    t = transcript_of(archive, proposals[0])
    assert t.outcome == "ok" and len(t.turns) == 3 and t.model == "claude-sonnet-4-6"
    assert "## Task: improve" in t.messages[0]["content"][0]["text"]
    assert archive.read_text(proposals[0].transcript).startswith("# Proposal ")
    # the second proposal builds on the first: lineage and memory carry it
    second = mock.messages_requests[3]["messages"][0]["content"][0]["text"]
    assert "Lineage of" in second and "accepted" in second

    p = load_params(params)
    status = campaign_status(archive, p, METRIC)
    assert status["cost_usd"] == pytest.approx(2 * one) and status["paid_attempts"] == 2
    report = build_report(archive, p, METRIC, tmp_path / "report").read_text()
    assert f"${2 * one:.2f} over 2 attempt(s)" in report
    link = f"./{proposals[0].transcript}"  # written beside the report
    assert f"[claude]({link})" in report and (tmp_path / "report" / link).is_file()

    from mlflow.tracking import MlflowClient

    from autolab.tracking import tracking_uri

    client = MlflowClient(tracking_uri(tmp_path / "mlruns"))
    exp = client.get_experiment_by_name("noop")
    parent = client.search_runs([exp.experiment_id], "tags.`autolab.role` = 'campaign'")[0]
    curve = client.get_metric_history(parent.info.run_id, "proposer_usd")
    assert [round(m.value, 6) for m in curve] == [round(one, 6), round(2 * one, 6)]
    child = client.search_runs([exp.experiment_id], "tags.operator = 'improve'")[0]
    assert child.data.metrics["proposal_usd"] == pytest.approx(one)
    names = {a.path for a in client.list_artifacts(child.info.run_id)}
    assert "transcript.md" in names
    # the key is in no record, transcript, report or MLflow file
    for path in (tmp_path / "runs").rglob("*"), (tmp_path / "mlruns").rglob("*"):
        for f in path:
            if f.is_file():
                assert FAKE_KEY.encode() not in f.read_bytes(), f


def test_malformed_tool_input_is_a_recorded_failure_and_the_campaign_goes_on(
        tmp_path, prefect_api, monkeypatch):
    bad = message(tool("replace_span", path="solution.py", old="VALUE = 3.0\n"))  # no `new`
    good = improver([1.0])
    script = [bad, bad, bad]
    archive, _, _ = run(tmp_path, monkeypatch,
                        lambda body: script.pop(0) if script else good(body), max_proposals=2)
    first, second = archive.all(Decision)
    assert first.outcome == "failed" and first.candidate_id is None
    assert "proposer gave no edit: improve: 3 bad tool calls: malformed input for " \
           "replace_span: missing new" in first.reason
    p1 = archive.get(Proposal, first.proposal_id)
    assert p1.edits == [] and p1.cost.usd > 0 and p1.transcript
    assert transcript_of(archive, p1).error.startswith("3 bad tool calls")
    assert [s.outcome for s in archive.all(Spend)] == ["failed", "ok"]
    assert second.outcome == "accepted"


def test_an_edit_to_a_non_editable_file_is_a_recorded_failure(tmp_path, prefect_api,
                                                              monkeypatch):
    hack = message(tool("write_file", path="harness.py", content="SCORE = 0\n"))
    archive, _, _ = run(tmp_path, monkeypatch, [hack] * 3)
    (d,) = archive.all(Decision)
    assert d.outcome == "failed" and "'harness.py' is not an editable file" in d.reason
    assert archive.get(Proposal, d.proposal_id).edits == []
    assert [c.id for c in archive.all(Candidate)] == [archive.campaign().seed_candidate]


def test_a_429_then_success_is_retried_by_the_client(tmp_path, prefect_api, monkeypatch):
    good = improver([1.0])
    script = [error(429, "rate_limit_error", "Number of request tokens has exceeded your "
                    "per-minute rate limit")]
    archive, mock, _ = run(tmp_path, monkeypatch,
                           lambda body: script.pop(0) if script else good(body))
    (p,) = archive.all(Proposal)
    assert p.edits and len(mock.messages_requests) == 4  # the 429, then three turns
    assert [(s.outcome, s.attempt) for s in archive.all(Spend)] == [("ok", 1)]
    assert archive.all(Decision)[0].outcome == "accepted"


def test_529_exhausted_is_a_recorded_failure_and_a_failing_proposer_stops(
        tmp_path, prefect_api, monkeypatch):
    archive, mock, _ = run(tmp_path, monkeypatch, lambda body: error(529), max_proposals=4,
                           max_consecutive_failures=2)
    decisions = archive.all(Decision)
    assert [d.outcome for d in decisions] == ["failed", "failed"]
    assert "Anthropic API 529: Overloaded (after 1 client retries)" in decisions[0].reason
    # per proposal: the SDK's 2 tries in each of the task's 3 attempts
    assert len(mock.messages_requests) == 2 * 2 * 3
    spend = archive.all(Spend)
    assert sorted((s.proposal_id == decisions[0].proposal_id, s.attempt, s.outcome)
                  for s in spend)[-3:] == [(True, 1, "unavailable"), (True, 2, "unavailable"),
                                           (True, 3, "unavailable")]
    record = archive.campaign()
    assert record.status == "finished"
    assert "the claude proposer failed 2 times in a row" in record.stop_reason
    assert "max_consecutive_failures=2" in record.stop_reason


def test_the_dollar_cap_stops_the_campaign_mid_way(tmp_path, prefect_api, monkeypatch):
    # each response: 15,000 output tokens = $0.225; a proposal of three = $0.675
    archive, mock, params = run(tmp_path, monkeypatch,
                                improver([1.0, 0.5, 0.25], usage=(0, 15_000, 0, 0)),
                                max_proposals=5, max_usd_per_campaign=1.0)
    proposals = archive.all(Proposal)
    assert len(proposals) == 2 and proposals[0].edits and not proposals[1].edits
    assert "spending cap reached during the proposal" in proposals[1].rationale
    assert len(mock.messages_requests) == 5  # 3, then 2 before the cap was in sight
    record = archive.campaign()
    assert record.stop_reason == ("proposer spend $1.12 reached "
                                  "proposer.max_usd_per_campaign=$1.00")
    assert sum(s.cost.usd for s in archive.all(Spend)) == pytest.approx(5 * 0.225)
    p = load_params(params)
    report = build_report(archive, p, METRIC, tmp_path / "report").read_text()
    assert "max_usd_per_campaign" in report.splitlines()[2] and "$1.12 over 2" in report


def test_a_context_over_budget_is_trimmed_and_says_so(tmp_path, prefect_api, monkeypatch):
    """The first candidate carries a long docstring; the second proposal's memory cannot
    hold its file within 1000 tokens, so the file is left out (view_file reads it)."""
    big = '"""' + "Notes on the solution. " * 300 + '"""\n'
    archive, mock, _ = run(tmp_path, monkeypatch, improver([1.0, 0.5], big=big),
                           max_proposals=2, context_tokens=1000)
    first, second = archive.all(Proposal)
    assert first.edits and second.edits and second.parents == [
        archive.all(Decision)[0].candidate_id]
    t = transcript_of(archive, second)
    assert t.context_notes and t.context_notes[0].startswith("Files of ")
    assert "left out (read them with view_file)" in t.context_notes[0]
    sent = t.messages[0]["content"][0]["text"]
    assert "Trimmed to fit 1000 tokens" in sent and "### solution.py" not in sent
    assert "Lineage of" in sent  # smaller, lower-priority sections still fit
    assert transcript_of(archive, first).context_notes == []
    assert mock.messages_requests[3]["messages"][0]["content"][0]["text"] == sent


def test_dry_run_shows_what_the_next_proposal_would_be_sent(tmp_path, prefect_api,
                                                           monkeypatch):
    from autolab.dry_run import dry_run_text

    archive, mock, params = run(tmp_path, monkeypatch, improver([1.0]))
    before = sorted(str(f) for f in archive.root.rglob("*")), archive.revision()
    asked = len(mock.requests)
    text_out = dry_run_text(load_params(params), http_client=mock.client())
    assert "campaign test-noop (noop): its archive as it stands" in text_out
    assert "===== system prompt (the cached prefix" in text_out
    assert '"name": "replace_span"' in text_out and "## Task: improve" in text_out
    assert "Lineage of" in text_out  # the memory of the campaign so far
    assert "counted by: anthropic token-counting endpoint" in text_out
    counted = [r for r in mock.requests[asked:] if "max_tokens" not in r]
    assert len(counted) == 2 and len(mock.requests) == asked + 2  # counted, nothing sent
    assert f"first request: {len(json.dumps(counted[0])) // 4} input tokens" in text_out
    assert "price of one proposal (estimate): $" in text_out
    assert (sorted(str(f) for f in archive.root.rglob("*")), archive.revision()) == before
    debug = dry_run_text(load_params(params), operator="debug", http_client=mock.client())
    assert "operator improve (asked: debug)" in debug  # nothing has failed: nothing to debug
