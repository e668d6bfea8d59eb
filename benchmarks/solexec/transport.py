"""The memory a workload's tensors live in, shared by the trusted evaluator and the worker.

The trusted side lays out every input and output tensor of a workload as a slot of one
arena (`plan`), allocates the arena and hands the worker a handle to it once, before any
call; a call then carries nothing but its number. The trusted side writes a call's inputs
into their slots just before the call and reads the outputs from theirs as soon as the
worker answers: the worker never hands a tensor over, it writes bytes into memory the
trusted side owns.

Two transports, chosen by the device:

- host (`HostArena`): an anonymous memfd mapped by both processes (mmap, torch.frombuffer);
  the descriptor travels with the open message (SCM_RIGHTS). Not `Tensor.share_memory_()`:
  torch hands a shared storage on through multiprocessing's resource sharer, a socket
  server that the sandbox's network namespace and the runtime guard rule out, or through
  named files in /dev/shm that the sandbox hides. A descriptor on the channel needs neither.
- CUDA (`DeviceArena`): one device allocation exported by CUDA IPC through
  torch.multiprocessing.reductions; the handle is pickled to the worker, which rebuilds a
  tensor over the same device memory in its own context. The trusted side keeps the
  allocation alive until the worker is gone. torch keeps the IPC reference counts in a
  shared-memory file of the trusted process, which the worker opens by name in its
  /dev/shm to count its use of the allocation. That file lives as long as the trusted
  process and serves many trials, so the worker never sees it: it is handed a counter
  file of its own, made in its private /dev/shm (`ipc_dir`) and gone with the trial, and
  the trusted side releases its real count itself once the worker is gone
  (`release_counters`), so the allocation is freed then.

`digest` is computed on both sides over the output slots: the worker puts it in its
answer, the trusted side recomputes it from what it reads (see evaluate.py for why).

Imported by the worker inside the sandbox: stdlib and torch only.
"""

from __future__ import annotations

import math
import mmap
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

ALIGN = 256  # bytes: the CUDA allocator's granule, more than any dtype needs


@dataclass(frozen=True)
class Slot:
    offset: int
    dtype: str  # a torch dtype's name, e.g. "float32"
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * getattr(torch, self.dtype).itemsize


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def plan(tensors: Sequence[tuple[torch.dtype, tuple[int, ...]]]) -> tuple[list[Slot], int]:
    """Slots for tensors of these dtypes and shapes, each ALIGN-aligned, and the arena size."""
    slots, offset = [], 0
    for dtype, shape in tensors:
        slot = Slot(offset, dtype_name(dtype), tuple(int(s) for s in shape))
        slots.append(slot)
        offset += -(-max(slot.nbytes, 1) // ALIGN) * ALIGN
    return slots, max(offset, ALIGN)


def view(arena: torch.Tensor, slot: Slot) -> torch.Tensor:
    """The slot as a tensor of its dtype and shape over the arena's memory."""
    raw = arena[slot.offset : slot.offset + slot.nbytes]
    return raw.view(getattr(torch, slot.dtype)).view(slot.shape)


def as_bytes(t: torch.Tensor) -> torch.Tensor:
    """A tensor's bytes, flat, as uint8 (a copy only where it is not contiguous)."""
    return t.contiguous().reshape(-1).view(torch.uint8)


def digest(tensors: Sequence[torch.Tensor]) -> int:
    """Sum of the tensors' bytes read as 32-bit words (trailing bytes one by one). It
    cannot be given without the bytes themselves: float bit patterns have no shortcut."""
    total = 0
    for t in tensors:
        b = as_bytes(t)
        whole = b.numel() // 4 * 4
        total += int(b[:whole].view(torch.int32).sum(dtype=torch.int64))
        total += int(b[whole:].sum(dtype=torch.int64))
    return total


class HostArena:
    """Shared host memory for one workload, owned by the trusted side."""

    def __init__(self, size: int):
        self.size = size
        self.fd = os.memfd_create("solexec-arena", os.MFD_CLOEXEC)
        os.ftruncate(self.fd, size)
        self.tensor = torch.frombuffer(mmap.mmap(self.fd, size), dtype=torch.uint8)

    def handle(self, ipc_dir: Path | None = None) -> tuple[dict, tuple[int, ...]]:
        """What the worker needs to attach: a message part and descriptors to send with it."""
        return {"kind": "host", "size": self.size}, (self.fd,)

    def close(self) -> None:
        """The mapping goes with the last view of it; the descriptor goes now."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class DeviceArena:
    """Device memory for one workload, exported by CUDA IPC, owned by the trusted side."""

    def __init__(self, size: int, device: str):
        self.size = size
        self.tensor = torch.empty(size, dtype=torch.uint8, device=device)
        self.counters: list[tuple[bytes, int]] = []  # real counts the worker does not hold

    def handle(self, ipc_dir: Path | None = None) -> tuple[dict, tuple[int, ...]]:
        from torch.multiprocessing.reductions import reduce_tensor

        _rebuild, args = reduce_tensor(self.tensor)
        if ipc_dir is not None:
            args, real = private_counter(args, ipc_dir)
            self.counters.append(real)
        return {"kind": "cuda", "args": args}, ()

    def close(self) -> None:
        pass  # the allocation lives as long as the tensor, kept until the worker is gone


REF_COUNTER_ARG = 11  # reduce_tensor's args for a CUDA tensor: the counter file's name,
REF_COUNTER_OFFSET_ARG = 12  # ... and the slot in it
COUNTER_FILE_BYTES = 1 << 20  # more than torch maps of a counter file (10,000 slots + header)


def private_counter(args: tuple, ipc_dir: Path) -> tuple[tuple, tuple[bytes, int]]:
    """CUDA IPC arguments whose reference counter is a new, zeroed file of the worker's own
    (in ipc_dir, its /dev/shm), and the real counter's (name, slot) that the worker will
    not touch: the trusted side releases it (release_counters) once the worker is gone."""
    real = (args[REF_COUNTER_ARG], int(args[REF_COUNTER_OFFSET_ARG]))
    name = f"autolab_rc_{secrets.token_hex(8)}"
    os.chmod(ipc_dir, 0o700)  # the folder is the trusted side's; a step may have changed it
    with open(Path(ipc_dir) / name, "xb") as f:
        f.truncate(COUNTER_FILE_BYTES)
    out = list(args)
    out[REF_COUNTER_ARG] = f"/{name}".encode() if isinstance(real[0], bytes) else f"/{name}"
    out[REF_COUNTER_OFFSET_ARG] = 0
    return tuple(out), real


def release_counters(counters: Sequence[tuple[bytes, int]]) -> None:
    """Give back the counts that private_counter kept from the worker: what the worker's
    storages would have released when it ended. Call only once it is gone (the
    allocation may be freed and reused right after)."""
    for name, offset in counters:
        torch.UntypedStorage._release_ipc_counter_cuda(name, offset)


def new_arena(size: int, device: str) -> HostArena | DeviceArena:
    return HostArena(size) if torch.device(device).type == "cpu" else DeviceArena(size, device)


def attach(handle: dict, fds: Sequence[int]) -> torch.Tensor:
    """The worker's side: the arena as a flat uint8 tensor over the shared memory."""
    if handle["kind"] == "host":
        if len(fds) != 1:
            raise ValueError(f"a host arena comes with one descriptor, not {len(fds)}")
        try:
            mapping = mmap.mmap(fds[0], handle["size"])
        finally:
            os.close(fds[0])
        return torch.frombuffer(mapping, dtype=torch.uint8)
    if handle["kind"] == "cuda":
        from torch.multiprocessing.reductions import rebuild_cuda_tensor

        return rebuild_cuda_tensor(*handle["args"])
    raise ValueError(f"unknown arena kind {handle['kind']!r}")
