"""The one place where untrusted code runs.

A candidate's code may crash, hang, fork, eat memory, read secrets or phone home.
Everything here assumes it will: the environment is rebuilt from an allowlist, the
command runs in its own session so the whole process group can be killed, time and
resident memory are enforced by the parent, and, where the machine allows it, the
command runs under bubblewrap with no network, a read-only root and the campaign's
private paths hidden. Machines without bubblewrap fall back to a network namespace
(`unshare -rn`) or to no isolation at all, and every result records which one it got.

Faults of the candidate never raise: they come back as a SandboxResult. Only a
sandbox that cannot start raises SandboxError, which the caller may retry.
"""

from __future__ import annotations

import functools
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Literal

import psutil
from pydantic import BaseModel, Field

Status = Literal["ok", "crash", "timeout", "oom"]
Isolation = Literal["bwrap", "unshare-net", "none"]

TAIL_BYTES = 4096
_POLL_MIN_S, _POLL_MAX_S = 0.005, 0.05
_MODE_ENV = "AUTOLAB_SANDBOX"
_MODES = {"bwrap": "bwrap", "unshare": "unshare-net", "unshare-net": "unshare-net", "none": "none"}
_SECRET_NAME = re.compile(
    r"KEY|TOKEN|SECRET|PASSW|CREDENTIAL|AUTH|COOKIE|PRIVATE|"
    r"^AWS_|^AZURE_|^GCP_|^GOOGLE_APPLICATION|^ANTHROPIC|^OPENAI|^GITHUB_|^GH_",
    re.IGNORECASE,
)
_SECRET_VALUE = re.compile(r"^(sk-|ghp_|gho_|ghs_|github_pat_|xox[abpr]-|AKIA|ASIA)")
_OOM_TEXT = re.compile(
    r"MemoryError|Cannot allocate memory|can't allocate memory|CUDA out of memory|"
    r"OutOfMemoryError|std::bad_alloc|out of memory",
    re.IGNORECASE,
)


class SandboxError(RuntimeError):
    """The sandbox itself could not start: an infrastructure fault, not the candidate's."""


class Limits(BaseModel):
    """What one sandboxed command may use."""

    timeout_s: float = Field(gt=0)
    memory_mb: int = Field(gt=0, description="cap on the resident memory of the process tree")
    threads: int = Field(1, ge=1)
    address_space_mb: int | None = Field(
        None, gt=0, description="RLIMIT_AS; off by default because CUDA maps huge address space"
    )
    output_mb: int = Field(256, gt=0, description="cap on stdout + stderr, so disk stays bounded")


class SandboxResult(BaseModel):
    returncode: int | None
    status: Status
    reason: str = ""
    wall_s: float = 0.0
    peak_rss_mb: float = 0.0
    stdout_tail: str = ""
    stderr_tail: str = ""
    isolation: Isolation = "none"


@functools.cache
def bwrap_works() -> bool:
    """Probe once: user namespaces are often disabled in containers and CI."""
    return _probe(_bwrap_prefix(Path("/"), (), ()) + ["true"])


@functools.cache
def unshare_works() -> bool:
    return _probe(["unshare", "-rn", "true"])


def _probe(argv: list[str]) -> bool:
    if shutil.which(argv[0]) is None:
        return False
    try:
        done = subprocess.run(argv, capture_output=True, timeout=10, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def available_modes() -> list[Isolation]:
    modes: list[Isolation] = ["none"]
    if unshare_works():
        modes.append("unshare-net")
    if bwrap_works():
        modes.append("bwrap")
    return modes


def isolation_mode() -> Isolation:
    """The strongest isolation available, or the one forced by AUTOLAB_SANDBOX.

    A forced mode that does not work raises rather than silently running weaker.
    """
    forced = os.environ.get(_MODE_ENV, "").strip().lower()
    if forced and forced != "auto":
        if forced not in _MODES:
            raise SandboxError(f"{_MODE_ENV}={forced!r}: expected none, unshare or bwrap")
        mode = _MODES[forced]
        if mode not in available_modes():
            raise SandboxError(f"{_MODE_ENV}={forced} but {mode} does not work on this machine")
        return mode  # type: ignore[return-value]
    return available_modes()[-1]


def _runtime_paths() -> list[Path]:
    """What the sandboxed interpreter needs even when it lives under /tmp (which bwrap
    replaces): the virtualenv, the base Python, and the installed project's sources."""
    return sorted({Path(sys.prefix), Path(sys.base_prefix), Path(__file__).resolve().parents[1]})


def _bwrap_prefix(workspace: Path, readable: Sequence[Path], hidden: Sequence[Path]) -> list[str]:
    """bwrap argv. Later mounts cover earlier ones, so mounts go from the shallowest path
    to the deepest: the most specific rule wins (a readable dir inside a hidden one is
    re-exposed, a hidden file inside it is hidden again); the workspace comes last."""
    argv = ["bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
            "--tmpfs", "/tmp", "--unshare-net", "--unshare-pid", "--die-with-parent"]
    rules = [(p, False) for p in hidden] + [(p, True) for p in (*readable, *_runtime_paths())]
    for p, show in sorted(rules, key=lambda r: len(r[0].parts)):
        if show:
            argv += ["--ro-bind-try", str(p), str(p)]
        elif p.is_dir():
            argv += ["--tmpfs", str(p)]
        elif p.exists():
            argv += ["--ro-bind", "/dev/null", str(p)]
    if workspace != Path("/"):
        argv += ["--bind", str(workspace), str(workspace)]
    return argv


def is_secret_name(name: str) -> bool:
    return bool(_SECRET_NAME.search(name))


def build_env(
    argv0: str, workspace: Path, threads: int, env_extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The candidate's whole environment, from an allowlist; nothing of the parent leaks.

    env_extra comes from trusted code, but a secret-looking entry is refused anyway
    (ValueError) because it would hand the secret to untrusted code.
    """
    interp_dir = os.path.dirname(argv0 if os.path.isabs(argv0) else sys.executable)
    n = str(threads)
    env = {
        "PATH": os.pathsep.join([interp_dir, "/usr/local/bin", "/usr/bin", "/bin"]),
        "HOME": str(workspace),
        "TMPDIR": str(workspace / ".tmp"),
        "LANG": os.environ.get("LANG", "C.UTF-8"),
        "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0",
        "PYTHONUNBUFFERED": "1", "PYTHONNOUSERSITE": "1",
        "OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n,
    }
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        env["CUDA_VISIBLE_DEVICES"] = os.environ["CUDA_VISIBLE_DEVICES"]
    for name, value in (env_extra or {}).items():
        if is_secret_name(name) or _SECRET_VALUE.match(str(value)):
            raise ValueError(f"refusing to pass secret-looking variable {name!r} to the sandbox")
        env[name] = str(value)
    return env


class _Watch:
    """State of one running command: its tree, peak memory, and why we killed it."""

    def __init__(self, proc: subprocess.Popen[bytes]):
        self.proc = proc
        self.root = psutil.Process(proc.pid)
        self.seen: dict[int, psutil.Process] = {proc.pid: self.root}
        self.peak_mb = 0.0
        self.killed: tuple[Status, str] | None = None

    def tree_rss_mb(self) -> float:
        """Summed RSS of the tree; shared pages of forked workers count more than once."""
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            procs = [self.root]
        total = 0
        for p in procs:
            self.seen.setdefault(p.pid, p)
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        mb = total / 2**20
        self.peak_mb = max(self.peak_mb, mb)
        return mb

    def exited(self) -> bool:
        """True once the child is a zombie; WNOWAIT keeps its pid (and process group)
        reserved so the group can still be killed safely before reaping."""
        try:
            info = os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:  # reaped by someone else's SIGCHLD handling
            return True
        return info is not None

    def kill_all(self) -> None:
        """SIGKILL the process group, then anything ever seen in the tree that left it
        (a grandchild that called setsid)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        for p in self.seen.values():
            if p.pid == self.proc.pid:
                continue
            try:
                p.kill()  # psutil checks create_time, so a reused pid is left alone
            except psutil.Error:
                pass

    def reap(self) -> int | None:
        """Reap the child; its exit status as Popen reports it (None if reaped elsewhere)."""
        try:
            _, status = os.waitpid(self.proc.pid, 0)
        except ChildProcessError:
            return None
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        return self.proc.returncode


def _watch_loop(w: _Watch, limits: Limits, outs: Sequence[IO[bytes]], started: float) -> None:
    """Poll until the child exits or breaks a limit; the poll interval grows from 5 ms
    to 50 ms so short commands return fast and long ones cost little."""
    delay = _POLL_MIN_S
    while not w.exited():
        rss = w.tree_rss_mb()
        if rss > limits.memory_mb:
            w.killed = ("oom", f"resident memory {rss:.0f} MB over the {limits.memory_mb} MB limit")
        elif time.monotonic() - started > limits.timeout_s:
            w.killed = ("timeout", f"killed after {limits.timeout_s:.1f} s time limit")
        elif sum(os.fstat(f.fileno()).st_size for f in outs) > limits.output_mb * 2**20:
            w.killed = ("crash", f"wrote more than {limits.output_mb} MB to stdout/stderr")
        if w.killed:
            w.kill_all()
            return
        time.sleep(delay)
        delay = min(delay * 2, _POLL_MAX_S)


def _tail(f: IO[bytes]) -> str:
    f.flush()
    size = os.fstat(f.fileno()).st_size
    f.seek(max(0, size - TAIL_BYTES))
    return f.read().decode("utf-8", errors="replace")


def _last_line(text: str) -> str:
    """The line that explains a crash: the last unindented one (a traceback's
    exception line), else the last non-empty one."""
    lines = [ln.rstrip() for ln in text.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if not ln[0].isspace() and not ln.startswith("Traceback"):
            return ln[:300]
    return lines[-1].strip()[:300] if lines else ""


def _signal_of(rc: int, isolation: Isolation) -> int | None:
    """Signal that ended the child; bwrap reports a child's signal as 128 + n."""
    if rc < 0:
        return -rc
    if isolation == "bwrap" and 128 < rc < 128 + 65:
        return rc - 128
    return None


def classify(
    rc: int | None, killed: tuple[Status, str] | None, stderr: str, isolation: Isolation
) -> tuple[Status, str]:
    """Status and one human line from how the command ended."""
    if killed is not None:
        return killed
    if rc == 0:
        return "ok", ""
    if rc is None:
        return "crash", "exit status lost (the process was reaped elsewhere)"
    line = _last_line(stderr)
    for ln in [ln for ln in stderr.splitlines() if ln.strip()][-5:]:
        if _OOM_TEXT.search(ln):  # only near the end: an early warning is not the cause
            return "oom", ln.strip()[:300]
    sig = _signal_of(rc, isolation)
    if sig == signal.SIGKILL:
        return "oom", "killed by SIGKILL, not by the sandbox (out of memory, killed by the kernel?)"
    if sig is not None:
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        return "crash", f"killed by {name}" + (f": {line}" if line else "")
    return "crash", f"exited {rc}" + (f": {line}" if line else "")


def _bwrap_ran(status_r: int) -> bool:
    """bwrap writes {"exit-code": N} to its status fd when the command it started ends;
    a bwrap that exits 1 without it failed to set the sandbox up (an infrastructure fault)."""
    os.set_blocking(status_r, False)
    try:
        return b'"exit-code"' in os.read(status_r, 65536)
    except BlockingIOError:
        return False
    finally:
        os.close(status_r)


def _preexec(address_space_mb: int | None) -> Callable[[], None] | None:
    """RLIMIT_AS for the child, set between fork and exec so every descendant inherits it."""
    if address_space_mb is None:
        return None
    limit = address_space_mb * 2**20
    return lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _command(
    argv: Sequence[str], mode: Isolation, workspace: Path,
    readable: Sequence[Path], hidden: Sequence[Path], status_w: int,
) -> list[str]:
    if mode == "bwrap":
        ro = [Path(p).absolute() for p in readable]
        hide = [Path(p).absolute() for p in hidden]
        return _bwrap_prefix(workspace, ro, hide) + ["--json-status-fd", str(status_w), *argv]
    if mode == "unshare-net":
        return ["unshare", "-rn", *argv]
    return list(argv)


def run_sandboxed(
    argv: Sequence[str],
    workspace: Path,
    limits: Limits,
    readable: Sequence[Path] = (),
    hidden: Sequence[Path] = (),
    env_extra: Mapping[str, str] | None = None,
) -> SandboxResult:
    """Run argv with cwd=workspace under the strongest available isolation.

    Never raises for what the command does; raises SandboxError when the sandbox cannot
    start (missing interpreter, workspace not creatable, bwrap setup failure).
    """
    if not argv:
        raise SandboxError("empty command")
    workspace = Path(workspace).absolute()
    try:
        (workspace / ".tmp").mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SandboxError(f"cannot create workspace {workspace}: {e}") from e
    env = build_env(argv[0], workspace, limits.threads, env_extra)
    if shutil.which(argv[0], path=env["PATH"]) is None:
        raise SandboxError(f"interpreter not found: {argv[0]}")
    mode = isolation_mode()
    status_r, status_w = os.pipe()
    full = _command(argv, mode, workspace, readable, hidden, status_w)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.monotonic()
        try:
            proc = subprocess.Popen(
                full, cwd=workspace, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                start_new_session=True, pass_fds=(status_w,) if mode == "bwrap" else (),
                preexec_fn=_preexec(limits.address_space_mb),
            )
        except OSError as e:
            os.close(status_r)
            raise SandboxError(f"cannot start {full[0]}: {e}") from e
        finally:
            os.close(status_w)
        w = _Watch(proc)
        try:
            _watch_loop(w, limits, (out, err), started)
        finally:
            w.kill_all()  # also after a clean exit: no background process outlives the step
            rc = w.reap()
        wall = time.monotonic() - started
        stdout, stderr = _tail(out), _tail(err)
    if not _bwrap_ran(status_r) and mode == "bwrap" and rc == 1 and w.killed is None:
        raise SandboxError(f"bwrap failed to start: {_last_line(stderr)}")
    status, reason = classify(rc, w.killed, stderr, mode)
    return SandboxResult(
        returncode=rc, status=status, reason=reason, wall_s=round(wall, 3),
        peak_rss_mb=round(w.peak_mb, 1), stdout_tail=stdout, stderr_tail=stderr, isolation=mode,
    )
