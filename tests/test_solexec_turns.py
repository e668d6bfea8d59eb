"""The reference timed in turns with the candidate (evaluate.Timing.paired): the two
workers' blocks of calls alternate round by round, each stopped while the other runs;
turns that cannot go on are said; the score scales T_b by how the reference ran in turns
against its table's eager time. Tiny CPU shapes from the fixture problems."""

from __future__ import annotations

import textwrap
from dataclasses import replace
from pathlib import Path

import pytest

import benchmarks.solexec.evaluate as evaluate_module
from benchmarks.solexec.evaluate import Timing, evaluate_problem
from benchmarks.solexec.launch import Forkserver, launch_subprocess
from benchmarks.solexec.link import WorkerLink
from benchmarks.solexec.problems import load_problems

FIXTURES = Path(__file__).parent / "fixtures" / "solexec"
TURNS = Timing(warmup=1, reps=4, call_timeout_s=5.0, warmup_timeout_s=5.0,
               load_timeout_s=30.0, flush_bytes=1 << 16, max_elements=256, settle_s=0.01,
               idle_cpu_floor_ms=5.0, stage_gap_s=0.05, paired=True)
MATMUL = """
    import torch

    def run(A, B):
        return torch.matmul(A, B.T)
"""


@pytest.fixture(scope="module")
def problems():
    return {p.key: p for p in load_problems(FIXTURES)}


@pytest.fixture(scope="module")
def forks():
    with Forkserver() as server:
        yield server


def _solution(folder: Path, source: str = MATMUL) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "solution.py").write_text(textwrap.dedent(source))
    return folder


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def test_each_round_goes_with_one_of_the_reference_s_while_the_candidate_is_stopped(
        problems, forks, tmp_path, monkeypatch):
    problem = problems["L1/001_small_matmul"]
    pids: dict[str, int] = {}
    # (whose worker, op, the other worker's state)
    seen: list[tuple[str, str, str]] = []

    def candidate_launch(build_dir, **kw):
        worker = forks.launch(build_dir, **kw)
        pids["candidate"] = worker.pid
        return worker

    def reference_launch(build_dir, **kw):
        worker = launch_subprocess(build_dir, **kw)
        pids["reference"] = worker.pid
        return worker

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


def test_a_device_still_busy_before_the_reference_s_turns_fails_the_workload(
        problems, forks, tmp_path, monkeypatch):
    """On a GPU the stopped candidate's kernels would still run: the reference's probe
    (an empty call) that stays slow gives its turn up, and a workload that keeps finding
    the device busy fails as an integrity fault. A probe as fast as its calibration lets
    the turn go on (the probe is real here: a CPU's empty call)."""
    from benchmarks.solexec.benchmark import failure_kind

    problem = problems["L1/001_small_matmul"]
    folder = _solution(tmp_path / "sol")
    monkeypatch.setattr(evaluate_module._Turns, "probed", property(lambda self: True))
    # a generous factor: a loaded test host's empty calls vary by more than a GPU host's
    calm = evaluate_problem(problem, folder, replace(TURNS, probe_factor=50.0),
                            launch=forks.launch, build_dir=tmp_path / "build", seed=7)
    assert calm.passed and all(w.reference_calls == TURNS.reps for w in calm.workloads)
    probes = []
    real_probe = evaluate_module._Turns._probe

    def busy(self, twin):
        probes.append(real_probe(self, twin))
        return 10**12

    monkeypatch.setattr(evaluate_module._Turns, "_probe", busy)
    result = evaluate_problem(problem, folder, TURNS, launch=forks.launch,
                              build_dir=tmp_path / "build", seed=7)
    assert not result.passed
    for w in result.workloads:
        assert w.status == "failed" and w.reason == evaluate_module.BUSY
        assert failure_kind(w.status, w.reason) == "integrity"
    # each timed turn probed PROBE_TRIES times before it was given up, none timed
    assert len(probes) == len(problem.workloads) * TURNS.reps * evaluate_module.PROBE_TRIES
    assert all(w.reference_ns is None for w in result.workloads)


@pytest.mark.parametrize("fault", ["no_worker", "never_stops", "bad_reference"])
def test_turns_that_cannot_go_on_are_said_and_the_candidate_is_timed_without_them(
        problems, forks, tmp_path, monkeypatch, fault):
    problem = problems["L1/001_small_matmul"]
    reference_launch = launch_subprocess
    if fault == "no_worker":
        def reference_launch(build_dir, **kw):
            raise OSError("no interpreter")
        expected = "the reference's worker did not start: no interpreter"
    elif fault == "never_stops":
        monkeypatch.setattr(evaluate_module, "_all_stopped", lambda pid: False)
        monkeypatch.setattr(evaluate_module, "STOP_WAIT_S", 0.05)
        expected = "the candidate's worker did not stop within 0.05 s"
    else:
        def reference_solution(problem, dest):
            return _solution(Path(dest), "raise ImportError('broken reference')")
        monkeypatch.setattr(evaluate_module, "reference_solution", reference_solution)
        expected = "the reference did not load: ImportError: broken reference"
    result = evaluate_problem(problem, _solution(tmp_path / "sol"), TURNS, launch=forks.launch,
                              build_dir=tmp_path / "build", seed=7,
                              reference_launch=reference_launch)
    assert result.passed, result  # the candidate is timed, as it would be without turns
    assert result.paired == f"in turns with the reference until: {expected}", result.paired
    for w in result.workloads:
        assert w.reference_ns is None and expected in w.reference_note
        assert len(w.times_ns) == TURNS.reps
    # the candidate's worker runs on: nothing left it stopped
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
    assert wild.evidence["turns_drift"] == pytest.approx(TURNS_CAP * 10)
    # a table without the eager time (eager failed there): T_b as the table says
    kept = score_trial("L1/x", _secrets(6000.0, eager_ns=None), "val")
    assert kept.metrics["sol_score"] == pytest.approx(plain.metrics["sol_score"])
    assert kept.evidence["turns_workloads"] == 0


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
        assert link.held_ns == 0  # each wait counts its own stops
        link.pause()
        assert link._idle_read[1] >= 50_000_000
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
