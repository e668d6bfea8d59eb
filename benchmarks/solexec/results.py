"""What evaluating a SOL-ExecBench candidate produces: per workload, per problem, per build.

Plain records, written only by trusted code (evaluate.py, build.py) and safe to store or
send across processes. `workload_results` turns a candidate's and a baseline's evaluations
into the inputs of the anchored score (scoring.py).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, Field, computed_field

from benchmarks.solexec.scoring import WorkloadResult

Status = Literal["ok", "incorrect", "failed", "timeout", "skipped"]
"""ok: every call correct and every check passed; incorrect: an output outside the
tolerance; failed: the candidate raised, crashed, refused an output or broke a check;
timeout: a call (or loading) took longer than allowed and the worker was killed;
skipped: the workload cannot run here (a trusted-side reason, not the candidate's fault)."""


class WorkloadEval(BaseModel):
    uuid: str
    axes: dict[str, int]
    status: Status
    reason: str = ""
    hidden: bool = Field(False, description="a workload the candidate was not shown")
    time_ns: float | None = Field(None, description="median round trip minus the overhead, "
                                  "floored at the empty calls' spread, per call of the "
                                  "trip: what scores")
    median_ns: float | None = Field(None, description="median of the timed round trips, raw")
    calls_per_trip: int = Field(1, description="calls each timed round trip carried")
    times_ns: list[int] = Field(default_factory=list)
    overhead_ns: float | None = Field(None, description="median empty-call round trip: of "
                                      "the early empties, or of the late ones if lower")
    overhead_times_ns: list[int] = Field(default_factory=list,
                                         description="empty calls before the solution loaded")
    late_overhead_times_ns: list[int] = Field(default_factory=list,
                                              description="empty calls between timed calls")
    max_abs_error: float | None = None
    max_rel_error: float | None = None
    calls_checked: int = 0
    reference_ns: float | None = Field(None, description="in turns (Timing.paired): the "
                                       "reference's time, taken as time_ns is, its calls "
                                       "alternating with these")
    reference_calls: int = Field(0, description="the reference's timed calls in turns")
    reference_note: str = Field("", description="in turns: why the reference has no time")


class ProblemEval(BaseModel):
    problem: str
    device: str
    workloads: list[WorkloadEval]
    load_error: str = Field("", description="why the solution did not load, if it did not")
    log_tail: str = Field("", description="the end of the worker's stdout and stderr")
    wall_s: float = 0.0
    phase_s: dict[str, float] = Field(
        default_factory=dict, description="where the evaluation's time went: starting "
        "workers and calibrating (start), loading the solution (load), drawing inputs and "
        "the reference's outputs (draw), the pause before a call (pause), staging and "
        "flushing (stage), warm-up and timed round trips (warmup, call), checking the "
        "answers (check), late empty calls with their pauses (empty), the reference's "
        "worker and calls in turns (turns)")
    awake: str = Field("", description="the poller that kept the worker's CPU awake "
                       "(evaluate.awake_on): empty where none was asked")
    paired: str = Field("", description="whether the reference was timed in turns with "
                        "the candidate (Timing.paired), and until what if not throughout")

    @computed_field
    @property
    def counts(self) -> dict[str, int]:
        return dict(Counter(w.status for w in self.workloads))

    @computed_field
    @property
    def passed(self) -> bool:
        """Every workload that could run is ok, and at least one ran."""
        ran = [w for w in self.workloads if w.status != "skipped"]
        return bool(ran) and all(w.status == "ok" for w in ran)

    def by_uuid(self) -> dict[str, WorkloadEval]:
        return {w.uuid: w for w in self.workloads}


class BuildResult(BaseModel):
    ok: bool
    stage: Literal["files", "toolchain", "load", "smoke", "done"]
    reason: str = ""
    log_tail: str = ""
    wall_s: float = 0.0
    smoke: WorkloadEval | None = None


def workload_results(
    candidate: ProblemEval, baseline: ProblemEval, t_sol_ns: Mapping[str, float]
) -> list[WorkloadResult]:
    """One scoring record per workload the candidate was evaluated on: T_k from the
    candidate, T_b from the baseline (the reference run through the same path), T_SOL by
    uuid, all in ns. A workload that is not ok, or lacks a time, scores as failed."""
    base = baseline.by_uuid()
    out = []
    for w in candidate.workloads:
        if w.status == "skipped":
            continue
        b = base.get(w.uuid)
        out.append(WorkloadResult(
            problem=candidate.problem, workload=w.uuid, passed=w.status == "ok",
            t_k=w.time_ns, t_b=b.time_ns if b is not None and b.status == "ok" else None,
            t_sol=t_sol_ns.get(w.uuid),
        ))  # fmt: skip
    return out
