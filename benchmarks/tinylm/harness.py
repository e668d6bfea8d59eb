"""Trusted driver of the two sandboxed steps of a tinylm trial.

`train` hands the candidate's `train.train(ctx)` a context whose only source of training
data is the staged stream (exactly the budget), and saves the returned module. `eval`
runs that module on the fixed evaluation windows and writes raw logits; the metric is
computed later by the trusted scorer in the parent, never here.

Run as: python -m benchmarks.tinylm.harness {train,eval} --workspace W --inputs I --seed S
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.tinylm.prepare import (
    EVAL_FILE,
    EVAL_LEN,
    N_CAUSAL_PROBES,
    PROBE_AT,
    TRAIN_STREAM,
    VOCAB_SIZE,
)

EVAL_BATCH = 16


class TrainContext:
    """What train.train(ctx) gets: a budgeted batch source and a few facts."""

    vocab_size = VOCAB_SIZE
    eval_len = EVAL_LEN

    def __init__(self, stream: np.ndarray, seed: int, threads: int):
        self._data = torch.from_numpy(stream.astype(np.int64))
        self._pos = 0
        self.seed = seed
        self.threads = threads
        self.steps = 0

    @property
    def tokens_left(self) -> int:
        """Training tokens (predicted positions) not yet handed out."""
        return len(self._data) - 1 - self._pos

    @property
    def tokens_used(self) -> int:
        return self._pos

    def next_batch(self, batch_size: int, seq_len: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The next batch_size * seq_len tokens of the stream, or None when they do not fit."""
        n = int(batch_size) * int(seq_len)
        if n <= 0 or n > self.tokens_left:
            return None
        chunk = self._data[self._pos : self._pos + n + 1]
        self._pos += n
        self.steps += 1
        return chunk[:-1].view(batch_size, seq_len), chunk[1:].view(batch_size, seq_len)


def _setup(workspace: Path, seed: int, threads: int) -> Path:
    torch.set_num_threads(max(1, threads))
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    sys.path.insert(0, str(workspace))
    out = workspace / "out"
    out.mkdir(exist_ok=True)
    return out


def run_train(workspace: Path, inputs: Path, seed: int, threads: int) -> None:
    out = _setup(workspace, seed, threads)
    stream = np.fromfile(inputs / TRAIN_STREAM, dtype=np.uint8)
    ctx = TrainContext(stream, seed, threads)
    import train  # the candidate's workspace/train.py

    start = time.perf_counter()
    model = train.train(ctx)
    seconds = time.perf_counter() - start
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"train() must return a torch.nn.Module, got {type(model).__name__}")
    torch.save(model, out / "model.pt")
    log = {
        "tokens": ctx.tokens_used,
        "stream_tokens": len(stream) - 1,
        "steps": ctx.steps,
        "seconds": round(seconds, 3),
        "n_params": sum(p.numel() for p in model.parameters()),
    }
    (out / "train_log.json").write_text(json.dumps(log, indent=2))


def _logits(model: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    chunks = []
    for i in range(0, len(x), EVAL_BATCH):
        y = model(x[i : i + EVAL_BATCH])
        if isinstance(y, tuple | list):
            y = y[0]
        chunks.append(y.float().cpu().numpy().astype(np.float16))
    return np.concatenate(chunks)


def run_eval(workspace: Path, inputs: Path, seed: int, threads: int) -> None:
    out = _setup(workspace, seed, threads)
    for name in ("logits.npy", "probe_logits.npy"):
        (out / name).unlink(missing_ok=True)
    windows = np.fromfile(inputs / EVAL_FILE, dtype=np.uint8).reshape(-1, EVAL_LEN + 1)
    x = torch.from_numpy(windows[:, :-1].astype(np.int64))
    import train  # noqa: F401  (the pickled model's classes live there)

    model = torch.load(out / "model.pt", map_location="cpu", weights_only=False)
    model.eval()
    with torch.no_grad():
        logits = _logits(model, x)
        # Same prefixes, different futures: a causal model's early predictions cannot change.
        k = min(N_CAUSAL_PROBES, len(x))
        probe = x[:k].clone()
        probe[:, PROBE_AT:] = torch.roll(x[:k], 1, dims=0)[:, PROBE_AT:].flip(1)
        probe_logits = _logits(model, probe)
    np.save(out / "logits.npy", logits)
    np.save(out / "probe_logits.npy", probe_logits)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="benchmarks.tinylm.harness")
    parser.add_argument("step", choices=("train", "eval"))
    parser.add_argument("--workspace", type=Path, required=True)
    parser.add_argument("--inputs", type=Path, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    run = run_train if args.step == "train" else run_eval
    run(args.workspace.resolve(), args.inputs.resolve(), args.seed, args.threads)


if __name__ == "__main__":
    main()
