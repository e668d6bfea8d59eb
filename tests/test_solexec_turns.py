"""The reference timed in turns with the candidate (evaluate.Timing.paired): the two
workers' blocks of calls alternate round by round, each stopped while the other runs;
turns that cannot go on are said; the score scales T_b by how the reference ran in turns
against its table's eager time. Tiny CPU shapes from the fixture problems."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import test_solexec_eval as _evaluation

import benchmarks.solexec.evaluate as evaluate_module
from benchmarks.solexec.evaluate import Timing, evaluate_problem
from benchmarks.solexec.launch import launch_subprocess
from benchmarks.solexec.link import WorkerLink

TURNS = Timing(warmup=1, reps=4, call_timeout_s=5.0, warmup_timeout_s=5.0,
               load_timeout_s=30.0, flush_bytes=1 << 16, max_elements=256, settle_s=0.01,
               idle_cpu_floor_ms=5.0, stage_gap_s=0.05, paired=True)
MATMUL = """
    import torch

    def run(A, B):
        return torch.matmul(A, B.T)
"""


# the evaluation tests' fixture problems and forkserver, and how they write a solution
problems, forks = _evaluation.problems, _evaluation.forks


def _solution(folder: Path, source: str = MATMUL) -> Path:
    return _evaluation.write_solution(folder, source)


def _recorded(launch, pids: dict[str, int], name: str):
    """launch, keeping the pid of the worker it starts as pids[name]."""
    def start(build_dir, **kw):
        worker = launch(build_dir, **kw)
        pids[name] = worker.pid
        return worker
    return start


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def test_each_round_goes_with_one_of_the_reference_s_while_the_candidate_is_stopped(
        problems, forks, tmp_path, monkeypatch):
    problem = problems["L1/001_small_matmul"]
    pids: dict[str, int] = {}
    # (whose worker, op, the other worker's state)
    seen: list[tuple[str, str, str]] = []

    candidate_launch = _recorded(forks.launch, pids, "candidate")
    reference_launch = _recorded(launch_subprocess, pids, "reference")
    real = WorkerLink.timed

    def timed(self, op, keys, watch_idle, timeout_s=None):
        whose = "reference" if self.worker.pid == pids.get("reference") else "candidate"
        other = pids.get("candidate" if whose == "reference" else "reference")
        seen.append((whose, op, _state(other) if other else "?"))
        return real(self, op, keys, watch_idle, timeout_s)

    monkeypatch.setattr(WorkerLink, "timed", timed)
    folder = _solution(tmp_path / "sol")
    result = evaluate_problem(problem, folder, TURNS, launch=candidate_launch,
                              build_dir=tmp_path / "build", seed=7,
                              reference_launch=reference_launch)
    assert result.passed, result
    assert result.paired == "in turns with the reference"
    n = len(problem.workloads)
    for w in result.workloads:
        assert w.reference_ns and w.reference_ns > 0 and w.reference_calls == TURNS.reps
        assert w.reference_note == ""
    calls = [(whose, state) for whose, op, state in seen if op == "call"]
    assert sum(whose == "reference" for whose, _ in calls) >= n * (TURNS.warmup + TURNS.reps)
    # from its first call on (its calibration came before the candidate's code was
    # loaded), everything the reference's worker was timed at ran with the candidate stopped
    first = next(i for i, (whose, op, _) in enumerate(seen)
                 if whose == "reference" and op == "call")
    assert all(s in ("T", "t") for whose, _, s in seen[first:] if whose == "reference")
    # ... and the candidate's with the reference's stopped in turn
    assert all(s in ("T", "t") for whose, _, s in seen[first:] if whose == "candidate")
    # after the warm-up, the two took turns by rounds: each block an untimed call, then
    # one call of every workload; in each round either block first
    order = "".join(whose[0].upper() for whose, _ in calls[2 * n * TURNS.warmup:])
    blocks = [order[i:i + n + 1] for i in range(0, len(order), n + 1)]
    assert all(len(set(b)) == 1 for b in blocks) and len(blocks) == 2 * TURNS.reps, order
    assert {b[0] + c[0] for b, c in zip(blocks[::2], blocks[1::2], strict=True)} == {
        "RC", "CR"}, order
    assert result.phase_s.get("turns", 0) > 0


def test_without_turns_nothing_of_the_reference_runs(problems, forks, tmp_path):
    problem = problems["L1/001_small_matmul"]
    started = []

    def reference_launch(build_dir, **kw):
        started.append(build_dir)
        return launch_subprocess(build_dir, **kw)

    result = evaluate_problem(problem, _solution(tmp_path / "sol"), replace(TURNS, paired=False),
                              launch=forks.launch, build_dir=tmp_path / "build", seed=7,
                              reference_launch=reference_launch)
    assert result.passed and result.paired == "" and not started
    assert all(w.reference_ns is None for w in result.workloads)


def test_a_device_busy_at_the_flush_before_the_reference_s_call_voids_it(
        problems, forks, tmp_path, monkeypatch):
    """On a GPU the stopped candidate's kernels would still run and hold up the flush just
    before the reference's clock: a call whose clock starts later than the reference's gap
    allows is made again on a fresh draw, and a reference never timed so leaves the
    workload without its time in turns, which fails the trial (the device is made to look
    busy here by allowing no gap at all)."""
    from benchmarks.protocol import TrialFailure
    from benchmarks.solexec.benchmark import score_trial

    # on a GPU the reference's gap is turns_gap_s; on a CPU, whose work stops with its
    # worker, the candidate's
    gpu = replace(TURNS, device="cuda")
    assert evaluate_module._reference_gap_s(gpu) == TURNS.turns_gap_s < TURNS.stage_gap_s
    assert evaluate_module._reference_gap_s(TURNS) == TURNS.stage_gap_s
    problem = problems["L1/001_small_matmul"]
    monkeypatch.setattr(evaluate_module, "_reference_gap_s", lambda timing: -1.0)
    result = evaluate_problem(problem, _solution(tmp_path / "sol"), TURNS, launch=forks.launch,
                              build_dir=tmp_path / "build", seed=7)
    assert result.passed  # the candidate's own calls are as they were
    for w in result.workloads:
        assert w.reference_ns is None and "clock late" in w.reference_note
    secrets = {"build": {"ok": True, "wall_s": 1.0},
               "eval": json.loads(result.model_dump_json()),
               "baseline": {w.uuid: {"t_b_ns": 1e6, "t_sol_ns": 1.0, "eager_ns": 1e6}
                            for w in result.workloads}}
    with pytest.raises(TrialFailure) as err:
        score_trial(problem.key, secrets, "val")
    assert err.value.kind == "integrity" and "not timed in turns" in err.value.reason
    assert "clock late" in err.value.reason


def test_a_candidate_whose_worker_will_not_stop_fails(problems, forks, tmp_path, monkeypatch):
    """A worker that does not stop for the reference's turn could choose when its times
    are held against the reference's: it fails as an integrity fault, and is continued."""
    import psutil

    from benchmarks.solexec.benchmark import failure_kind

    problem = problems["L1/001_small_matmul"]
    monkeypatch.setattr(evaluate_module, "_all_stopped", lambda pid: False)
    monkeypatch.setattr(evaluate_module, "STOP_WAIT_S", 0.05)
    result = evaluate_problem(problem, _solution(tmp_path / "sol"), TURNS, launch=forks.launch,
                              build_dir=tmp_path / "build", seed=7)
    assert not result.passed
    for w in result.workloads:
        assert w.status == "failed" and "did not stop within 0.05 s" in w.reason
        assert failure_kind(w.status, w.reason) == "integrity"
    assert all(p.status() != psutil.STATUS_STOPPED for p in psutil.Process().children(
        recursive=True))


CHILD_AFTER_EMPTY = """
    import subprocess
    import sys
    import torch

    worker = sys.modules["__main__"]  # the worker, run as a module
    _empty = worker._empty

    def _spawning(*args):
        answer = _empty(*args)
        # gone before its next call is judged, alive while the reference is timed
        subprocess.Popen(["sleep", "0.3"], start_new_session=True)
        return answer

    worker._empty = _spawning

    def run(A, B):
        return torch.matmul(A, B.T)
"""


def test_a_process_left_running_while_the_candidate_is_stopped_fails_it(problems, forks,
                                                                        tmp_path):
    """A process of the candidate's running beside the reference's calls would slow them
    (raising T_b); a stopped worker cannot start one, so one found once it is stopped
    fails it. Here each of its empty calls leaves a short-lived process behind."""
    from benchmarks.solexec.benchmark import failure_kind

    problem = problems["L1/001_small_matmul"]
    # seed 1: the order of blocks puts the reference's right after the candidate's first
    # (with another, the candidate's next call finds the process first, and fails so)
    result = evaluate_problem(problem, _solution(tmp_path / "sol", CHILD_AFTER_EMPTY), TURNS,
                              launch=forks.launch, build_dir=tmp_path / "build", seed=1,
                              workloads=problem.workloads[:1])
    [w] = result.workloads
    assert w.status == "failed" and "while the reference was timed in turns" in w.reason, w
    assert failure_kind(w.status, w.reason) == "integrity"


def test_a_candidate_slow_on_the_cpu_in_its_calls_passes_in_turns(problems, forks, tmp_path):
    """The CPU a call itself uses is no work between calls, in an untimed call that opens
    a block as in a timed one."""
    problem = problems["L1/001_small_matmul"]
    slow = _solution(tmp_path / "sol", """
        import time
        import torch

        def run(A, B):
            until = time.thread_time() + 0.03
            while time.thread_time() < until:
                pass
            return torch.matmul(A, B.T)
    """)
    timing = replace(TURNS, call_timeout_s=10.0, idle_cpu_floor_ms=20.0)
    result = evaluate_problem(problem, slow, timing, launch=forks.launch,
                              build_dir=tmp_path / "build", seed=7)
    assert result.passed, [w.reason for w in result.workloads]
    assert all(w.reference_calls == TURNS.reps for w in result.workloads)


def test_turns_ended_by_the_reference_s_side_end_for_good_and_keep_nothing(
        problems, forks, tmp_path, monkeypatch):
    """The reference's worker lost half way: the turns end for the rest of the evaluation,
    which says why; what was timed of the reference is not kept (the candidate's later
    rounds ran without turns), so the workloads have no time in turns and fail in the
    score."""
    import signal

    problem = problems["L1/001_small_matmul"]
    n = len(problem.workloads)
    pids, calls = {}, []
    reference_launch = _recorded(launch_subprocess, pids, "reference")
    real = WorkerLink.timed

    def timed(self, op, keys, watch_idle, timeout_s=None):
        if self.worker.pid == pids.get("reference") and op == "call":
            calls.append(op)
            if len(calls) == n * TURNS.warmup + n + 2:  # the second block's untimed call
                import os

                os.kill(self.worker.pid, signal.SIGKILL)
        return real(self, op, keys, watch_idle, timeout_s)

    monkeypatch.setattr(WorkerLink, "timed", timed)
    result = evaluate_problem(problem, _solution(tmp_path / "sol"), TURNS, launch=forks.launch,
                              build_dir=tmp_path / "build", seed=7,
                              reference_launch=reference_launch)
    assert result.passed
    assert result.paired.startswith("in turns with the reference until: the reference's "
                                    "worker failed"), result.paired
    assert all(w.reference_ns is None and "not timed in turns: the reference's worker "
               "failed" in w.reference_note for w in result.workloads)
    assert all(len(w.times_ns) == TURNS.reps for w in result.workloads)


@pytest.mark.parametrize("fault", ["no_worker", "bad_reference"])
def test_turns_that_cannot_start_are_said(problems, forks, tmp_path, monkeypatch, fault):
    problem = problems["L1/001_small_matmul"]
    reference_launch = launch_subprocess
    if fault == "no_worker":
        def reference_launch(build_dir, **kw):
            raise OSError("no interpreter")
        expected = "the reference's worker did not start: no interpreter"
    else:
        def reference_solution(problem, dest):
            return _solution(Path(dest), "raise ImportError('broken reference')")
        monkeypatch.setattr(evaluate_module, "reference_solution", reference_solution)
        expected = "the reference did not load: ImportError: broken reference"
    result = evaluate_problem(problem, _solution(tmp_path / "sol"), TURNS, launch=forks.launch,
                              build_dir=tmp_path / "build", seed=7,
                              reference_launch=reference_launch)
    assert result.passed, result  # the candidate's own calls are timed as ever
    assert result.paired == f"in turns with the reference until: {expected}", result.paired
    for w in result.workloads:
        assert w.reference_ns is None and expected in w.reference_note
        assert len(w.times_ns) == TURNS.reps
    # no worker is left stopped
    import psutil

    assert all(p.status() != psutil.STATUS_STOPPED for p in psutil.Process().children(
        recursive=True))


def _secrets(ref_ns, eager_ns=3000.0, t_b_ns=2000.0):
    """Two workloads timed at 2000 ns, T_SOL 1000 ns; the table's T_b 2000 (compiled), its
    eager time 3000; the reference in turns at ref_ns (None: not in turns)."""
    workloads = [{"uuid": f"w{i}", "status": "ok", "reason": "", "time_ns": 2000.0,
                  **({"reference_ns": ref_ns} if ref_ns else {})} for i in range(2)]
    table = {f"w{i}": {"t_b_ns": t_b_ns, "t_sol_ns": 1000.0,
                       **({"eager_ns": eager_ns} if eager_ns else {})} for i in range(2)}
    return {"build": {"ok": True, "wall_s": 1.0},
            "eval": {"workloads": workloads, "paired": "in turns with the reference"
                     if ref_ns else ""}, "baseline": table}


def test_in_turns_t_b_follows_the_reference_s_time_beside_the_candidate():
    from benchmarks.protocol import TrialFailure
    from benchmarks.solexec.benchmark import TURNS_CAP, score_trial
    from benchmarks.solexec.scoring import sol_score

    plain = score_trial("L1/x", _secrets(None), "val")
    assert plain.metrics["sol_score"] == pytest.approx(sol_score(2000, 2000, 1000))
    assert "turns" not in plain.evidence
    # the host ran the reference twice as slow as for the table: T_b 2000 -> 4000
    slow = score_trial("L1/x", _secrets(6000.0), "val")
    assert slow.metrics["sol_score"] == pytest.approx(sol_score(2000, 4000, 1000))
    assert slow.evidence["turns_drift"] == pytest.approx(2.0)
    assert slow.evidence["turns_workloads"] == 2
    assert slow.evidence["workload_t_b_us"] == "4.0 4.0"
    # faster than for the table: T_b falls with it
    fast = score_trial("L1/x", _secrets(1500.0), "val")
    assert fast.metrics["sol_score"] == pytest.approx(sol_score(2000, 1000, 1000))
    # beyond the cap, something other than the host's speed: held at the cap
    wild = score_trial("L1/x", _secrets(3000.0 * TURNS_CAP * 10), "val")
    assert wild.metrics["sol_score"] == pytest.approx(sol_score(2000, 2000 * TURNS_CAP, 1000))
    assert wild.evidence["turns_drift"] == pytest.approx(TURNS_CAP)
    assert wild.evidence["turns_capped"] == 2 and slow.evidence["turns_capped"] == 0
    # a table without the eager time (eager failed there): T_b as the table says
    kept = score_trial("L1/x", _secrets(6000.0, eager_ns=None), "val")
    assert kept.metrics["sol_score"] == pytest.approx(plain.metrics["sol_score"])
    assert kept.evidence["turns_workloads"] == 0
    # in turns, a workload without the reference's time fails the trial
    missing = _secrets(6000.0)
    del missing["eval"]["workloads"][1]["reference_ns"]
    missing["eval"]["workloads"][1]["reference_note"] = "not timed in turns: lost"
    with pytest.raises(TrialFailure) as err:
        score_trial("L1/x", missing, "val")
    assert err.value.kind == "integrity" and "lost" in err.value.reason
    with pytest.raises(TrialFailure) as err:  # a hidden split's: without the words
        score_trial("L1/x", missing, "audit")
    assert "lost" not in err.value.reason


def test_time_a_worker_spent_stopped_is_not_time_it_waited_between_calls(tmp_path):
    """The CPU a worker may use between calls is a share of the time it waited: the time
    it was stopped for the reference's turns could hold no work, so it does not count."""
    import subprocess
    import sys
    import time

    from benchmarks.solexec.launch import Worker

    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        link = WorkerLink(Worker(None, proc.pid, lambda s: None, tmp_path), 1.0)
        link._answered = (time.perf_counter_ns() - 50_000_000, link.cpu_ns())
        link.held_ns = 40_000_000
        link.pause()
        waited = link._idle_read[1]
        assert 10_000_000 <= waited < 30_000_000, waited
        link.pause()  # read again (as an unwatched call's pause would): the stops still
        assert link._idle_read[1] < 30_000_000  # count until a watched answer resets them
    finally:
        proc.kill()
        proc.wait()


def test_the_build_s_smoke_call_is_not_timed_in_turns(problems, forks, tmp_path, monkeypatch):
    """The build step's one smoke call checks the solution runs: no reference worker is
    started for it, whatever the trial's timing."""
    import benchmarks.solexec.build as build_module

    started = []

    def reference_launch(build_dir, **kw):
        started.append(build_dir)
        return launch_subprocess(build_dir, **kw)

    real = build_module.evaluate_problem
    monkeypatch.setattr(build_module, "evaluate_problem", lambda *a, **kw: real(
        *a, reference_launch=reference_launch, **kw))
    built = build_module.build_solution(problems["L1/001_small_matmul"],
                                        _solution(tmp_path / "sol"), tmp_path / "build", TURNS,
                                        launch=forks.launch)
    assert built.ok, built
    assert not started


def test_a_worker_that_dies_between_calls_is_lost_not_a_fault_of_the_turns(problems, forks,
                                                                           tmp_path):
    """A worker gone before the reference's turn (it exited after answering) is found lost
    by its next call, as without turns: a crash, not an integrity fault."""
    from benchmarks.solexec.benchmark import failure_kind

    problem = problems["L1/001_small_matmul"]
    dying = _solution(tmp_path / "sol", """
        import os
        import threading
        import torch

        calls = [0]

        def run(A, B):
            calls[0] += 1
            if calls[0] == 2:  # after the warm-up: gone a moment after it answers
                threading.Timer(0.0005, os._exit, (3,)).start()
            return torch.matmul(A, B.T)
    """)
    result = evaluate_problem(problem, dying, TURNS, launch=forks.launch,
                              build_dir=tmp_path / "build", seed=7,
                              workloads=problem.workloads[:1])
    [w] = result.workloads
    assert w.status != "ok"
    assert failure_kind(w.status, w.reason) == "crash", w.reason


CONTINUES_ITSELF = """
    import ctypes
    import signal
    import torch

    libc = ctypes.CDLL(None, use_errno=True)

    class Timespec(ctypes.Structure):
        _fields_ = [("sec", ctypes.c_long), ("nsec", ctypes.c_long)]

    class Itimerspec(ctypes.Structure):
        _fields_ = [("interval", Timespec), ("value", Timespec)]

    class Sigevent(ctypes.Structure):  # SIGEV_SIGNAL: sent by the kernel, stopped or not
        _fields_ = [("value", ctypes.c_void_p), ("signo", ctypes.c_int),
                    ("notify", ctypes.c_int), ("rest", ctypes.c_int * 12)]

    signal.signal(signal.SIGCONT, lambda *args: None)  # handled, so the timer stays armed
    timer = ctypes.c_void_p()
    event = Sigevent(None, int(signal.SIGCONT), 0)
    assert libc.timer_create(1, ctypes.byref(event), ctypes.byref(timer)) == 0
    every = Itimerspec(Timespec(0, 3_000_000), Timespec(0, 3_000_000))
    assert libc.timer_settime(timer, 0, ctypes.byref(every), None) == 0

    def run(A, B):
        return torch.matmul(A, B.T)
"""


def test_a_worker_that_continues_itself_while_held_fails(problems, forks, tmp_path):
    """A timer of the candidate's own can send its worker SIGCONT while it is held for the
    reference's turn (the kernel continues a stopped process whatever stopped it): by the
    turn's end it has used CPU or is no longer stopped, and it fails."""
    from benchmarks.solexec.benchmark import failure_kind

    problem = problems["L1/001_small_matmul"]
    result = evaluate_problem(problem, _solution(tmp_path / "sol", CONTINUES_ITSELF), TURNS,
                              launch=forks.launch, build_dir=tmp_path / "build", seed=7)
    assert not result.passed
    for w in result.workloads:
        assert w.status == "failed" and ("ran while it was stopped" in w.reason
                                         or "did not stop within" in w.reason), w.reason
        assert failure_kind(w.status, w.reason) == "integrity"
