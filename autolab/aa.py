"""What an A/A campaign measured: the false-accept rate of the real evaluation, the seeds
it used, the noise of paired differences and the smallest gain it can detect."""

from __future__ import annotations

import statistics
from typing import Any

import numpy as np

from autolab.archive import campaign_archive
from autolab.config import Params
from autolab.records import Decision, Evaluation
from autolab.stats import Design, smallest_detectable_gain, wilson


def paired_sd(evaluations: list[Evaluation]) -> float | None:
    """Pooled within-evaluation sd of candidate-minus-reference differences on matched seeds:
    the measurement noise a paired comparison faces, whatever the candidates' true effects."""
    ss, df = 0.0, 0
    for e in evaluations:
        if e.test != "paired" or len(e.values) < 2 or len(e.values) != len(e.reference_values):
            continue
        d = np.asarray(e.values) - np.asarray(e.reference_values)
        ss += float(((d - d.mean()) ** 2).sum())
        df += len(d) - 1
    return (ss / df) ** 0.5 if df else None


def aa_summary(params: Params) -> dict[str, Any]:
    archive = campaign_archive(params, create=False)
    ev = params.evaluation
    design = Design(ev.alpha, ev.min_seeds, ev.max_seeds, ev.parallel_trials, ev.screen,
                    ev.min_gain)
    every = archive.all(Decision)
    decisions = [d for d in every if d.evaluation_id]
    pairs = [(d, archive.get(Evaluation, d.evaluation_id)) for d in decisions]
    pairs = [(d, e) for d, e in pairs if e is not None]
    evaluations = [e for _, e in pairs]
    # a false accept is the evaluation's own verdict; the audit (level 2) may still stop it
    accepted = sum(e.decision == "accept" or d.outcome == "accepted" for d, e in pairs)
    kept = sum(d.outcome == "accepted" for d, _ in pairs)
    n = len(evaluations)
    lo, hi = wilson(accepted, n)
    sd = paired_sd(evaluations)
    return {
        "benchmark": params.campaign.benchmark,
        "campaign": params.campaign.name,
        "alpha": ev.alpha,
        "looks": design.looks(),
        "screen": ev.screen,
        "min_gain": ev.min_gain,
        "candidates_evaluated": n,
        "proposals": len(every),
        "failed_or_refused": len(every) - n,
        "false_accepts": accepted,
        "accepted_after_audit": kept,
        "false_accept_rate": accepted / n if n else None,
        "ci95": [lo, hi],
        "within_alpha": lo <= ev.alpha if n else None,
        "mean_seeds": statistics.fmean(len(e.values) for e in evaluations) if n else None,
        "fixed_design_seeds": ev.max_seeds,
        "paired_sd": sd,
        "smallest_detectable_gain": smallest_detectable_gain(sd, design) if sd else None,
    }


def render_aa(s: dict[str, Any]) -> str:
    rate = "-" if s["false_accept_rate"] is None else f"{s['false_accept_rate']:.4f}"
    mde = s["smallest_detectable_gain"]
    return "\n".join([
        f"A/A test of {s['benchmark']} ({s['campaign']}): {s['candidates_evaluated']} candidates "
        f"equal in effect to their parent, looks at {s['looks']} seeds"
        + (" after one-seed screening" if s["screen"] else "")
        + (f", min_gain {s['min_gain']}" if s["min_gain"] else ""),
        f"false accepts  {s['false_accepts']} -> rate {rate}, 95% CI "
        f"[{s['ci95'][0]:.4f}, {s['ci95'][1]:.4f}] (alpha {s['alpha']}; "
        f"{'consistent with' if s['within_alpha'] else 'ABOVE'} alpha); "
        f"{s['accepted_after_audit']} still accepted after the audit",
        f"seeds          {s['mean_seeds'] or 0:.2f} per candidate on average "
        f"(a fixed design uses {s['fixed_design_seeds']})",
        f"noise          sd of paired differences {s['paired_sd'] or float('nan'):.4g}; "
        f"smallest gain detected with 80% power: "
        + ("-" if mde is None else f"{mde:.4g}"),
    ])  # fmt: skip
