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

import contextlib
import json
import math
import os
import re
import sys
import tempfile
import threading
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pydantic import BaseModel, Field

from autolab.archive import Archive, atomic_write, campaign_archive
from autolab.config import Params
from autolab.procs import run_reaped
from autolab.proposers.base import RelatedResult
from autolab.records import Decision, Evaluation, Proposal
from benchmarks.protocol import BenchmarkFamily

RELATED_FILE = "related.json"


MEMBER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)*$")


def check_member_name(member: str) -> str:
    """Member names become folder and campaign names: letters, digits, `_ . -` and `/`
    between parts (no empty, `.`-led or `..` part, no `__`, at most 120 characters)."""
    if not MEMBER_NAME.match(member) or "__" in member or len(member) > 120:
        raise KeyError(f"member name {member!r} is not usable: letters, digits, '_', '.', '-' "
                       "and '/' between parts, no '__', at most 120 characters")
    return member


def member_campaign(campaign: str, member: str) -> str:
    """The member's campaign name: a folder name and an MLflow run name alike ('/' becomes
    '__', which member names may not hold, so two members never share one)."""
    return f"{campaign}--{check_member_name(member).replace('/', '__')}"


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


def prewarm_members(params: Params, family: BenchmarkFamily, members: list[str],
                    jobs: int) -> dict[str, str]:
    """Each member's untimed preparation (its benchmark's optional `prewarm(prepared_dir)`,
    e.g. compiling a reference whose time prepare then measures), `jobs` members at a time,
    each in a process of its own, so that the timed preparations that follow, one member
    at a time, find the work done. What one reports, or how its process ended, is its line
    here; a member without `prewarm` is left out.

    Prewarms may need the accelerator's memory: a member whose benchmark says how much
    (`prewarm_memory(prepared_dir)`, bytes) starts only while what the running ones said
    fits family.prewarm_memory_gb beside it (one that needs more runs alone), and one
    that ran out of memory beside others is tried again at the end, alone."""
    from autolab.lab import prepared_data_dir
    from autolab.runner import give_trial_runner
    from autolab.sandbox import isolation_mode

    todo = {m: str(prepared_data_dir(member_params(params, family.name, m)))
            for m in members if callable(getattr(family.member(m), "prewarm", None))}
    if not todo or jobs < 1:
        return {}
    isolation = isolation_mode(params.sandbox.isolation)  # what its trials, T_b's too, run under
    budget = params.family.prewarm_memory_gb
    limit = budget * 2**30 if budget else None
    need = {m: _prewarm_need(give_trial_runner(family.member(m), isolation), todo[m], limit)
            for m in todo} if limit else {}
    gate = MemoryGate(limit)

    def one(m: str) -> tuple[str, bool]:
        with gate.hold(need.get(m, 0)) as alone:
            said = _prewarm_process(family.name, m, todo[m], isolation=isolation)
            return said, alone()

    with ThreadPoolExecutor(min(jobs, len(todo)), thread_name_prefix="prewarm") as pool:
        done = dict(zip(todo, pool.map(one, todo), strict=True))
    out = {}
    for m, (said, alone) in done.items():
        if not alone and said.startswith("failed") and OUT_OF_MEMORY.search(said):
            again = _prewarm_process(family.name, m, todo[m],  # beside others: now alone
                                     isolation=isolation)
            said = f"{again} (alone, after beside others: {said[:240]})"
        out[m] = said
    return out


OUT_OF_MEMORY = re.compile(r"out of memory|OUT_OF_MEMORY|OutOfMemory", re.IGNORECASE)


def _prewarm_need(member, prepared_dir: str, budget: float) -> float:
    """What the member's benchmark says its prewarm holds on the device; where it cannot
    say (an error, not a number), the whole budget: it runs alone."""
    estimate = getattr(member, "prewarm_memory", None)
    if not callable(estimate):
        return 0.0
    try:
        need = float(estimate(Path(prepared_dir)))
    except Exception:  # noqa: BLE001 - one member's estimate must not stop the others
        return budget
    return max(0.0, need) if math.isfinite(need) else budget


class MemoryGate:
    """Admission by declared memory: `hold(n)` waits until n bytes fit beside what the
    holders declared; an n as large as the whole budget waits until nothing is held and
    holds the gate alone. It yields a callable that says whether the holder has run
    alone so far. No budget: everyone goes in at once."""

    def __init__(self, budget: float | None):
        self.budget, self.used, self.exclusive = budget, 0.0, False
        self._cond = threading.Condition()
        self._held: dict[int, list[bool]] = {}  # holder -> [alone so far]

    def _admits(self, n: float) -> bool:
        if self.budget is None or not self._held:
            return True
        return not self.exclusive and n < self.budget and self.used + n <= self.budget

    @contextlib.contextmanager
    def hold(self, n: float):
        n = max(0.0, float(n))
        me = [True]
        with self._cond:
            self._cond.wait_for(lambda: self._admits(n))
            if self._held:
                me[0] = False
                for other in self._held.values():
                    other[0] = False
            alone_only = self.budget is not None and n >= self.budget
            self.exclusive = self.exclusive or alone_only
            self.used += n
            self._held[id(me)] = me
        try:
            yield lambda: me[0]
        finally:
            with self._cond:
                self.used -= n
                del self._held[id(me)]
                if alone_only:
                    self.exclusive = False
                self._cond.notify_all()


PREWARM = ("import sys\nfrom autolab.family import _prewarm\n"
           "print('prewarm:', _prewarm(*sys.argv[1:]))")


def _prewarm_process(family: str, member: str, prepared_dir: str,
                     isolation: str = "auto") -> str:
    """One member's prewarm in a fresh interpreter (a crash or an out-of-memory kill ends
    it alone). Whatever it started and left running (a compile worker in a session of its
    own outlives its parent) is killed when it ends: nothing may go on compiling beside the
    timed preparations that follow."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}
    with tempfile.TemporaryFile("w+b") as log:
        code = run_reaped([sys.executable, "-c", PREWARM, family, member, prepared_dir,
                           isolation], env=env, log=log)
        log.seek(0)
        lines = log.read().decode(errors="replace").splitlines()
    said = [line.removeprefix("prewarm: ") for line in lines if line.startswith("prewarm: ")]
    if code == 0 and said:
        return said[-1]
    tail = " | ".join(lines[-3:])[-200:]
    return f"failed: exit status {code}: {tail}"


def _prewarm(family: str, member: str, prepared_dir: str, isolation: str = "auto") -> str:
    from autolab.runner import give_trial_runner
    from benchmarks import get_family

    folder = Path(prepared_dir)
    folder.mkdir(parents=True, exist_ok=True)
    return give_trial_runner(get_family(family).member(member), isolation).prewarm(folder)


def chosen_members(family: BenchmarkFamily, wanted: list[str] | None) -> list[str]:
    """The members a campaign works on: all, or the listed ones (each must exist)."""
    names = [check_member_name(m) for m in family.members()]
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
    archive = _open(p)
    if archive is None:
        return []
    try:
        return judged_results(archive, member, family_minimizes(params, family, member))
    finally:
        archive.close()


def judged_results(archive: Archive, member: str, minimize: bool) -> list[RelatedResult]:
    """Each proposal the archive's campaign decided: its steps, outcome and gain."""
    out = []
    sign = -1.0 if minimize else 1.0
    for d in archive.all(Decision):
        proposal = archive.get(Proposal, d.proposal_id)
        if proposal is None:
            continue
        e = archive.get(Evaluation, d.evaluation_id) if d.evaluation_id else None
        gain = None
        if e is not None and e.mean is not None and e.reference_mean:
            gain = sign * (e.mean - e.reference_mean) / abs(e.reference_mean)
        out.append(RelatedResult(
            member=member, steps=[s.name for s in proposal.steps],
            step_params=[dict(s.params) for s in proposal.steps], outcome=d.outcome,
            champion=d.champion, relative_gain=gain, p_value=e.p_value if e else None,
            decided_at=d.created_at.isoformat()))
    return out


def judged(params: Params, family: str, member: str) -> int:
    """How many proposals the member's campaign has decided so far."""
    archive = _open(member_params(params, family, member))
    if archive is None:
        return 0
    try:
        return archive.count(Decision)
    finally:
        archive.close()


def family_minimizes(params: Params, family: str, member: str) -> bool:
    from benchmarks import get_benchmark

    return get_benchmark(f"{family}/{member}").metric.direction.value == "minimize"


def write_related(run_root: Path, results: list[RelatedResult]) -> None:
    run_root.mkdir(parents=True, exist_ok=True)
    data = json.dumps([r.model_dump(mode="json") for r in results], indent=1)
    atomic_write(run_root / RELATED_FILE, data.encode())


def read_related(run_root: Path) -> list[RelatedResult]:
    """What the family campaign last wrote for this member's campaign ([] for a campaign
    that never ran as a family's member)."""
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
    test: float | None = Field(None, description="the champion on the test split")
    test_seed: float | None = Field(None, description="the seed on the same test seeds")
    proposals: int = 0
    accepted: list[str] = Field(default_factory=list, description="steps of accepted proposals")
    error: str | None = Field(None, description="why its campaign stopped with an error")


class Transfer(BaseModel):
    technique: str
    source: str = Field(description="a related member where it had been accepted before")
    target: str = Field(description="the member that tried it afterwards")
    outcome: str = Field(description="how the try on the target ended")


class FamilySummary(BaseModel):
    family: str
    campaign: str
    metric: str
    members: list[MemberResult]
    before: float | None = Field(None, description="the aggregate of the members' seeds on "
                                 "the test split (the headline)")
    after: float | None = Field(None, description="the aggregate of the members' champions on "
                                "the test split (the headline)")
    val_before: float | None = Field(None, description="the same on the val seeds the "
                                     "champions were chosen on (biased in their favour)")
    val_after: float | None = None
    by_relation: dict[str, dict[str, float]] = Field(
        default_factory=dict, description="relation key -> {'before', 'after', 'members'}, "
        "on the test split")
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
        archive = _open(p)
        record = archive.campaign() if archive is not None else None
        if record is not None and record.val is not None and row.error is None:
            row.seed, row.champion = record.val.reference_mean, record.val.mean
            row.champion_id = record.val.candidate_id
            test = record.test
            if test is not None and test.champion_id == row.champion_id:
                row.test, row.test_seed = test.evaluation.mean, test.evaluation.reference_mean
        if archive is not None:
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
        before, after = agg("test_seed", subset), agg("test", subset)
        if before is not None and after is not None:
            by_relation[k] = {"before": before, "after": after, "members": float(len(subset))}
    return FamilySummary(
        family=family.name, campaign=params.campaign.name, metric=family.metric.name,
        members=rows, before=agg("test_seed", rows), after=agg("test", rows),
        val_before=agg("seed", rows), val_after=agg("champion", rows),
        by_relation=by_relation,
        transfers=transfers(results, related_members(family, members)),
    )


def _open(p: Params):
    """The member's archive if its campaign was started, else None."""
    if p.archive.url is None and not (p.paths.workdir.resolve() / p.campaign.name).exists():
        return None
    archive = campaign_archive(p, create=False)
    if archive.campaign() is None:
        archive.close()
        return None
    return archive


def transfers(results: dict[str, list[RelatedResult]], related: dict[str, list[str]]
              ) -> list[Transfer]:
    """Each try of a technique on a member after a related member had accepted it: the
    technique carried from there (the earliest such member), and how the try ended."""
    wins: dict[str, list[tuple[str, str]]] = defaultdict(list)  # technique -> (time, member)
    for m, rs in results.items():
        for r in rs:
            if r.outcome == "accepted":
                for s in r.steps:
                    wins[s].append((r.decided_at, m))
    out = []
    for m, rs in sorted(results.items()):
        for r in sorted(rs, key=lambda r: r.decided_at):
            for s in r.steps:
                earlier = sorted((when, o) for when, o in wins.get(s, [])
                                 if o in related.get(m, []) and when < r.decided_at)
                if earlier:
                    out.append(Transfer(technique=s, source=earlier[0][1], target=m,
                                        outcome=r.outcome))
    return out


def render_family(summary: FamilySummary) -> str:
    """The family report: the headline, each member's line, the relations, the transfers."""
    def f(v: float | None) -> str:
        return "-" if v is None else f"{v:.4g}"

    lines = [
        f"# {summary.family}: campaign `{summary.campaign}`", "",
        f"**Suite {summary.metric} on the test split: {f(summary.before)} (the seeds) -> "
        f"{f(summary.after)} (the champions)** over {len(summary.members)} problems "
        "(- until every problem's champion is confirmed there).", "",
        f"On the val seeds the champions were chosen on (biased in their favour): "
        f"{f(summary.val_before)} -> {f(summary.val_after)}.", "",
        "| problem | relations | seed (val) | champion (val) | seed (test) | champion (test) "
        "| proposals | accepted | report |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in summary.members:
        if r.error:
            why = " ".join(r.error.split()).replace("|", "/")[:200]
            lines.append(f"| {r.member} | {', '.join(r.relations)} | failed: {why} "
                         "| - | - | - | - | - | - |")
            continue
        lines.append(
            f"| {r.member} | {', '.join(r.relations)} | {f(r.seed)} | {f(r.champion)} | "
            f"{f(r.test_seed)} | {f(r.test)} | {r.proposals} | {', '.join(r.accepted) or '-'} | "
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
        lines += ["| technique | accepted before on | tried on | outcome there |",
                  "|---|---|---|---|"]
        for t in summary.transfers:
            lines.append(f"| {t.technique} | {t.source} | {t.target} | {t.outcome} |")
    return "\n".join(lines) + "\n"


def write_reports(params: Params, family: BenchmarkFamily, members: list[str],
                  errors: dict[str, str] | None = None) -> tuple[Path, FamilySummary]:
    """Each member's campaign report, then the family's (report.md and family.json) in
    reports/<campaign>/, linking to them."""
    from autolab.report import build_report

    for m in members:
        p = member_params(params, family.name, m)
        if (archive := _open(p)) is not None:
            try:
                build_report(archive, p, family.metric, p.paths.reports / p.campaign.name)
            finally:
                archive.close()
    summary = family_summary(params, family, members, errors)
    out = params.paths.reports / params.campaign.name
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "family.json", summary.model_dump_json(indent=1).encode())
    atomic_write(out / "report.md", render_family(summary).encode())
    return out / "report.md", summary

