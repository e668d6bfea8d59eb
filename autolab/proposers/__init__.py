"""Proposers behind one seam: the offline search, with room for an LLM proposer."""

from __future__ import annotations

from autolab.config import ProposerParams
from autolab.proposers.base import Proposer


def make_proposer(params: ProposerParams) -> Proposer:
    """'auto' and 'offline' both give the offline search in this version."""
    from autolab.proposers.offline import OfflineProposer

    return OfflineProposer()
