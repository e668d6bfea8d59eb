"""What the speedrun harness and its trusted side agree on: presets, message tags, names.

Imported inside the sandbox by the harness, so it holds constants only.

A preset fixes everything that makes two runs comparable: the tokenizer, the validation
rows and how often they are run, the target loss, the clock's rules and the number of
processes. `short` and `full` are the GPU settings (GPT-2 BPE on English Wikipedia);
`cpu` is the same benchmark shrunk (byte tokens, a tiny model, two gloo processes) so
that every code path runs in the test suite.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass


@dataclass(frozen=True)
class Preset:
    name: str
    tokenizer: str  # "gpt2" (50,257 BPE tokens) or "bytes" (256 bytes + end of text)
    vocab_size: int
    eot_id: int  # end-of-text token, written before every document
    device: str  # "cuda" or "cpu"
    backend: str  # torch.distributed backend of the ranks
    nproc: int  # processes (one per GPU) when the trial's slot does not say otherwise
    target: float  # validation loss (nats per token) a run must reach
    val_every: int  # optimizer steps between validations (and one at the end)
    val_len: int  # tokens per validation row
    val_rows: int  # rows per validation: a fixed sample of the val (or test) half
    val_batch: int  # rows per forward pass of the validator
    n_probe: int  # rows re-run, cut at secret positions, by the probe at each validation
    startup_s: float  # from the step's start to the first training batch, at most
    # A validation pauses the clock; the pause is not counted up to the logits' transfer
    # plus this much (the snapshot, loading it, the forward passes): longer ones count.
    val_allowance_s: float
    val_timeout_s: float  # a validation that takes longer than this halts the trial
    finish_s: float  # after the last batch, the ranks have this long to finish
    causal_tol: float  # max |log-prob change| on unchanged prefixes between main and probe
    peek_tol: float  # max mean gain on the true next token at the probe's cuts (nats)
    max_batch_tokens: int  # one rank's request may ask for at most this many tokens
    max_epochs: float = 2.0  # passes over the train split served at most: no memorising
    # receiving logits counts as the trusted side's time only for as long as the bytes
    # take at this rate (bytes per second): a validator that sends them slowly, computing
    # meanwhile, has the difference clocked
    transfer_floor_bps: float = 1.5e9


PRESETS = {
    "short": Preset(name="short", tokenizer="gpt2", vocab_size=50257, eot_id=50256,
                    device="cuda", backend="nccl", nproc=2, target=3.95,
                    val_every=100, val_len=1024, val_rows=32, val_batch=4, n_probe=2,
                    startup_s=420.0, val_allowance_s=4.0, val_timeout_s=120.0,
                    finish_s=15.0, causal_tol=0.1, peek_tol=0.005,
                    max_batch_tokens=1 << 18),
    "full": Preset(name="full", tokenizer="gpt2", vocab_size=50257, eot_id=50256,
                   device="cuda", backend="nccl", nproc=2, target=3.55,
                   val_every=125, val_len=1024, val_rows=64, val_batch=4, n_probe=2,
                   startup_s=420.0, val_allowance_s=4.0, val_timeout_s=180.0,
                   finish_s=15.0, causal_tol=0.1, peek_tol=0.005,
                   max_batch_tokens=1 << 18),
    "cpu": Preset(name="cpu", tokenizer="bytes", vocab_size=257, eot_id=256, device="cpu",
                  backend="gloo", nproc=2, target=2.6, val_every=10,
                  val_len=64, val_rows=16, val_batch=8, n_probe=3, startup_s=60.0,
                  val_allowance_s=0.6, val_timeout_s=30.0, finish_s=6.0, causal_tol=0.05,
                  peek_tol=1e-3, max_batch_tokens=1 << 16, transfer_floor_bps=1e8),
}  # fmt: skip

TRAIN_TOKENS = "train.bin"  # uint16 token stream, read by the trusted data server only
CHANNEL_ENV = "AUTOLAB_CHANNEL_FD"  # each process's socket to the launcher
CACHE_ENV_VARS = ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")
TRAIN_LOG = "train_log.json"  # rank 0's own account (evidence, not trusted)

# Framing: nanochat's channel (a 4-byte tag, a u64 length, the payload). Between the
# launcher and the trusted side, every payload starts with one address byte: the rank
# (0..), the validator, the probe, or the launcher itself.
VALIDATOR = 250
PROBE = 251
LAUNCHER = 255
ADDRESS = struct.Struct("<B")

BATCH = b"BATC"  # rank -> server: <II (batch_size, seq_len), its share of the next step
DATA = b"DATA"  # server -> rank: batch_size * seq_len + 1 uint16 tokens
DONE = b"DONE"  # server -> rank: no more batches (the clock passed the budget)
FINISH = b"FIN_"  # rank -> server: train() returned
SNAPSHOT = b"SNAP"  # server -> rank 0: save the model for a validation now
SAVED = b"SAVD"  # rank 0 -> server: saved
BYE = b"BYE_"  # server -> rank: the run is over, exit
STOP = b"STOP"  # server -> launcher: stop the ranks (SIGSTOP) for a validation
CONT = b"CONT"  # server -> launcher: let them go on
VALIDATE = b"VAL_"  # server -> validator: <III (validation, rows, seq_len), uint16 rows
READY = b"RDY_"  # validator -> server: torch, the device and the candidate's code are up
LOGITS = b"LGTS"  # validator -> server: <III (first row, rows, seq_len), float16 logits
END = b"END_"  # validator -> server: every row of this validation sent
EXITED = b"EXIT"  # launcher -> server: <Bi (address, exit status) of a process that ended
REQUEST = struct.Struct("<II")
ROWS = struct.Struct("<III")
CHILD = struct.Struct("<Bi")
