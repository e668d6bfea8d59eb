"""A tinylm campaign end to end with the Claude proposer, against a scripted Messages API
that replays realistic conversations: an improvement, an edit that crashes, and the
debug of that crash. The candidates are patched, scanned, trained, evaluated and audited
like any other."""

from __future__ import annotations

import pytest
from helpers import prefect_test_server, write_params
from llm_mock import FAKE_KEY, MockClaude, message, operator_of, text, tool, turn_of

from autolab.archive import Archive
from autolab.config import load_params
from autolab.proposers import make_proposer
from autolab.records import Decision, Proposal, Spend, Transcript, Trial
from autolab.report import build_report, campaign_status
from benchmarks import get_benchmark

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def prefect_api(request):
    prefect_test_server(request)


class Researcher:
    """Answers like Claude would: reads, edits, finishes; the cache grows turn by turn."""

    def __init__(self) -> None:
        self.improves = 0

    def __call__(self, body: dict) -> dict:
        op, turn = operator_of(body), turn_of(body)
        first = turn == 0
        usage = (12, 180, 3900, 0) if first else (8, 160, 420, 3900 + 400 * turn)
        if op == "improve" and first:
            self.improves += 1
        script = {
            ("improve", 1): [
                message(text("With only a few thousand training tokens the model is far from "
                             "converged; the schedule matters most. Let me check it."),
                        tool("view_file", path="train.py", start_line=14, end_line=26),
                        usage=usage),
                message(text("LR = 3e-3 is conservative for a 2-layer model this small; "
                             "doubling it should speed up early learning."),
                        tool("replace_span", path="train.py", old="LR = 3e-3\n",
                             new="LR = 6e-3\n"), usage=usage),
                message(tool("finish", idea="higher_lr", rationale="Double the peak learning "
                             "rate: with a tiny token budget, faster early progress matters "
                             "more than late stability."), usage=usage),
            ],
            ("improve", 2): [
                message(text("More attention heads give more, smaller subspaces."),
                        tool("replace_span", path="train.py", old="N_HEAD = 4\n",
                             new="N_HEAD = 5\n"), usage=usage),
                message(tool("finish", idea="five_heads", rationale="Five heads instead of "
                             "four: more attention patterns at the same width."), usage=usage),
            ],
            ("debug", 0): [
                message(text("The log shows a view() shape error: the width 128 is not "
                             "divisible by 5 heads. Eight heads of 16 keep the idea."),
                        tool("replace_span", path="train.py", old="N_HEAD = 5\n",
                             new="N_HEAD = 8\n"), usage=usage),
                message(tool("finish", idea="eight_heads", rationale="Fix the crash: the head "
                             "count must divide N_EMBD=128; 8 heads of width 16."), usage=usage),
            ],
        }
        key = (op, self.improves if op == "improve" else 0)
        return script[key][turn]


def test_tinylm_campaign_with_claude_end_to_end(tmp_path, prefect_api, monkeypatch):
    from flows.campaign import campaign

    mock = MockClaude(Researcher())
    monkeypatch.setenv("ANTHROPIC_API_KEY", FAKE_KEY)
    monkeypatch.setattr("autolab.lab.make_proposer",
                        lambda p: make_proposer(p, http_client=mock.client()))
    params = write_params(
        tmp_path, "tinylm", max_proposals=3, tracking={"mlflow": False},
        campaign={"threads": 1, "max_wall_clock_min": 20},
        budget={"amount": 8192, "wall_clock_s": 60, "memory_mb": 3000},
        evaluation={"min_seeds": 2, "max_seeds": 2, "test_seeds": 2, "parallel_trials": 2,
                    "min_gain": 0.0},
        audit={"replication_seeds": 2},
        sandbox={"allow_unisolated": True},
        proposer={"operators": {"improve": 1.0, "debug": 1000.0}},
    )
    result = campaign(params_path=str(params), confirm=False)
    archive = Archive(tmp_path / "runs" / "test-tinylm" / "archive")

    proposals = archive.all(Proposal)
    assert [p.operator for p in proposals] == ["improve", "improve", "debug"]
    assert {p.proposer for p in proposals} == {"claude"}
    decisions = {d.proposal_id: d for d in archive.all(Decision)}
    outcomes = [decisions[p.id].outcome for p in proposals]
    assert outcomes[0] in ("accepted", "rejected") and outcomes[2] in ("accepted", "rejected")
    crash = decisions[proposals[1].id]
    assert outcomes[1] == "failed" and "crash" in crash.reason
    # debug: the failed candidate fixed, compared against its last good ancestor
    fix = proposals[2]
    assert fix.parents == [proposals[1].parents[0], crash.candidate_id]
    t = Transcript.model_validate_json(archive.read_text(fix.transcript.replace(".md", ".json")))
    sent = t.messages[0]["content"][0]["text"]
    assert "The failure to fix" in sent and "N_HEAD = 5" in sent and "Error" in sent
    fixed = decisions[fix.id].candidate_id
    files = archive.read_files(fixed)["train.py"]
    assert "N_HEAD = 8\n" in files and "LR = " in files
    ok = [t for t in archive.all(Trial) if t.candidate_id == fixed and t.status == "ok"]
    assert len(ok) >= 2  # trained, scored and audited like any candidate

    spend = archive.all(Spend)
    assert len(spend) == 3 and all(s.outcome == "ok" for s in spend)
    assert sum(p.cost.usd for p in proposals) == pytest.approx(sum(s.cost.usd for s in spend))
    assert all(p.cost.cache_read_tokens > 0 for p in proposals)  # the prefix was re-read
    p = load_params(params)
    metric = get_benchmark("tinylm").metric
    status = campaign_status(archive, p, metric)
    assert status["cost_usd"] > 0 and result["proposals"] == 3
    report = build_report(archive, p, metric, tmp_path / "report").read_text()
    assert report.count("[claude](") == 3 and "over 3 attempt(s)" in report
