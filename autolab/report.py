"""What people see of a campaign: status, a Markdown report and a best-so-far plot.

Everything here is recomputed from the archive on each call, so a report can be rebuilt
at any time (mid-campaign, after a crash, on another machine) and never disagrees with it.
"""

from __future__ import annotations

import difflib
import statistics
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
import numpy as np

from autolab import history
from autolab.aa import paired_sd
from autolab.archive import Archive, atomic_write
from autolab.config import Params
from autolab.engine import Usage
from autolab.evaluation import constraint_results
from autolab.records import (
    AuditVerdict,
    CampaignRecord,
    Candidate,
    ConstraintResult,
    Decision,
    Evaluation,
    Proposal,
    Spend,
    TestResult,
    Trial,
    content_key,
    now,
)
from autolab.spend import campaign_costs, day_spend
from autolab.stats import hedges_g, one_sided_p, shortfall
from autolab.tracking import steps_text
from autolab.usage import runs_usage, usage_lines
from benchmarks.protocol import Direction, MetricSpec

COLOURS = {"seed": "#555555", "accepted": "#2ca02c", "rejected": "#1f77b4", "failed": "#d62728"}


@dataclass
class View:
    """The archive of one campaign, indexed once so each figure is a cheap lookup."""

    campaign: CampaignRecord
    metric: MetricSpec
    proposals: dict[str, Proposal]
    decisions: list[Decision]
    candidates: dict[str, Candidate]
    evaluations: dict[str, Evaluation]
    trials: dict[str, list[Trial]] = field(default_factory=dict)
    audits: dict[str, AuditVerdict] = field(default_factory=dict)
    tests: list[TestResult] = field(default_factory=list)
    spend: list[Spend] = field(default_factory=list)
    archive: Archive | None = None

    @classmethod
    def load(cls, archive: Archive, metric: MetricSpec) -> View:
        campaign = archive.campaign()
        if campaign is None:
            raise FileNotFoundError(f"no campaign in {archive.location}")
        view = cls(
            campaign=campaign,
            metric=metric,
            proposals={p.id: p for p in archive.all(Proposal) if p.campaign == campaign.name},
            decisions=[d for d in archive.all(Decision) if d.campaign == campaign.name],
            candidates={c.id: c for c in archive.all(Candidate)},
            evaluations={e.id: e for e in archive.all(Evaluation)},
            audits={a.id: a for a in archive.all(AuditVerdict)},
            tests=archive.all(TestResult),
            spend=[s for s in archive.all(Spend) if s.campaign == campaign.name],
            archive=archive,
        )
        setup = campaign.fixed.get("setup")
        key = content_key("setup", setup) if setup else None
        for t in archive.all(Trial):  # only trials comparable with the campaign's own
            if key is None or t.setup_key == key:
                view.trials.setdefault(t.candidate_id, []).append(t)
        return view

    # -- per-candidate figures -------------------------------------------------------------
    def values(self, candidate_id: str, split: str = "val") -> list[float]:
        """Metric values of the candidate's successful trials on `split`, in seed order."""
        ok = [
            t
            for t in self.trials.get(candidate_id, [])
            if t.split == split and t.status == "ok" and self.metric.name in t.metrics
        ]
        return [t.metrics[self.metric.name] for t in sorted(ok, key=lambda t: t.seed)]

    def mean(self, candidate_id: str, split: str = "val") -> float | None:
        vals = self.values(candidate_id, split)
        return statistics.fmean(vals) if vals else None

    def decision_of(self, candidate_id: str) -> Decision | None:
        """The last decision that concerned the candidate (a duplicate may be refused later)."""
        found = [d for d in self.decisions if d.candidate_id == candidate_id]
        evaluated = [d for d in found if d.outcome != "refused"]
        return (evaluated or found or [None])[-1]

    def outcome(self, candidate_id: str) -> str:
        if candidate_id == self.campaign.seed_candidate:
            return "seed"
        decision = self.decision_of(candidate_id)
        return decision.outcome if decision else "pending"

    def evaluation_of(self, candidate_id: str) -> Evaluation | None:
        """The evaluation the selection used, else the candidate's latest one."""
        decision = self.decision_of(candidate_id)
        if decision and decision.evaluation_id in self.evaluations:
            return self.evaluations[decision.evaluation_id]
        same = [e for e in self.evaluations.values() if e.candidate_id == candidate_id]
        return same[-1] if same else None

    def proposal_of(self, candidate_id: str) -> Proposal | None:
        cand = self.candidates.get(candidate_id)
        return self.proposals.get(cand.proposal_id or "") if cand else None

    # -- campaign-level figures ------------------------------------------------------------
    def champion(self) -> str:
        return history.champion_id(self.decisions, self.campaign.seed_candidate)

    def gain(self, value: float | None, reference: float | None) -> float | None:
        """Improvement of value over reference, positive when better in the metric's sense."""
        if value is None or reference is None:
            return None
        diff = value - reference
        return -diff if self.metric.direction is Direction.MINIMIZE else diff

    def minutes(self, when: datetime) -> float:
        return (when - self.campaign.started_at).total_seconds() / 60.0


def pct(gain: float | None, reference: float | None) -> float | None:
    if gain is None or not reference:
        return None
    return 100.0 * gain / abs(reference)


# -- status -------------------------------------------------------------------------------


def _failure_counts(view: View) -> dict[str, int]:
    """Failed proposals by the kind of their first failed trial ("no trial" if none ran)."""
    counts: Counter[str] = Counter()
    for d in (d for d in view.decisions if d.outcome == "failed"):
        bad = [t for t in view.trials.get(d.candidate_id or "", []) if t.status == "failed"]
        counts[(bad[0].failure or "unknown") if bad else "no trial"] += 1
    return dict(counts)


def _best(view: View) -> tuple[str | None, float | None]:
    """Best val mean of any candidate run so far, significant or not."""
    means = {cid: m for cid in view.candidates if (m := view.mean(cid)) is not None}
    pick = min if view.metric.direction is Direction.MINIMIZE else max
    best = pick(means, key=means.__getitem__, default=None)
    return best, means.get(best or "")


def campaign_status(archive: Archive, params: Params, metric: MetricSpec) -> dict[str, Any]:
    """Counts and budget of a campaign, the data behind `autolab status`."""
    return _status(View.load(archive, metric), params)


def _status(view: View, params: Params) -> dict[str, Any]:
    camp, metric = view.campaign, view.metric
    ran = {d.candidate_id for d in view.decisions if view.trials.get(d.candidate_id or "")}
    outcomes = Counter(d.outcome for d in view.decisions)
    champion = view.champion()
    seed_mean, champ_mean = view.mean(camp.seed_candidate), view.mean(champion)
    best_id, best_mean = _best(view)
    elapsed = view.minutes(camp.finished_at or now())
    gain = view.gain(champ_mean, seed_mean)
    return {
        "campaign": camp.name,
        "benchmark": camp.benchmark,
        "metric": metric.name,
        "direction": metric.direction.value,
        "status": camp.status,
        "stop_reason": camp.stop_reason,
        "proposals": len(view.proposals),
        "evaluated": len(ran),
        **{k: outcomes[k] for k in ("accepted", "rejected", "failed", "refused")},
        "failures_by_kind": _failure_counts(view),
        "champion": champion,
        "champion_mean": champ_mean,
        "seed": camp.seed_candidate,
        "seed_mean": seed_mean,
        "gain": gain,
        "gain_pct": pct(gain, seed_mean),
        "best_candidate": best_id,
        "best_mean": best_mean,
        **_costs(view, params),
        "elapsed_min": elapsed,
        "proposals_left": max(0, params.campaign.max_proposals - len(view.proposals)),
        "minutes_left": max(0.0, params.campaign.max_wall_clock_min - elapsed),
        "isolation": camp.isolation or "-",
        "unisolated": camp.unisolated,
        "caught_by_level": _caught_by_level(view),
        "test_looks": sum(t.is_look for t in view.tests),
        "trials": sum(len(ts) for ts in view.trials.values()),
        # the trials' own wall-clock (on a GPU benchmark: GPU-minutes), all splits
        "trial_minutes": (tm := sum(t.wall_s for ts in view.trials.values() for t in ts) / 60),
        "minutes_per_accepted": tm / outcomes["accepted"] if outcomes["accepted"] else None,
        "paired_sd": (sd := paired_sd(list(view.evaluations.values()))),
        "smallest_detectable_gain": _resolution(sd, params),
        "usage": runs_usage(view.archive),  # each run's slots: duty cycle, idle reasons
    }


def _costs(view: View, params: Params) -> dict[str, Any]:
    """What the proposer spent (every paid attempt), and the caps on it."""
    cost = campaign_costs(view.spend, view.proposals.values())
    p = params.proposer
    return {
        "cost_usd": cost.usd,
        "cost_tokens": {"input": cost.input_tokens, "output": cost.output_tokens,
                        "cache_write": cost.cache_write_tokens,
                        "cache_read": cost.cache_read_tokens},
        "cap_usd_campaign": p.max_usd_per_campaign,
        "cap_usd_day": p.max_usd_per_day,
        "spent_today_usd": day_spend(params.paths.workdir, archive=view.archive)
        if view.spend else 0.0,
        "paid_attempts": len(view.spend),
    }


def _cost_text(s: dict[str, Any]) -> str:
    t = s["cost_tokens"]
    text = f"${s['cost_usd']:.2f}"
    if not s["paid_attempts"]:
        return text
    text += (f" over {s['paid_attempts']} attempt(s): {t['input']} input, {t['cache_write']}"
             f" cache-write, {t['cache_read']} cache-read, {t['output']} output tokens")
    caps = []
    if s["cap_usd_campaign"] is not None:
        caps.append(f"cap ${s['cap_usd_campaign']:.2f} per campaign")
    if s["cap_usd_day"] is not None:
        caps.append(f"today ${s['spent_today_usd']:.2f} of ${s['cap_usd_day']:.2f} per day")
    return text + (f" ({'; '.join(caps)})" if caps else "")


def _caught_by_level(view: View) -> dict[str, int]:
    """Decisions whose audit caught the candidate, by the level that did."""
    names = {0: "static", 1: "runtime", 2: "replication", 3: "test"}
    counts: Counter[str] = Counter()
    for d in view.decisions:
        a = view.audits.get(d.audit_id or "")
        if a is not None and a.caught_at is not None:
            counts[f"L{a.caught_at} {names.get(a.caught_at, '')}".strip()] += 1
    return dict(sorted(counts.items()))


def _resolution(sd: float | None, params: Params) -> float | None:
    from autolab.stats import Design, smallest_detectable_gain

    ev = params.evaluation
    design = Design(ev.alpha, ev.min_seeds, ev.max_seeds, ev.parallel_trials, ev.screen,
                    ev.min_gain)
    return smallest_detectable_gain(sd, design) if sd else None


def _fmt(value: Any, digits: int = 4) -> str:
    """Four significant digits: metric scales differ by benchmark."""
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return "-" if value is None else str(value)


def _slots_text(usage: Usage) -> str:
    """'4 slots, duty cycle 0.962; idle: proposal 12.0 s, engine 1.4 s'."""
    dc, rdc = usage.duty_cycle(), usage.duty_cycle(research=True)
    idle: Counter[str] = Counter()
    for slot in usage.slots:
        idle.update(slot.idle_s)
    text = f"{len(usage.slots)} slots, duty cycle " + (f"{dc:.3f}" if dc is not None else "-")
    if rdc is not None:
        text += f" ({rdc:.3f} in research)"
    if idle:
        text += "; idle: " + ", ".join(f"{r} {v:.1f} s" for r, v in idle.most_common())
    return text


def render_status(status: dict[str, Any]) -> Any:
    """A rich Table of `campaign_status`, so the CLI stays a thin printer."""
    from rich.table import Table

    table = Table(title=f"{status['campaign']} ({status['benchmark']})", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    s = status
    kinds = ", ".join(f"{k}: {n}" for k, n in sorted(s["failures_by_kind"].items()))
    gain_pct = "" if s["gain_pct"] is None else f" ({s['gain_pct']:+.2f}%)"
    rows = {
        "status": s["status"] + (f" ({s['stop_reason']})" if s["stop_reason"] else ""),
        "proposals": s["proposals"],
        "candidates evaluated": s["evaluated"],
        "accepted / rejected": f"{s['accepted']} / {s['rejected']}",
        "failed": f"{s['failed']}" + (f" ({kinds})" if kinds else ""),
        "refused": s["refused"],
        f"champion {s['metric']}": f"{s['champion'][:8]}  {_fmt(s['champion_mean'])}",
        f"seed {s['metric']}": f"{s['seed'][:8]}  {_fmt(s['seed_mean'])}",
        "gain over seed": _fmt(s["gain"]) + gain_pct,
        "best so far": f"{(s['best_candidate'] or '-')[:8]}  {_fmt(s['best_mean'])}",
        "proposals left": s["proposals_left"],
        "minutes left": f"{s['minutes_left']:.1f} (elapsed {s['elapsed_min']:.1f})",
        "proposer cost": _cost_text(s),
        "sandbox": s["isolation"] + (" (UNISOLATED)" if s["unisolated"] else ""),
        "caught by audit": ", ".join(f"{k}: {n}" for k, n in s["caught_by_level"].items())
        or "-",
        "test split looks": s["test_looks"],
        "smallest detectable gain": _fmt(s["smallest_detectable_gain"]),
        "slots (last run)": _slots_text(s["usage"][-1]) if s["usage"] else "-",
    }
    for name, value in rows.items():
        table.add_row(name, str(value))
    return table


# -- report -------------------------------------------------------------------------------

TEMPLATE = Path(__file__).parent / "templates" / "report.md.j2"


def _cell(text: str, limit: int = 160) -> str:
    """One Markdown table cell: no pipes or newlines, and short."""
    text = " ".join(text.replace("|", "\\|").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _headline(view: View, champion: str) -> dict[str, Any]:
    """Champion vs seed on val: the archived comparison if any, else the loop's own test."""
    seed = view.campaign.seed_candidate
    out = {"gain": None if champion == seed else view.gain(view.mean(champion), view.mean(seed)),
           "ref": view.mean(seed)}
    pair = (champion, seed)
    found = [e for e in view.evaluations.values()
             if (e.candidate_id, e.reference_id) == pair and e.split == "val"]
    if found:  # the gain the test was about: the evaluation's own seeds
        e = found[-1]
        return out | {"gain": view.gain(e.mean, e.reference_mean), "ref": e.reference_mean,
                      "p": e.p_value, "g": e.effect_size,
                      "source": f"{e.test} test: {_fmt(e.mean)} vs {_fmt(e.reference_mean)} "
                                f"on {len(e.values)} val seeds"}
    a, b = view.values(champion), view.values(seed)
    sign = -1.0 if view.metric.direction is Direction.MINIMIZE else 1.0
    g = hedges_g(np.asarray(a) * sign, np.asarray(b) * sign)
    p = one_sided_p(a, b, view.metric)
    return out | {"p": p, "g": g, "source": "one-sided Welch's t-test on val seeds"}


def _constraint_ps(results: list[ConstraintResult]) -> str:
    """One table cell: each constraint's p-value, in the metric's order."""
    return ", ".join(_fmt(r.p_value) for r in results) or "-"


def _constraint_text(results: list[ConstraintResult]) -> str:
    return "; ".join(f"{r.summary()}, {'holds' if r.holds else 'FAILS'} at {r.level:.3g}"
                     for r in results)


def seed_constraints(view: View, alpha: float) -> list[ConstraintResult]:
    """The seed's val trials tested against the metric's constraints, as the campaign tested
    them before its first iteration."""
    trials = [t for t in view.trials.get(view.campaign.seed_candidate, []) if t.split == "val"]
    return constraint_results(trials, view.metric, alpha) if trials else []


def _constraint_lines(view: View, params: Params, champion: str,
                      test: Evaluation | None) -> list[str]:
    """Where each constraint stands: the seed's own trials, the champion on val (the
    evaluation behind the headline gain), the champion on the test split."""
    if not view.metric.constraints:
        return []
    seed = view.campaign.seed_candidate
    found = [e for e in view.evaluations.values() if (e.candidate_id, e.reference_id) ==
             (champion, seed) and e.split == "val" and e.constraints]
    rows = [("the seed (val)", seed_constraints(view, params.evaluation.alpha)),
            ("the champion (val)", found[-1].constraints if champion != seed and found else []),
            ("the champion (test)", test.constraints if test is not None else [])]
    return [f"Constraints of {who}: {_constraint_text(results)}" for who, results in rows
            if results]


def _lineage(view: View, champion: str) -> list[dict[str, Any]]:
    """Champion back to the seed along first parents, returned seed first."""
    chain, cid = [], champion
    while cid and cid not in chain and cid in view.candidates:
        chain.append(cid)
        cid = view.candidates[cid].parents[0] if view.candidates[cid].parents else None
    rows = []
    for cid in reversed(chain):
        proposal, ev = view.proposal_of(cid), view.evaluation_of(cid)
        vals, parents = view.values(cid), view.candidates[cid].parents
        std = statistics.stdev(vals) if len(vals) > 1 else None
        stat = f"{_fmt(view.mean(cid))} ± {_fmt(std)} (n={len(vals)})" if vals else "-"
        row = {"id": cid, "p": ev.p_value if ev else None, "stat": stat,
               "cp": _constraint_ps(ev.constraints) if ev else "-"}
        row["ref"] = f" vs `{ev.reference_id[:8]}`" if ev else ""
        row["operator"] = proposal.operator if proposal else "seed"
        if len(parents) > 1:
            row["operator"] += " of " + " x ".join(f"`{p[:8]}`" for p in parents)
        row["steps"] = _cell(steps_text(proposal))
        row["rationale"] = _cell(proposal.rationale if proposal else "seed solution")
        rows.append(row)
    return rows


def export_transcripts(archive: Archive, view: View, out_dir: Path) -> str:
    """Each proposal's transcript (Markdown, and the exact JSON beside it) written next to
    the report, which links them; returns their folder relative to the report."""
    for p in view.proposals.values():
        for rel in (p.transcript, (p.transcript or "").removesuffix(".md") + ".json"):
            if rel and (text := archive.read_text(rel)) is not None:
                atomic_write(out_dir / rel, text.encode())
    return "."


def _proposal_rows(view: View, archive_dir: str) -> list[dict[str, Any]]:
    """`archive_dir`: where the transcripts are, relative to the report, for its links."""
    by_proposal = {d.proposal_id: d for d in view.decisions}
    rows = []
    for p in view.proposals.values():
        d = by_proposal.get(p.id)
        cid = d.candidate_id if d else None
        ev = view.evaluations.get(d.evaluation_id or "") if d else None
        row = {"thread": p.thread, "id": p.id, "operator": p.operator}
        row["cand"] = f"`{cid[:8]}`" + (" (champion)" if d and d.champion else "") if cid else "-"
        row["outcome"] = d.outcome if d else "pending"
        row["mean"] = view.mean(cid) if cid else None
        row["p"] = ev.p_value if ev else None
        row["cp"] = _constraint_ps(ev.constraints) if ev else "-"
        row["reason"] = _cell(d.reason if d else "")
        row["cost"] = f"${p.cost.usd:.3f}" if p.cost.usd else "-"
        row["transcript"] = (f"[{p.proposer}]({archive_dir}/{p.transcript})" if p.transcript
                             else p.proposer)
        rows.append(row)
    return rows


def _failure_rows(view: View) -> list[dict[str, Any]]:
    """Failed proposals with the loop's reason, then every failed trial with its own."""
    rows = [
        {"cand": (d.candidate_id or "-")[:8], "what": "failed", "reason": _cell(d.reason, 300)}
        for d in view.decisions
        if d.outcome == "failed"
    ]
    for cid, trials in view.trials.items():
        for t in sorted(trials, key=lambda t: (t.split, t.seed)):
            if t.status == "failed":
                what = f"{t.split} seed {t.seed} {t.failure or 'failed'}"
                rows.append({"cand": cid[:8], "what": what, "reason": _cell(t.reason, 300)})
    return rows


def _profile_rows(view: View) -> list[dict[str, Any]]:
    """Per candidate, the profiler's summary its benchmark kept with a val trial (a hint
    for the reader, never part of the score), or why there is none."""
    rows = []
    for cid, trials in view.trials.items():
        found = next((t.evidence for t in trials if t.split == "val"
                      and "ncu_status" in t.evidence), None)
        if found is None:
            continue
        rows.append({"cand": f"`{cid[:8]}`", "outcome": view.outcome(cid),
                     "status": _cell(str(found["ncu_status"]), 80),
                     "kernels": found.get("ncu_kernels", "-"),
                     "time": _fmt(found.get("ncu_gpu_time_us")),
                     "dram": _fmt(found.get("ncu_dram_pct")), "sm": _fmt(found.get("ncu_sm_pct")),
                     "limiter": found.get("ncu_limiter", "-"),
                     "longest": _cell(str(found.get("ncu_longest_kernel", "-")), 60)})
    return rows


def champion_diff(archive: Archive, seed: str, champion: str) -> str:
    """Unified diff of every editable file, seed -> champion (empty when they are the same)."""
    old, new = archive.read_files(seed), archive.read_files(champion)
    lines: list[str] = []
    for path in sorted(old.keys() | new.keys()):
        lines += difflib.unified_diff(
            old.get(path, "").splitlines(keepends=True),
            new.get(path, "").splitlines(keepends=True),
            fromfile=f"a/{path}" if path in old else "/dev/null",
            tofile=f"b/{path}" if path in new else "/dev/null",
        )
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines).rstrip("\n")


def _champion_steps(view: View) -> tuple[list[float], list[float]]:
    """Times (min) and val means at which each champion took over, the seed at minute 0."""
    seed_mean = view.mean(view.campaign.seed_candidate)
    xs, ys = ([0.0], [seed_mean]) if seed_mean is not None else ([], [])
    for d in view.decisions:
        mean = view.mean(d.candidate_id) if d.champion and d.candidate_id else None
        if mean is not None:
            xs.append(view.minutes(d.created_at))
            ys.append(mean)
    return xs, ys


def plot_best_so_far(view: View, path: Path) -> Path:
    """Every val trial by outcome, failures as x on the top edge, and the champion's step line.

    Draws on a bare Figure (Agg canvas, no pyplot), so no global backend or state is touched.
    """
    from matplotlib.figure import Figure
    from matplotlib.transforms import blended_transform_factory

    fig = Figure(figsize=(8, 4.5), dpi=110)
    ax = fig.subplots()
    top = blended_transform_factory(ax.transData, ax.transAxes)
    seen: set[str] = set()
    finished = view.campaign.finished_at
    end = view.minutes(finished) if finished else 0.0
    for cid, trials in view.trials.items():
        outcome = view.outcome(cid)
        colour = COLOURS.get(outcome, "#999999")
        for t in (t for t in trials if t.split == "val"):
            x = view.minutes(t.finished_at)
            end = max(end, x)
            label = None if outcome in seen else outcome
            seen.add(outcome)
            if t.status == "ok" and view.metric.name in t.metrics:
                ax.scatter(x, t.metrics[view.metric.name], s=18, color=colour, label=label)
            else:  # no metric: an x on the top edge, in the candidate's outcome colour
                ax.scatter(x, 0.97, marker="x", color=colour, label=label, transform=top)
    xs, ys = _champion_steps(view)
    if ys:
        xs, ys = xs + [max(end, xs[-1])], ys + [ys[-1]]
        ax.step(xs, ys, where="post", color="black", label="champion (best so far)")
    if (seed_mean := view.mean(view.campaign.seed_candidate)) is not None:
        ax.axhline(seed_mean, color="#555555", linestyle="--", linewidth=1, label="seed mean")
    better = "lower" if view.metric.direction is Direction.MINIMIZE else "higher"
    ax.set_xlabel("minutes since campaign start")
    unit = f" ({view.metric.unit})" if view.metric.unit else ""
    ax.set_ylabel(f"val {view.metric.name}{unit}")
    ax.set_title(f"{view.campaign.name}: best so far ({better} is better; x = failed trial)")
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    return path


def _is_gpu(benchmark: str) -> bool:
    try:
        from benchmarks import get_benchmark

        return get_benchmark(benchmark).hardware == "gpu"
    except KeyError:
        return False


def build_report(archive: Archive, params: Params, metric: MetricSpec, out_dir: Path) -> Path:
    """Write report.md and best_so_far.png under out_dir; return the report's path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    view = View.load(archive, metric)
    status = _status(view, params)
    champion, test = status["champion"], view.campaign.test
    plot_best_so_far(view, out_dir / "best_so_far.png")
    seeded = seed_constraints(view, params.evaluation.alpha)
    lineage = _lineage(view, champion)
    if lineage and lineage[0]["id"] == view.campaign.seed_candidate and seeded:
        lineage[0]["cp"] = _constraint_ps(seeded)
    template = jinja2.Template(TEMPLATE.read_text(), undefined=jinja2.StrictUndefined)
    text = template.render(
        c=view.campaign,
        m=metric,
        s=status,
        h=_headline(view, champion),
        t=test.evaluation if test else None,
        tg=view.gain(test.evaluation.mean, test.evaluation.reference_mean) if test else None,
        lineage=lineage,
        bounds=", ".join(str(k) for k in metric.constraints),
        constraint_lines=_constraint_lines(view, params, champion,
                                           test.evaluation if test else None),
        seed_misses=[r for r in seeded if not r.holds],
        shortfall=shortfall,
        proposals=_proposal_rows(view, export_transcripts(archive, view, out_dir)),
        cost=_cost_text(status),
        failures=_failure_rows(view),
        profiles=_profile_rows(view),
        diff=champion_diff(archive, view.campaign.seed_candidate, champion),
        f=_fmt,
        gpu=_is_gpu(view.campaign.benchmark),
        usage=[usage_lines(u) for u in status["usage"]],
        pc=lambda gain, ref: "-" if pct(gain, ref) is None else f"{pct(gain, ref):+.2f}%",
    )
    path = out_dir / "report.md"
    path.write_text(text.rstrip() + "\n")
    return path
