"""Starting the worker that runs a candidate, and the trusted side's handle on it.

Two ways to start one, one handle (`Worker`):

- `launch_subprocess`: a fresh interpreter for each worker. The default: nothing of any
  other candidate can be left in it.
- `Forkserver`: forks workers from a clean process that has imported torch and nothing else,
  so a worker starts in milliseconds rather than seconds. Its workers share its copy of
  the harness and start from its memory, so it suits evaluations whose candidates are not
  one another's adversaries (tests, smoke builds); on a GPU each forked worker still makes
  its own CUDA context.

Under the runner the forkserver is a sandboxed step (SandboxStep with channel=True, argv
`python -m benchmarks.solexec.worker --forkserver`, which finds its control socket in
AUTOLAB_CHANNEL_FD), and the trusted companion drives it with `Forkserver(ctrl=link.conn)`:
its workers are forked inside the sandbox, with the step's view, limits and harness.

Either way the worker runs from a copy of its harness files in a folder of its own, copied
afresh at each start (a worker that rewrites its copy changes only itself), in an
environment built from an allowlist, with its build folder as working directory and home:
compiled kernels (torch.utils.cpp_extension, Triton) go there and nowhere shared.
"""

from __future__ import annotations

import json
import os
import pickle
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import psutil

from benchmarks.solexec import wire

PROJECT = Path(__file__).resolve().parents[2]
HARNESS = ("benchmarks/__init__.py", "benchmarks/guard.py", "benchmarks/solexec/__init__.py",
           "benchmarks/solexec/worker.py", "benchmarks/solexec/wire.py",
           "benchmarks/solexec/transport.py", "benchmarks/solexec/profile.py")
# Not CC or CXX: a host's may name a compiler outside what the sandbox shows (e.g.
# /opt/gcc/bin/gcc); Triton and Inductor then take the system's from PATH.
PASSED_ENV = ("CUDA_HOME", "CUDA_PATH", "CUDA_VISIBLE_DEVICES", "LD_LIBRARY_PATH",
              "TORCH_CUDA_ARCH_LIST", "TRITON_INTERPRET", "TRITON_PTXAS_PATH",
              "TRITON_LIBCUDA_PATH")
LOG_TAIL_BYTES = 4000
SPAWN_TIMEOUT_S = 60.0


def harness_files() -> list[Path]:
    """The project files a worker imports: all it sees of the project."""
    return [PROJECT / p for p in HARNESS]


def copy_harness(dest: Path) -> Path:
    for rel in HARNESS:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(PROJECT / rel, target)
    return dest


# where a worker's compilers keep what they build, in its build folder: torch.utils.
# cpp_extension's modules, Triton's kernels and launchers, inductor's graphs
BUILD_CACHES = {"TORCH_EXTENSIONS_DIR": "torch_extensions", "TRITON_CACHE_DIR": "triton",
                "TORCHINDUCTOR_CACHE_DIR": "compile-cache/inductor"}


def worker_env(build_dir: Path, harness: Path, extra: Mapping[str, str] | None = None
               ) -> dict[str, str]:
    """A worker's whole environment: an allowlist, the build folder for every compiler
    cache, and the toolchain variables a GPU build needs, passed through where set."""
    build_dir = Path(build_dir).absolute()
    env = {
        "PATH": os.pathsep.join([os.path.dirname(sys.executable), "/usr/local/cuda/bin",
                                 "/usr/local/bin", "/usr/bin", "/bin"]),
        "HOME": str(build_dir), "TMPDIR": str(build_dir), "LANG": "C.UTF-8",
        "PYTHONPATH": str(harness), "PYTHONSAFEPATH": "1", "PYTHONNOUSERSITE": "1",
        "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0", "PYTHONUNBUFFERED": "1",
        "OMP_WAIT_POLICY": "PASSIVE",  # idle OpenMP threads sleep: idle CPU means work
        **{var: str(build_dir / part) for var, part in BUILD_CACHES.items()},
    }  # fmt: skip
    env |= {k: os.environ[k] for k in PASSED_ENV if os.environ.get(k)}
    return env | dict(extra or {})


def describe_exit(code: int | None) -> str:
    if code is None:
        return "the worker went away (exit status unknown)"
    if code < 0:
        try:
            return f"the worker was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"the worker was killed by signal {-code}"
    return f"the worker exited with status {code}"


class LogTail:
    """A worker's stdout and stderr: a pipe whose last LOG_TAIL_BYTES this process keeps,
    read by a thread, so a worker that prints without end fills no disk."""

    def __init__(self) -> None:
        self._r, self.fd = os.pipe()  # self.fd: the write end, handed to the worker
        self._buf = bytearray()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, name="worker-log", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            while chunk := os.read(self._r, 1 << 16):
                with self._lock:
                    self._buf += chunk
                    del self._buf[: max(0, len(self._buf) - LOG_TAIL_BYTES)]
        finally:
            os.close(self._r)

    def handed_over(self) -> None:
        """The worker has its copy of the write end: this one goes, so the pipe ends with
        the worker (and whatever it left holding it)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def tail(self, settle_s: float = 0.2) -> str:
        self._thread.join(settle_s)
        with self._lock:
            return bytes(self._buf).decode("utf-8", "replace")


class Worker:
    """The trusted side's handle on one worker process: its channel, its pid (as the
    launcher knows it, not as the worker says), a way to kill it and its log."""

    def __init__(self, sock, pid: int, exit_code: Callable[[float], int | None], folder: Path,
                 strays: Callable[[], int] | None = None, log: LogTail | None = None):
        self.sock = sock
        self.pid = pid
        self._log = log
        self.strays = strays or (lambda: 0)  # processes it left that are not its children
        self._exit_code = exit_code
        self._folder = folder
        try:
            self._process: psutil.Process | None = psutil.Process(pid)
        except psutil.Error:
            self._process = None

    def kill(self) -> None:
        """SIGKILL the worker's process group and every process it started."""
        p, family = self._process, []
        if p is not None and p.is_running():  # is_running also checks the pid was not reused
            try:
                family = [p, *p.children(recursive=True)]
            except psutil.Error:
                family = [p]
        try:  # the group outlives its leader while any member is left
            os.killpg(self.pid, signal.SIGKILL)
        except OSError:
            pass
        for q in family:
            try:
                q.kill()
            except psutil.Error:
                pass

    def exit_code(self, wait_s: float) -> int | None:
        """The exit status once the worker has ended (None if it has not within wait_s)."""
        return self._exit_code(wait_s)

    def log_tail(self) -> str:
        return self._log.tail() if self._log is not None else ""

    def close(self) -> str:
        """Kill whatever is left, close the channel; returns the log's tail."""
        self.kill()
        self.exit_code(5.0)
        self.sock.close()
        tail = self.log_tail()
        shutil.rmtree(self._folder, ignore_errors=True)
        return tail


def launch_subprocess(build_dir: Path, *, env: Mapping[str, str] | None = None,
                      python: str = sys.executable) -> Worker:
    """A worker in a fresh interpreter, leading its own process group, working in build_dir."""
    folder = Path(tempfile.mkdtemp(prefix="solexec-worker-"))
    harness = copy_harness(folder / "harness")
    Path(build_dir).mkdir(parents=True, exist_ok=True)
    ours, theirs = wire.socket_pair()
    log = LogTail()
    try:
        proc = subprocess.Popen(
            [python, "-m", "benchmarks.solexec.worker", "--fd", str(theirs.fileno())],
            cwd=build_dir, env=worker_env(build_dir, harness, env), stdin=subprocess.DEVNULL,
            stdout=log.fd, stderr=subprocess.STDOUT, pass_fds=(theirs.fileno(),),
            start_new_session=True,
        )  # fmt: skip
    finally:
        log.handed_over()
    theirs.close()

    def exit_code(wait_s: float) -> int | None:
        try:
            return proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            return None

    return Worker(ours, proc.pid, exit_code, folder, log=log)


class Forkserver:
    """A clean process with torch imported that forks a worker per `launch`.

    It reports each worker's exit status on its control channel, read here by a thread.
    Use as a context manager, or call close().
    """

    def __init__(self, *, env: Mapping[str, str] | None = None, python: str = sys.executable,
                 ctrl: socket.socket | None = None):
        """Starts the forkserver process, or, given `ctrl`, drives one that someone else
        started (a sandboxed step: the runner's channel is its control socket, and the
        step's own environment, harness path included, is what its workers keep)."""
        self._folder = Path(tempfile.mkdtemp(prefix="solexec-forkserver-"))
        self._env = dict(env or {})
        self._proc: subprocess.Popen[bytes] | None = None
        self._server_pid: int | None = None
        if ctrl is not None:
            self._harness: Path | None = None
            self._ctrl = ctrl
            # the kernel stamps the forkserver's frames with its pid: its other children
            # (processes a worker left behind, adopted by it) can then be seen from here
            ctrl.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        else:
            self._harness = copy_harness(self._folder / "harness")
            self._ctrl, theirs = wire.socket_pair()
            with open(self._folder / "forkserver.log", "wb") as log:
                self._proc = subprocess.Popen(
                    [python, "-m", "benchmarks.solexec.worker", "--forkserver", "--fd",
                     str(theirs.fileno())],
                    cwd=self._folder, env=worker_env(self._folder, self._harness, self._env),
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    pass_fds=(theirs.fileno(),), start_new_session=True,
                )  # fmt: skip
            theirs.close()
            self._server_pid = self._proc.pid
        self._lock = threading.Lock()
        self._spawned: queue.Queue[int] = queue.Queue()
        self._exits: dict[int, int] = {}
        self._ended = threading.Condition()
        self._closed = False
        threading.Thread(target=self._read, name="forkserver-reader", daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                frame = wire.recv_frame(self._ctrl, 1 << 16)
                msg = json.loads(frame.payload)
            except (wire.WireError, OSError, ValueError):
                break
            if self._server_pid is None and frame.pid:
                self._server_pid = frame.pid  # as the kernel says, in this pid namespace
            if not isinstance(msg, dict):
                break
            if msg.get("op") == "spawned":
                self._spawned.put(int(msg["pid"]))
            elif msg.get("op") == "exited":
                with self._ended:
                    self._exits[int(msg["pid"])] = int(msg["code"])
                    self._ended.notify_all()
        with self._ended:
            self._closed = True
            self._ended.notify_all()

    def launch(self, build_dir: Path, *, env: Mapping[str, str] | None = None) -> Worker:
        folder = Path(tempfile.mkdtemp(prefix="solexec-worker-"))
        Path(build_dir).mkdir(parents=True, exist_ok=True)
        ours, theirs = wire.socket_pair()
        log = LogTail()
        worker = worker_env(build_dir, self._harness or Path(), {**self._env, **(env or {})})
        if self._harness is None:  # the step's own harness path and devices stay
            worker.pop("PYTHONPATH")
            worker.pop("CUDA_VISIBLE_DEVICES", None)
        request = {"op": "spawn", "cwd": str(Path(build_dir).absolute()), "env": worker}
        with self._lock:  # one spawn at a time, so each answer is this request's
            try:
                wire.send_frame(self._ctrl, pickle.dumps(request), (theirs.fileno(), log.fd))
            finally:
                theirs.close()
                log.handed_over()
            try:
                pid = self._spawned.get(timeout=SPAWN_TIMEOUT_S)
            except queue.Empty:
                ours.close()
                raise RuntimeError("the forkserver did not start a worker") from None
        try:  # the worker's hello: its pid as this process sees it, vouched for by the kernel
            hello = wire.recv_frame(ours, 1 << 10, time.monotonic() + SPAWN_TIMEOUT_S)
        except (wire.WireError, OSError) as e:
            ours.close()
            raise RuntimeError(f"the forked worker did not start: {e}") from None
        here = hello.pid or pid
        return Worker(ours, here, lambda wait_s: self._exit_code(pid, wait_s), folder,
                      strays=lambda: self._strays(here), log=log)

    def _strays(self, worker: int) -> int:
        """The forkserver's children other than this worker: what earlier or current
        workers left behind (it adopts orphans), running beside this one."""
        if self._server_pid is None:
            return 0
        try:
            kids = psutil.Process(self._server_pid).children()
        except psutil.Error:
            return 0
        return sum(1 for k in kids if k.pid != worker)

    def _exit_code(self, pid: int, wait_s: float) -> int | None:
        with self._ended:
            self._ended.wait_for(lambda: pid in self._exits or self._closed, timeout=wait_s)
            return self._exits.get(pid)

    def close(self) -> None:
        try:
            wire.send_frame(self._ctrl, pickle.dumps({"op": "exit"}))
        except OSError:
            pass
        if self._proc is not None:
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._ctrl.close()
        shutil.rmtree(self._folder, ignore_errors=True)

    def __enter__(self) -> Forkserver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
