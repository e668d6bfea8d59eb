"""What earlier campaigns on the same benchmark found, as a new campaign's prior
(`campaign.learn_from`).

Each decided proposal of the named campaigns (accepted, rejected, failed, refused; with its
steps, their parameters and its gain) reaches the proposer as a `RelatedResult`, the form a
family campaign's members already share: the offline proposer tries an edit accepted there
first, with the parameters that won, and draws an edit that lost there less often. Nothing
of theirs is evidence here: every candidate is measured afresh under this campaign's setup,
and the earlier campaigns' archives are only read.
"""

from __future__ import annotations

from collections import Counter

from autolab.archive import campaign_archive
from autolab.config import Params
from autolab.family import judged_results, member_campaign
from autolab.proposers.base import NEGATIVE_OUTCOMES, RelatedResult


class LearnFromError(ValueError):
    """A campaign named in campaign.learn_from cannot serve: absent, or another benchmark."""


def earlier_results(params: Params) -> list[RelatedResult]:
    """The decided proposals of every campaign in `params.campaign.learn_from`, in that
    order. A family member's campaign reads the same member's campaign of each earlier
    family campaign, and one that never ran that member is skipped."""
    benchmark = params.campaign.benchmark
    _, _, member = benchmark.partition("/")
    if not params.campaign.learn_from:
        return []
    from benchmarks import get_benchmark  # the registry imports autolab: at call time

    minimize = get_benchmark(benchmark).metric.direction.value == "minimize"
    out: list[RelatedResult] = []
    for name in params.campaign.learn_from:
        # a campaign of this very benchmark by that name; for a family's member, else the
        # same member's campaign in the family campaign of that name
        names = [name] + ([member_campaign(name, member)] if member else [])
        if params.campaign.name in names:
            raise LearnFromError(f"campaign.learn_from names this campaign itself ({name!r}); "
                                 "its own history is the proposer's already")
        archive = record = None
        for archive_name in names:
            p = params.model_copy(update={
                "campaign": params.campaign.model_copy(update={"name": archive_name})})
            if p.archive.url is None and not (p.paths.workdir.resolve() / archive_name /
                                              "archive").exists():
                continue
            archive = campaign_archive(p, create=False)
            record = archive.campaign()
            if record is not None and (record.benchmark == benchmark or not member):
                break
            archive.close()
            archive = record = None
        try:
            if record is None:
                if member:
                    continue
                where = params.archive.url or params.paths.workdir.resolve() / name / "archive"
                raise LearnFromError(
                    f"campaign.learn_from: no campaign {name!r} in {where} (name a campaign "
                    "that ran in this workdir or archive database)")
            if record.benchmark != benchmark:
                raise LearnFromError(
                    f"campaign.learn_from: campaign {name!r} ran benchmark "
                    f"{record.benchmark!r}, not {benchmark!r}")
            out += judged_results(archive, f"campaign {name}", minimize)
        finally:
            if archive is not None:
                archive.close()
    return out


def summary(results: list[RelatedResult]) -> str:
    """One line per earlier campaign: what it judged and which techniques it accepted."""
    lines = []
    for member in dict.fromkeys(r.member for r in results):
        mine = [r for r in results if r.member == member]
        n = Counter(r.outcome for r in mine)
        won = sorted({"+".join(r.steps) for r in mine if r.outcome == "accepted"})
        lines.append(f"{member}: {len(mine)} judged, {n['accepted']} accepted"
                     f"{' (' + ', '.join(won) + ')' if won else ''}, "
                     f"{sum(n[o] for o in NEGATIVE_OUTCOMES)} negative")
    return "; ".join(lines) or "nothing judged yet"
