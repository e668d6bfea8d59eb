"""Trusted driver of the sandboxed steps of a tinylm trial; runs inside the sandbox.

`train` hands the candidate's `train.train(ctx)` a context whose only source of training
data is the staged stream (exactly the budget), and saves the returned module.
`eval` and `probe` run that module on input bytes only (never the targets) and write raw
logits; the metric and the causality check are computed later by trusted code in the
parent. The guard is installed before candidate code is imported.

Run as: python -m benchmarks.tinylm.harness {train,eval,probe} --workspace W --inputs I
        --out O [--model M] --seed S --threads N
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks import guard
from benchmarks.tinylm.contract import (
    EVAL_BATCH,
    EVAL_LEN,
    INPUTS,
    LOGITS,
    MODEL,
    PROBE_BATCH,
    TRAIN_LOG,
    TRAIN_STREAM,
    VOCAB_SIZE,
)


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


def _seed_all(seed: int, threads: int) -> None:
    torch.set_num_threads(max(1, threads))
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _load_candidate(workspace: Path):
    """Import workspace/train.py as module `train`, by path: nothing in the workspace can
    shadow a library or this harness."""
    spec = importlib.util.spec_from_file_location("train", workspace / "train.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["train"] = module
    spec.loader.exec_module(module)
    return module


def run_train(workspace: Path, inputs: Path, out: Path, seed: int, threads: int) -> None:
    _seed_all(seed, threads)
    stream = np.fromfile(inputs / TRAIN_STREAM, dtype=np.uint8)
    ctx = TrainContext(stream, seed, threads)
    guard.install()
    train = _load_candidate(workspace)
    start = time.perf_counter()
    model = train.train(ctx)
    seconds = time.perf_counter() - start
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"train() must return a torch.nn.Module, got {type(model).__name__}")
    torch.save(model, out / MODEL)
    log = {  # evidence only: this process runs candidate code, so nothing here is trusted
        "tokens_handed_out": ctx.tokens_used,
        "steps": ctx.steps,
        "seconds": round(seconds, 3),
        "n_params": sum(p.numel() for p in model.parameters()),
    }
    (out / TRAIN_LOG).write_text(json.dumps(log, indent=2))


def run_predict(workspace: Path, inputs: Path, model_dir: Path, out: Path, threads: int,
                batch: int) -> None:
    """Logits for every row of the staged inputs, `batch` rows per forward."""
    _seed_all(0, threads)
    x = torch.from_numpy(np.fromfile(inputs / INPUTS, dtype=np.uint8).astype(np.int64))
    x = x.view(-1, EVAL_LEN)
    guard.install()
    _load_candidate(workspace)  # the pickled model's classes live there
    model = torch.load(model_dir / MODEL, map_location="cpu", weights_only=False)
    model.eval()
    chunks = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            y = model(x[i : i + batch])
            if isinstance(y, tuple | list):
                y = y[0]
            chunks.append(y.float().cpu().numpy().astype(np.float16))
    np.save(out / LOGITS, np.concatenate(chunks))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="benchmarks.tinylm.harness")
    parser.add_argument("step", choices=("train", "eval", "probe"))
    parser.add_argument("--workspace", type=Path, required=True)
    parser.add_argument("--inputs", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    a = parser.parse_args(argv)
    if a.step == "train":
        run_train(a.workspace, a.inputs, a.out, a.seed, a.threads)
    else:
        batch = EVAL_BATCH if a.step == "eval" else PROBE_BATCH
        run_predict(a.workspace, a.inputs, a.model, a.out, a.threads, batch)


if __name__ == "__main__":
    main()
