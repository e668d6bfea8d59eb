"""The LLM proposers on scripted conversations (no campaign): the tool session, the
multi-turn loop, pricing, caching, transcripts, the research memory and its budget, and
the OpenAI-compatible provider."""

from __future__ import annotations

import json

import httpx2
import pytest
from llm_mock import FAKE_KEY, MockClaude, error, message, text, tool

from autolab.config import ProposerParams
from autolab.proposers import describe, make_proposer, resolve_kind
from autolab.proposers.base import (
    AttemptFailed,
    CandidateView,
    FailureNote,
    HistoryItem,
    ProposalRequest,
    ProposerUnavailable,
)
from autolab.proposers.claude import claude_proposer
from autolab.proposers.memory import Section, build_context, estimate_tokens, fit
from autolab.proposers.openai_compat import openai_compat_proposer
from autolab.proposers.tools import EditSession
from autolab.records import EditStep
from autolab.spend import estimate_proposal_usd, priced
from benchmarks import get_benchmark

NOOP = get_benchmark("noop")
SEED = NOOP.seed_files()["solution.py"]
SPAN = "VALUE = 3.0\n"


def request(operator: str = "improve", files: str = SEED, history=(), usd_left=None,
            parents=None) -> ProposalRequest:
    parent = CandidateView(id="p" * 16, files={"solution.py": files}, mean=3.5, n_trials=3,
                           lineage_ids=["s" * 16, "p" * 16])
    seed = CandidateView(id="s" * 16, files={"solution.py": SEED}, mean=3.6, n_trials=3,
                         lineage_ids=["s" * 16])
    return ProposalRequest(
        benchmark="noop", operator=operator, thread=0, parents=parents or [parent],
        editable_files=["solution.py"], metric=NOOP.metric, search_space=NOOP.search_space(),
        history=list(history), seed=seed, best=[parent, seed], usd_left=usd_left,
    )


def claude(script, **params):
    mock = MockClaude(script)
    p = ProposerParams(kind="claude", max_retries=params.pop("max_retries", 1), **params)
    return claude_proposer(p, api_key=FAKE_KEY, http_client=mock.client()), mock


# -- the tool session ---------------------------------------------------------------------


def test_session_confines_edits_and_checks_every_call():
    s = EditSession(start={"solution.py": SEED, "harness.py": "x"}, editable=("solution.py",))
    assert "harness.py" not in s.files
    assert s.call("view_file", {"path": "harness.py"})[1] is True
    assert s.call("write_file", {"path": "../solution.py", "content": ""})[1] is True
    assert s.call("replace_span", {"path": "solution.py", "old": "nope", "new": "x"})[1]
    assert s.call("replace_span", {"path": "solution.py", "old": "V", "new": "x"})[1]  # twice
    assert s.call("replace_span", {"path": "solution.py", "old": SPAN})[1]  # missing new
    assert s.call("replace_span", "not an object")[1]
    assert s.call("view_file", {"path": "solution.py", "start_line": "1"})[1]  # wrong type
    assert s.call("rm", {})[1]
    assert s.call("finish", {"idea": "x", "rationale": "r"})[1]  # nothing changed yet
    assert s.call("write_file", {"path": "/solution.py", "content": ""})[1]  # absolute
    assert s.call("view_file", {"path": "solution.py", "start_line": -5})[1]
    assert s.call("view_file", {"path": "solution.py", "start_line": 0})[1]
    assert len(s.errors) == 12 and all(e for e in s.errors)
    shown, bad = s.call("view_file", {"path": "solution.py", "start_line": 3, "end_line": 4})
    assert not bad and shown.splitlines()[0] == "3  VALUE = 3.0"
    assert s.call("replace_span", {"path": "solution.py", "old": SPAN,
                                   "new": "VALUE = 1.0\n"}) == (
        "replaced 1 span in solution.py (2 line(s) -> 2)", False)
    assert s.call("finish", {"idea": "Lower VALUE!", "rationale": "smaller"})[0] == "finished"
    assert s.finished.idea == "lower_value"
    (edit,) = s.edits({"solution.py": SEED})
    assert edit.search and SEED.replace(edit.search, edit.replace) == SEED.replace(
        SPAN, "VALUE = 1.0\n")


def test_session_pushes_back_once_on_an_idea_already_rejected_here():
    s = EditSession(start={"solution.py": SEED}, editable=("solution.py",),
                    tried={"lower_value": "rejected (no significant gain), p = 0.4"})
    s.call("write_file", {"path": "solution.py", "content": SEED + "\n"})
    said, bad = s.call("finish", {"idea": "lower value", "rationale": "r"})
    assert not bad and "already tried" in said and "p = 0.4" in said and s.finished is None
    assert s.call("finish", {"idea": "lower value", "rationale": "differs: ..."})[0] == "finished"


# -- the Claude loop ----------------------------------------------------------------------


def test_a_multi_turn_edit_is_a_priced_draft_with_its_transcript():
    script = [
        message(text("Let me look first."), tool("view_file", path="solution.py"),
                usage=(900, 120, 2100, 0)),
        message(tool("replace_span", path="solution.py", old=SPAN, new="VALUE = 1.0\n"),
                usage=(60, 200, 150, 3000)),
        message(tool("finish", idea="lower_value", rationale="VALUE adds to the metric."),
                usage=(40, 80, 90, 3150)),
    ]
    proposer, mock = claude(script)
    draft = proposer.propose(request())
    assert draft.operator == "improve" and draft.steps == [EditStep(name="lower_value")]
    assert draft.rationale == "VALUE adds to the metric."
    (edit,) = draft.edits
    assert edit.path == "solution.py" and "VALUE = 1.0" in edit.replace
    c = draft.cost
    assert (c.input_tokens, c.output_tokens, c.cache_write_tokens, c.cache_read_tokens) == (
        1000, 400, 2340, 6150)
    assert c.usd == pytest.approx((1000 * 3 + 400 * 15 + 2340 * 3.75 + 6150 * 0.3) / 1e6)
    assert c.model == "claude-sonnet-4-6"
    # what was sent: the static prefix cached, the tools, the conversation growing
    first, third = mock.messages_requests[0], mock.messages_requests[2]
    assert first["system"][-1]["cache_control"] == {"type": "ephemeral"}
    assert "Benchmark: noop" in first["system"][-1]["text"]
    assert [t["name"] for t in first["tools"]] == [
        "view_file", "replace_span", "write_file", "finish"]
    assert first["model"] == "claude-sonnet-4-6" and first["max_tokens"] == 8192
    assert "## Task: improve" in first["messages"][0]["content"][0]["text"]
    assert len(third["messages"]) == 5
    assert third["messages"][-1]["content"][-1]["cache_control"] == {"type": "ephemeral"}
    sent_key = mock.headers[0].get("x-api-key") or mock.headers[0].get("authorization", "")
    assert sent_key.endswith(FAKE_KEY)  # the key travels in a header only
    t = draft.transcript
    assert t.outcome == "ok" and len(t.turns) == 3 and t.cost == c
    assert FAKE_KEY not in t.model_dump_json()


def test_malformed_input_goes_back_to_the_model_and_then_fails_the_attempt():
    bad = tool("replace_span", path="solution.py", old=SPAN)  # no `new`
    proposer, _ = claude([message(bad), message(bad), message(bad)])
    with pytest.raises(AttemptFailed, match="malformed input for replace_span: missing new"
                       ) as err:
        proposer.propose(request())
    assert err.value.cost.usd > 0 and err.value.transcript.outcome == "failed"
    results = err.value.transcript.messages[2]["content"]
    assert results[0]["is_error"] and "missing new" in results[0]["content"]


def test_recovering_from_a_bad_call_succeeds():
    proposer, _ = claude([
        message(tool("write_file", path="harness.py", content="x = 1\n")),
        message(tool("write_file", path="solution.py",
                     content=SEED.replace(SPAN, "VALUE = 2.0\n"))),
        message(tool("finish", idea="value_two", rationale="r")),
    ])
    draft = proposer.propose(request())
    assert draft.edits and "not an editable file" in json.dumps(draft.transcript.messages)


def test_no_edit_turn_limit_and_spending_cap_fail_the_attempt():
    talk = message(text("I think VALUE should be lower."))
    proposer, mock = claude([talk, talk, talk], max_turns=3)
    with pytest.raises(AttemptFailed, match="no edit and no finish within proposer.max_turns=3"):
        proposer.propose(request())
    assert "Continue" in mock.messages_requests[1]["messages"][-1]["content"][0]["text"]

    pricey = message(tool("view_file", path="solution.py"), usage=(0, 100_000, 0, 0))
    proposer, mock = claude([pricey, pricey])
    with pytest.raises(AttemptFailed, match="spending cap reached during the proposal"):
        proposer.propose(request(usd_left=1.0))
    assert len(mock.messages_requests) == 1  # $1.50 spent: no second request


def test_overload_after_the_sdk_retries_is_an_outage_and_a_bad_request_is_not():
    proposer, mock = claude([error(529)] * 3, max_retries=2)
    with pytest.raises(ProposerUnavailable, match="529"):
        proposer.propose(request())
    assert len(mock.requests) == 3  # the SDK's own retries
    proposer, mock = claude([error(429, "rate_limit_error", "slow down"),
                             message(tool("write_file", path="solution.py", content="VALUE = 0\n"
                                          "OFFSET = 0.5\n\n\ndef value():\n    return VALUE\n")),
                             message(tool("finish", idea="x", rationale="y"))])
    assert proposer.propose(request()).edits and len(mock.requests) == 3
    proposer, _ = claude([error(400, "invalid_request_error", "prompt is too long")])
    with pytest.raises(AttemptFailed, match="400: prompt is too long"):
        proposer.propose(request())


def test_debug_edits_the_failed_candidate_and_diffs_against_the_good_one():
    broken = SEED.replace("    return v + OFFSET\n", "    return v + OFSET\n")
    good = CandidateView(id="g" * 16, files={"solution.py": SEED}, mean=3.5)
    failed = CandidateView(id="f" * 16, files={"solution.py": broken})
    proposer, mock = claude([
        message(tool("replace_span", path="solution.py", old="OFSET\n", new="OFFSET * 0.5\n")),
        message(tool("finish", idea="fix_name", rationale="typo")),
    ])
    req = request("debug", parents=[good, failed])
    req.failure = FailureNote(candidate_id=failed.id,
                              reason="crash: NameError: name 'OFSET' is not defined",
                              log_tail="Traceback ...\nNameError: name 'OFSET' is not defined")
    draft = proposer.propose(req)
    sent = mock.messages_requests[0]["messages"][0]["content"][0]["text"]
    assert "NameError" in sent and "+    return v + OFSET" in sent
    (edit,) = draft.edits
    assert SEED.replace(edit.search, edit.replace) == SEED.replace(
        "v + OFFSET\n", "v + OFFSET * 0.5\n")


# -- research memory ----------------------------------------------------------------------


def test_memory_shows_negative_results_and_tried_ideas():
    hist = [
        HistoryItem(candidate_id="c1" * 8, parent_id="p" * 16, operator="improve",
                    steps=[EditStep(name="drop_offset")], outcome="rejected", mean=3.49,
                    parent_mean=3.5, p_value=0.4, rationale="drop it"),
        HistoryItem(candidate_id="c2" * 8, parent_id="s" * 16, operator="improve",
                    steps=[EditStep(name="shrink_value")], outcome="failed",
                    reason="crash: boom", rationale="shrink"),
    ]
    ctx = build_context(request(history=hist), "do it", 12_000)
    assert "Already tried on pppppppp" in ctx.text and "[drop_offset]" in ctx.text
    assert "p = 0.4" in ctx.text and "tried shrink_value (1x" in ctx.text
    assert ctx.notes == []


def test_a_context_over_its_budget_loses_its_lowest_priority_items_first():
    sections = [
        Section(key="task", title="Task", priority=100, items=["x" * 700], required=True),
        Section(key="files", title="Files", priority=80, items=["f" * 1400]),
        Section(key="recent", title="Recent", priority=20, items=["r" * 350] * 6),
    ]
    ctx = fit(sections, budget=800)
    assert ctx.tokens <= 800 + 20
    assert ctx.notes == ["Recent: 5 of 6 item(s) left out"]  # newest items kept
    assert "Trimmed to fit 800 tokens" in ctx.text and "f" * 1400 in ctx.text
    assert fit(sections, budget=650).notes == ["Recent: all 6 item(s) left out"]
    assert fit(sections, budget=300).notes[0] == "Files: all 1 item(s) left out"
    assert "required sections alone exceed" in fit(sections, budget=100).notes[-1]
    assert estimate_tokens("a" * 35) == 10


# -- choosing, pricing --------------------------------------------------------------------


def test_auto_is_claude_with_a_key_and_offline_without(monkeypatch):
    p = ProposerParams()
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    assert resolve_kind(p)[0] == "offline" and make_proposer(p).name == "offline"
    assert "no ANTHROPIC_API_KEY" in describe(p, make_proposer(p))
    monkeypatch.setenv("ANTHROPIC_API_KEY", FAKE_KEY)
    proposer = make_proposer(p)
    assert proposer.name == "claude" and proposer.free_form
    line = describe(p, proposer)
    assert "claude (claude-sonnet-4-6)" in line and "ANTHROPIC_API_KEY is set" in line
    assert "$10.00 per campaign" in line and FAKE_KEY not in line


def test_prices_and_the_proposal_estimate():
    p = ProposerParams().price("claude-sonnet-4-6")
    from autolab.records import Cost

    c = priced(Cost(input_tokens=1_000_000, output_tokens=1_000_000,
                    cache_write_tokens=1_000_000, cache_read_tokens=1_000_000), p)
    assert c.usd == pytest.approx(3 + 15 + 3.75 + 0.3)
    one = estimate_proposal_usd(2000, 1500, p, turns=1, output=800)
    assert one == pytest.approx((2000 * 0.3 + 1500 * 3.75 + 800 * 15) / 1e6)


def test_unpriced_claude_model_is_refused():
    with pytest.raises(ValueError, match="no entry in proposer.prices"):
        ProposerParams(kind="claude", claude={"model": "claude-unknown"})


# -- the OpenAI-compatible provider --------------------------------------------------------


def test_openai_compatible_server_drives_the_same_loop():
    seen: list[dict] = []

    def reply(body: dict) -> dict:
        seen.append(body)
        n = sum(m["role"] == "assistant" for m in body["messages"])
        calls = [
            [{"id": "c1", "type": "function", "function": {"name": "replace_span",
                                                            "arguments": "{not json"}}],
            [{"id": "c2", "type": "function", "function": {"name": "replace_span",
             "arguments": json.dumps({"path": "solution.py", "old": SPAN,
                                      "new": "VALUE = 0.5\n"})}}],
            [{"id": "c3", "type": "function", "function": {"name": "finish",
             "arguments": json.dumps({"idea": "half_value", "rationale": "lower"})}}],
        ][n]
        return {"choices": [{"index": 0, "finish_reason": "tool_calls",
                             "message": {"role": "assistant", "content": None,
                                         "tool_calls": calls}}],
                "usage": {"prompt_tokens": 1000, "completion_tokens": 50,
                          "prompt_tokens_details": {"cached_tokens": 600}}}

    def handler(req: httpx2.Request) -> httpx2.Response:
        assert req.url.path == "/v1/chat/completions"
        return httpx2.Response(200, json=reply(json.loads(req.content)))

    params = ProposerParams(kind="openai_compat",
                            openai_compat={"base_url": "http://local:8000/v1", "model": "qwen"})
    proposer = openai_compat_proposer(
        params, http_client=httpx2.Client(transport=httpx2.MockTransport(handler)))
    draft = proposer.propose(request())
    assert draft.steps[0].name == "half_value" and "VALUE = 0.5" in draft.edits[0].replace
    assert (draft.cost.input_tokens, draft.cost.cache_read_tokens) == (1200, 1800)
    assert draft.cost.usd == 0.0  # no price for a local model
    first, second = seen[0], seen[1]
    assert first["model"] == "qwen" and first["messages"][0]["role"] == "system"
    assert first["tools"][0]["type"] == "function"
    tool_msg = second["messages"][-1]
    assert tool_msg["role"] == "tool" and "malformed input" in tool_msg["content"]
    assert second["messages"][-2]["tool_calls"][0]["function"]["arguments"] == "{not json"

    def down(req: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(503, text="loading model")

    proposer = openai_compat_proposer(
        params, http_client=httpx2.Client(transport=httpx2.MockTransport(down)))
    with pytest.raises(ProposerUnavailable, match="503"):
        proposer.propose(request())


def test_a_garbled_reply_is_a_failed_attempt_not_a_crash():
    """A reply the client cannot make sense of (a sloppy local server) fails the attempt
    with its reason, like any other bad proposal; nothing escapes to the campaign."""

    def garbled(req: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, json={"choices": [{"index": 0, "message": "oops"}],
                                          "usage": {"prompt_tokens": None}})

    params = ProposerParams(kind="openai_compat",
                            openai_compat={"base_url": "http://local:8000/v1", "model": "qwen"})
    proposer = openai_compat_proposer(
        params, http_client=httpx2.Client(transport=httpx2.MockTransport(garbled)))
    with pytest.raises(AttemptFailed, match="provider error") as err:
        proposer.propose(request())
    assert err.value.transcript.outcome == "failed"


def test_a_failure_note_shows_only_selection_trials_logs():
    """The debug operator's note: a failed audit or test trial's log says things about
    data the proposer must not tune on, so only a failed val trial's log is shown."""
    from types import SimpleNamespace

    from autolab.proposing import failure_note

    def trial(split: str, log: str):
        return SimpleNamespace(status="failed", split=split, log_tail=log)

    memory = SimpleNamespace(decisions=[], trials_of=lambda cid: [
        trial("test", "test shapes"), trial("audit", "audit shapes"), trial("val", "val log")])
    assert failure_note(memory, "c1").log_tail == "val log"
    hidden_only = SimpleNamespace(decisions=[], trials_of=lambda cid: [trial("audit", "x")])
    assert failure_note(hidden_only, "c1").log_tail == ""
