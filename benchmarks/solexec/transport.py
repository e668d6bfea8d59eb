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
- CUDA (`DeviceArena`): one allocation made through the driver's virtual memory API
  (cuMemCreate) with a POSIX file descriptor as its shareable handle; the descriptor
  travels with the open message like a host arena's, and the worker imports it and maps
  the same physical memory into its own address space (cuMemImportFromShareableHandle,
  cuMemMap; `Mapped`). Not CUDA IPC (cudaIpcGetMemHandle, torch's reduce_tensor): that
  path opens files of the exporting process in /dev/shm, which a step with a /dev/shm of
  its own does not see (the worker then fails with "mapping of buffer object failed"), and keeps
  reference counts in a file the trusted process shares between trials. A descriptor
  needs neither, and the allocation lives as long as one side still maps it.

`digest` is computed on both sides over the output slots: the worker puts it in its
answer, the trusted side recomputes it from what it reads (see evaluate.py for why).

Imported by the worker inside the sandbox: stdlib and torch only.
"""

from __future__ import annotations

import ctypes
import math
import mmap
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

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


class _Arena:
    """Memory for one workload, owned by the trusted side, shared by one descriptor."""

    fd: int = -1

    def close(self) -> None:
        """The mapping goes with the last view of it; the descriptor goes now."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class HostArena(_Arena):
    """Shared host memory for one workload."""

    def __init__(self, size: int):
        self.size = size
        self.fd = os.memfd_create("solexec-arena", os.MFD_CLOEXEC)
        os.ftruncate(self.fd, size)
        self.tensor = torch.frombuffer(mmap.mmap(self.fd, size), dtype=torch.uint8)

    def handle(self) -> tuple[dict, tuple[int, ...]]:
        """What the worker needs to attach: a message part and descriptors to send with it."""
        return {"kind": "host", "size": self.size}, (self.fd,)


class ArenaError(RuntimeError):
    """The trusted side could not make a workload's shared memory: the evaluator's fault
    (or the machine's), never the reference's or the candidate's."""


class DeviceArena(_Arena):
    """Device memory for one workload (a CUDA virtual memory allocation). Zeroed when
    made: freshly mapped pages may hold what an earlier trial left on the GPU, and the
    worker sees the whole allocation, padding and rounding included."""

    def __init__(self, size: int, device: str):
        try:
            self.index = _device_index(device)
            self.uuid = _device_uuid(self.index)
            self.size = _vmm_size(size, self.index)
            handle = _vmm_create(self.size, self.index)
            try:
                self.fd = _vmm_export(handle)
                self.tensor = _vmm_tensor(handle, self.size, self.index)
            finally:
                _drv().cuMemRelease(handle)  # the mapping and the descriptor hold it now
            self.tensor.zero_()
            torch.cuda.synchronize(self.index)
        except Exception as e:
            self.close()
            raise ArenaError(f"no device arena of {size} bytes on {device}: {e}") from e

    def handle(self) -> tuple[dict, tuple[int, ...]]:
        return {"kind": "cuda", "size": self.size, "uuid": self.uuid}, (self.fd,)


# -- the CUDA driver's virtual memory API, through ctypes (no extra package in the sandbox)

_POSIX_FD = 1  # CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR
_PINNED = 1  # CU_MEM_ALLOCATION_TYPE_PINNED
_ON_DEVICE = 1  # CU_MEM_LOCATION_TYPE_DEVICE
_READ_WRITE = 3  # CU_MEM_ACCESS_FLAGS_PROT_READWRITE
_u64, _size = ctypes.c_ulonglong, ctypes.c_size_t


class _Location(ctypes.Structure):  # CUmemLocation
    _fields_ = [("type", ctypes.c_int), ("id", ctypes.c_int)]


class _AllocFlags(ctypes.Structure):
    _fields_ = [("compressionType", ctypes.c_ubyte), ("gpuDirectRDMACapable", ctypes.c_ubyte),
                ("usage", ctypes.c_ushort), ("reserved", ctypes.c_ubyte * 4)]


class _AllocationProp(ctypes.Structure):  # CUmemAllocationProp
    _fields_ = [("type", ctypes.c_int), ("requestedHandleTypes", ctypes.c_int),
                ("location", _Location), ("win32HandleMetaData", ctypes.c_void_p),
                ("allocFlags", _AllocFlags)]


class _AccessDesc(ctypes.Structure):  # CUmemAccessDesc
    _fields_ = [("location", _Location), ("flags", ctypes.c_int)]


_DRIVER: list = []


def _drv() -> ctypes.CDLL:
    """libcuda, every function used here with its C signature (64-bit handles and
    addresses must not pass as C ints)."""
    if not _DRIVER:
        lib, ptr = ctypes.CDLL("libcuda.so.1"), ctypes.POINTER
        for name, args in {
            "cuGetErrorName": (ctypes.c_int, ptr(ctypes.c_char_p)),
            "cuMemGetAllocationGranularity": (ptr(_size), ptr(_AllocationProp), ctypes.c_int),
            "cuMemCreate": (ptr(_u64), _size, ptr(_AllocationProp), _u64),
            "cuMemExportToShareableHandle": (ptr(ctypes.c_int), _u64, ctypes.c_int, _u64),
            "cuMemImportFromShareableHandle": (ptr(_u64), ctypes.c_void_p, ctypes.c_int),
            "cuMemAddressReserve": (ptr(_u64), _size, _size, _u64, _u64),
            "cuMemMap": (_u64, _size, _size, _u64, _u64),
            "cuMemSetAccess": (_u64, _size, ptr(_AccessDesc), _size),
            "cuMemUnmap": (_u64, _size),
            "cuMemAddressFree": (_u64, _size),
            "cuMemRelease": (_u64,),
        }.items():
            fn = getattr(lib, name)
            fn.argtypes, fn.restype = args, ctypes.c_int
        _DRIVER.append(lib)
    return _DRIVER[0]


def _check(result: int, what: str) -> None:
    if result != 0:
        name = ctypes.c_char_p()
        _drv().cuGetErrorName(result, ctypes.byref(name))
        raise RuntimeError(f"{what} failed: CUDA driver error {result} "
                           f"({(name.value or b'?').decode()})")


def _device_index(device: str) -> int:
    """The device's ordinal, with CUDA initialised for it (the driver calls below need the
    driver initialised, not a current context)."""
    d = torch.device(device)
    index = d.index if d.index is not None else torch.cuda.current_device()
    torch.cuda.synchronize(index)
    return index


def _device_uuid(index: int) -> str:
    """The GPU's identity, the same in every process whatever its CUDA_VISIBLE_DEVICES."""
    return str(torch.cuda.get_device_properties(index).uuid)


def _visible_index(uuid: str) -> int:
    """This process's ordinal of the GPU with that identity."""
    for index in range(torch.cuda.device_count()):
        if _device_uuid(index) == uuid:
            return _device_index(f"cuda:{index}")
    raise ValueError(f"the arena's GPU {uuid} is not among the {torch.cuda.device_count()} "
                     "this process sees")


def _prop(index: int) -> _AllocationProp:
    prop = _AllocationProp()
    prop.type, prop.requestedHandleTypes = _PINNED, _POSIX_FD
    prop.location = _Location(_ON_DEVICE, index)
    return prop


def _vmm_size(size: int, index: int) -> int:
    """size rounded up to the allocation granularity (2 MiB on current GPUs)."""
    granularity = _size()
    _check(_drv().cuMemGetAllocationGranularity(ctypes.byref(granularity),
                                                ctypes.byref(_prop(index)), 0),
           "cuMemGetAllocationGranularity")
    return -(-max(size, 1) // granularity.value) * granularity.value


def _vmm_create(size: int, index: int) -> int:
    handle = _u64()
    _check(_drv().cuMemCreate(ctypes.byref(handle), size, ctypes.byref(_prop(index)), 0),
           "cuMemCreate")
    return handle.value


def _vmm_export(handle: int) -> int:
    fd = ctypes.c_int(-1)
    _check(_drv().cuMemExportToShareableHandle(ctypes.byref(fd), handle, _POSIX_FD, 0),
           "cuMemExportToShareableHandle")
    os.set_inheritable(fd.value, False)
    return fd.value


def _vmm_import(fd: int) -> int:
    handle = _u64()
    _check(_drv().cuMemImportFromShareableHandle(ctypes.byref(handle), ctypes.c_void_p(fd),
                                                 _POSIX_FD), "cuMemImportFromShareableHandle")
    return handle.value


class _Mapping:
    """An allocation mapped read-write for one device at an address of this process's own
    (`at`: that address exactly, or ArenaError), offered to torch as a CUDA array. torch
    keeps this object alive as long as a tensor over it lives; the address is unmapped and
    given back when the last one goes, or at `unmap()` whatever still holds views."""

    def __init__(self, handle: int, size: int, index: int, window: _Window | None = None):
        drv, ptr = _drv(), _u64()
        self.window = window
        if window is None:
            _check(drv.cuMemAddressReserve(ctypes.byref(ptr), size, 0, 0, 0),
                   "cuMemAddressReserve")
        else:
            ptr.value = window.place(size)
        self.ptr, self.size, self.index, self.mapped = ptr.value, size, index, False
        try:
            _check(drv.cuMemMap(self.ptr, size, 0, handle, 0), "cuMemMap")
            self.mapped = True
            access = _AccessDesc(_Location(_ON_DEVICE, index), _READ_WRITE)
            _check(drv.cuMemSetAccess(self.ptr, size, ctypes.byref(access), 1), "cuMemSetAccess")
        except BaseException:
            self._release(in_use=False)  # nothing has run on it yet
            raise
        self.__cuda_array_interface__ = {"shape": (size,), "typestr": "|u1", "strides": None,
                                         "data": (self.ptr, False), "version": 3}

    def __del__(self) -> None:
        self._release(in_use=True)

    def unmap(self) -> None:
        """Unmapped now, whatever views of it are still held: reading one faults."""
        self._release(in_use=True)

    def _release(self, in_use: bool) -> None:
        if not getattr(self, "ptr", 0):
            return
        if in_use:
            try:
                torch.cuda.synchronize(self.index)  # no kernel still reading or writing it
            except Exception:  # noqa: BLE001 - a broken context or interpreter exit: leave
                return  # it mapped (the process's end unmaps it), not pulled from work
        drv, ptr, self.ptr = _drv(), self.ptr, 0
        if self.mapped:
            drv.cuMemUnmap(ptr, self.size)
        if self.window is None:
            drv.cuMemAddressFree(ptr, self.size)
        else:
            self.window.free(ptr)


def _vmm_tensor(handle: int, size: int, index: int) -> torch.Tensor:
    """A flat uint8 tensor over the allocation, mapped here."""
    return torch.as_tensor(_Mapping(handle, size, index), device=f"cuda:{index}")


# -- the worker's mappings, remapped at an address nobody can predict ---------------------

ADDRESS_ALIGN = 2 << 20  # the device granule (and a multiple of any host page size)
ADDRESS_LOW, ADDRESS_HIGH = 1 << 44, 1 << 46  # where drawn host addresses fall: 16-64 TiB
ADDRESS_TRIES = 16
# device addresses are drawn inside one range reserved per process (the driver does not
# take an address it is asked for outside its own window): the first of these it grants
WINDOW_SIZES = (1 << 40, 1 << 38, 1 << 36)


class _Window:
    """A large range of device addresses reserved once, where mappings are placed at
    offsets drawn at random (never overlapping a live one)."""

    def __init__(self) -> None:
        drv = _drv()
        for size in WINDOW_SIZES:
            ptr = _u64()
            if drv.cuMemAddressReserve(ctypes.byref(ptr), size, ADDRESS_ALIGN, 0, 0) == 0:
                self.base, self.size, self.used = ptr.value, size, {}
                return
        raise ArenaError("the driver reserved no range of device addresses to draw from")

    def place(self, size: int) -> int:
        slots = (self.size - size) // ADDRESS_ALIGN + 1
        for _ in range(ADDRESS_TRIES):
            start = self.base + secrets.randbelow(max(1, slots)) * ADDRESS_ALIGN
            if all(start + size <= s or s + n <= start for s, n in self.used.items()):
                self.used[start] = size
                return start
        raise ArenaError(f"no free device address drawn for {size} bytes")

    def free(self, start: int) -> None:
        self.used.pop(start, None)


_WINDOW: list[_Window] = []


def _window() -> _Window:
    if not _WINDOW:
        _WINDOW.append(_Window())
    return _WINDOW[0]


_PROT_RW, _MAP_SHARED = mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_SHARED
_LIBC: list = []


def _libc() -> ctypes.CDLL:
    if not _LIBC:
        lib = ctypes.CDLL(None, use_errno=True)
        lib.mmap.restype = ctypes.c_void_p
        lib.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                             ctypes.c_int, ctypes.c_long)
        lib.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
        _LIBC.append(lib)
    return _LIBC[0]


def random_address(size: int) -> int:
    """An address drawn from a secret source, aligned, with room for size bytes."""
    span = (ADDRESS_HIGH - ADDRESS_LOW - size) // ADDRESS_ALIGN
    return ADDRESS_LOW + secrets.randbelow(max(1, span)) * ADDRESS_ALIGN


def _host_map(fd: int, size: int) -> int:
    """The memfd mapped shared at a drawn address (mmap's hint, kept only where taken)."""
    libc = _libc()
    for _ in range(ADDRESS_TRIES):
        want = random_address(size)
        got = libc.mmap(want, size, _PROT_RW, _MAP_SHARED, fd, 0)
        if got in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), "mmap failed")
        if got == want:
            return got
        libc.munmap(got, size)  # placed elsewhere (the range was taken): draw again
    raise OSError(f"no free address drawn for {size} bytes in {ADDRESS_TRIES} tries")


class Mapped:
    """The worker's mapping of one arena, from the handle and descriptor it was sent (all
    descriptors received are closed whatever happens). `remap()` maps the same memory
    afresh at an address drawn at random and unmaps the previous mapping whatever still
    holds views of it: a view kept from an earlier call then points at nothing (reading it
    faults), and where the new one lies cannot be told from an old one (though not hidden
    from code in this process: evaluate.py, "Round trips"). The descriptor
    (host) or imported handle (device) is kept for that, and given up at `close()`."""

    def __init__(self, handle: dict, fds: Sequence[int]):
        self.kind, self.size, self._keep, self._old = handle.get("kind"), 0, -1, None
        try:
            if self.kind not in ("host", "cuda"):
                raise ValueError(f"unknown arena kind {self.kind!r}")
            if len(fds) != 1:
                raise ValueError(f"a {self.kind} arena comes with one descriptor, not {len(fds)}")
            self.size = int(handle["size"])
            if self.kind == "host":
                self._keep = os.dup(fds[0])
            else:
                self.index = _visible_index(handle["uuid"])
                self._keep = _vmm_import(fds[0])
        finally:
            for fd in fds:
                os.close(fd)
        try:
            self.tensor = self.remap()
        except BaseException:
            self.close()
            raise

    def remap(self) -> torch.Tensor:
        old = self._old
        if self.kind == "host":
            address = _host_map(self._keep, self.size)
            array = (ctypes.c_ubyte * self.size).from_address(address)
            self.tensor, self._old = torch.frombuffer(array, dtype=torch.uint8), address
        else:
            mapping = _Mapping(self._keep, self.size, self.index, window=_window())
            self.tensor = torch.as_tensor(mapping, device=f"cuda:{self.index}")
            self._old = mapping
        self._unmap(old)
        return self.tensor

    def _unmap(self, old) -> None:
        if old is None:
            return
        if self.kind == "host":
            _libc().munmap(old, self.size)
        else:
            old.unmap()

    def close(self) -> None:
        self._unmap(self._old)
        self._old = None
        if self._keep is not None and self._keep >= 0:
            if self.kind == "host":
                os.close(self._keep)
            else:
                _drv().cuMemRelease(self._keep)
        self._keep = -1


def new_arena(size: int, device: str) -> HostArena | DeviceArena:
    return HostArena(size) if torch.device(device).type == "cpu" else DeviceArena(size, device)
