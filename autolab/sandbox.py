"""The one place where untrusted code runs.

A candidate's code may crash, hang, fork, eat memory, read secrets or answers, phone
home, tamper with the orchestrator or leave state behind. Everything here assumes it
will. The environment is rebuilt from an allowlist, the command runs in its own session
and process group, time, resident memory and output are enforced by the parent, and the
whole tree is killed when the step ends. The filesystem view is deny-by-default:

- `bwrap` (bubblewrap): an empty root holding only the OS's read-only system dirs, the
  interpreter, the distributions the benchmark declares (not the whole virtualenv, not
  data packages), the harness files, and the step's own paths (read-only inputs,
  writable outputs); a private /tmp, no network, its own pid namespace, killed with
  its parent. The only mode that hides files: results made under it are "isolated".
- `unshare`: no network and its own pid namespace (orphans die with the step), but
  the filesystem is the host's. Hiding then rests on the in-process guard
  (benchmarks/guard.py) and the static scan, so such results are marked unisolated and
  a campaign must opt in to them.
- `none`: nothing but the environment scrub and the process-tree kill.

Faults of the candidate never raise: they come back as a SandboxResult. Only a
sandbox that cannot start raises SandboxError, which the caller may retry.
"""

from __future__ import annotations

import functools
import importlib.metadata as metadata
import json
import os
import re
import resource
import select
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Literal

import psutil
from pydantic import BaseModel, ConfigDict, Field

Status = Literal["ok", "crash", "timeout", "oom", "integrity"]
Isolation = Literal["bwrap", "unshare", "none"]
ISOLATED: frozenset[str] = frozenset({"bwrap"})  # modes that hide the filesystem
STRENGTH: dict[str, int] = {"none": 0, "unshare": 1, "bwrap": 2}

TAIL_BYTES = 4096
GUARD_EXIT = 113  # benchmarks.guard.GUARD_EXIT; duplicated so this module needs no harness
MARKER_ENV = "AUTOLAB_TRIAL"
_POLL_MIN_S, _POLL_MAX_S = 0.005, 0.25
_MODE_ENV = "AUTOLAB_SANDBOX"
_MODES: dict[str, Isolation] = {
    "bwrap": "bwrap", "unshare": "unshare", "unshare-net": "unshare", "none": "none",
}
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
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32")
_ETC_FILES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime",
              "/etc/passwd", "/etc/group", "/etc/nsswitch.conf")
_HOST_READABLE = ("/sys/devices/system/cpu",)
BWRAP_HOME = Path("/tmp/.autolab-home")  # HOME and TMPDIR inside bwrap's private /tmp


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


class View(BaseModel):
    """What one step may touch beyond the runtime: read-only paths, writable paths, devices.

    `distributions` names the installed distributions the step imports (their
    dependencies are added); nothing else of the virtualenv is visible under bwrap.
    `pythonpath` is prepended to sys.path (e.g. the project root, so the harness imports);
    it exposes nothing by itself: the harness files it needs are listed in `read`.
    """

    model_config = ConfigDict(frozen=True)
    cwd: Path
    read: tuple[Path, ...] = ()
    write: tuple[Path, ...] = ()
    devices: tuple[str, ...] = ()
    distributions: tuple[str, ...] = ()
    pythonpath: tuple[Path, ...] = ()
    home: Path | None = Field(None, description="writable HOME/TMPDIR outside bwrap's private /tmp")
    allow_subprocess: bool = False
    shm: Path | None = Field(None, description="a host folder shown as /dev/shm under bwrap "
                             "(private_shm_dir); without it bwrap's /dev/shm is empty")


class SandboxResult(BaseModel):
    returncode: int | None
    status: Status
    reason: str = ""
    wall_s: float = 0.0
    peak_rss_mb: float = 0.0
    stdout_tail: str = ""
    stderr_tail: str = ""
    isolation: Isolation = "none"
    guard: str = Field("", description="what the in-process guard stopped, if anything")


# -- which isolation ---------------------------------------------------------------------


@functools.cache
def bwrap_works() -> bool:
    """Probe once: user namespaces are often disabled in containers and CI."""
    return _probe(["bwrap", "--unshare-all", "--unshare-user", "--disable-userns", "--cap-drop",
                   "ALL", "--ro-bind", "/", "/", "true"])


@functools.cache
def unshare_works() -> bool:
    """As root, only with setpriv to drop every capability: without it a step would keep
    root's powers (remount, ptrace), and that is not this mode."""
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        return False
    return _probe(_unshare_prefix() + ["true"])


def _probe(argv: list[str]) -> bool:
    if shutil.which(argv[0]) is None:
        return False
    try:
        done = subprocess.run(argv, capture_output=True, timeout=10, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def available_modes() -> list[Isolation]:
    """Weakest first."""
    modes: list[Isolation] = ["none"]
    if unshare_works():
        modes.append("unshare")
    if bwrap_works():
        modes.append("bwrap")
    return modes


def isolation_mode(requested: str = "auto") -> Isolation:
    """The strongest isolation available, or the one asked for (AUTOLAB_SANDBOX wins over
    `requested`). A mode asked for that does not work raises rather than running weaker."""
    forced = os.environ.get(_MODE_ENV, "").strip().lower() or requested.strip().lower()
    if forced and forced != "auto":
        if forced not in _MODES:
            raise SandboxError(f"sandbox mode {forced!r}: expected auto, bwrap, unshare or none")
        mode = _MODES[forced]
        if mode not in available_modes():
            raise SandboxError(f"sandbox mode {mode} does not work on this machine{_HOW_TO}")
        return mode
    return available_modes()[-1]


_HOW_TO = (
    " (install bubblewrap: `apt-get install bubblewrap`, `dnf install bubblewrap`, or your"
    " distribution's package; it needs unprivileged user namespaces or root)"
)


def isolation_advice() -> str:
    return _HOW_TO.strip(" ()")


# -- the runtime a step may see ----------------------------------------------------------


def _dist_key(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@functools.cache
def distribution_closure(names: tuple[str, ...]) -> tuple[metadata.Distribution, ...]:
    """The named distributions and everything they require (extras excluded)."""
    from packaging.requirements import InvalidRequirement, Requirement

    seen: dict[str, metadata.Distribution] = {}
    stack = list(names)
    while stack:
        name = stack.pop()
        key = _dist_key(name)
        if key in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        seen[key] = dist
        for text in dist.requires or []:
            try:
                req = Requirement(text)
            except InvalidRequirement:
                continue
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                stack.append(req.name)
    return tuple(seen[k] for k in sorted(seen))


@functools.cache
def site_dirs() -> tuple[Path, ...]:
    """Every directory where this interpreter (or its base) finds third-party packages."""
    found = {Path(p) for p in sys.path if p.endswith(("site-packages", "dist-packages"))}
    for prefix in {sys.prefix, sys.base_prefix}:
        for key in ("purelib", "platlib"):
            found.add(Path(sysconfig.get_paths(vars={"base": prefix, "platbase": prefix})[key]))
    for pattern in ("/usr/lib/python3*/dist-packages", "/usr/local/lib/python3*/*-packages",
                    "/usr/lib/python3/dist-packages"):
        found.update(Path("/").glob(pattern.lstrip("/")))
    return tuple(sorted(p.resolve() for p in found if p.is_dir()))


@functools.cache
def distribution_paths(names: tuple[str, ...]) -> tuple[Path, ...]:
    """Top-level files and folders of the distributions a step imports, where installed.
    Startup hooks (.pth files) and shared __pycache__ folders are left out."""
    out: set[Path] = set()
    for dist in distribution_closure(names):
        base = Path(dist.locate_file("")).resolve()
        for f in dist.files or []:
            top = f.parts[0]
            if top in ("..", "__pycache__") or top.endswith(".pth"):
                continue
            path = base / top
            if path.exists():
                out.add(path)
    return tuple(sorted(out))


@functools.cache
def linked_site_dirs(names: tuple[str, ...]) -> tuple[Path, ...]:
    """Folders holding a step's distributions that the interpreter does not search by
    itself: reached through a .pth file (a virtualenv layered on another one, as
    `make install-offline` makes on a host with its own torch) or through PYTHONPATH.
    Startup hooks do not run in a step, so these go on the step's PYTHONPATH, in the
    parent's order."""
    own = {Path(sysconfig.get_paths(vars={"base": prefix, "platbase": prefix})[key]).resolve()
           for prefix in (sys.prefix, sys.base_prefix) for key in ("purelib", "platlib")}
    order = {Path(p).resolve(): i for i, p in reversed(list(enumerate(sys.path))) if p}
    bases = {Path(d.locate_file("")).resolve() for d in distribution_closure(names)}
    extra = [b for b in bases if b not in own and b.is_dir()]
    return tuple(sorted(extra, key=lambda b: (order.get(b, len(order)), str(b))))


@functools.cache
def interpreter_paths(python: str) -> tuple[Path, ...]:
    """The interpreter, its standard library and the virtualenv skeleton (no packages)."""
    paths = {Path(sys.base_prefix).resolve()}
    exe = Path(python).absolute()
    paths.add(exe.parent)  # venv/bin (its scripts are inert without their packages)
    paths.add(exe.resolve().parent)
    cfg = Path(sys.prefix) / "pyvenv.cfg"
    if cfg.exists():
        paths.add(cfg)
    return tuple(sorted(paths))


def runtime_read_paths(view: View, python: str) -> list[Path]:
    """Every path a step needs to run, beyond its own inputs; also the guard's read roots."""
    dists = distribution_paths(tuple(sorted(view.distributions)))
    return [*interpreter_paths(python), *dists]


# -- environment -------------------------------------------------------------------------


def is_secret_name(name: str) -> bool:
    return bool(_SECRET_NAME.search(name))


def build_env(
    argv0: str, home: Path, threads: int, env_extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The candidate's whole environment, from an allowlist; nothing of the parent leaks.

    env_extra comes from trusted code, but a secret-looking entry is refused anyway
    (ValueError) because it would hand the secret to untrusted code.
    """
    interp_dir = os.path.dirname(argv0 if os.path.isabs(argv0) else sys.executable)
    n = str(threads)
    env = {
        "PATH": os.pathsep.join([interp_dir, "/usr/local/bin", "/usr/bin", "/bin"]),
        "HOME": str(home),
        "TMPDIR": str(home),
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0",
        "PYTHONUNBUFFERED": "1", "PYTHONNOUSERSITE": "1", "PYTHONSAFEPATH": "1",
        "OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n,
    }
    for name, value in (env_extra or {}).items():
        if is_secret_name(name) or _SECRET_VALUE.match(str(value)):
            raise ValueError(f"refusing to pass secret-looking variable {name!r} to the sandbox")
        env[name] = str(value)
    return env


# -- command lines -----------------------------------------------------------------------


def _unshare_prefix() -> list[str]:
    """Network and pid namespaces; --kill-child takes the tree down with unshare itself.
    The step then runs with no capabilities and no way to gain any (setpriv), so even
    as root it cannot remount, ptrace, signal other users or change its limits; it still
    has its user's file permissions, which is why this mode counts as unisolated."""
    user = [] if os.geteuid() == 0 else ["--map-root-user"]
    drop = ["setpriv", "--no-new-privs", "--inh-caps=-all", "--bounding-set=-all", "--"]
    if shutil.which("setpriv") is None:
        drop = []
    return ["unshare", *user, "--net", "--pid", "--fork", "--kill-child", "--mount-proc", *drop]


def _bwrap_argv(view: View, python: str, masks: Sequence[Path]) -> list[str]:
    """An empty root with only what the step may see. Mounts apply in order, so masks
    (tmpfs over package dirs) come before the distributions re-exposed inside them."""
    # A user namespace with no capabilities and no way to make another: even a step run
    # by root cannot remount the read-only binds writable or leave the view.
    argv = ["bwrap", "--unshare-all", "--unshare-user", "--disable-userns", "--cap-drop", "ALL",
            "--die-with-parent", "--new-session",
            "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--dir", str(BWRAP_HOME),
            "--dir", "/etc"]
    for d in _SYSTEM_DIRS:
        p = Path(d)
        if p.is_symlink():
            argv += ["--symlink", os.readlink(p), d]
        elif p.is_dir():
            argv += ["--ro-bind", d, d]
    for f in (*_ETC_FILES, *_HOST_READABLE):
        argv += ["--ro-bind-try", f, f]
    ro = [*interpreter_paths(python)]
    rules: list[tuple[Path, str]] = [(p, "ro") for p in ro]
    rules += [(m, "mask") for m in masks]
    rules += [(p, "ro") for p in distribution_paths(tuple(sorted(view.distributions)))]
    rules += [(p, "ro") for p in (*view.read, view.cwd)]
    rules += [(p, "rw") for p in view.write]
    # shallow before deep, and within a depth the order above: the most specific rule wins
    order = {kind: i for i, kind in enumerate(("ro", "mask", "rw"))}
    for path, kind in sorted(rules, key=lambda r: (len(r[0].parts), order[r[1]])):
        if kind == "mask":
            argv += ["--tmpfs", str(path)]
        else:
            argv += ["--ro-bind-try" if kind == "ro" else "--bind", str(path), str(path)]
    if view.shm is not None:
        argv += ["--bind", str(view.shm), "/dev/shm"]
    for dev in view.devices:
        argv += ["--dev-bind", dev, dev]
    return argv + ["--chdir", str(view.cwd)]


SHM_ROOT = Path("/dev/shm")


def private_shm_dir(marker: str, step: str) -> Path:
    """The host folder a step with a private /dev/shm sees as its /dev/shm (named by the
    trial attempt's marker): on the host's /dev/shm, where the trusted side can place
    shared-memory files for it. Removed with the trial (drop_private_shm)."""
    return SHM_ROOT / f"autolab-{marker}-{step}"


def drop_private_shm(marker: str) -> None:
    """Remove what a trial attempt's steps left in their private /dev/shm folders, also
    folders a step made unreadable or unwritable (their permissions are put back first,
    all the way down, never through a link)."""
    if not SHM_ROOT.is_dir():
        return
    for d in SHM_ROOT.glob(f"autolab-{marker}-*"):
        if d.is_symlink() or not d.is_dir():
            d.unlink(missing_ok=True)
            continue
        todo = [str(d)]
        while todo:
            folder = todo.pop()
            try:
                os.chmod(folder, 0o700)
                with os.scandir(folder) as entries:
                    todo += [e.path for e in entries if e.is_dir(follow_symlinks=False)]
            except OSError:
                pass
        shutil.rmtree(d, ignore_errors=True)


def _masks(python: str) -> list[Path]:
    """Package dirs hidden under bwrap (the step's distributions are mounted back on top)."""
    skeleton = set(interpreter_paths(python))
    return [d for d in site_dirs() if any(d.is_relative_to(p) for p in skeleton) or
            d.is_relative_to("/usr")]


# -- watching ----------------------------------------------------------------------------


def _descendants(pid: int) -> list[int]:
    """Every descendant's pid, from the kernel's list of each thread's children (cheap:
    psutil's children() reads every process on the host to find them); psutil where the
    kernel does not keep the list. A process that exits meanwhile is skipped, not its
    siblings' branches."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            tasks = list(os.scandir(f"/proc/{p}/task"))
        except (FileNotFoundError, ProcessLookupError):
            continue  # gone
        except PermissionError:
            return _psutil_descendants(pid)
        for task in tasks:
            try:
                with open(f"{task.path}/children") as f:
                    kids = [int(k) for k in f.read().split()]
            except (FileNotFoundError, ProcessLookupError):
                if not os.path.exists(task.path):
                    continue  # the thread or process is gone
                return _psutil_descendants(pid)  # no child lists in this kernel
            except PermissionError:
                return _psutil_descendants(pid)
            out += kids
            todo += kids
    return out


def _psutil_descendants(pid: int) -> list[int]:
    try:
        return [c.pid for c in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []


def _process(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except psutil.Error:
        return None


UNCOUNTABLE = 1 << 50  # bytes: what a folder the watcher cannot read through counts as


def folder_bytes(root: Path, most: int = 10_000) -> int:
    """The memory a folder's files hold (their allocated blocks: a tmpfs's pages). A folder
    in it that cannot be read, or more than `most` entries, count as UNCOUNTABLE: over any
    limit, so hiding memory there, or flooding the watcher, ends the step."""
    total, todo, seen = 0, [root], 0
    while todo:
        try:
            entries = os.scandir(todo.pop())
        except FileNotFoundError:
            continue
        except OSError:
            return UNCOUNTABLE
        with entries:
            for e in entries:
                seen += 1
                if seen > most:
                    return UNCOUNTABLE
                try:
                    if e.is_dir(follow_symlinks=False):
                        todo.append(e.path)
                    else:
                        total += e.stat(follow_symlinks=False).st_blocks * 512
                except FileNotFoundError:
                    pass
                except OSError:
                    return UNCOUNTABLE
    return total


class _Watch:
    """State of one running command: its tree, peak memory, and why we killed it."""

    def __init__(self, proc: subprocess.Popen[bytes], shm: Path | None = None):
        self.proc = proc
        self.shm = shm  # its private /dev/shm: memory it holds beyond its processes
        self.root = psutil.Process(proc.pid)
        self.seen: dict[int, psutil.Process] = {proc.pid: self.root}
        self.peak_mb = 0.0
        self.killed: tuple[Status, str] | None = None

    def tree_rss_mb(self) -> float:
        """Summed RSS of the tree, and what its private /dev/shm holds (memory too); shared
        pages of forked workers count more than once."""
        procs = [self.root] + [p for pid in _descendants(self.root.pid)
                               if (p := self.seen.get(pid) or _process(pid)) is not None]
        total = 0
        for p in procs:
            self.seen.setdefault(p.pid, p)
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        if self.shm is not None:
            total += folder_bytes(self.shm)
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
        killed = []
        for p in self.seen.values():
            if p.pid == self.proc.pid:
                continue
            try:
                p.kill()  # psutil checks create_time, so a reused pid is left alone
                killed.append(p.pid)
            except psutil.Error:
                pass
        wait_dead(killed)  # gone when the step returns, not just signalled

    def reap(self) -> int | None:
        """Reap the child; its exit status as Popen reports it (None if reaped elsewhere)."""
        try:
            _, status = os.waitpid(self.proc.pid, 0)
        except ChildProcessError:
            return None
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        return self.proc.returncode


def _watch_loop(w: _Watch, limits: Limits, outs: Sequence[IO[bytes]], started: float) -> None:
    """Poll until the child exits or breaks a limit. The limits are checked at intervals
    that grow from 5 ms to 250 ms (a long run's tree is read 4 times a second, however many
    trials run at once); the child's exit ends the wait at once (its pidfd)."""
    delay = _POLL_MIN_S
    try:
        exit_fd: int | None = os.pidfd_open(w.proc.pid)
    except (AttributeError, OSError):  # no pidfd (an old kernel): sleep the whole interval
        exit_fd = None
    try:
        while not w.exited():
            rss = w.tree_rss_mb()
            if rss > limits.memory_mb:
                w.killed = ("oom",
                            f"resident memory {rss:.0f} MB over the {limits.memory_mb} MB limit")
            elif time.monotonic() - started > limits.timeout_s:
                w.killed = ("timeout", f"killed after {limits.timeout_s:.1f} s time limit")
            elif sum(os.fstat(f.fileno()).st_size for f in outs) > limits.output_mb * 2**20:
                w.killed = ("crash", f"wrote more than {limits.output_mb} MB to stdout/stderr")
            if w.killed:
                w.kill_all()
                return
            if exit_fd is None:
                time.sleep(delay)
            else:  # poll, not select: the descriptor may be numbered above 1023
                waiter = select.poll()
                waiter.register(exit_fd, select.POLLIN)
                waiter.poll(delay * 1000)
            delay = min(delay * 2, _POLL_MAX_S)
    finally:
        if exit_fd is not None:
            os.close(exit_fd)


def kill_marked(marker: str) -> int:
    """Kill every live process whose environment carries AUTOLAB_TRIAL=marker: what is left
    of a trial whose orchestrator was killed. Returns how many were killed. Reads each
    process's environment block from /proc as bytes (psutil where there is no /proc):
    this runs twice per trial, with every other trial's processes on the host."""
    proc = Path("/proc")
    if not proc.is_dir():
        return _kill_marked_psutil(marker)
    needle, killed = f"{MARKER_ENV}={marker}\0".encode(), []
    for entry in os.scandir(proc):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as f:
                block = b"\0" + f.read()
        except OSError:  # gone, or not ours to read
            continue
        if b"\0" + needle in block:
            try:
                os.kill(int(entry.name), signal.SIGKILL)
                killed.append(int(entry.name))
            except OSError:
                continue
    wait_dead(killed)
    return len(killed)


def wait_dead(pids: Iterable[int], timeout_s: float = 2.0) -> bool:
    """Wait until each of `pids` (sent SIGKILL: it dies asynchronously) has exited: gone,
    or a zombie its parent has yet to reap. False if one still runs after `timeout_s`."""
    left, end = list(pids), time.monotonic() + timeout_s
    while left:
        left = [pid for pid in left if _running(pid)]
        if not left:
            break
        if time.monotonic() > end:
            return False
        time.sleep(0.005)
    return True


def _running(pid: int) -> bool:
    """Whether any thread of `pid` still runs: a zombie leader whose other threads are
    still exiting (stuck in a driver call, say) holds its files and memory yet."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return psutil.pid_exists(pid) and not Path("/proc").is_dir()
    zombie = stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")  # the field after the name
    return not zombie or any(t != str(pid) for t in threads)


def _kill_marked_psutil(marker: str) -> int:
    killed = 0
    for p in psutil.process_iter():
        try:
            if p.pid != os.getpid() and p.environ().get(MARKER_ENV) == marker:
                p.kill()
                killed += 1
        except psutil.Error:
            continue
    return killed


# -- results -----------------------------------------------------------------------------


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
    """Signal that ended the child; bwrap and unshare report a child's signal as 128 + n."""
    if rc < 0:
        return -rc
    if isolation != "none" and 128 < rc < 128 + 65:
        return rc - 128
    return None


def classify(
    rc: int | None, killed: tuple[Status, str] | None, stderr: str, isolation: Isolation,
    guard: str = "",
) -> tuple[Status, str]:
    """Status and one human line from how the command ended. A stop by the runtime guard
    comes first: a step that then hung or exited 0 (a hook of its own ran after the stop)
    was still stopped."""
    if guard or rc == GUARD_EXIT:
        return "integrity", "runtime guard stopped the step: " + (guard or "exit code 113")
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
    if isolation == "unshare" and rc == 1 and "sigprocmask unblock failed" in stderr:
        sig = signal.SIGKILL  # util-linux cannot re-raise an uncatchable signal: it says this
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


def _read_guard(fd: int) -> str:
    os.set_blocking(fd, False)
    try:
        data = os.read(fd, 65536).decode("utf-8", "replace")
    except BlockingIOError:
        data = ""
    finally:
        os.close(fd)
    for line in data.splitlines():
        try:
            hit = json.loads(line)
            return f"{hit['event']}: {hit['detail']}"[:300]
        except (ValueError, KeyError, TypeError):
            return line[:300]
    return ""


def _preexec(address_space_mb: int | None) -> Callable[[], None] | None:
    """RLIMIT_AS for the child, set between fork and exec so every descendant inherits it."""
    if address_space_mb is None:
        return None
    limit = address_space_mb * 2**20
    return lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _with_parent(argv: list[str]) -> list[str]:
    """Kill the step's first process when the orchestrator dies (PR_SET_PDEATHSIG through
    util-linux's setpriv); bwrap does this itself with --die-with-parent."""
    if shutil.which("setpriv") is None:
        return argv
    return ["setpriv", "--pdeathsig", "KILL", "--", *argv]


# -- the entry point ---------------------------------------------------------------------


def run_sandboxed(
    argv: Sequence[str],
    view: View,
    limits: Limits,
    env_extra: Mapping[str, str] | None = None,
    *,
    mode: Isolation | None = None,
    marker: str | None = None,
    guarded: bool = True,
    pass_fds: Sequence[int] = (),
) -> SandboxResult:
    """Run argv in view.cwd under `mode` (default: the strongest available).

    Never raises for what the command does; raises SandboxError when the sandbox cannot
    start (missing interpreter, paths not creatable, bwrap setup failure). `marker` tags
    every process of the step so orphans can be found later (kill_marked). With
    `guarded`, the step's harness gets the guard's policy (AUTOLAB_GUARD) and a channel.
    `pass_fds` are further descriptors the step inherits (a trusted companion's socket).
    """
    if not argv:
        raise SandboxError("empty command")
    mode = mode or isolation_mode()
    cwd = Path(view.cwd).absolute()
    try:
        for p in (*view.write, *([view.home] if view.home else [])):
            Path(p).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SandboxError(f"cannot create step paths: {e}") from e
    if not cwd.is_dir():
        raise SandboxError(f"working directory {cwd} does not exist")
    if mode == "bwrap":
        home = BWRAP_HOME
    else:  # a home of its own, so nothing is shared with other steps
        home = Path(view.home) if view.home else Path(tempfile.mkdtemp(prefix="autolab-home-"))
    env = build_env(argv[0], home, limits.threads, env_extra)
    if shutil.which(argv[0], path=env["PATH"]) is None:
        raise SandboxError(f"interpreter not found: {argv[0]}")
    path = (*view.pythonpath, *linked_site_dirs(tuple(sorted(view.distributions))))
    if path:
        env["PYTHONPATH"] = os.pathsep.join(str(p) for p in path)
    if marker:
        env[MARKER_ENV] = marker
    guard_r, guard_w = os.pipe()
    if guarded:
        read = [str(p) for p in (*runtime_read_paths(view, argv[0]), *view.read, cwd)]
        write = [str(p) for p in (*view.write, home)]
        env["AUTOLAB_GUARD"] = json.dumps({
            "read": read, "write": write, "fd": guard_w,
            "allow_subprocess": view.allow_subprocess,
        })
    status_r, status_w = os.pipe()
    if mode == "bwrap":
        full = _bwrap_argv(view, argv[0], _masks(argv[0]))
        full += ["--json-status-fd", str(status_w), *argv]
    elif mode == "unshare":
        full = _with_parent([*_unshare_prefix(), *argv])
    else:
        full = _with_parent(list(argv))
    full[0] = shutil.which(full[0]) or full[0]  # found on our PATH, not the step's
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.monotonic()
        try:
            proc = subprocess.Popen(
                full, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                start_new_session=True, pass_fds=(status_w, guard_w, *pass_fds),
                preexec_fn=_preexec(limits.address_space_mb),
            )
        except OSError as e:
            for fd in (status_r, guard_r):
                os.close(fd)
            raise SandboxError(f"cannot start {full[0]}: {e}") from e
        finally:
            os.close(status_w)
            os.close(guard_w)
        w = _Watch(proc, shm=view.shm)
        try:
            _watch_loop(w, limits, (out, err), started)
        finally:
            w.kill_all()  # also after a clean exit: no background process outlives the step
            rc = w.reap()
        wall = time.monotonic() - started
        stdout, stderr = _tail(out), _tail(err)
    guard = _read_guard(guard_r)
    if mode != "bwrap" and view.home is None:
        shutil.rmtree(home, ignore_errors=True)
    if not _bwrap_ran(status_r) and mode == "bwrap" and rc == 1 and w.killed is None:
        raise SandboxError(f"bwrap failed to start: {_last_line(stderr)}")
    status, reason = classify(rc, w.killed, stderr, mode, guard)
    return SandboxResult(
        returncode=rc, status=status, reason=reason, wall_s=round(wall, 3),
        peak_rss_mb=round(w.peak_mb, 1), stdout_tail=stdout, stderr_tail=stderr, isolation=mode,
        guard=guard,
    )
