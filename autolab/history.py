"""Facts derived from the archive's records, each computed in one place: a candidate's
comparable trials, the champion, a lineage."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from autolab.records import Candidate, Decision, Trial


def comparable_trials(
    trials: Iterable[Trial], candidate_id: str, split: str, setup_key: str
) -> list[Trial]:
    """The candidate's trials on `split` made under this setup (same budget, harness, data,
    runner, threads, libraries and device), in seed order. Nothing else is comparable."""
    mine = (
        t for t in trials
        if t.candidate_id == candidate_id and t.split == split and t.setup_key == setup_key
    )  # fmt: skip
    return sorted(mine, key=lambda t: t.seed)


def champion_id(decisions: Iterable[Decision], seed_id: str) -> str:
    """The candidate crowned last, or the seed while none has been."""
    crowned = [d.candidate_id for d in decisions if d.champion and d.candidate_id]
    return crowned[-1] if crowned else seed_id


def champions(decisions: Iterable[Decision]) -> list[str]:
    """Every candidate crowned so far, in order."""
    return [d.candidate_id for d in decisions if d.champion and d.candidate_id]


def lineage(candidates: Mapping[str, Candidate], candidate_id: str) -> list[str]:
    """The candidate's ancestors along first parents, the seed first and it last."""
    chain: list[str] = []
    cur: str | None = candidate_id
    while cur and cur not in chain and cur in candidates:
        chain.append(cur)
        parents = candidates[cur].parents
        cur = parents[0] if parents else None
    return chain[::-1]
