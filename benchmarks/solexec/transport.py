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
  allocation alive until the worker is gone. torch keeps the IPC reference count in a
  shared-memory file that the worker opens by name in /dev/shm: that one file is
  hard-linked into the worker's private /dev/shm (`ipc_dir`), never the host's whole one.

`digest` is computed on both sides over the output slots: the worker puts it in its
answer, the trusted side recomputes it from what it reads (see evaluate.py for why).

Imported by the worker inside the sandbox: stdlib and torch only.
"""

from __future__ import annotations

import math
import mmap
import os
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

    def handle(self, ipc_dir: Path | None = None) -> tuple[dict, tuple[int, ...]]:
        from torch.multiprocessing.reductions import reduce_tensor

        _rebuild, args = reduce_tensor(self.tensor)
        if ipc_dir is not None:
            share_ref_counter(args[REF_COUNTER_ARG], ipc_dir)
        return {"kind": "cuda", "args": args}, ()

    def close(self) -> None:
        pass  # the allocation lives as long as the tensor, kept until the worker is gone


REF_COUNTER_ARG = 11  # reduce_tensor's args for a CUDA tensor: the ref counter's shm name
SHM = Path("/dev/shm")


def share_ref_counter(name: bytes | str, ipc_dir: Path) -> Path:
    """Hard-link the shared-memory file `name` (as shm_open names it: '/torch_...') from this
    process's /dev/shm into ipc_dir, where a worker whose /dev/shm is ipc_dir opens it by
    the same name. The same inode: counts written on either side are seen on the other."""
    name = name.decode() if isinstance(name, bytes) else name
    base = name.lstrip("/")
    if not base or "/" in base:
        raise ValueError(f"not a shared-memory name: {name!r}")
    src, dst = SHM / base, Path(ipc_dir) / base
    if not dst.exists():
        os.link(src, dst)
    return dst


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
