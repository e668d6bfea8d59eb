"""`autolab propose --dry-run`: what an LLM proposer would be sent for the campaign's next
proposal (system prompt, tools, research memory), its token count and its price. Nothing
is sent to a model and nothing is written."""

from __future__ import annotations

import json
import os
import random
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from autolab.archive import Archive
from autolab.config import Params
from autolab.lab import Lab, open_lab
from autolab.prior import earlier_results
from autolab.proposers import KEY_ENV, resolve_kind
from autolab.proposers.llm import LLMProposer, Preview
from autolab.proposing import operator_weights, request_for
from autolab.records import Decision
from autolab.selection import Plan, plan_next, search_state
from autolab.spend import estimate_proposal_usd

ASSUMED = {"turns": 3, "output": 800, "results": 150}  # one proposal, for the estimate


def llm_for(params: Params, http_client: Any = None) -> tuple[LLMProposer, str]:
    """The LLM the campaign uses, or Claude when it would use none; and a note saying so."""
    kind, why = resolve_kind(params.proposer)
    if kind == "openai_compat":
        from autolab.proposers.openai_compat import openai_compat_proposer

        return openai_compat_proposer(params.proposer, http_client), \
            f"{why}: the OpenAI-compatible server"
    from autolab.proposers.claude import claude_proposer

    note = f"{why}: Claude" if kind == "claude" else \
        f"{why}, so a campaign would use the {kind} proposer; shown: what Claude would be sent"
    return claude_proposer(params.proposer, http_client=http_client), note


def preview(lab: Lab, proposer: LLMProposer, operator: str | None = None
            ) -> tuple[Plan, Preview]:
    """The campaign's next proposal as the policy would plan it (or with `operator`); a
    campaign not yet started is shown with its seed alone, in a throwaway archive."""
    with tempfile.TemporaryDirectory(prefix="autolab-dry-run-") as tmp:
        if lab.archive.campaign() is not None:
            work, seed_id, key = replace(lab, proposer=proposer), lab.campaign.seed_candidate, \
                lab.setup.key()
        else:
            from autolab.workspace import make_candidate

            files = lab.bench.seed_files(lab.params.campaign.seed_variant)
            seed = make_candidate(lab.bench.name, files, [], None)
            work = replace(lab, proposer=proposer, archive=Archive(Path(tmp)))
            work.archive.put_candidate(seed, files)
            seed_id, key = seed.id, ""
        state = search_state(work.archive, seed_id, lab.bench.metric, key)
        index = len(work.archive.all(Decision))
        rng_seed = lab.params.campaign.random_seed * 100_003 + index
        threads = lab.params.campaign.threads
        weights = {operator: 1.0} if operator else operator_weights(work)
        plan = plan_next(state, index % threads, threads, weights, lab.bench.metric,
                         random.Random(rng_seed))
        try:
            return plan, proposer.preview(request_for(work, plan, state, rng_seed,
                                                      setup_key=key))
        finally:
            if work.archive is not lab.archive:
                work.archive.close()


def dry_run_text(params: Params, operator: str | None = None, http_client: Any = None) -> str:
    lab = open_lab(params, create=False)
    lab.learned = earlier_results(params)
    proposer, note = llm_for(params, http_client)
    plan, p = preview(lab, proposer, operator)
    started = lab.archive.campaign() is not None
    out = [
        f"# dry run: {note}",
        f"# campaign {params.campaign.name} ({lab.bench.name}): "
        + ("its archive as it stands" if started else "not started: the seed alone"),
        f"# next proposal: thread {plan.thread}, operator {plan.operator}"
        + (f" (asked: {operator})" if operator and operator != plan.operator else "")
        + f", parents {', '.join(x[:8] for x in plan.parents)}",
        "",
        "===== system prompt (the cached prefix; cache_control on its last block) =====",
        *[f"--- block {i + 1} ---\n{b}" for i, b in enumerate(p.prompt.system)],
        "",
        "===== tools =====",
        json.dumps(p.prompt.tools, indent=1),
        "",
        "===== first user message: task and research memory =====",
        p.prompt.message,
        "",
        "===== tokens =====",
        f"model: {p.provider} {p.model}; counted by: {p.counted_by}"
        + ("" if os.environ.get(KEY_ENV) or p.provider != "anthropic"
           else f" ({KEY_ENV} not set)"),
        f"first request: {p.tokens} input tokens = {p.prefix_tokens} in the cached prefix "
        f"(system + tools) + {p.tokens - p.prefix_tokens} in the message",
        "context trimmed: " + ("; ".join(p.prompt.notes) or "nothing")
        + f" (budget proposer.context_tokens={params.proposer.context_tokens})",
    ]
    price = params.proposer.price(p.model)
    if price is not None:
        context = p.tokens - p.prefix_tokens
        first = estimate_proposal_usd(p.prefix_tokens, context, price, prefix_cached=False,
                                      **ASSUMED)
        later = estimate_proposal_usd(p.prefix_tokens, context, price, **ASSUMED)
        out += [
            f"price of one proposal (estimate): ${first:.4f} for the first of a campaign "
            f"(prefix written to the cache), ${later:.4f} for later ones (prefix read), "
            f"assuming {ASSUMED['turns']} responses of {ASSUMED['output']} output tokens and "
            f"tool results of {ASSUMED['results']} tokens, the conversation cached turn to turn",
        ]
    else:
        out.append(f"no price for {p.model} in proposer.prices: counted as $0")
    return "\n".join(out)
