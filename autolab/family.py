"""A campaign over a family of related problems (benchmarks.protocol.BenchmarkFamily).

Each member gets a campaign of its own, named `<campaign>--<member>`: its seed, its
lineage of candidates, its champion, its archive, its MLflow runs and its report, all
exactly as for a single benchmark. The family campaign runs them in rounds (a few
proposals per member per round, resuming each member's campaign), and before each of a
member's rounds it writes what the member's related problems found so far
(`related.json` in the member's run folder): the proposer reads it, and the offline one
tries an edit accepted on a related problem before other fresh edits. The suite's
headline is the family's aggregate (e.g. the mean) of the members' champions, against
the same of their seeds.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from pydantic import BaseModel, Field

from autolab.archive import atomic_write, campaign_archive
from autolab.config import Params
from autolab.proposers.base import RelatedResult
from autolab.records import Decision, Evaluation, Proposal
from benchmarks.protocol import BenchmarkFamily

RELATED_FILE = "related.json"


def member_campaign(campaign: str, member: str) -> str:
    """The member's campaign name: a folder name and an MLflow experiment name alike."""
    return f"{campaign}--{member.replace('/', '_')}"


def member_overrides(overrides: dict | None, family: str, campaign: str, member: str,
                     max_proposals: int) -> dict:
    """The family campaign's overrides with the member's benchmark, name and proposals."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in (overrides or {}).items()}
    out["campaign"] = {**out.get("campaign", {}), "benchmark": f"{family}/{member}",
                       "name": member_campaign(campaign, member),
                       "max_proposals": max_proposals}
    return out


def member_params(params: Params, family: str, member: str) -> Params:
    c = params.campaign.model_copy(update={"benchmark": f"{family}/{member}",
                                           "name": member_campaign(params.campaign.name,
                                                                   member)})
    return params.model_copy(update={"campaign": c})


def chosen_members(family: BenchmarkFamily, wanted: list[str] | None) -> list[str]:
    """The members a campaign works on: all, or the listed ones (each must exist)."""
    names = list(family.members())
    if not wanted:
        return names
    unknown = [m for m in wanted if m not in names]
    if unknown:
        raise KeyError(f"{family.name} has no member(s) {', '.join(unknown)}")
    return list(dict.fromkeys(wanted))


def related_members(family: BenchmarkFamily, members: list[str]) -> dict[str, list[str]]:
    """For each member, the others that share one of its relation keys."""
    keys = {m: set(family.relations(m)) for m in members}
    return {m: [o for o in members if o != m and keys[m] & keys[o]] for m in members}


def results_of(params: Params, family: str, member: str) -> list[RelatedResult]:
    """What a member's campaign has judged so far: each proposal's steps and outcome."""
    p = member_params(params, family, member)
    if not (p.paths.workdir.resolve() / p.campaign.name).exists() and p.archive.url is None:
        return []
    archive = campaign_archive(p, create=False)
    try:
        if archive.campaign() is None:
            return []
        out = []
        sign = -1.0 if family_minimizes(params, family, member) else 1.0
        for d in archive.all(Decision):
            proposal = archive.get(Proposal, d.proposal_id)
            if proposal is None or not proposal.steps:
                continue
            e = archive.get(Evaluation, d.evaluation_id) if d.evaluation_id else None
            gain = None
            if e is not None and e.mean is not None and e.reference_mean:
                gain = sign * (e.mean - e.reference_mean) / abs(e.reference_mean)
            out.append(RelatedResult(
                member=member, steps=[s.name for s in proposal.steps], outcome=d.outcome,
                champion=d.champion, relative_gain=gain, p_value=e.p_value if e else None,
                decided_at=d.created_at.isoformat()))
        return out
    finally:
        close = getattr(archive, "close", None)
        if close is not None:
            close()


def family_minimizes(params: Params, family: str, member: str) -> bool:
    from benchmarks import get_benchmark

    return get_benchmark(f"{family}/{member}").metric.direction.value == "minimize"


def write_related(run_root: Path, results: list[RelatedResult]) -> None:
    run_root.mkdir(parents=True, exist_ok=True)
    data = json.dumps([r.model_dump(mode="json") for r in results], indent=1)
    atomic_write(run_root / RELATED_FILE, data.encode())


def read_related(run_root: Path) -> list[RelatedResult]:
    """What the family campaign wrote for this member; [] outside a family campaign."""
    path = run_root / RELATED_FILE
    if not path.is_file():
        return []
    return [RelatedResult.model_validate(r) for r in json.loads(path.read_text())]


class MemberResult(BaseModel):
    member: str
    campaign: str
    relations: list[str]
    seed: float | None = None
    champion: float | None = None
    champion_id: str | None = None
    test: float | None = None
    proposals: int = 0
    accepted: list[str] = Field(default_factory=list, description="steps of accepted proposals")
    error: str | None = Field(None, description="why its campaign stopped with an error")


class Transfer(BaseModel):
    technique: str
    first: str = Field(description="the member where it was accepted first")
    accepted_on: list[str] = Field(description="related members where it was accepted later")
    rejected_on: list[str] = Field(description="related members where it was tried and lost")


class FamilySummary(BaseModel):
    family: str
    campaign: str
    metric: str
    members: list[MemberResult]
    before: float | None = Field(None, description="the aggregate of the members' seeds")
    after: float | None = Field(None, description="the aggregate of the members' champions")
    by_relation: dict[str, dict[str, float]] = Field(
        default_factory=dict, description="relation key -> {'before', 'after', 'members'}")
    transfers: list[Transfer] = Field(default_factory=list)


def family_summary(params: Params, family: BenchmarkFamily, members: list[str],
                   errors: dict[str, str] | None = None) -> FamilySummary:
    """`errors`: members whose campaign stopped with an error, and why. The aggregates
    need every member's value, so they are None while a member has none."""
    rows: list[MemberResult] = []
    results: dict[str, list[RelatedResult]] = {}
    for m in members:
        p = member_params(params, family.name, m)
        row = MemberResult(member=m, campaign=p.campaign.name, relations=list(family.relations(m)),
                           error=(errors or {}).get(m))
        results[m] = results_of(params, family.name, m)
        archive = campaign_archive(p, create=False) if results[m] else None
        record = archive.campaign() if archive is not None else None
        if record is not None and record.val is not None:
            row.seed, row.champion = record.val.reference_mean, record.val.mean
            row.champion_id = record.val.candidate_id
            if record.test is not None:
                row.test = record.test.evaluation.mean
        if archive is not None and hasattr(archive, "close"):
            archive.close()
        row.proposals = len(results[m])
        row.accepted = sorted({s for r in results[m] if r.outcome == "accepted" for s in r.steps})
        rows.append(row)

    def agg(pick: str, subset: list[MemberResult]) -> float | None:
        values = {r.member: getattr(r, pick) for r in subset}
        if not values or any(v is None for v in values.values()):
            return None
        return family.aggregate(values)

    by_relation: dict[str, dict[str, float]] = {}
    groups: dict[str, list[MemberResult]] = defaultdict(list)
    for r in rows:
        for k in r.relations:
            groups[k].append(r)
    for k, subset in sorted(groups.items()):
        before, after = agg("seed", subset), agg("champion", subset)
        if before is not None and after is not None:
            by_relation[k] = {"before": before, "after": after, "members": float(len(subset))}
    return FamilySummary(
        family=family.name, campaign=params.campaign.name, metric=family.metric.name,
        members=rows, before=agg("seed", rows), after=agg("champion", rows),
        by_relation=by_relation,
        transfers=transfers(results, related_members(family, members)),
    )


def transfers(results: dict[str, list[RelatedResult]], related: dict[str, list[str]]
              ) -> list[Transfer]:
    """Techniques accepted on one member and then tried on related ones: where they were
    accepted again and where they lost."""
    firsts: dict[str, tuple[str, str]] = {}  # technique -> (time, member) of its first win
    for m, rs in results.items():
        for r in rs:
            if r.outcome == "accepted":
                for s in r.steps:
                    if s not in firsts or r.decided_at < firsts[s][0]:
                        firsts[s] = (r.decided_at, m)
    out = []
    for technique, (when, first) in sorted(firsts.items()):
        won, lost = [], []
        for other in related.get(first, []):
            tried = [r for r in results.get(other, []) if technique in r.steps
                     and r.decided_at > when]
            if any(r.outcome == "accepted" for r in tried):
                won.append(other)
            elif tried:
                lost.append(other)
        if won or lost:
            out.append(Transfer(technique=technique, first=first, accepted_on=won,
                                rejected_on=lost))
    return out


def render_family(summary: FamilySummary) -> str:
    """The family report: the headline, each member's line, the relations, the transfers."""
    def f(v: float | None) -> str:
        return "-" if v is None else f"{v:.4g}"

    lines = [
        f"# {summary.family}: campaign `{summary.campaign}`", "",
        f"**Suite {summary.metric}: {f(summary.before)} (the seeds) -> {f(summary.after)} "
        f"(the champions)** over {len(summary.members)} problems.", "",
        "| problem | relations | seed | champion | test | proposals | accepted | report |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in summary.members:
        if r.error:
            lines.append(f"| {r.member} | {', '.join(r.relations)} | failed: {r.error[:200]} "
                         "| - | - | - | - | - |")
            continue
        lines.append(
            f"| {r.member} | {', '.join(r.relations)} | {f(r.seed)} | {f(r.champion)} | "
            f"{f(r.test)} | {r.proposals} | {', '.join(r.accepted) or '-'} | "
            f"[{r.campaign}](../{r.campaign}/report.md) |")
    if summary.by_relation:
        lines += ["", "## By relation", "", "| relation | problems | seeds | champions |",
                  "|---|---|---|---|"]
        for k, v in summary.by_relation.items():
            lines.append(f"| {k} | {int(v['members'])} | {f(v['before'])} | {f(v['after'])} |")
    lines += ["", "## Techniques carried to related problems", ""]
    if not summary.transfers:
        lines.append("None yet: no accepted technique has been tried on a related problem.")
    else:
        lines += ["| technique | first accepted on | accepted again on | lost on |",
                  "|---|---|---|---|"]
        for t in summary.transfers:
            lines.append(f"| {t.technique} | {t.first} | {', '.join(t.accepted_on) or '-'} | "
                         f"{', '.join(t.rejected_on) or '-'} |")
    return "\n".join(lines) + "\n"


def write_reports(params: Params, family: BenchmarkFamily, members: list[str],
                  errors: dict[str, str] | None = None) -> tuple[Path, FamilySummary]:
    """Each member's campaign report, then the family's (report.md and family.json) in
    reports/<campaign>/, linking to them."""
    from autolab.report import build_report

    for m in members:
        p = member_params(params, family.name, m)
        archive = campaign_archive(p, create=False) if (
            p.archive.url or (p.paths.workdir.resolve() / p.campaign.name).exists()) else None
        if archive is not None and archive.campaign() is not None:
            build_report(archive, p, family.metric, p.paths.reports / p.campaign.name)
    summary = family_summary(params, family, members, errors)
    out = params.paths.reports / params.campaign.name
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "family.json", summary.model_dump_json(indent=1).encode())
    atomic_write(out / "report.md", render_family(summary).encode())
    return out / "report.md", summary

