"""Trusted scoring and audit checks of a tinylm trial, run in the parent process.

The sandboxed steps only write raw logits; the loss is computed here against targets
held in the trial's trusted memory, so a candidate can neither see nor misreport them.
Every output is validated (its .npy header, shape, dtype and size) before anything is
allocated for it.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np

from benchmarks.protocol import CheckResult, Score, TrialContext, TrialFailure, read_output
from benchmarks.tinylm.contract import EVAL_LEN, LOGITS, TRAIN_LOG, VOCAB_SIZE

CAUSAL_TOL = 0.05  # max |log-prob difference| on unchanged prefixes (float16 outputs)
# Mean, over the cut rows, of how much more the eval step believed the true next byte at
# the cut than the probe (which saw other text after the cut) did. Honest models give 0 up
# to rounding; a model that peeks gains exactly this much there, so a peek small enough
# to hide under CAUSAL_TOL is still caught, and what could hide under this is far below
# any gain the evaluation accepts (evaluation.min_gain).
PEEK_TOL = 1e-3
TRAIN_LOG_MAX_BYTES = 65536


def load_array(path: Path, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    """An .npy file of exactly this shape and dtype: read as a regular file no larger than
    that array needs (read_output), then checked from its header and size, so neither a
    forged header nor a planted link or FIFO can make the scorer allocate, block or read
    anything else."""
    fmt = np.lib.format
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    data = read_output(path, nbytes + 4096)
    f = io.BytesIO(data)
    try:
        version = fmt.read_magic(f)
        read_header = fmt.read_array_header_1_0 if version == (1, 0) else (
            fmt.read_array_header_2_0)
        got_shape, fortran, got_dtype = read_header(f, max_header_size=4096)
    except (ValueError, EOFError) as err:
        raise TrialFailure("output", f"cannot read {path.name}: {err}") from None
    if tuple(got_shape) != shape or got_dtype != np.dtype(dtype) or fortran:
        raise TrialFailure("output", f"{path.name} is {got_dtype}{tuple(got_shape)}, "
                           f"expected {dtype}{shape}")
    if len(data) != f.tell() + nbytes:
        raise TrialFailure("output", f"{path.name} has {len(data)} bytes, expected "
                           f"{f.tell() + nbytes}")
    return np.frombuffer(data, dtype=dtype, offset=f.tell()).reshape(shape).copy()


def logits_of(ctx: TrialContext, step: str, rows: int) -> np.ndarray:
    logits = load_array(ctx.outputs(step) / LOGITS, (rows, EVAL_LEN, VOCAB_SIZE), "float16")
    if not np.isfinite(logits).all():
        raise TrialFailure("nan", f"{step} logits contain NaN or infinite values")
    return logits


def log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z -= z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def bits_per_byte(logits: np.ndarray, targets: np.ndarray) -> float:
    """Mean next-byte cross-entropy in bits, with a float64 log-softmax."""
    logp = log_softmax(logits)
    picked = np.take_along_axis(logp, targets[..., None].astype(np.int64), axis=-1)[..., 0]
    return float(-picked.mean() / math.log(2))


def read_train_log(ctx: TrialContext) -> dict:
    """The harness's own account of training: evidence, never trusted for the budget."""
    try:
        log = json.loads(read_output(ctx.outputs("train") / TRAIN_LOG, TRAIN_LOG_MAX_BYTES))
    except (TrialFailure, ValueError):
        return {}
    if not isinstance(log, dict):
        return {}
    return {k: v for k, v in log.items() if isinstance(v, int | float) and math.isfinite(v)}


def score(ctx: TrialContext) -> Score:
    targets = ctx.secrets["targets"]
    logits = logits_of(ctx, "eval", len(targets))
    bpb = bits_per_byte(logits, targets)
    log = read_train_log(ctx)
    evidence: dict[str, str | float | int | bool] = {
        "staged_train_tokens": int(ctx.secrets["staged_tokens"]),
        "eval_windows": len(targets),
        "eval_tokens": int(targets.size),
        "unigram_bpb": round(float(ctx.secrets["unigram_bpb"]), 4),
    }
    evidence |= {f"harness_{k}": v for k, v in log.items()}
    return Score(
        metrics={"bpb": bpb}, budget_used=float(ctx.secrets["staged_tokens"]), evidence=evidence
    )


def check_budget(ctx: TrialContext, score: Score) -> CheckResult:
    """The staged stream is the budget, counted when trusted code staged it; the runner
    checks it was not touched. The harness's own count is shown as evidence only."""
    staged = int(ctx.secrets.get("staged_tokens", -1))
    ok = staged == ctx.budget.amount and score.budget_used == staged
    handed = score.evidence.get("harness_tokens_handed_out", "?")
    evidence = (f"staged {staged} training tokens for a budget of {ctx.budget.amount}; "
                f"harness handed out {handed}")
    return CheckResult(name="budget_respected", passed=ok, evidence=evidence)


def check_causal(ctx: TrialContext, score: Score) -> CheckResult:
    """Predictions must not depend on later bytes, on the other windows of the batch, or on
    windows evaluated before: a fresh process saw each window cut at a secret random
    position and continued with other text, in another order and batching; its
    log-probabilities up to the cut must match the eval step's."""
    name = "causal_and_independent"
    order, cuts = ctx.secrets["probe_order"], ctx.secrets["probe_cuts"]
    targets = ctx.secrets["targets"]
    try:
        full = logits_of(ctx, "eval", len(targets))
        probe = logits_of(ctx, "probe", len(order))
    except TrialFailure as err:
        return CheckResult(name=name, passed=False, evidence=err.reason)
    worst, where, peeks = 0.0, (-1, -1), []
    for r, (w, cut) in enumerate(zip(order, cuts, strict=True)):
        a = log_softmax(full[w, : cut + 1])
        b = log_softmax(probe[r, : cut + 1])
        diff = np.abs(a - b).max(axis=-1)
        if diff.max() > worst:
            worst, where = float(diff.max()), (int(w), int(diff.argmax()))
        if cut < targets.shape[1] - 1:
            t = int(targets[w, cut])
            peeks.append(a[cut, t] - b[cut, t])
    peek = float(np.mean(peeks)) if peeks else 0.0
    return CheckResult(
        name=name,
        passed=worst <= CAUSAL_TOL and peek <= PEEK_TOL,
        evidence=f"{len(order)} rows probed ({len(peeks)} cut at random positions); max "
        f"log-prob change on unchanged prefixes {worst:.4g} (window {where[0]}, position "
        f"{where[1]}; tolerance {CAUSAL_TOL}); mean gain on the true next byte at the cut "
        f"{peek:.3g} nats (tolerance {PEEK_TOL})",
    )
