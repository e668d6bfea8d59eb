"""Trusted driver of the sandboxed steps of a nanochat trial; runs inside the sandbox.

`train` hands the candidate's `train.train(ctx)` a context whose only source of training
data is the trusted server at the other end of the step's channel: it serves batches
from the first request on, for the budget's seconds, and keeps the clock itself. `eval`
and `probe` run the saved model on staged input windows and stream the raw logits to the
trusted side, which computes the loss and the causality check; nothing they write is a
score. Everything the harness needs (torch, CUDA, the channel) is set up before the guard
is installed and the candidate imported.

Run as: python -m benchmarks.nanochat.harness {train,eval,probe} --preset P --workspace W
        --out O [--inputs I --model M] --seed S --budget-s B --threads N
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from benchmarks import guard
from benchmarks.nanochat import channel
from benchmarks.nanochat.contract import (
    CHANNEL_ENV,
    EVAL_LOG,
    INPUTS,
    MODEL,
    PRESETS,
    TRAIN_LOG,
    Preset,
)

_clock = time.monotonic  # held here: a candidate that patches time.monotonic changes nothing


class TrainContext:
    """What train.train(ctx) gets (see benchmarks/nanochat/README.md)."""

    def __init__(self, conn: socket.socket, preset: Preset, device: torch.device, seed: int,
                 budget_s: float, bos_id: int):
        self._conn = conn
        self.vocab_size = preset.vocab_size
        self.eval_len = preset.eval_len
        self.bos_id = bos_id
        self.device = device
        self.seed = seed
        self.budget_s = float(budget_s)
        # batches are served for this long; the rest of the budget is for saving the model
        self.data_s = max(0.0, self.budget_s - preset.reserve_s)
        self.tokens_used = 0
        self.batches = 0
        self._t0: float | None = None
        self._first_warmup: float | None = None
        self._done = False

    def elapsed(self) -> float:
        return 0.0 if self._t0 is None else _clock() - self._t0

    def progress(self) -> float:
        """Fraction of the data window spent: 1.0 when the last batch has been served."""
        return self.elapsed() / self.data_s if self.data_s > 0 else 1.0

    def warmup_batch(self, batch_size: int, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Random tokens for compiling before the clock starts: not training data."""
        if self._first_warmup is None:
            self._first_warmup = _clock()
        x = torch.randint(0, self.vocab_size, (int(batch_size), int(seq_len) + 1),
                          device=self.device)
        return x[:, :-1].contiguous(), x[:, 1:].contiguous()

    def next_batch(self, batch_size: int, seq_len: int
                   ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The next batch_size * seq_len tokens of the stream as consecutive windows, or
        None once the trusted server says the budget is spent."""
        b, t = int(batch_size), int(seq_len)
        if self._done or b <= 0 or t <= 0:
            return None
        channel.send(self._conn, channel.BATCH, channel.REQUEST.pack(b, t))
        head = channel.recv_header(self._conn)
        if head is None or head[0] == channel.DONE:
            self._done = True
            return None
        tag, size = head
        if tag != channel.DATA or size != 2 * (b * t + 1):
            raise channel.ProtocolError(f"unexpected reply {tag!r} of {size} bytes")
        if self._t0 is None:
            self._t0 = _clock()
        tokens = torch.from_numpy(channel.recv_tokens(self._conn, size).astype(np.int64))
        if self.device.type == "cuda":
            tokens = tokens.pin_memory().to(self.device, non_blocking=True)
        self.tokens_used += b * t
        self.batches += 1
        return tokens[:-1].view(b, t), tokens[1:].view(b, t)


def _seed_all(seed: int, threads: int) -> None:
    torch.set_num_threads(max(1, threads))
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _device(preset: Preset) -> torch.device:
    if preset.device == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("the gpu preset needs CUDA, and none is visible in this step")
        torch.cuda.init()
        torch.cuda.set_device(0)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        return torch.device("cuda", 0)
    return torch.device("cpu")


def _channel() -> socket.socket:
    return socket.socket(fileno=int(os.environ[CHANNEL_ENV]))


def _load_candidate(workspace: Path):
    """Import workspace/train.py as module `train`, by path: nothing in the workspace can
    shadow a library or this harness."""
    spec = importlib.util.spec_from_file_location("train", workspace / "train.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["train"] = module
    spec.loader.exec_module(module)
    return module


def _matmul_params(model: torch.nn.Module) -> int:
    """Parameters of matrices outside embedding tables: what 6·N·tokens counts."""
    embedded = {id(p) for m in model.modules() if isinstance(m, torch.nn.Embedding)
                for p in m.parameters(recurse=False)}
    return sum(p.numel() for p in model.parameters() if p.dim() >= 2 and id(p) not in embedded)


def _memory(device: torch.device) -> dict:
    if device.type != "cuda":
        return {}
    return {"peak_memory_gb": round(torch.cuda.max_memory_allocated(device) / 2**30, 3),
            "gpu": torch.cuda.get_device_name(device)}


def run_train(a: argparse.Namespace) -> None:
    entered = _clock()
    preset = PRESETS[a.preset]
    conn = _channel()
    _seed_all(a.seed, a.threads)
    device = _device(preset)
    device_ready = _clock()
    ctx = TrainContext(conn, preset, device, a.seed, a.budget_s, a.bos_id)
    guard.install()
    train = _load_candidate(a.workspace)
    imported = _clock()
    model = train.train(ctx)
    seconds = ctx.elapsed()
    model = getattr(model, "_orig_mod", model)  # a compiled wrapper: save the module inside
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"train() must return a torch.nn.Module, got {type(model).__name__}")
    torch.save(model, a.out / MODEL)
    conn.close()
    log = {  # evidence only: this process runs candidate code, so nothing here is trusted
        "tokens_handed_out": ctx.tokens_used, "batches": ctx.batches,
        "seconds": round(seconds, 3), "n_params": sum(p.numel() for p in model.parameters()),
        **_memory(device), **_startup(entered, device_ready, imported, ctx),
    }  # fmt: skip
    (a.out / TRAIN_LOG).write_text(json.dumps(log, indent=2))


def _startup(entered: float, device_ready: float, imported: float, ctx: TrainContext) -> dict:
    """Where the time before the first batch went, from this process's entry into the
    step: the device's initialisation, importing the candidate, then its own set-up until
    it asked for a warm-up batch (building the model) and the warm-up itself (compiling)
    until the first training batch. What came before (the sandbox, Python and torch
    starting) is the rest of the server's startup_s."""
    first = ctx._t0 if ctx._t0 is not None else _clock()
    warm = ctx._first_warmup if ctx._first_warmup is not None else first
    return {"startup_device_s": round(device_ready - entered, 3),
            "startup_import_s": round(imported - device_ready, 3),
            "startup_build_s": round(max(0.0, warm - imported), 3),
            "startup_warmup_s": round(max(0.0, first - warm), 3),
            "startup_in_step_s": round(first - entered, 3)}


def run_predict(a: argparse.Namespace) -> None:
    """Logits for every staged row, `batch` rows per forward, streamed to the trusted side
    as float16 in order."""
    preset = PRESETS[a.preset]
    conn = _channel()
    _seed_all(0, a.threads)
    device = _device(preset)
    x = np.fromfile(a.inputs / INPUTS, dtype=np.uint16).reshape(-1, preset.eval_len)
    batch = preset.eval_batch if a.step == "eval" else preset.probe_batch
    sender = ThreadPoolExecutor(max_workers=1)  # sends one chunk while the next is computed
    # Two host buffers, taken in turn: one is sent while the next chunk is copied into the
    # other. Page-locked on a GPU, so the copy from the device runs at the bus's speed.
    chunk = (batch, x.shape[1], preset.vocab_size)
    host = [channel.host_buffer(chunk, device.type == "cuda") for _ in range(2)]
    channel.send(conn, channel.READY)  # from here on, the trusted side counts compute time
    guard.install()
    _load_candidate(a.workspace)  # the pickled model's classes live there
    model = torch.load(a.model / MODEL, map_location=device, weights_only=False)
    model.eval()
    t0 = _clock()
    sending = None
    with torch.no_grad():
        for k, i in enumerate(range(0, len(x), batch)):
            rows = torch.from_numpy(x[i : i + batch].astype(np.int64)).to(device)
            y = model(rows)
            if isinstance(y, tuple | list):
                y = y[0]
            out = _to_host(y, host[k % 2][: len(rows)])
            if sending is not None:
                sending.result()
            sending = sender.submit(channel.send, conn, channel.LOGITS,
                                    channel.ROWS.pack(i, len(rows), x.shape[1]), memoryview(out))
    if sending is not None:
        sending.result()
    sender.shutdown()
    channel.send(conn, channel.END)
    conn.close()
    log = {"rows": len(x), "seconds": round(_clock() - t0, 3),
           "n_params": sum(p.numel() for p in model.parameters()),
           "matmul_params": _matmul_params(model), **_memory(device)}
    (a.out / EVAL_LOG).write_text(json.dumps(log, indent=2))


def _to_host(y: torch.Tensor, buf: torch.Tensor) -> np.ndarray:
    """The logits as float16 in `buf` (not in use: its last send has finished), or in a new
    array when their shape is not the buffer's (the trusted side then says what is wrong)."""
    if not isinstance(y, torch.Tensor) or tuple(y.shape) != tuple(buf.shape):
        return np.ascontiguousarray(torch.as_tensor(y).to(torch.float16).cpu().numpy())
    async_copy = buf.is_pinned() and y.is_cuda
    buf.copy_(y.to(torch.float16), non_blocking=async_copy)
    if async_copy:
        torch.cuda.current_stream(y.device).synchronize()
    return buf.numpy()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="benchmarks.nanochat.harness")
    parser.add_argument("step", choices=("train", "eval", "probe"))
    parser.add_argument("--preset", choices=sorted(PRESETS), required=True)
    parser.add_argument("--workspace", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--inputs", type=Path)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget-s", type=float, default=60.0)
    parser.add_argument("--bos-id", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    a = parser.parse_args(argv)
    if a.step == "train":
        run_train(a)
    else:
        run_predict(a)


if __name__ == "__main__":
    main()
