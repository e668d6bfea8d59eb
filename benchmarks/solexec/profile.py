"""Nsight Compute's view of a candidate's kernels: a short summary for the proposer and the
report (achieved DRAM bandwidth and compute throughput as shares of peak, the limiting
unit). It never enters the score: the profiled process runs the candidate's code, so what
it leaves behind is a hint, not a measurement the campaign relies on.

Two sides:

- trusted: `ncu_binary` finds `ncu`; `parse_ncu_csv` reads what `ncu --csv --page raw`
  wrote and `summarise` reduces it to a few numbers (time-weighted over the kernels).
- the sandboxed step (`python -m benchmarks.solexec.profile INPUTS WORKSPACE OUT NCU
  [KERNEL_BUILD OWN_BUILD]`): copies the kernel step's compiler caches into its own
  (KERNEL_BUILD, that step's build folder, into OWN_BUILD, so nothing compiles twice),
  then runs `ncu` over `--call`,
  which loads solution.py, calls `run` once to warm up and once between
  cudaProfilerStart/Stop on the inputs the trusted side staged. It exits 0 when ncu or
  the call fails (a profile is optional), with ncu's exit status and the end of its
  output in OUT/status.json; only the runtime guard's exit status (113) is passed on.

Imported by the step inside the sandbox: stdlib, and torch in `--call` only.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

# time per kernel; DRAM and SM throughput as a share of their sustained peak (the
# "GPU Speed Of Light" section's two headline rows)
TIME = "gpu__time_duration.sum"
DRAM = "dram__throughput.avg.pct_of_peak_sustained_elapsed"
SM = "sm__throughput.avg.pct_of_peak_sustained_elapsed"
METRICS = (TIME, DRAM, SM)
BOUND_PCT = 60.0  # a unit this busy bounds the kernel; below it on both, latency does
CALL_TIMEOUT_S = 240.0
GUARD_EXIT = 113  # benchmarks.guard's exit status: a violation, passed on to the runner
NCU_ENV = "AUTOLAB_NCU"  # an ncu binary to use instead of the one on PATH
TAIL_CHARS = 2000
MAX_BYTES = 4 << 20  # the most of a profile's files the trusted side reads


# -- trusted side -----------------------------------------------------------------------


# where the CUDA toolkit's bin/ncu launcher looks for the installation it runs: beside
# the toolkit (<toolkit>/nsight-compute-VERSION/ncu) first, else /opt/nvidia/nsight-compute/VERSION
NCU_INSTALLS = ("/opt/nvidia/nsight-compute",)


def ncu_binary() -> Path | None:
    """The ncu executable (AUTOLAB_NCU as given, else PATH's), resolved; None where there is
    none. PATH's ncu in a toolkit's bin/ is only a launcher for an installation elsewhere,
    which the sandboxed step would not see: the installation the launcher would pick is
    returned instead (the newest beside the toolkit, else the newest under /opt/nvidia)."""
    chosen = os.environ.get(NCU_ENV)
    found = chosen or shutil.which("ncu")
    if not found:
        return None
    path = Path(found).resolve()
    if not (path.is_file() and os.access(path, os.X_OK)):
        return None
    if chosen or path.parent.name != "bin":
        return path
    for places in ([path.parent.parent.glob("nsight-compute*/ncu")],
                   [Path(d).glob("*/ncu") for d in NCU_INSTALLS]):
        installed = [p for found in places for p in found
                     if p.is_file() and os.access(p, os.X_OK)]
        if installed:
            return max(installed, key=lambda p: (_version(p.parent.name), str(p))).resolve()
    return path


def _version(name: str) -> tuple[int, ...]:
    """2025.3.1 from "nsight-compute-2025.3.1" or "2025.3.1", as numbers for ordering."""
    digits = "".join(c if c.isdigit() else " " for c in name).split()
    return tuple(int(d) for d in digits)


def ncu_root(ncu: Path) -> Path:
    """The folder the step must see for ncu to run: its installation (ncu is a launcher
    script beside its target/ and sections/ folders, e.g. /opt/nvidia/nsight-compute/V)."""
    return ncu.parent.parent if ncu.parent.name == "bin" else ncu.parent


def _number(text: str) -> float | None:
    """A finite number, or None (ncu's "n/a", a NaN or infinity written by anyone)."""
    try:
        value = float(text.replace(",", ""))
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def parse_ncu_csv(text: str) -> list[dict[str, float | str]]:
    """One row per profiled kernel from `ncu --csv --page raw`: its name and each metric's
    value. Lines before the header (ncu's own messages) and the units row are skipped;
    a kernel whose value for a metric does not parse lacks that key."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if '"Kernel Name"' in line), None)
    if start is None:
        return []
    rows = list(csv.reader(io.StringIO("\n".join(lines[start:]))))
    header, out = rows[0], []
    for row in rows[1:]:
        if len(row) != len(header):
            continue
        record = dict(zip(header, row, strict=True))
        if not record.get("ID", "").strip():  # the units row
            continue
        kernel: dict[str, float | str] = {"kernel": record.get("Kernel Name", "")}
        for metric in METRICS:
            if metric in record and (value := _number(record[metric])) is not None:
                kernel[metric] = value
        out.append(kernel)
    return out


def summarise(kernels: list[dict[str, float | str]], time_unit: str = "ns") -> dict | None:
    """kernels, GPU time (µs), DRAM and SM throughput (% of peak, weighted by each
    kernel's time) and the limiting unit: memory or compute where that unit is at least
    BOUND_PCT busy and the busier one, latency otherwise. None without timed kernels."""
    timed = [k for k in kernels if all(m in k for m in METRICS)]
    total = sum(float(k[TIME]) for k in timed)
    if not timed or total <= 0:
        return None
    dram = sum(float(k[DRAM]) * float(k[TIME]) for k in timed) / total
    sm = sum(float(k[SM]) * float(k[TIME]) for k in timed) / total
    limiter = "latency"
    if max(dram, sm) >= BOUND_PCT:
        limiter = "memory" if dram >= sm else "compute"
    scale = {"nsecond": 1e-3, "ns": 1e-3, "usecond": 1.0, "us": 1.0, "msecond": 1e3, "ms": 1e3,
             "second": 1e6, "s": 1e6}.get(time_unit, 1e-3)
    longest = max(timed, key=lambda k: float(k[TIME]))
    return {"ncu_kernels": len(timed), "ncu_gpu_time_us": round(total * scale, 3),
            "ncu_dram_pct": round(dram, 2), "ncu_sm_pct": round(sm, 2),
            "ncu_limiter": limiter, "ncu_longest_kernel": str(longest["kernel"])[:120]}


def time_unit(text: str) -> str:
    """The unit of gpu__time_duration in ncu's units row (ns unless it says otherwise)."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if '"Kernel Name"' in line), None)
    if start is None or start + 1 >= len(lines):
        return "ns"
    rows = list(csv.reader(io.StringIO("\n".join(lines[start:start + 2]))))
    if len(rows) < 2:
        return "ns"
    return dict(zip(rows[0], rows[1], strict=False)).get(TIME, "ns") or "ns"


def _read_regular(path: Path) -> str | None:
    """A plain file's text (not through a link, at most MAX_BYTES), or None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_BYTES:
            return None
        return f.read(MAX_BYTES).decode(errors="replace")


def read_profile(out: Path) -> dict[str, float | int | str]:
    """What the profile step left in `out`, as trial evidence: the summary, or why there
    is none (ncu_status). The step ran the candidate's code, so anything may be there:
    whatever does not read as a profile is a reason, never an error of the trusted side."""
    try:
        status = json.loads(_read_regular(out / "status.json") or "{}")
        status = status if isinstance(status, dict) else {}
        text = _read_regular(out / "ncu.csv") or ""
        summary = summarise(parse_ncu_csv(text), time_unit(text)) if text else None
    except (ValueError, TypeError, KeyError, RecursionError, csv.Error) as e:
        return {"ncu_status": f"unavailable: unreadable profile ({type(e).__name__})"}
    if summary is not None:
        return {**summary, "ncu_status": "ok"}
    why = str(status.get("reason") or "no kernels profiled")
    return {"ncu_status": f"unavailable: {why}"[:300]}


# -- the sandboxed step -----------------------------------------------------------------


def ncu_argv(ncu: str, python: str, inputs: str, workspace: str, log_file: str) -> list[str]:
    # clocks left as they are: a profile killed at its time limit must not leave them locked
    return [ncu, "--csv", "--page", "raw", "--metrics", ",".join(METRICS),
            "--profile-from-start", "off", "--target-processes", "all",
            "--clock-control", "none",
            "--log-file", log_file, python, "-m", "benchmarks.solexec.profile", "--call",
            inputs, workspace]


WARM_MAX_BYTES = 1 << 30  # a kernel step's compiler caches larger than this are not copied
WARM_MAX_FILES = 20_000  # ... nor caches of more files and folders than this
# the compiler caches this step's environment names, each under this step's build folder as
# the kernel step's is under its own (launch.BUILD_CACHES)
WARM_VARS = ("TRITON_CACHE_DIR", "TORCHINDUCTOR_CACHE_DIR", "TORCH_EXTENSIONS_DIR")


def warm_caches(kernel_build: str, own_build: str) -> str:
    """The kernel step's compiler caches (the same candidate's, in the same trial) copied
    into this step's, so the call under ncu loads the kernels compiled there instead of
    compiling them again: "" or why not. Compiled artifacts name the folder they were built
    in (inductor pickles each autotuner with the absolute path of its best-config file, and
    writes there again): every occurrence of the kernel step's build folder is rewritten to
    this step's, byte for byte, which keeps pickles and binaries valid only where the two
    paths have the same length (the trial gives this step's such a path); where they do
    not, past WARM_MAX_BYTES or WARM_MAX_FILES, or where anything fails, nothing is left
    copied and the call compiles afresh. Only cache folders that do not exist yet, inside
    own_build, are filled, and only those are removed again. Never raises: the profile
    goes on cold."""
    made: list[Path] = []  # the cache folders this call created: all it ever removes
    try:
        old, new = os.fsencode(str(Path(kernel_build))), os.fsencode(str(Path(own_build)))
        if len(old) != len(new):
            return "not copied: the two build folders' paths differ in length"
        pairs = []
        for var in WARM_VARS:
            dst = os.environ.get(var)
            if not dst or ".." in Path(dst).parts or Path(dst) == Path(own_build) or (
                    not Path(dst).is_relative_to(own_build)) or os.path.lexists(dst):
                continue  # not a fresh folder of this step's own
            src = Path(kernel_build) / Path(dst).relative_to(own_build)
            if src.is_dir() and not src.is_symlink():
                pairs.append((src, Path(dst)))
        files, entries, total = [], 0, 0
        for src, dst in pairs:
            for f in src.rglob("*"):
                entries += 1
                if entries > WARM_MAX_FILES:
                    return f"not copied: more than {WARM_MAX_FILES} entries"
                if f.is_symlink() or not f.is_file():
                    continue
                total += f.lstat().st_size
                if total > WARM_MAX_BYTES:
                    return f"not copied: more than {WARM_MAX_BYTES} bytes"
                files.append((f, dst / f.relative_to(src)))
        for _, dst in pairs:
            dst.mkdir(parents=True)
            made.append(dst)
        for f, out in files:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(f.read_bytes().replace(old, new))
            shutil.copymode(f, out)
    except Exception as e:  # noqa: BLE001 - the candidate's files: whatever they do, cold
        for dst in made:
            shutil.rmtree(dst, ignore_errors=True)
        return f"not copied: {type(e).__name__}: {e}"[:300]
    return ""


def wrap(inputs: str, workspace: str, out: str, ncu: str, kernel_build: str = "",
         own_build: str = "") -> int:
    """Run ncu over the call; a failure is recorded, not raised (the guard's is passed on).
    Inputs with a `skip` file: nothing is run, the reason is recorded."""
    if (skip := Path(inputs) / "skip").is_file():
        Path(out, "status.json").write_text(json.dumps({"rc": None, "reason": "not profiled: "
                                                        + skip.read_text()[:200]}))
        return 0
    warm = warm_caches(kernel_build, own_build) if kernel_build and own_build else ""
    argv = ncu_argv(ncu, sys.executable, inputs, workspace, str(Path(out) / "ncu.csv"))
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=CALL_TIMEOUT_S)
        rc, tail = done.returncode, (done.stdout + done.stderr)[-TAIL_CHARS:]
    except subprocess.TimeoutExpired:
        rc, tail = None, f"ncu did not finish within {CALL_TIMEOUT_S:g} s"
    except OSError as e:
        rc, tail = None, f"ncu did not start: {e}"
    reason = "" if rc == 0 else (tail.strip().splitlines() or [f"exit {rc}"])[-1]
    Path(out, "status.json").write_text(json.dumps({"rc": rc, "reason": reason[:300],
                                                    "tail": tail, "warm": warm}))
    if rc == GUARD_EXIT:  # the guard's reason, as the call wrote it, into the step's log
        sys.stderr.write(tail[-TAIL_CHARS:])
        return GUARD_EXIT
    return 0


def call(inputs: str, workspace: str) -> None:
    """Under ncu: the staged inputs, solution.py's `run` once to warm up (compiling, first
    launches), then once profiled."""
    import torch

    from benchmarks.solexec import worker

    staged = torch.load(Path(inputs) / "inputs.pt", weights_only=True)
    device = str(staged["device"])
    args = [v.to(device) if isinstance(v, torch.Tensor) else v for v in staged["args"]]
    sync = worker._prepare(device, 1)
    worker.guard.install()
    run = worker._load(Path(workspace))
    cuda = torch.device(device).type == "cuda"
    with torch.no_grad():
        run(*args)
        sync()
        if cuda:
            torch.cuda.profiler.start()
        run(*args)
        sync()
        if cuda:
            torch.cuda.profiler.stop()


def main(argv: list[str]) -> int:
    if argv[:1] == ["--call"]:
        call(*argv[1:3])
        return 0
    return wrap(*argv[:6])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
