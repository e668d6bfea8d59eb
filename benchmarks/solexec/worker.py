"""The worker: the one process that runs a candidate's code. It answers calls; it judges nothing.

The trusted evaluator (evaluate.py) keeps the clock, the inputs, the reference outputs and
every check in its own process. This process imports the candidate's solution.py, maps each
workload's arena (transport.py), and for each `call` runs `run(*inputs)` on views of the
input slots, synchronises its device (every stream: a device-wide synchronize, through the
binding it took before the candidate was imported), copies each output byte for byte into
its slot, synchronises again and answers with a digest of the output slots. An `empty`
call does everything but `run` and the copy: its round trip is the evaluator's overhead.

The checks made here (an output is a plain dense torch.Tensor of the slot's dtype, shape
and device; a Python number for a 0-d output) only give an early, clear reason: candidate
code shares this process and can rewrite anything in it, so nothing the verdict depends
on is decided here. All it can change is when the answer comes and what it says; the
evaluator times the answer itself and reads the outputs from its own memory.

Run as: python -m benchmarks.solexec.worker --fd N            (one worker on socket fd N)
        python -m benchmarks.solexec.worker --forkserver --fd N  (forks workers on request)
        ... --forkserver --preload-compiler  (each worker imports torch.compile's modules
                                              before its guard: see PRELOADS)
Without --fd the socket is the one named by AUTOLAB_CHANNEL_FD (a sandboxed step's channel).
Imports the standard library, torch, and the modules beside it (wire, transport, guard).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pickle
import select
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from benchmarks import guard
from benchmarks.solexec import transport, wire

CHANNEL_ENV = "AUTOLAB_CHANNEL_FD"  # a sandboxed step's socket to its trusted companion
MAX_MESSAGE = 1 << 24  # from the trusted side: layouts and handles, never tensor data
ERROR_CHARS = 2000
# bound before any candidate code: replacing json.dumps or pickle.loads later (a module
# reached through another's namespace) does not reach the worker's own messages
_dumps, _loads = json.dumps, pickle.loads


class OutputError(Exception):
    """What `run` returned is not a plain output of the declared kind."""


class _Work:
    """One workload's views: the inputs `run` gets, the slots its outputs go to, and the
    worker's own buffers an empty call copies the slots into (the copy a call makes,
    without a candidate's output to copy)."""

    __slots__ = ("args", "outs", "names", "scratch")

    def __init__(self, args: list, outs: list[torch.Tensor], names: list[str],
                 scratch: list[torch.Tensor]):
        self.args, self.outs, self.names, self.scratch = args, outs, names, scratch


class _State:
    def __init__(self) -> None:
        self.run: Callable | None = None
        self.sync: Callable[[], None] = _no_sync
        self.work: dict[str, _Work] = {}
        self.maps: dict[str, tuple[transport.Mapped, dict]] = {}  # key -> mapping, layout


def _no_sync() -> None:
    pass


def worker_main(sock: socket.socket) -> None:
    """Answer the trusted side's messages on `sock` until it says exit or goes away."""
    state = _State()
    while True:
        try:
            frame = wire.recv_frame(sock, MAX_MESSAGE, accept_fds=True)
        except wire.PeerClosed:
            return
        msg = _loads(frame.payload)
        if msg["op"] == "exit":
            return
        reply = _handle(state, msg, frame.fds)
        wire.send_frame(sock, _dumps(reply).encode())


def _handle(state: _State, msg: dict, fds: tuple[int, ...]) -> dict:
    op, call_id = msg["op"], msg.get("id")
    if op != "open":  # only an arena comes with descriptors; stray ones are not kept
        for fd in fds:
            os.close(fd)
    try:
        if op == "call":
            return _call(state, [state.work[k] for k in msg["keys"]], call_id)
        if op == "empty":
            return _empty(state, [state.work[k] for k in msg["keys"]], call_id)
        if op == "open":
            mapped = transport.Mapped(msg["arena"], fds)
            state.maps[msg["key"]] = (mapped, msg)
            state.work[msg["key"]] = _views(mapped.tensor, msg, None)
        elif op == "remap":  # each arena afresh, where no view kept from before reaches it
            for key in msg["keys"]:
                mapped, layout = state.maps[key]
                state.work[key] = _views(mapped.remap(), layout, state.work[key].scratch)
        elif op == "close":
            state.work.pop(msg["key"], None)
            if (found := state.maps.pop(msg["key"], None)) is not None:
                found[0].close()
        elif op == "init":
            state.sync = _prepare(msg["device"], msg["threads"], msg.get("cpu"))
        elif op == "load":
            if _preload:
                preload_compiler()
            guard.install()
            state.run = _load(Path(msg["path"]))
        else:
            return {"ok": False, "id": call_id, "error": f"unknown message {op!r}"}
    except Exception as e:
        return {"ok": False, "id": call_id, "error": _describe(e),
                "trace": traceback.format_exc()[-ERROR_CHARS:]}
    return {"ok": True, "id": call_id}


def _views(arena: torch.Tensor, layout: dict, scratch: list[torch.Tensor] | None) -> _Work:
    args = [transport.view(arena, value) if kind == "tensor" else value
            for kind, value in layout["inputs"]]
    outs = [transport.view(arena, slot) for slot in layout["outputs"]]
    if scratch is None:
        scratch = [torch.empty_like(o) for o in outs]
    return _Work(args, outs, list(layout["names"]), scratch)


def _prepare(device: str, threads: int, cpu: int | None = None) -> Callable[[], None]:
    """Threads and device set up, and their lazy pools started, before any candidate code;
    returns the synchronize this worker uses, taken before the candidate can replace it.
    With `cpu`, this thread runs on that CPU alone (the evaluator's choice: pin_cpus)."""
    if cpu is not None:
        os.sched_setaffinity(0, {int(cpu)})
    torch.set_num_threads(max(1, int(threads)))
    torch.ones(1 << 14).sum()  # the intra-op pool starts here, not inside a call
    if torch.device(device).type != "cuda":
        return _no_sync
    torch.cuda.init()
    if torch.device(device).index is not None:
        torch.cuda.set_device(torch.device(device))
    torch.ones(1, device=device).sum().item()
    return torch._C._cuda_synchronize


def _load(folder: Path) -> Callable:
    """solution.py imported by path as module `solution`; its folder goes on sys.path so it
    can import its own helpers. Compiling (Triton, torch.utils.cpp_extension) happens here
    or at the first call, into the build folder the environment names."""
    sys.path.insert(0, str(folder))
    spec = importlib.util.spec_from_file_location("solution", folder / "solution.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {folder / 'solution.py'}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["solution"] = module
    spec.loader.exec_module(module)
    run = getattr(module, "run", None)
    if not callable(run):
        raise TypeError("solution.py defines no callable `run`")
    return run


def _call(state: _State, works: list[_Work], call_id: int) -> dict:
    """One round trip's calls, one after the other, each synchronised before its outputs
    are copied into its slots."""
    with torch.no_grad():
        for work in works:
            result = state.run(*work.args)
            state.sync()
            for name, value, out in zip(work.names, _unpack(result, work.names), work.outs,
                                        strict=True):
                _publish(name, value, out)
        return _answer(state, works, call_id)


def _empty(state: _State, works: list[_Work], call_id: int) -> dict:
    """A call's path without the call: the same synchronises, each output slot's bytes
    copied (into the worker's scratch, so the slots stay as they are) and the digests.
    What it takes is the overhead subtracted from every call, so it leaves out only the
    candidate's own work."""
    with torch.no_grad():
        for work in works:
            state.sync()
            for out, scratch in zip(work.outs, work.scratch, strict=True):
                transport.as_bytes(scratch).copy_(transport.as_bytes(out))
        return _answer(state, works, call_id)


def _answer(state: _State, works: list[_Work], call_id: int) -> dict:
    """The last synchronise of a round trip, then its answer: a digest of each call's
    output slots."""
    state.sync()
    return {"ok": True, "id": call_id,
            "digests": [transport.digest(work.outs) for work in works]}


def _unpack(result: object, names: list[str]) -> list:
    """Outputs in the definition's order, from the forms the references use: one tensor,
    a tuple or list, or a dict keyed by output name."""
    if isinstance(result, Mapping):
        missing = [n for n in names if n not in result]
        if missing:
            raise OutputError(f"run returned no {missing}")
        return [result[n] for n in names]
    values = list(result) if isinstance(result, tuple | list) else [result]
    if len(values) != len(names):
        raise OutputError(f"run returned {len(values)} outputs, expected {len(names)}")
    return values


def _publish(name: str, value: object, out: torch.Tensor) -> None:
    """Copy one output's bytes into its slot, refusing anything but a plain dense tensor
    of the slot's kind (or a Python number for a 0-d output)."""
    if out.dim() == 0 and type(value) in (bool, int, float):
        out.fill_(value)
        return
    if type(value) is not torch.Tensor:
        raise OutputError(f"output {name!r} is a {type(value).__name__}, "
                          "not a plain torch.Tensor")
    if value.layout is not torch.strided:
        raise OutputError(f"output {name!r} is a {value.layout} tensor, not a dense one")
    if value.dtype != out.dtype or tuple(value.shape) != tuple(out.shape):
        raise OutputError(f"output {name!r} is {value.dtype} {tuple(value.shape)}, "
                          f"expected {out.dtype} {tuple(out.shape)}")
    if value.device.type != out.device.type:
        raise OutputError(f"output {name!r} is on {value.device}, expected {out.device.type}")
    transport.as_bytes(out).copy_(transport.as_bytes(value))


def _describe(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"[:ERROR_CHARS]


# ---------------------------------------------------------------------------- forkserver


def forkserver_main(ctrl: socket.socket) -> None:
    """Fork a worker for each spawn request, from this process that has imported torch and
    nothing else (no CUDA context: each worker makes its own). A request carries the
    worker's channel and log descriptors; the answer is its pid, and when a worker ends
    its exit status follows, for the trusted side cannot wait for a process it did not
    start itself. It adopts every orphan of its workers (a child subreaper), and before
    each new worker it kills whatever is left under it: a process a candidate left behind,
    double-forked or not, does not live on beside the next worker."""
    _become_subreaper()
    while True:
        _report_exits(ctrl)
        ready, _, _ = select.select([ctrl], [], [], 0.02)
        if not ready:
            continue
        try:
            frame = wire.recv_frame(ctrl, MAX_MESSAGE, accept_fds=True)
        except wire.PeerClosed:
            return
        msg = pickle.loads(frame.payload)
        if msg["op"] == "exit":
            return
        channel, log = frame.fds
        _kill_children(ctrl)
        pid = os.fork()
        if pid == 0:
            _become_worker(ctrl, channel, log, msg)
        os.close(channel)
        os.close(log)
        wire.send_frame(ctrl, json.dumps({"op": "spawned", "pid": pid}).encode())


def _become_subreaper() -> None:
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        pass  # not Linux: orphans go to init, as without a forkserver


def _children() -> list[int]:
    pids: list[int] = []
    try:
        for task in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{task}/children") as f:
                pids += [int(p) for p in f.read().split()]
    except OSError:
        pass
    return pids


def _kill_children(ctrl: socket.socket) -> None:
    """Kill and reap every process under this one (their exits are reported as usual)."""
    for _ in range(50):
        pids = _children()
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.01)
        _report_exits(ctrl)


def _report_exits(ctrl: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        code = os.waitstatus_to_exitcode(status)
        wire.send_frame(ctrl, json.dumps({"op": "exited", "pid": pid, "code": code}).encode())


def _become_worker(ctrl: socket.socket, channel: int, log: int, msg: dict) -> None:
    code = 1
    try:
        ctrl.close()
        os.setsid()
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        os.environ.update(msg["env"])
        os.chdir(msg["cwd"])
        sock = socket.socket(fileno=channel)
        # a first frame, so the trusted side learns this process's pid in its own namespace
        # from the kernel's credentials (the forkserver's answer gives it in the sandbox's)
        wire.send_frame(sock, json.dumps({"op": "hello"}).encode())
        worker_main(sock)
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


# What torch.compile imports at its first use: about 11 s on an H100 host (torch._dynamo
# and torch._inductor), twice as long under the guard, whose hook sees every file the
# imports open. A worker of a solution that compiles imports them before its guard, as the
# trusted code it is. Not in the forkserver, before forking: its workers then could not
# start CUDA on a GPU host ("Cannot re-initialize CUDA in forked subprocess").
PRELOADS = ("torch._dynamo", "torch._inductor.compile_fx")
_preload = False  # set in the forkserver from its arguments; its workers inherit it


def preload_compiler() -> None:
    """Import PRELOADS, in a worker, before its guard and the candidate's code."""
    import importlib

    for name in PRELOADS:
        importlib.import_module(name)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="benchmarks.solexec.worker")
    parser.add_argument("--fd", type=int, default=None)
    parser.add_argument("--forkserver", action="store_true")
    parser.add_argument("--preload-compiler", action="store_true")
    a = parser.parse_args(argv)
    if a.fd is None:
        if CHANNEL_ENV not in os.environ:
            parser.error(f"--fd or {CHANNEL_ENV} names the socket")
        a.fd = int(os.environ[CHANNEL_ENV])
    sock = socket.socket(fileno=a.fd)
    if a.forkserver:
        global _preload
        _preload = a.preload_compiler
        forkserver_main(sock)
    else:
        worker_main(sock)


if __name__ == "__main__":
    main()
