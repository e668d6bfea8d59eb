"""The processes of a speedrun train step: the ranks that train and the validators.

A rank runs the candidate's `train.train(ctx)`. Its only source of training data is the
trusted server, through the launcher: each `ctx.next_batch` call is one optimizer step's
share of this rank, and before serving step k * val_every the server has rank 0 save
the model it registered (`ctx.set_model`) and has it validated. A rank never receives a
validation token.

A validator loads each saved model in its own process and streams its float16 logits on
the validation rows to the trusted side, which computes the loss. It may read but not
write files, and has no socket but its own: nothing it sees reaches the ranks. The probe
is a second validator that re-runs a few of the rows, cut at secret positions and
continued with other text, so that predictions that look ahead are caught.

Everything the harness needs (torch, the device, the process group, the channel) is
set up before the guard is installed and the candidate imported.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from benchmarks import guard
from benchmarks.nanochat import channel
from benchmarks.nanochat.harness import _load_candidate, _seed_all
from benchmarks.speedrun import contract as c

_clock = time.monotonic  # held here: a candidate that patches time.monotonic changes nothing
# the names of newer torch releases, the older ones where they are not there yet
_ALL_GATHER = getattr(dist, "all_gather_single", dist.all_gather_into_tensor)
_REDUCE_SCATTER = getattr(dist, "reduce_scatter_single", dist.reduce_scatter_tensor)


class Collectives:
    """The collectives a rank may use; the process group itself stays with the harness.
    `op` is "sum", "avg", "max" or "min"; async_op=True returns a handle with .wait()."""

    OPS = {"sum": dist.ReduceOp.SUM, "avg": dist.ReduceOp.AVG, "max": dist.ReduceOp.MAX,
           "min": dist.ReduceOp.MIN}

    def __init__(self, world_size: int):
        self.world_size = world_size

    def all_reduce(self, tensor: torch.Tensor, op: str = "avg", async_op: bool = False):
        return dist.all_reduce(tensor, op=self.OPS[op], async_op=async_op)

    def reduce_scatter_tensor(self, output: torch.Tensor, tensor: torch.Tensor,
                              op: str = "avg", async_op: bool = False):
        """Reduce `tensor` (world_size times output's size) and keep this rank's part."""
        return _REDUCE_SCATTER(output, tensor, op=self.OPS[op], async_op=async_op)

    def all_gather_into_tensor(self, output: torch.Tensor, tensor: torch.Tensor,
                               async_op: bool = False):
        """Every rank's `tensor`, concatenated in rank order into `output`."""
        return _ALL_GATHER(output, tensor, async_op=async_op)

    def broadcast(self, tensor: torch.Tensor, src: int = 0, async_op: bool = False):
        return dist.broadcast(tensor, src=src, async_op=async_op)

    def barrier(self) -> None:
        dist.barrier()


class TrainContext:
    """What train.train(ctx) gets (see benchmarks/speedrun/README.md)."""

    def __init__(self, conn: socket.socket, preset: c.Preset, device: torch.device,
                 seed: int, rank: int, world_size: int, snapshot: Path, budget_s: float):
        self._conn = conn
        self._snapshot = snapshot
        self.vocab_size = preset.vocab_size
        self.eot_id = preset.eot_id
        self.val_len = preset.val_len
        self.val_every = preset.val_every
        self.budget_s = float(budget_s)  # clocked seconds after which batches stop
        self.device = device
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.comm = Collectives(world_size)
        self.steps = 0
        self.tokens_used = 0
        self._model: torch.nn.Module | None = None
        self._done = False
        self.saves: list[float] = []

    def set_model(self, model: torch.nn.Module) -> None:
        """The module validated: forward(idx) on (batch, T) int64 tokens, T <= val_len,
        returns (batch, T, >= vocab_size) next-token logits. Rank 0's is saved at each
        validation; keep training it (a copy registered once would be validated frozen)."""
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"set_model needs a torch.nn.Module, got {type(model).__name__}")
        self._model = getattr(model, "_orig_mod", model)

    def warmup_batch(self, batch_size: int, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Random tokens for compiling before the first batch: not training data."""
        x = torch.randint(0, self.vocab_size, (int(batch_size), int(seq_len) + 1),
                          device=self.device)
        return x[:, :-1].contiguous(), x[:, 1:].contiguous()

    def next_batch(self, batch_size: int, seq_len: int
                   ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """This rank's share of the next optimizer step: batch_size consecutive windows of
        seq_len tokens (y is x shifted by one), or None once the budget is spent. The
        first call starts the clock; every rank must ask for the same shape at a step."""
        if self._model is None:
            raise RuntimeError("call ctx.set_model(model) before the first batch")
        b, t = int(batch_size), int(seq_len)
        if self._done or b <= 0 or t <= 0:
            return None
        channel.send(self._conn, c.BATCH, c.REQUEST.pack(b, t))
        tag, size = self._await(c.DATA, c.DONE)
        if tag == c.DONE:
            self._done = True
            return None
        if size != 2 * (b * t + 1):
            raise channel.ProtocolError(f"a batch of {size} bytes for {b} x {t} tokens")
        tokens = torch.from_numpy(channel.recv_tokens(self._conn, size).astype(np.int64))
        if self.device.type == "cuda":
            tokens = tokens.pin_memory().to(self.device, non_blocking=True)
        self.steps += 1
        self.tokens_used += b * t
        return tokens[:-1].view(b, t), tokens[1:].view(b, t)

    def finish(self) -> None:
        """After train() returned: the final validation, then the end of the run."""
        channel.send(self._conn, c.FINISH)
        self._await(c.BYE)

    def _await(self, *wanted: bytes) -> tuple[bytes, int]:
        """The next reply of a kind in `wanted`; saves the model whenever asked meanwhile."""
        while True:
            head = channel.recv_header(self._conn)
            if head is None:
                raise channel.ProtocolError("the trusted side closed the channel")
            tag, size = head
            if tag == c.SNAPSHOT and size == 0:
                self._save()
                continue
            if tag in wanted:
                return tag, size
            raise channel.ProtocolError(f"unexpected message {tag!r} of {size} bytes")

    def _save(self) -> None:
        start = _clock()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        tmp = self._snapshot.with_name(self._snapshot.name + ".tmp")
        torch.save(self._model, tmp)
        os.replace(tmp, self._snapshot)
        self.saves.append(_clock() - start)
        channel.send(self._conn, c.SAVED)


def _device(preset: c.Preset, index: int) -> torch.device:
    if preset.device == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"the {preset.name} preset needs CUDA, and none is visible here")
        torch.cuda.set_device(index)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        return torch.device("cuda", index)
    return torch.device("cpu")


def _channel() -> socket.socket:
    return socket.socket(fileno=int(os.environ[c.CHANNEL_ENV]))


def run_rank(a) -> None:
    """One training process: the process group, then the candidate's train(ctx)."""
    preset = c.PRESETS[a.preset]
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    conn = _channel()
    _seed_all(a.seed, a.threads)  # the same initialisation on every rank
    device = _device(preset, int(os.environ["LOCAL_RANK"]))
    dist.init_process_group(preset.backend, rank=rank, world_size=world,
                            device_id=device if device.type == "cuda" else None)
    ctx = TrainContext(conn, preset, device, a.seed, rank, world, a.snapshot, a.budget_s)
    guard.install()
    train = _load_candidate(a.workspace)
    train.train(ctx)
    ctx.finish()
    conn.close()
    if rank == 0:
        log = {"steps": ctx.steps, "tokens_handed_out": ctx.tokens_used * world,
               "saves": len(ctx.saves), "save_s": round(sum(ctx.saves), 3), **_memory(device)}
        (a.out / c.TRAIN_LOG).write_text(json.dumps(log, indent=2))
    dist.destroy_process_group()


def run_validator(a) -> None:
    """Loads each saved model and streams its logits on the rows it is sent, in order."""
    preset = c.PRESETS[a.preset]
    conn = _channel()
    _seed_all(0, a.threads)
    device = _device(preset, 0)
    guard.install()
    _load_candidate(a.workspace)  # the pickled model's classes live there
    channel.send(conn, c.READY)
    while (head := channel.recv_header(conn)) is not None:
        tag, size = head
        if tag != c.VALIDATE or size <= c.ROWS.size:
            raise channel.ProtocolError(f"expected rows to validate, got {tag!r}")
        _, rows, seq = c.ROWS.unpack(channel.recv_exact(conn, c.ROWS.size))
        x = channel.recv_tokens(conn, size - c.ROWS.size).reshape(rows, seq)
        model = torch.load(a.snapshot, map_location=device, weights_only=False)
        model.eval()
        _stream_logits(conn, model, x, preset, device)
        del model
    conn.close()


def _stream_logits(conn: socket.socket, model, x: np.ndarray, preset: c.Preset,
                   device: torch.device) -> None:
    with torch.no_grad():
        for i in range(0, len(x), preset.val_batch):
            rows = torch.from_numpy(x[i : i + preset.val_batch].astype(np.int64)).to(device)
            y = model(rows)
            if isinstance(y, tuple | list):
                y = y[0]
            out = y[..., : preset.vocab_size].to(torch.float16).cpu().numpy()
            channel.send(conn, c.LOGITS, c.ROWS.pack(i, len(rows), x.shape[1]),
                         memoryview(np.ascontiguousarray(out)))
    channel.send(conn, c.END)


def _memory(device: torch.device) -> dict:
    if device.type != "cuda":
        return {}
    return {"peak_memory_gb": round(torch.cuda.max_memory_allocated(device) / 2**30, 3),
            "gpu": torch.cuda.get_device_name(device)}
