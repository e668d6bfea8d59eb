"""Trusted scoring and audit checks of a tinylm trial, run in the parent process.

The sandboxed eval step only writes raw logits; the loss is computed here against
targets read from the trusted staged inputs, so a candidate cannot misreport its metric.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from benchmarks.protocol import CheckResult, Score, TrialContext, TrialFailure
from benchmarks.tinylm.prepare import EVAL_FILE, EVAL_LEN, PROBE_AT, TRAIN_STREAM, VOCAB_SIZE

CAUSAL_TOL = 0.05  # max |logit difference| on unchanged prefixes (float16 outputs)


def eval_windows(ctx: TrialContext) -> np.ndarray:
    return np.fromfile(ctx.inputs_dir / EVAL_FILE, dtype=np.uint8).reshape(-1, EVAL_LEN + 1)


def _load_logits(path: Path, n_windows: int) -> np.ndarray:
    try:
        logits = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise TrialFailure("output", f"cannot read {path.name}: {err}") from None
    expected = (n_windows, EVAL_LEN, VOCAB_SIZE)
    if logits.dtype != np.float16 or logits.shape != expected:
        raise TrialFailure(
            "output", f"{path.name} is {logits.dtype}{logits.shape}, expected float16{expected}"
        )
    return logits


def read_train_log(ctx: TrialContext) -> dict:
    path = ctx.workspace / "out" / "train_log.json"
    try:
        log = json.loads(path.read_text())
        int(log["tokens"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise TrialFailure("output", f"train_log.json missing or garbled: {err}") from None
    return log


def bits_per_byte(logits: np.ndarray, targets: np.ndarray) -> float:
    """Mean next-byte cross-entropy in bits, with a float64 log-softmax."""
    z = logits.astype(np.float64)
    z -= z.max(axis=-1, keepdims=True)
    log_norm = np.log(np.exp(z).sum(axis=-1))
    picked = np.take_along_axis(z, targets[..., None].astype(np.int64), axis=-1)[..., 0]
    return float((log_norm - picked).mean() / math.log(2))


def score(ctx: TrialContext) -> Score:
    windows = eval_windows(ctx)
    logits = _load_logits(ctx.workspace / "out" / "logits.npy", len(windows))
    if not np.isfinite(logits).all():
        raise TrialFailure("nan", "logits contain NaN or infinite values")
    log = read_train_log(ctx)
    tokens = int(log["tokens"])
    bpb = bits_per_byte(logits, windows[:, 1:])
    evidence: dict[str, str | float | int | bool] = {
        "train_tokens": tokens,
        "eval_windows": len(windows),
        "eval_tokens": int(windows[:, 1:].size),
        "train_steps": int(log.get("steps", 0)),
        "train_seconds": float(log.get("seconds", 0.0)),
        "n_params": int(log.get("n_params", 0)),
    }
    return Score(
        metrics={"bpb": bpb}, budget_used=float(min(tokens, ctx.budget.amount)), evidence=evidence
    )


def check_budget(ctx: TrialContext, score: Score) -> CheckResult:
    """The staged stream is the budget; the harness count must not exceed it either."""
    size = (ctx.inputs_dir / TRAIN_STREAM).stat().st_size
    try:
        tokens = int(read_train_log(ctx)["tokens"])
    except TrialFailure as err:
        return CheckResult(name="budget_respected", passed=False, evidence=err.reason)
    ok = size == ctx.budget.amount + 1 and 0 <= tokens <= ctx.budget.amount
    amount = ctx.budget.amount
    evidence = f"stream {size} bytes for amount {amount}; harness counted {tokens} tokens"
    return CheckResult(name="budget_respected", passed=ok, evidence=evidence)


def check_eval_complete(ctx: TrialContext, score: Score) -> CheckResult:
    n = len(eval_windows(ctx))
    try:
        logits = _load_logits(ctx.workspace / "out" / "logits.npy", n)
    except TrialFailure as err:
        return CheckResult(name="eval_outputs_complete", passed=False, evidence=err.reason)
    ok = bool(np.isfinite(logits).all()) and int(score.evidence.get("eval_windows", -1)) == n
    return CheckResult(
        name="eval_outputs_complete", passed=ok, evidence=f"{n} windows x {EVAL_LEN} positions"
    )


def check_causal(ctx: TrialContext, score: Score) -> CheckResult:
    """Predictions at a position must not depend on later bytes (no peeking at targets)."""
    out = ctx.workspace / "out"
    try:
        full = _load_logits(out / "logits.npy", len(eval_windows(ctx)))
        probe = np.load(out / "probe_logits.npy", allow_pickle=False)
    except (TrialFailure, OSError, ValueError) as err:
        return CheckResult(name="causal_predictions", passed=False, evidence=str(err))
    k = len(probe)
    if not 0 < k <= len(full) or probe.shape[1:] != full.shape[1:]:
        return CheckResult(name="causal_predictions", passed=False, evidence="malformed probe")
    diff = np.abs(full[:k, :PROBE_AT].astype(np.float32) - probe[:, :PROBE_AT].astype(np.float32))
    worst = float(np.nan_to_num(diff, nan=np.inf).max())
    return CheckResult(
        name="causal_predictions",
        passed=worst <= CAUSAL_TOL,
        evidence=f"max logit change on unchanged prefixes of {k} windows: {worst:.4g}",
    )
