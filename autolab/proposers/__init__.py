"""Proposers behind one seam: the offline search, Claude, an OpenAI-compatible server, and
the A/A proposer."""

from __future__ import annotations

import os
from typing import Any

from autolab.config import ProposerParams
from autolab.proposers.base import Proposer

KEY_ENV = "ANTHROPIC_API_KEY"


def resolve_kind(params: ProposerParams) -> tuple[str, str]:
    """(kind, why): 'auto' is Claude when ANTHROPIC_API_KEY is set, offline otherwise."""
    if params.kind != "auto":
        return params.kind, f"proposer.kind {params.kind}"
    if os.environ.get(KEY_ENV):
        return "claude", f"proposer.kind auto and {KEY_ENV} is set"
    return "offline", f"proposer.kind auto and no {KEY_ENV} in the environment"


def describe(params: ProposerParams, proposer: Proposer) -> str:
    """One line for the run's log: which proposer, why, and the caps on its spending."""
    kind, why = resolve_kind(params)
    model = getattr(getattr(proposer, "backend", None), "model", None)
    line = f"proposer: {proposer.name}" + (f" ({model})" if model else "")
    if kind == proposer.name:
        line += f" - {why}"
    if getattr(proposer, "spends", False):
        c, d = params.max_usd_per_campaign, params.max_usd_per_day
        line += ("; spending caps: " + (f"${c:.2f}" if c is not None else "none")
                 + " per campaign, " + (f"${d:.2f}" if d is not None else "none") + " per day")
    return line


def make_proposer(params: ProposerParams, http_client: Any = None) -> Proposer:
    """The proposer `params` ask for; `http_client` replaces an LLM's HTTP client."""
    kind, _ = resolve_kind(params)
    if kind == "aa":
        from autolab.proposers.aa import AAProposer

        return AAProposer()
    if kind == "claude":
        from autolab.proposers.claude import claude_proposer

        return claude_proposer(params, http_client=http_client)
    if kind == "openai_compat":
        from autolab.proposers.openai_compat import openai_compat_proposer

        return openai_compat_proposer(params, http_client=http_client)
    from autolab.proposers.offline import OfflineProposer

    return OfflineProposer(delay_s=params.offline_delay_s)
