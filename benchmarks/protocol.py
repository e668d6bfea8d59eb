"""The contract between a benchmark and the research loop.

A benchmark says what may change (editable files, seed solutions), what judges
(a trusted harness run in the sandbox, a trusted scorer run in the parent), and how
much a trial may spend. The search policy never looks inside a benchmark beyond this
protocol, and a benchmark imports nothing of the loop but this module.
"""

from __future__ import annotations

import hashlib
import os
import socket
import stat
import subprocess
import threading
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

Split = Literal["val", "audit", "test"]
"""val: selection; audit: fresh held-back windows of the val data for the replication
audit; test: the held-out split, for the final confirmation only."""


class Direction(StrEnum):
    MINIMIZE = "minimize"
    MAXIMIZE = "maximize"


class Constraint(BaseModel):
    """A bound that the mean of another metric of the same trials must keep: `val_loss <=
    3.28` means a candidate counts only if its mean val_loss over seeds is below 3.28 at
    p < alpha (a one-sided one-sample t-test of its per-seed values against the target).
    Values without any spread across seeds are judged exactly, within the bound or not, so
    `reached >= 1` on a 0/1 metric holds only when every run has it. The metric must be
    one the benchmark's scorer reports in every trial."""

    model_config = ConfigDict(frozen=True)
    metric: str
    op: Literal["<=", ">="]
    target: float = Field(allow_inf_nan=False)
    alpha: float | None = Field(None, gt=0, lt=0.5, description="the level of its test; "
                                "None: the campaign's evaluation.alpha")

    def holds_for(self, value: float) -> bool:
        """Whether one value is within the bound."""
        return value <= self.target if self.op == "<=" else value >= self.target

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.target:g}"


class MetricSpec(BaseModel):
    """The metric a benchmark is judged by, and the constraints a gain must also meet."""

    model_config = ConfigDict(frozen=True)
    name: str
    direction: Direction
    unit: str = ""
    constraints: tuple[Constraint, ...] = ()

    def better(self, a: float, b: float) -> bool:
        """True when value a is strictly better than value b."""
        return a < b if self.direction is Direction.MINIMIZE else a > b


class Budget(BaseModel):
    """What one trial may spend: a deterministic work budget plus a wall-clock safety net."""

    model_config = ConfigDict(frozen=True)
    unit: str = Field(description="what `amount` counts, e.g. 'train_tokens' or 'calls'")
    amount: int = Field(gt=0)
    wall_clock_s: float = Field(gt=0, description="hard cap enforced by the sandbox")
    memory_mb: int = Field(gt=0, description="hard cap on the trial's resident memory")


class Knob(BaseModel):
    """A numeric or categorical setting written as `NAME = value` in an editable file."""

    model_config = ConfigDict(frozen=True)
    name: str
    file: str
    kind: Literal["int", "float", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[str | int | float | bool, ...] = ()
    weight: float = Field(1.0, gt=0, description="relative odds that tuning moves this "
                          "knob: the benchmark's prior on which settings matter most")


class CodeEdit(BaseModel):
    """A named, parametrised change to an editable file, applied by a pure function.

    `apply(source, **params)` returns the new source or raises EditNotApplicable.
    """

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)
    name: str
    file: str
    description: str
    params: dict[str, tuple[str | int | float | bool, ...]] = Field(default_factory=dict)
    defaults: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="the parameters tried first (a sound first try); "
        "the others in random order after them")
    weight: float = Field(1.0, gt=0, description="relative odds that the offline proposer "
                          "draws this edit before the other fresh ones")
    apply: Callable[..., str] = Field(exclude=True)


class EditNotApplicable(ValueError):
    """The edit's anchor is not in this source (already applied, or code diverged)."""


class SearchSpace(BaseModel):
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)
    knobs: tuple[Knob, ...] = ()
    edits: tuple[CodeEdit, ...] = ()


class SandboxStep(BaseModel):
    """One untrusted command of a trial, run in the sandbox with the workspace as its
    read-only working directory. It reads its own staged inputs (`ctx.inputs(name)`)
    and the outputs of the earlier steps named in `reads`, and writes only
    `ctx.outputs(name)`. Nothing else of the trial is visible to it."""

    model_config = ConfigDict(frozen=True)
    name: str
    argv: tuple[str, ...]
    timeout_s: float
    reads: tuple[str, ...] = Field(default=(), description="earlier steps whose outputs it reads")
    allow_subprocess: bool = Field(False, description="may start processes (e.g. compilers)")
    channel: bool = Field(False, description="gets a socket to the benchmark's companion, a "
                          "trusted function run in the parent while the step runs")
    env: dict[str, str] = Field(default_factory=dict, description="extra environment "
                                "(never secrets: the sandbox refuses secret-looking values)")
    devices: tuple[str, ...] = Field(default=(), description="device nodes it may open")
    host_read: tuple[str, ...] = Field(default=(), description="host paths shown read-only "
                                       "(e.g. /sys for a GPU driver)")
    host_write: tuple[str, ...] = Field(default=(), description="further writable host paths "
                                        "(e.g. the candidate's own kernel cache)")
    optional: bool = Field(False, description="a step whose failure (a crash, a timeout, "
                           "memory) is noted in the trial's log, not the trial's: it runs "
                           "only while wall-clock budget is left; a guard or integrity "
                           "fault still fails the trial")
    private_shm: bool = Field(False, description="a /dev/shm of its own, emptied with the "
                              "trial, into which the companion may place shared-memory files "
                              "(StepLink.shm); without it the step's /dev/shm is empty")


class TrialContext(BaseModel):
    """Everything a benchmark needs to lay out and score one trial.

    `secrets` is trusted memory: what staging chose and the scorer needs (targets,
    probe positions) stays here and never touches a path a step can read.
    """

    model_config = ConfigDict(frozen=True)
    workspace: Path = Field(description="read-only dir holding the candidate's files")
    inputs_dir: Path = Field(description="per-step inputs staged by trusted code")
    outputs_dir: Path = Field(description="per-step outputs, each written by its step only")
    prepared_dir: Path = Field(description="the benchmark's prepared data (trusted side only)")
    candidate_id: str = ""
    seed: int
    split: Split
    budget: Budget
    threads: int = 1
    python: str = Field(description="interpreter the sandboxed steps run with")
    gpu: int | None = Field(None, description="the GPU a GPU benchmark's steps may use")
    cache_dir: Path | None = Field(None, description="trusted store kept for this candidate "
                                   "across its trials (e.g. compiled kernels); no other "
                                   "candidate's trials see it")
    secrets: dict = Field(default_factory=dict, repr=False)

    def inputs(self, step: str) -> Path:
        return self.inputs_dir / step

    def outputs(self, step: str) -> Path:
        return self.outputs_dir / step


class Score(BaseModel):
    """What the trusted scorer measured from the candidate's outputs."""

    metrics: dict[str, float]
    budget_used: float = Field(description="amount of Budget.unit the trial consumed")
    evidence: dict[str, str | float | int | bool] = Field(default_factory=dict)


class TrialFailure(Exception):
    """Raised by trusted benchmark code when a trial's outputs cannot be scored.

    kind is one of: crash, timeout, oom, nan, budget, integrity, output.
    """

    def __init__(self, kind: str, reason: str):
        super().__init__(f"{kind}: {reason}")
        self.kind = kind
        self.reason = reason


class CheckResult(BaseModel):
    name: str
    passed: bool
    evidence: str = ""
    level: int = Field(1, description="audit level: 0 static, 1 runtime, 2 replication, 3 test")


AuditCheck = Callable[[TrialContext, Score], CheckResult]


class StepLink:
    """The trusted end of a step's channel, given to the benchmark's companion.

    A benchmark that declares `channel=True` on a step implements
    `companion(ctx, step) -> Callable[[StepLink], None] | None`; the runner calls the
    returned function in a thread of the trusted parent for as long as the step runs.
    It talks to the step over `conn` (the step's end is inherited as the file descriptor
    named by AUTOLAB_CHANNEL_FD) and may `halt` the step: its processes are killed and the
    trial fails with that kind and reason. `finished` is set once the step's processes are
    gone; `started` is when the step was launched (time.monotonic). `shm` is the host
    folder the step sees as /dev/shm when it asked for a private one.
    """

    def __init__(self, conn: socket.socket, kill: Callable[[], None], shm: Path | None = None):
        self.conn = conn
        self.shm = shm
        self.started = 0.0
        self.ended = 0.0
        self.finished = threading.Event()
        self.halted: tuple[str, str] | None = None
        self._kill = kill
        self._lock = threading.Lock()

    def halt(self, kind: str, reason: str) -> None:
        with self._lock:
            if self.halted is None and not self.finished.is_set():
                self.halted = (kind, reason)
                self._kill()


class TrialRunner(Protocol):
    """Runs one trial of a benchmark as the campaign runs its trials (the runner, the
    sandbox and the isolation the campaign uses); given to a benchmark by the loop, which
    it cannot import. The returned trial has at least `status`, `failure` and `reason`."""

    isolation: str

    def __call__(self, bench: Any, candidate_id: str, files: dict[str, str], seed: int,
                 split: str, budget: Budget, *, work_root: Path, prepared_dir: Path,
                 cache_root: Path | None = None, gpu: int | None = None) -> Any:
        ...

    def clear(self, work_root: Path) -> None:
        """Kill what runs of trials under work_root left running (a killed process's)."""
        ...


@runtime_checkable
class Benchmark(Protocol):
    """Implemented once per benchmark folder under benchmarks/.

    Optional: `trial_runner`, an attribute of a benchmark whose `prepare` runs trials of
    its own (solexec times its baseline that way): whoever prepares it (the lab, `autolab
    prepare`, a family's prewarm) first sets it to a TrialRunner that runs them as the
    campaign's trials run."""

    name: str
    metric: MetricSpec
    editable_files: tuple[str, ...]
    budget: Budget
    hardware: Literal["cpu", "gpu"]
    distributions: tuple[str, ...]  # what sandboxed steps import (their dependencies follow)
    allowed_imports: frozenset[str]  # top-level modules candidate code may import

    def seed_files(self, variant: str = "default") -> dict[str, str]:
        """Editable files of a seed solution, path -> text."""
        ...

    def harness_files(self) -> list[Path]:
        """Trusted files whose hashes must not change across a trial."""
        ...

    def sandbox_files(self) -> list[Path]:
        """Project files the sandboxed steps import (the harness); the rest stays hidden."""
        ...

    def prepare(self, data_dir: Path | None, prepared_dir: Path) -> dict[str, str]:
        """Build splits under prepared_dir (idempotent); return a short description."""
        ...

    def data_version(self, prepared_dir: Path) -> str:
        """Content hash of the prepared data: part of every trial's key."""
        ...

    def stage(self, ctx: TrialContext, step: str) -> None:
        """Trusted, just before `step` runs: write its inputs into ctx.inputs(step)."""
        ...

    def steps(self, ctx: TrialContext) -> list[SandboxStep]:
        """Untrusted commands of one trial, in order."""
        ...

    def score(self, ctx: TrialContext) -> Score:
        """Trusted: compute the metric from the steps' outputs and ctx.secrets."""
        ...

    def audit_checks(self) -> list[AuditCheck]:
        """The benchmark's own integrity checks, run after scoring."""
        ...

    def search_space(self) -> SearchSpace:
        """Knobs and code edits the offline proposer may use."""
        ...

    def neutral_variant(self, files: dict[str, str], index: int) -> dict[str, str]:
        """A copy of a solution that changes its randomness but not its expected metric
        (for A/A tests of the evaluation): variant i differs from variant j."""
        ...


@runtime_checkable
class BenchmarkFamily(Protocol):
    """Many related problems searched in one campaign. Each member is a Benchmark of its
    own (its seed, its lineage of candidates, its champion and its score); the family says
    which members are related, so that what helped one is tried first on the others, and
    how the members' scores make the suite's headline."""

    name: str
    metric: MetricSpec  # every member's

    def members(self) -> tuple[str, ...]:
        """The members' names, stable across runs (a campaign may take a subset)."""
        ...

    def member(self, name: str) -> Benchmark:
        """The named member; KeyError for a name not in members()."""
        ...

    def relations(self, name: str) -> tuple[str, ...]:
        """Keys of a member (a category, an operator signature, a shape class): members
        sharing a key are related."""
        ...

    def aggregate(self, values: dict[str, float]) -> float:
        """The suite's headline from one value per member (e.g. the mean score)."""
        ...


_GPU_TABLE: dict[int, tuple[str, int]] = {}  # kept once read; a failed read is tried again


def gpu_identities() -> dict[int, tuple[str, int]]:
    """Each GPU's (UUID, device-node minor number) by nvidia-smi index; empty without a
    driver. The minor numbers come from /proc/driver/nvidia, matched by UUID, because an
    index need not be its node's number."""
    if _GPU_TABLE:
        return dict(_GPU_TABLE)
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=index,uuid", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return {}
    if done.returncode != 0:
        return {}
    out = done.stdout
    minors: dict[str, int] = {}
    for info in Path("/proc/driver/nvidia/gpus").glob("*/information"):
        fields = dict(line.split(":", 1) for line in info.read_text().splitlines() if ":" in line)
        if "GPU UUID" in fields and "Device Minor" in fields:
            minors[fields["GPU UUID"].strip()] = int(fields["Device Minor"])
    table = {}
    for line in out.splitlines():
        index, _, uuid = (x.strip() for x in line.partition(","))
        if index.isdigit() and uuid:
            table[int(index)] = (uuid, minors.get(uuid, int(index)))
    _GPU_TABLE.update(table)
    return table


def cuda_visible(indices: list[int] | tuple[int, ...]) -> str:
    """CUDA_VISIBLE_DEVICES for a step on these GPUs: their UUIDs, which name the same
    GPUs however CUDA numbers the devices a sandbox leaves it (a step sees only its own
    nodes); plain indices where nvidia-smi gives no UUIDs."""
    table = gpu_identities()
    return ",".join(table[i][0] if i in table else str(i) for i in indices)


def gpu_device_nodes(index: int) -> tuple[str, ...]:
    """The device nodes a step on GPU `index` needs: its own /dev/nvidiaN and the shared
    control nodes; the other GPUs' nodes stay hidden."""
    minor = gpu_identities().get(index, ("", index))[1]
    nodes = [f"/dev/nvidia{minor}", "/dev/nvidiactl", "/dev/nvidia-uvm",
             "/dev/nvidia-uvm-tools", "/dev/nvidia-modeset"]
    return tuple(n for n in nodes if os.path.exists(n))


def read_output(path: Path, max_bytes: int) -> bytes:
    """A step's output file, read by trusted code: a regular file, not a link, a FIFO or a
    device the candidate planted to make the reader block or read elsewhere, and no larger
    than max_bytes (checked before reading). Raises TrialFailure('output') otherwise."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as err:
        raise TrialFailure("output", f"cannot open {Path(path).name}: {err.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise TrialFailure("output", f"{Path(path).name} is not a regular file")
        if st.st_size > max_bytes:
            raise TrialFailure("output", f"{Path(path).name} has {st.st_size} bytes, more than "
                               f"the {max_bytes} expected")
        chunks, left = [], st.st_size
        while left > 0 and (chunk := os.read(fd, min(left, 1 << 24))):
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def hash_files(paths: list[Path]) -> str:
    """Stable content hash of a list of files (names and bytes)."""
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(str(p.name).encode())
        h.update(b"\0")
        h.update(p.read_bytes())
        h.update(b"\0")
    return h.hexdigest()
