"""Proposers behind one seam: the offline search, the A/A proposer, room for an LLM."""

from __future__ import annotations

from autolab.config import ProposerParams
from autolab.proposers.base import Proposer


def make_proposer(params: ProposerParams) -> Proposer:
    """'auto' and 'offline' give the offline search in this version; 'aa' the A/A proposer."""
    if params.kind == "aa":
        from autolab.proposers.aa import AAProposer

        return AAProposer()
    from autolab.proposers.offline import OfflineProposer

    return OfflineProposer()
