"""The build step of a SOL-ExecBench candidate: cheap checks before anything is timed.

A candidate is a folder holding solution.py, which defines `run` with the reference's
parameters (the definition's inputs, in order) and returns its outputs as the reference
does. It may use PyTorch, Triton, or CUDA C++ compiled by torch.utils.cpp_extension
(load_inline, or load on a kernel.cu beside it). Compiling happens in the worker, at
import or first call, with TORCH_EXTENSIONS_DIR and TRITON_CACHE_DIR inside the build
folder the caller gives (the trial's own workspace), never in a cache another candidate
shares. What a candidate's first passing val trial compiled there is kept in its trusted
store and copied into each of its later val trials' build folders (`keep_build_cache`,
`restore_build_cache`): its second seed does not compile its visible shapes again.

`build_solution` checks, in order: the files (solution.py is there, parses, binds a `run`
that takes the inputs); the toolchain (CUDA C++ needs nvcc, and a GPU); the import, in a
worker, which is where kernels compile; and one smoke call on the smallest workload,
checked against the reference through the same path as the timed evaluation (evaluate.py).
Each failure is a BuildResult with its stage, a reason and the log's tail; nothing raises
for the candidate's faults.
"""

from __future__ import annotations

import ast
import functools
import math
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path

import torch

from benchmarks.solexec.evaluate import Launch, Timing, evaluate_problem
from benchmarks.solexec.launch import BUILD_CACHES, launch_subprocess, worker_env
from benchmarks.solexec.problems import (
    Problem,
    Workload,
    resolve_axes,
    shrink,
    skip_reason,
    tensor_shape,
)
from benchmarks.solexec.results import BuildResult


def check_files(problem: Problem, solution_dir: Path) -> str | None:
    """Why solution.py cannot be a solution of this problem, or None."""
    path = Path(solution_dir) / "solution.py"
    if path.is_symlink() or not path.is_file():
        return "the solution folder holds no solution.py"
    try:
        tree = ast.parse(path.read_bytes(), filename="solution.py")
    except SyntaxError as e:
        return f"solution.py does not parse: {e.msg} (line {e.lineno})"
    except ValueError as e:
        return f"solution.py cannot be read as Python source: {e}"
    inputs = list(problem.inputs)
    defined = [n for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
               and n.name == "run"]
    if not defined:
        return None if _binds_run(tree) else "solution.py defines no top-level `run`"
    run = defined[-1]
    if isinstance(run, ast.AsyncFunctionDef):
        return "`run` is a coroutine function; it must compute its outputs when called"
    params = [a.arg for a in run.args.posonlyargs + run.args.args]
    required = len(params) - len(run.args.defaults)
    if run.args.vararg is None and (params[: len(inputs)] != inputs or required > len(inputs)):
        return f"run({', '.join(params)}) does not take the inputs ({', '.join(inputs)})"
    return None


def _binds_run(tree: ast.Module) -> bool:
    """`run` bound at top level otherwise: assigned (run = torch.compile(f)) or imported."""
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else (
            [node.target] if isinstance(node, ast.AnnAssign) else [])
        if any(isinstance(t, ast.Name) and t.id == "run" for t in targets):
            return True
        if isinstance(node, ast.Import | ast.ImportFrom) and any(
                (a.asname or a.name) == "run" for a in node.names):
            return True
    return False


def needs_nvcc(solution_dir: Path) -> bool:
    """CUDA C++ in the solution: a .cu file, or CUDA sources given to cpp_extension."""
    folder = Path(solution_dir)
    return any(folder.glob("*.cu")) or any(
        "cuda_sources" in p.read_text(errors="replace") for p in folder.glob("*.py"))


def find_nvcc(env: Mapping[str, str]) -> str | None:
    """nvcc as torch.utils.cpp_extension would find it: under CUDA_HOME/CUDA_PATH, else on
    PATH."""
    for home in (env.get("CUDA_HOME"), env.get("CUDA_PATH")):
        if home and os.access(Path(home) / "bin" / "nvcc", os.X_OK):
            return str(Path(home) / "bin" / "nvcc")
    return shutil.which("nvcc", path=env.get("PATH", ""))


def smallest_workload(problem: Problem, max_elements: int | None = None) -> Workload | None:
    """The runnable workload with the fewest input elements (after shrinking, if asked)."""
    def size(w: Workload) -> int:
        w = shrink(problem, w, max_elements) if max_elements else w
        axes = resolve_axes(problem, w)
        return sum(math.prod(tensor_shape(s, axes) or ()) for s in problem.inputs.values())

    runnable = [w for w in problem.workloads if skip_reason(problem, w) is None]
    return min(runnable, key=size) if runnable else None


def build_solution(
    problem: Problem,
    solution_dir: Path,
    build_dir: Path,
    timing: Timing | None = None,
    *,
    launch: Launch | None = None,
    env: Mapping[str, str] | None = None,
) -> BuildResult:
    """Check, compile and smoke-test one candidate. `env` adds to the worker's environment
    (and is where the toolchain is looked for); `launch` replaces the fresh interpreter."""
    started = time.monotonic()
    timing = timing or Timing()

    def result(stage: str, reason: str = "", log: str = "", smoke=None) -> BuildResult:
        return BuildResult(ok=stage == "done", stage=stage, reason=reason, log_tail=log,
                           wall_s=round(time.monotonic() - started, 3), smoke=smoke)

    if (reason := check_files(problem, solution_dir)) is not None:
        return result("files", reason)
    if needs_nvcc(solution_dir):
        if find_nvcc(worker_env(build_dir, Path(build_dir), env)) is None:
            return result("toolchain", "the solution compiles CUDA C++ but no nvcc was found "
                          "(CUDA_HOME unset or without bin/nvcc, and none on PATH)")
        if torch.device(timing.device).type != "cuda":
            return result("toolchain", "the solution compiles CUDA C++, which needs a GPU; "
                          f"this evaluation runs on {timing.device}")
    workload = smallest_workload(problem, timing.max_elements)
    if workload is None:
        return result("smoke", "no workload of this problem can run here")
    evaluated = evaluate_problem(
        problem, solution_dir, replace(timing, warmup=1, reps=1, paired=False),
        workloads=[workload],
        launch=launch or functools.partial(launch_subprocess, env=env), build_dir=build_dir)
    smoke = evaluated.workloads[0]
    if evaluated.load_error:
        return result("load", evaluated.load_error.splitlines()[0][:500], evaluated.log_tail)
    if smoke.status != "ok":
        return result("smoke", f"{smoke.status}: {smoke.reason}", evaluated.log_tail, smoke)
    return result("done", log=evaluated.log_tail, smoke=smoke)


# ---------------------------------------------------------------------------- build cache

BUILD_CACHE_PARTS = tuple(BUILD_CACHES.values())  # what a worker compiles into its build folder
# a build cache past any of these is not kept (a compiler's is a few hundred small files)
KEPT_MAX_BYTES = 512 << 20
KEPT_MAX_FILE_BYTES = 128 << 20
KEPT_MAX_FILES = 20_000
KEPT_MAX_DEPTH = 16  # folders below a part
KEEP_DEADLINE_S = 60.0  # well within the runner's wait for the companion
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class _NotKept(Exception):
    pass


def keep_build_cache(step_out: Path, dest: Path, deadline_s: float = KEEP_DEADLINE_S) -> str:
    """Copy the compiler caches of a finished trial's build folder (step_out/build, step_out
    being the kernel step's own output folder, which the trusted side made) into dest/files,
    dest made here all at once (a half-copied store is never seen); dest/origin names the
    build folder they were compiled in (see restore_build_cache). Returns what happened:
    "kept N files", or why nothing was.

    The candidate wrote that folder and may have put links anywhere in it, at any level
    (a link named `build` or `compile-cache` included), or keep changing it while this
    runs: every folder is opened relative to its parent's descriptor without following a
    link, from a descriptor of step_out, and only regular files are read, each up to the
    size it had when opened. So nothing outside the build folder is ever read. A folder
    too deep, too many or too large files, or a walk past the deadline: nothing is kept."""
    dest = Path(dest)
    if dest.exists():
        return "already kept"
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        try:
            n = _copy_caches(Path(step_out), tmp / "files", time.monotonic() + deadline_s)
        except _NotKept as e:
            return f"not kept: {e}"
        (tmp / "origin").write_text(str((Path(step_out) / "build").absolute()))
        try:
            tmp.rename(dest)
        except OSError:  # another trial of the candidate kept its own first
            return "already kept"
        return f"kept {n} files"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _copy_caches(step_out: Path, out: Path, deadline: float) -> int:
    """Depth first, each folder read as it is listed (at most KEPT_MAX_DEPTH folders, two
    descriptors each, open at once); every entry, whatever it is, counts against
    KEPT_MAX_FILES and the deadline."""
    try:
        top = os.open(step_out, _DIR)
    except OSError:
        return 0
    frames: list[tuple[int, Path, Iterator[os.DirEntry]]] = []
    entries = count = total = 0
    try:
        for part in BUILD_CACHE_PARTS:
            try:
                fd = _open_folder(top, ("build", *Path(part).parts))
            except OSError:
                continue  # not there, or not a folder of its own
            frames.append((fd, Path(part), os.scandir(fd)))
            while frames:
                fd, rel, listing = frames[-1]
                e = next(listing, None)
                if e is None:
                    listing.close()
                    os.close(fd)
                    frames.pop()
                    continue
                entries += 1
                if entries > KEPT_MAX_FILES:
                    raise _NotKept(f"more than {KEPT_MAX_FILES} files and folders")
                if time.monotonic() > deadline:
                    raise _NotKept("its build folder took too long to read")
                if e.is_dir(follow_symlinks=False):
                    if len(frames) > KEPT_MAX_DEPTH:
                        raise _NotKept(f"folders more than {KEPT_MAX_DEPTH} deep")
                    try:
                        inner = os.open(e.name, _DIR, dir_fd=fd)
                    except OSError:
                        continue
                    frames.append((inner, rel / e.name, os.scandir(inner)))
                elif e.is_file(follow_symlinks=False):
                    size = _copy_file(fd, e.name, out / rel / e.name)
                    if size >= 0:
                        count, total = count + 1, total + size
                        if total > KEPT_MAX_BYTES:
                            raise _NotKept(f"more than {KEPT_MAX_BYTES >> 20} MiB")
    finally:
        for fd, _, listing in frames:
            listing.close()
            os.close(fd)
        os.close(top)
    return count


def _open_folder(dir_fd: int, parts: tuple[str, ...]) -> int:
    """The folder at parts under dir_fd, each step opened without following a link."""
    fd = os.dup(dir_fd)
    try:
        for name in parts:
            inner = os.open(name, _DIR, dir_fd=fd)
            os.close(fd)
            fd = inner
    except BaseException:
        os.close(fd)
        raise
    return fd


def _copy_file(dir_fd: int, name: str, out: Path) -> int:
    """A regular file (no link) under dir_fd copied to out, up to the size it had when
    opened; its size, or -1 where it was none to copy. Past KEPT_MAX_FILE_BYTES: raises."""
    try:
        fd = os.open(name, _FILE, dir_fd=dir_fd)
    except OSError:
        return -1
    with os.fdopen(fd, "rb") as src:
        st = os.fstat(src.fileno())
        if not stat.S_ISREG(st.st_mode):
            return -1
        if st.st_size > KEPT_MAX_FILE_BYTES:
            raise _NotKept(f"a file larger than {KEPT_MAX_FILE_BYTES >> 20} MiB")
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "wb") as dst:
            left = st.st_size
            while left > 0 and (chunk := src.read(min(left, 1 << 20))):
                dst.write(chunk)
                left -= len(chunk)
    return st.st_size


def restore_build_cache(kept: Path, build_dir: Path) -> tuple[int, str]:
    """The candidate's kept compiler caches copied into a new trial's build folder (its own
    copy: what this trial writes there goes with it): (the number of files, "" or why
    none was copied).

    Compiled artifacts name the folder they were built in: inductor pickles each kernel's
    autotuner with the absolute path of its best-config file, and a later trial would read
    there (outside its own folders: the guard stops it). So every occurrence of the folder
    it was kept from is rewritten to this build folder, byte for byte, which keeps pickles
    and binaries valid only where the two paths have the same length: they do for trials
    under one work root (work_root/<trial id>/out/kernel/build); where they do not, nothing
    is copied and the trial compiles afresh."""
    kept = Path(kept)
    if not (kept / "origin").is_file():
        return 0, ""
    old = (kept / "origin").read_text().encode()
    new = str(Path(build_dir).absolute()).encode()
    if len(old) != len(new):
        return 0, "not reused: kept from a build folder whose path has another length"
    n = 0
    for folder, _, names in os.walk(kept / "files"):
        for name in sorted(names):
            f = Path(folder) / name
            out = Path(build_dir) / f.relative_to(kept / "files")
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(f.read_bytes().replace(old, new))
            n += 1
    return n, ""


def prune_build_caches(store_root: Path, name: str, keep: int) -> None:
    """Of the candidates' stores under store_root, only the `keep` build caches (`name`)
    used most recently stay, so a long campaign's disk use is bounded."""
    found: list[tuple[float, Path]] = []
    try:
        stores = list(Path(store_root).iterdir())
    except OSError:
        return
    for d in stores:
        try:  # another trial may prune (or drop) one at the same time
            st = os.stat(d / name, follow_symlinks=False)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode):
            found.append((st.st_mtime, d / name))
    found.sort(reverse=True)
    for _, d in found[keep:]:
        shutil.rmtree(d, ignore_errors=True)
