"""What the nanochat harness and its trusted side agree on: presets, shapes, file names.

Imported inside the sandbox by the harness, so it holds constants only.

A preset fixes everything that makes two trials comparable: the tokenizer's vocabulary,
the evaluation windows, and how the harness talks to the trusted side. `gpu` is the
public setting (8192-token BPE, 2048-token windows); `cpu` is the same benchmark shrunk
so that every code path runs in the test suite on a laptop.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Preset:
    name: str
    vocab_size: int  # BPE vocabulary, special tokens included
    eval_len: int  # positions per evaluation window (the model's longest context)
    eval_batch: int  # windows per forward in the eval step
    probe_batch: int  # another batching in the probe step: outputs must not depend on it
    n_probe_windows: int  # windows re-run, cut at secret positions, by the probe step
    max_eval_windows: int  # cap on val/test windows (0: the whole split)
    startup_s: float  # time from the step's start to its first training batch, at most
    # The budget runs from the first batch to the train step's exit: batches are served
    # until `reserve_s` before its end, which leaves the time to return and save the model
    # (training on kept batches in it stays inside the budget).
    reserve_s: float
    device: str  # "cuda" or "cpu"
    causal_tol: float  # max |log-prob change| on unchanged prefixes between eval and probe
    peek_tol: float  # max mean gain on the true next token at the probe's cuts (nats)
    # Eval and probe steps may compute (their time less the logits' transfer) for at most
    # eval_load_s + eval_row_s per row, counted from the harness's READY: loading the
    # model and forward passes, not training on the side. Receiving the logits counts as
    # transfer only for as long as they take at transfer_floor_bps (bytes per second): a
    # step cannot slow its logits down to compute while the clock is held.
    eval_load_s: float
    eval_row_s: float
    transfer_floor_bps: float


PRESETS = {
    "gpu": Preset(name="gpu", vocab_size=8192, eval_len=2048, eval_batch=16, probe_batch=4,
                  n_probe_windows=128, max_eval_windows=0, startup_s=240.0, reserve_s=6.0,
                  device="cuda", causal_tol=0.1, peek_tol=0.005, eval_load_s=2.0,
                  eval_row_s=0.004, transfer_floor_bps=1.5e9),
    "cpu": Preset(name="cpu", vocab_size=512, eval_len=64, eval_batch=8, probe_batch=3,
                  n_probe_windows=24, max_eval_windows=48, startup_s=60.0, reserve_s=4.0,
                  device="cpu", causal_tol=0.05, peek_tol=1e-3, eval_load_s=3.0,
                  eval_row_s=0.02, transfer_floor_bps=1e8),
}  # fmt: skip

BOS = "<|bos|>"  # the one special token: starts every document
TRAIN_TOKENS = "train.bin"  # uint16 token stream, staged for the data server (trusted side)
INPUTS = "x.bin"  # (rows, eval_len) uint16 in the eval and probe steps' inputs
MODEL = "model.pt"  # in the train step's outputs
TRAIN_LOG = "train_log.json"  # the harness's own account (evidence, not trusted)
EVAL_LOG = "eval_log.json"
CHANNEL_ENV = "AUTOLAB_CHANNEL_FD"  # the socket to the trusted side, inherited by the step
CACHE_ENV_VARS = ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")
