"""Trusted scoring and audit checks of a speedrun trial (parent side).

The losses were computed by the trusted server as the logits arrived (server.py); this
turns its record into the trial's score. A run's time is the clocked training time at
the first validation whose loss is at or below the preset's target. A run that never
gets there is a miss: `reached` is 0 and its time is the slowest a run can have (the
budget plus the time to finish), so that even a comparison that ignores `reached`
never counts a miss as fast. The loop judges the loss and `reached` as the constraints
of the benchmark's metric (benchmark.speedrun_metric).
"""

from __future__ import annotations

import math

import numpy as np

from benchmarks.nanochat.score import _read_log
from benchmarks.protocol import CheckResult, Score, TrialContext, TrialFailure
from benchmarks.speedrun.contract import TRAIN_LOG, Preset


def miss_time(budget_s: float, preset: Preset) -> float:
    """The time reported for a run that never reached the target."""
    return float(budget_s) + preset.finish_s


def first_hit(validations: list[dict], target: float) -> dict | None:
    return next((v for v in validations if v["loss"] <= target), None)


def curve(validations: list[dict]) -> str:
    """step:loss@seconds of each validation, for the trial's evidence."""
    return " ".join(f"{v['step']}:{v['loss']:.4f}@{v['clock_s']:.2f}" for v in validations)


def score(ctx: TrialContext, preset: Preset) -> Score:
    run = ctx.secrets.get("run", {})
    vals = run.get("validations", [])
    if not run.get("complete"):
        raise TrialFailure("output", f"the run ended before its final validation "
                           f"({len(vals)} validations)")
    if any(not math.isfinite(v["loss"]) for v in vals):
        raise TrialFailure("nan", "a validation loss is not finite")
    hit = first_hit(vals, preset.target)
    budget = float(ctx.budget.amount)
    train_s = float(run.get("train_s", 0.0))
    tokens = int(run.get("train_tokens", 0))
    evidence: dict[str, str | float | int | bool] = {
        "target": preset.target, "reached": hit is not None,
        "time_to_target_s": round(hit["clock_s"], 3) if hit else -1.0,
        "loss_at_target": hit["loss"] if hit else -1.0,
        "final_loss": vals[-1]["loss"], "train_s": round(train_s, 3),
        "steps": int(run.get("steps", 0)), "train_tokens": tokens,
        "tokens_per_s": round(tokens / train_s, 1) if train_s > 0 else 0.0,
        "epochs": round(float(run.get("epochs", 0.0)), 4), "validations": len(vals),
        "excluded_s": round(float(run.get("excluded_s", 0.0)), 3),
        "paused_s": round(sum(v["pause_s"] for v in vals), 3),
        "startup_s": round(float(run.get("startup_s", 0.0)), 3),
        "curve": curve(vals)[:2000], "preset": preset.name,
    }  # fmt: skip
    evidence |= {f"harness_{k}": v for k, v in _read_log(ctx, "train", TRAIN_LOG).items()}
    metrics = {"train_s": hit["clock_s"] if hit else miss_time(budget, preset),
               "val_loss": float(vals[-1]["loss"]), "reached": 1.0 if hit else 0.0}
    return Score(metrics=metrics, budget_used=min(train_s, budget), evidence=evidence)


def check_budget(ctx: TrialContext, score: Score, preset: Preset) -> CheckResult:
    """Training time as the trusted server clocked it, from the first batch to the last
    rank's return from train(), validation pauses left out: batches stop at the budget,
    and train() has finish_s after that to return."""
    limit = float(ctx.budget.amount) + preset.finish_s
    used = float(score.evidence.get("train_s", score.budget_used))
    return CheckResult(
        name="budget_respected", passed=used <= limit,
        evidence=f"trained {used:.2f} clocked s (budget {ctx.budget.amount} s + "
                 f"{preset.finish_s:g} s to finish); {score.evidence.get('excluded_s', '?')} s "
                 f"of validation pauses left out",
    )  # fmt: skip


def check_causal(ctx: TrialContext, score: Score, preset: Preset) -> CheckResult:
    """At every validation a fresh process re-ran secret rows cut at secret positions and
    continued with other text: its log-probabilities up to the cut must match the main
    validator's, and it must not believe the true next token at the cut less than the
    main validator did (beyond the tolerances)."""
    vals = ctx.secrets.get("run", {}).get("validations", [])
    worst = max((v["worst"] for v in vals), default=0.0)
    peeks = [v["peek"] for v in vals]
    peek = float(np.mean(peeks)) if peeks else 0.0
    return CheckResult(
        name="causal_and_independent",
        passed=bool(vals) and worst <= preset.causal_tol and peek <= preset.peek_tol,
        evidence=f"{len(vals)} validations probed ({preset.n_probe} cut rows each); max "
                 f"log-prob change on unchanged prefixes {worst:.4g} (tolerance "
                 f"{preset.causal_tol}); mean gain on the true next token at the cut "
                 f"{peek:.3g} nats (tolerance {preset.peek_tol})",
    )  # fmt: skip
