"""The few lines printed when a campaign ends: champion, val gain, test gain."""

from __future__ import annotations

from autolab.archive import campaign_archive
from autolab.config import Params
from autolab.history import champion_id
from autolab.records import CampaignRecord, Decision, Evaluation
from benchmarks import get_benchmark


def _gain(e: Evaluation | None, unit: str, same: bool) -> str:
    if e is None or e.mean is None or e.reference_mean is None:
        return "not measured"
    seeds = f"n={len(e.values)}"
    if same:
        return f"{e.mean:.4f} {unit} (the seed itself; {seeds})"
    p = f"p={e.p_value:.2g}" if e.p_value is not None else "p undefined"
    pct = 100 * (e.mean - e.reference_mean) / e.reference_mean
    return (
        f"{e.mean:.4f} vs seed {e.reference_mean:.4f} {unit} "
        f"({e.mean - e.reference_mean:+.4f}, {pct:+.2f}%; {e.test} test {p}; {seeds})"
    )


def campaign_summary(params: Params) -> str:
    archive = campaign_archive(params, create=False)
    record = archive.campaign()
    if record is None:
        return f"no campaign {params.campaign.name!r}"
    decisions = archive.all(Decision)
    seed = record.seed_candidate
    champ = champion_id(decisions, seed)
    metric = get_benchmark(record.benchmark).metric
    same = champ == seed
    test = record.test.evaluation if record.test else None
    evaluated = {d.candidate_id for d in decisions if d.outcome != "refused"} - {None}
    count = {k: sum(d.outcome == k for d in decisions) for k in ("accepted", "failed", "refused")}
    return "\n".join([
        f"campaign   {record.name} ({record.benchmark}) - {record.status}: {record.stop_reason}",
        f"proposals  {len(decisions)}; candidates evaluated {len(evaluated)}; "
        f"accepted {count['accepted']}; failed {count['failed']}; refused {count['refused']}",
        f"champion   {champ}" + (" (the seed: nothing beat it at alpha)" if same else ""),
        f"val  {metric.name}  {_gain(record.val, metric.unit, same)}",
        f"test {metric.name}  {_gain(test, metric.unit, same)}",
        *_constraints(record, test, same),
    ])  # fmt: skip


def _constraints(record: CampaignRecord, test: Evaluation | None, same: bool) -> list[str]:
    """The metric's constraints: on the seed's own trials, and on the champion's."""
    rows = [("seed", record.seed_constraints)]
    if not same:
        rows.append(("val", record.val.constraints if record.val else []))
    rows.append(("test", test.constraints if test else []))
    return [f"{name:<4} {r.summary()}" + ("" if r.holds else f" - FAILS (needs < {r.level:.3g})")
            for name, results in rows for r in results]
