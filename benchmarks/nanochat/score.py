"""Trusted scoring, staging helpers and audit checks of a nanochat trial (parent side).

The loss was computed by the trusted companions as the logits arrived (server.py); this
module turns what they recorded into the trial's score and checks, and plans the
causality probe: secret windows, cut at secret positions, continued with other text.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from benchmarks.nanochat.contract import EVAL_LOG, TRAIN_LOG, Preset
from benchmarks.protocol import CheckResult, Score, TrialContext, TrialFailure, read_output

LOG_MAX_BYTES = 65536
N_WHOLE_PROBES = 4  # probe rows that repeat a window unchanged (every position compared)
# bf16 dense peak of the GPUs we know, in FLOP/s (MFU's denominator)
PEAK_FLOPS = {"H100": 989.4e12, "H200": 989.4e12, "H800": 989.4e12, "A100": 312e12,
              "L40S": 362e12, "GH200": 989.4e12, "B200": 2250e12}


def probe_plan(n_windows: int, n_probe: int, rng: np.random.Generator) -> np.ndarray:
    """Which eval windows the probe re-runs (chosen before eval, kept secret)."""
    return np.sort(rng.choice(n_windows, size=min(n_probe, n_windows), replace=False))


def probe_rows(windows: np.ndarray, picks: np.ndarray, source: np.ndarray, length: int,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each picked window once, its tokens after a random cut replaced by text from a
    random place of `source`, plus a few picked windows repeated unchanged (cut = last
    position), in a shuffled order. Returns (rows, window of each row, cut)."""
    whole = picks[: min(N_WHOLE_PROBES, len(picks))]
    order = np.concatenate([picks, whole])
    cuts = np.concatenate([rng.integers(0, length, size=len(picks)),
                           np.full(len(whole), length - 1)])
    shuffle = rng.permutation(len(order))
    order, cuts = order[shuffle], cuts[shuffle]
    rows = windows[order, :length].copy()
    for r, cut in enumerate(cuts):
        tail = length - int(cut) - 1
        if tail == 0:
            continue
        for _ in range(32):  # the first replaced token must differ, or `cut` is untested
            start = int(rng.integers(0, len(source) - tail))
            if source[start] != rows[r, cut + 1]:
                break
        rows[r, cut + 1 :] = source[start : start + tail]
    return rows, order, cuts


def _read_log(ctx: TrialContext, step: str, name: str) -> dict:
    """A harness log: evidence only, never trusted for the score or the budget."""
    try:
        log = json.loads(read_output(ctx.outputs(step) / name, LOG_MAX_BYTES))
    except Exception:  # whatever the candidate wrote there (oversized numbers, deep nesting)
        return {}
    if not isinstance(log, dict):
        return {}
    def fine(v: object) -> bool:
        if isinstance(v, str):
            return len(v) < 200
        try:
            return isinstance(v, int | float) and abs(v) < 1e300 and math.isfinite(v)
        except (OverflowError, TypeError):
            return False

    return {k: v for k, v in log.items() if isinstance(k, str) and fine(v)}


def peak_flops(gpu: str) -> float | None:
    for key, flops in PEAK_FLOPS.items():
        if key in gpu.upper():
            return flops
    return None


def score(ctx: TrialContext, preset: Preset) -> Score:
    s = ctx.secrets
    ev = s.get("eval", {})
    rows = len(s["targets"])
    if ev.get("rows_received", 0) != rows:
        raise TrialFailure("output", f"eval sent logits for {ev.get('rows_received', 0)} "
                           f"of {rows} windows")
    if "bpb" not in ev:
        raise TrialFailure("output", "eval scored no target bytes")
    tr = s.get("train", {})
    train_s = float(tr.get("train_s", 0.0))
    tokens = int(tr.get("train_tokens", 0))
    tlog = {f"harness_{k}": v for k, v in _read_log(ctx, "train", TRAIN_LOG).items()}
    elog = {f"eval_{k}": v for k, v in _read_log(ctx, "eval", EVAL_LOG).items()}
    window = min(train_s, float(ctx.budget.amount) - preset.reserve_s)  # batches served
    tok_s = tokens / window if window > 0 else 0.0
    evidence: dict[str, str | float | int | bool] = {
        "train_tokens": tokens, "train_batches": int(tr.get("train_batches", 0)),
        "train_s": round(train_s, 3), "startup_s": round(float(tr.get("startup_s", 0.0)), 3),
        "epochs": round(float(tr.get("epochs", 0.0)), 4), "tokens_per_s": round(tok_s, 1),
        "eval_windows": rows, "eval_tokens": int(s["targets"].size),
        "eval_compute_s": round(float(ev.get("compute_s", -1.0)), 2),
        "eval_transfer_s": round(float(ev.get("transfer_s", -1.0)), 2),
        "probe_compute_s": round(float(s.get("probe", {}).get("compute_s") or -1.0), 2),
        "eval_target_bytes": int(ev["target_bytes"]), "preset": preset.name,
    }  # fmt: skip
    evidence |= tlog | elog
    gpu = str(tlog.get("harness_gpu", ""))
    flops = peak_flops(gpu) if gpu else None
    matmul = elog.get("eval_matmul_params")
    if flops and isinstance(matmul, int | float) and tok_s > 0:
        evidence["mfu"] = round(6 * float(matmul) * tok_s / flops, 4)
    used = train_s  # from the first batch to the step's exit: the budget covers it all
    return Score(metrics={"bpb": float(ev["bpb"])}, budget_used=used, evidence=evidence)


def check_budget(ctx: TrialContext, score: Score, preset: Preset) -> CheckResult:
    """Training time as the trusted server counted it: from the first batch it served to
    the moment the step's processes were gone, at most the budget (batches stopped
    reserve_s before its end), plus the second the server may take to halt a late step."""
    limit = ctx.budget.amount + 1.0
    used = float(score.evidence.get("train_s", score.budget_used))
    evidence = (f"trained {used:.2f} s from the first batch to the step's exit (budget "
                f"{ctx.budget.amount} s, batches until {preset.reserve_s:g} s before its end); "
                f"{score.evidence.get('train_tokens', '?')} tokens served")
    return CheckResult(name="budget_respected", passed=used <= limit, evidence=evidence)


def check_causal(ctx: TrialContext, score: Score, preset: Preset) -> CheckResult:
    """Predictions must not depend on later tokens, on the other windows of the batch, or
    on windows evaluated before: a fresh process saw secret windows cut at secret positions
    and continued with other text, in another order and batching; its log-probabilities up
    to the cut must match the eval step's, and it must not believe the true next token at
    the cut less than the eval step did (beyond the tolerances)."""
    name = "causal_and_independent"
    p = ctx.secrets.get("probe", {})
    n = len(ctx.secrets.get("probe_order", ()))
    if p.get("rows_received", 0) != n:
        return CheckResult(name=name, passed=False,
                           evidence=f"probe sent logits for {p.get('rows_received', 0)} "
                           f"of {n} rows")
    peeks = p.get("peeks", [])
    peek = float(np.mean(peeks)) if peeks else 0.0
    worst, where = p.get("worst", 0.0), p.get("where", (-1, -1))
    return CheckResult(
        name=name,
        passed=worst <= preset.causal_tol and peek <= preset.peek_tol,
        evidence=f"{n} rows probed ({len(peeks)} cut at random positions); max log-prob "
        f"change on unchanged prefixes {worst:.4g} (window {where[0]}, position {where[1]}; "
        f"tolerance {preset.causal_tol}); mean gain on the true next token at the cut "
        f"{peek:.3g} nats (tolerance {preset.peek_tol})",
    )


def write_rows(path: Path, rows: np.ndarray) -> None:
    np.ascontiguousarray(rows, dtype=np.uint16).tofile(path)
