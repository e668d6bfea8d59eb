"""The few lines printed when a campaign ends: champion, val gain, test gain."""

from __future__ import annotations

from autolab.archive import Archive
from autolab.config import Params
from autolab.records import Decision, Trial
from autolab.stats import one_sided_p
from benchmarks import get_benchmark


def _vals(trials: list[Trial], cid: str, split: str, metric: str) -> list[float]:
    return [
        t.metrics[metric]
        for t in trials
        if t.candidate_id == cid and t.split == split and t.status == "ok" and metric in t.metrics
    ]


def _gain(mine: list[float], ref: list[float], metric, unit: str) -> str:
    if not mine or not ref:
        return "not measured"
    a, b = sum(mine) / len(mine), sum(ref) / len(ref)
    p = one_sided_p(mine, ref, metric)
    p_text = f"p={p:.2g}" if p is not None else "p undefined"
    return (
        f"{a:.4f} vs seed {b:.4f} {unit} ({a - b:+.4f}, {100 * (a - b) / b:+.2f}%; "
        f"{p_text}; n={len(mine)}/{len(ref)})"
    )


def campaign_summary(params: Params) -> str:
    archive = Archive(params.paths.workdir / params.campaign.name / "archive")
    record = archive.campaign()
    if record is None:
        return f"no campaign {params.campaign.name!r}"
    metric = get_benchmark(record.benchmark).metric
    trials = archive.all(Trial)
    decisions = archive.all(Decision)
    seed = record.seed_candidate
    champ = record.test.champion_id if record.test else seed
    evaluated = {
        d.candidate_id for d in decisions if d.outcome in ("accepted", "rejected", "failed")
    }
    lines = [
        f"campaign   {record.name} ({record.benchmark}) - {record.status}: {record.stop_reason}",
        f"proposals  {len(decisions)}; candidates evaluated {len(evaluated - {None})}; "
        f"accepted {sum(d.outcome == 'accepted' for d in decisions)}; "
        f"failed {sum(d.outcome == 'failed' for d in decisions)}; "
        f"refused {sum(d.outcome == 'refused' for d in decisions)}",
        f"champion   {champ}" + (" (the seed: nothing beat it)" if champ == seed else ""),
        f"val  {metric.name}  "
        + _gain(
            _vals(trials, champ, "val", metric.name),
            _vals(trials, seed, "val", metric.name),
            metric,
            metric.unit,
        ),
        f"test {metric.name}  "
        + _gain(
            _vals(trials, champ, "test", metric.name),
            _vals(trials, seed, "test", metric.name),
            metric,
            metric.unit,
        ),
    ]
    return "\n".join(lines)
