"""A proposer that asks a language model, whatever the provider: a bounded multi-turn
conversation in which the model edits the candidate's files with tools.

The conversation is kept in one neutral shape (the Anthropic Messages layout: content
blocks of text, tool_use and tool_result); each backend translates it to its own wire
format. Every response is priced, the conversation stops at the turn limit, the tool-error
limit or the spending cap, and its transcript goes back with the draft or the failure.
"""

from __future__ import annotations

import time
from typing import Protocol

from pydantic import BaseModel, Field

from autolab.config import Price, ProposerParams
from autolab.proposers.base import (
    AttemptFailed,
    Draft,
    ProposalRequest,
    ProposerUnavailable,
)
from autolab.proposers.memory import build_context, edited, estimate_tokens, tried_on_parent
from autolab.proposers.prompts import instructions, system_blocks
from autolab.proposers.tools import TOOLS, EditSession
from autolab.records import Cost, EditStep, Transcript, TurnRecord
from autolab.spend import priced
from benchmarks import get_benchmark

NUDGE = "Continue: make the edit with the tools, then call finish."


class ToolCall(BaseModel):
    id: str
    name: str
    input: dict | None = Field(None, description="None when the arguments were not an object")
    raw: str = Field("", description="the arguments as sent, when they could not be parsed")


class Reply(BaseModel):
    """One response, in the neutral shape."""

    blocks: list[dict] = Field(description="the assistant's content blocks")
    calls: list[ToolCall] = Field(default_factory=list)
    usage: Cost = Field(default_factory=Cost)
    stop_reason: str = ""


class Backend(Protocol):
    """One provider's chat API; raises ProposerUnavailable for faults worth retrying later
    and AttemptFailed for requests the provider refused."""

    provider: str
    model: str

    def complete(self, system: list[str], tools: list[dict], messages: list[dict]) -> Reply: ...

    def count_tokens(self, system: list[str], tools: list[dict],
                     messages: list[dict]) -> int | None: ...


class Prompt(BaseModel):
    system: list[str]
    tools: list[dict]
    message: str
    notes: list[str] = Field(default_factory=list)


class Preview(BaseModel):
    """What `autolab propose --dry-run` prints."""

    provider: str
    model: str
    operator: str
    prompt: Prompt
    tokens: int
    prefix_tokens: int
    counted_by: str = Field(description="the provider's token-counting endpoint, or the "
                            "local estimate")


def knobs_text(request: ProposalRequest) -> str:
    out = []
    for k in request.search_space.knobs:
        if k.file in request.editable_files:
            span = (", ".join(map(repr, k.choices)) if k.kind == "categorical"
                    else f"{k.low:g} .. {k.high:g}{' (log scale)' if k.log else ''}")
            out.append(f"- {k.name} in {k.file}: {k.kind}, {span}")
    return "\n".join(out)


class LLMProposer:
    operators = frozenset({"draft", "improve", "debug", "crossover", "tune"})
    free_form = True  # writes code of its own: trials need filesystem isolation
    spends = True  # its tokens cost money: the spending caps apply

    def __init__(self, name: str, backend: Backend, params: ProposerParams,
                 price: Price | None):
        self.name, self.backend, self.params, self.price = name, backend, params, price

    def prompt(self, request: ProposalRequest) -> Prompt:
        text = instructions(request.operator, knobs_text(request))
        context = build_context(request, text, self.params.context_tokens)
        bench = get_benchmark(request.benchmark)
        return Prompt(system=system_blocks(bench, request.budget), tools=TOOLS,
                      message=context.text, notes=context.notes)

    def preview(self, request: ProposalRequest) -> Preview:
        p = self.prompt(request)
        first = [_user(p.message)]
        exact = self.backend.count_tokens(p.system, p.tools, first)
        if exact is not None:
            prefix = self.backend.count_tokens(p.system, p.tools, [_user(".")]) or 0
            counted = f"{self.backend.provider} token-counting endpoint"
        else:
            prefix = estimate_tokens("\n".join(p.system) + str(p.tools))
            exact = prefix + estimate_tokens(p.message)
            counted = "local estimate (3.5 characters per token)"
        return Preview(provider=self.backend.provider, model=self.backend.model,
                       operator=request.operator, prompt=p, tokens=exact, prefix_tokens=prefix,
                       counted_by=counted)

    def propose(self, request: ProposalRequest) -> Draft:
        p = self.prompt(request)
        session = EditSession(start=edited(request).files, editable=tuple(request.editable_files),
                              tried=tried_on_parent(request))
        log = Transcript(proposal_id="", provider=self.backend.provider,
                         model=self.backend.model, operator=request.operator, system=p.system,
                         tools=p.tools, context_notes=p.notes, messages=[_user(p.message)])
        cost, started = Cost(model=self.backend.model), time.monotonic()

        def stop(kind: type[Exception], reason: str) -> Exception:
            log.cost = cost.model_copy(update={"seconds": time.monotonic() - started})
            log.outcome, log.error = "failed", reason
            return kind(reason, log.cost, log)

        for _ in range(self.params.max_turns):
            if request.usd_left is not None and cost.usd >= request.usd_left:
                raise stop(AttemptFailed, f"spending cap reached during the proposal "
                           f"(${cost.usd:.4f} spent, ${request.usd_left:.4f} was left)")
            try:
                reply = self.backend.complete(p.system, p.tools, log.messages)
            except (AttemptFailed, ProposerUnavailable) as err:
                raise stop(type(err), str(err)) from err
            except Exception as err:  # noqa: BLE001 - an odd reply or SDK error: a failure
                raise stop(AttemptFailed, f"provider error: {type(err).__name__}: {err}") from err
            turn = priced(reply.usage.model_copy(update={"model": self.backend.model}),
                          self.price)
            cost = cost.plus(turn)
            log.turns.append(TurnRecord(cost=turn, stop_reason=reply.stop_reason))
            blocks = reply.blocks or [{"type": "text", "text": "(empty response)"}]
            log.messages.append({"role": "assistant", "content": blocks})
            if not reply.calls:
                log.messages.append(_user(NUDGE))
                continue
            log.messages.append({"role": "user", "content": _answer(session, reply.calls)})
            if session.finished is not None:
                break
            if len(session.errors) >= self.params.max_tool_errors:
                raise stop(AttemptFailed, f"{len(session.errors)} bad tool calls: "
                           + "; ".join(session.errors[-3:]))
        if session.finished is None:
            tail = f"; bad tool calls: {'; '.join(session.errors[-3:])}" if session.errors else ""
            what = "edits made but" if session.changed else "no edit and"
            raise stop(AttemptFailed, f"{what} no finish within proposer.max_turns="
                       f"{self.params.max_turns} responses{tail}")
        edits = session.edits(request.parents[0].files)
        if not edits:
            raise stop(AttemptFailed, "the edit reproduces the parent: no change to evaluate")
        log.cost = cost.model_copy(update={"seconds": time.monotonic() - started})
        log.outcome = "ok"
        return Draft(operator=request.operator, rationale=session.finished.rationale,
                     steps=[EditStep(name=session.finished.idea)], edits=edits,
                     cost=log.cost, transcript=log)


def _answer(session: EditSession, calls: list[ToolCall]) -> list[dict]:
    """One tool_result per call, in order; calls after `finish` are not carried out."""
    results = []
    for call in calls:
        if session.finished is not None:
            text, bad = "ignored: finish was already called", False
        else:
            text, bad = session.call(call.name, call.input if call.input is not None else call.raw)
        results.append({"type": "tool_result", "tool_use_id": call.id, "content": text,
                        "is_error": bad})
    return results


def _user(text: str) -> dict:
    return {"role": "user", "content": [{"type": "text", "text": text}]}
