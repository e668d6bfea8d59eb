"""SOL-ExecBench evaluation core: the wire and the shared-memory transport, the trusted
timing path (overhead, medians, interleaving), results, hung and crashing workers, the
build step, hidden workloads and the glue to the score. Tiny CPU shapes from the fixture
problems; workers are forked from one clean process so each starts in milliseconds.
Red-team candidates are in test_solexec_eval_hacks.py."""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
import socket
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from benchmarks.solexec import transport, wire
from benchmarks.solexec.build import build_solution, check_files, find_nvcc
from benchmarks.solexec.evaluate import (
    Timing,
    evaluate_problem,
    groups,
    reference_solution,
    round_order,
)
from benchmarks.solexec.hidden import held_out_workloads, hidden_workloads
from benchmarks.solexec.launch import Forkserver, describe_exit, launch_subprocess
from benchmarks.solexec.link import net_time
from benchmarks.solexec.material import WorkloadRun, estimate_bytes
from benchmarks.solexec.problems import load_problems, skip_reason
from benchmarks.solexec.results import ProblemEval, WorkloadEval, workload_results
from benchmarks.solexec.scoring import sol_score, workload_score

FIXTURES = Path(__file__).parent / "fixtures" / "solexec"
FAST = Timing(warmup=1, reps=3, call_timeout_s=5.0, warmup_timeout_s=5.0, load_timeout_s=30.0,
              flush_bytes=1 << 16, max_elements=256, settle_s=0.01, idle_cpu_floor_ms=5.0,
              stage_gap_s=0.05)


@pytest.fixture(scope="module")
def problems():
    return {p.key: p for p in load_problems(FIXTURES)}


@pytest.fixture(scope="module")
def forks():
    with Forkserver() as server:
        yield server


def write_solution(folder: Path, source: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "solution.py").write_text(textwrap.dedent(source))
    return folder


def evaluate(problem, folder, forks, timing=FAST, **kw) -> ProblemEval:
    return evaluate_problem(problem, folder, timing, launch=forks.launch,
                            build_dir=folder / "build", seed=7, **kw)


# ---------------------------------------------------------------------------- wire


def test_frames_carry_descriptors_and_the_kernel_vouched_pid():
    ours, theirs = wire.socket_pair()
    r, w = os.pipe()
    try:
        wire.send_frame(theirs, b"hello", (w,))
        frame = wire.recv_frame(ours, 64, time.monotonic() + 5, accept_fds=True)
        assert frame.payload == b"hello" and frame.pid == os.getpid()
        os.write(frame.fds[0], b"x")  # the descriptor is the pipe's write end
        assert os.read(r, 1) == b"x"
        os.close(frame.fds[0])
        wire.send_frame(theirs, b"more", (r,))  # a descriptor nobody asked for is closed
        assert wire.recv_frame(ours, 64, time.monotonic() + 5).fds == ()
    finally:
        for fd in (r, w):
            try:
                os.close(fd)
            except OSError:
                pass
        ours.close()
        theirs.close()


def test_frames_are_bounded_in_size_and_time():
    ours, theirs = wire.socket_pair()
    with ours, theirs:
        wire.send_frame(theirs, b"x" * 100)
        with pytest.raises(wire.WireError, match="100 bytes"):
            wire.recv_frame(ours, 64, time.monotonic() + 5)
    ours, theirs = wire.socket_pair()  # the stream is out of step now: a new one
    with ours, theirs:
        with pytest.raises(wire.Deadline):
            wire.recv_frame(ours, 64, time.monotonic() + 0.05)
        theirs.shutdown(socket.SHUT_WR)
        with pytest.raises(wire.PeerClosed):
            wire.recv_frame(ours, 64, time.monotonic() + 5)


def test_a_frame_polled_for_arrives_as_one_waited_for_and_the_poll_gives_up():
    """The poll inside the clock (spin_s) finds a frame sent while it polls; with nothing
    sent it ends after spin_s and the wait goes on to its deadline as before."""
    ours, theirs = wire.socket_pair()
    with ours, theirs:
        wire.send_frame(theirs, b"early")
        assert wire.recv_frame(ours, 64, time.monotonic() + 5, spin_s=0.01).payload == b"early"
        t0 = time.monotonic()
        with pytest.raises(wire.Deadline):
            wire.recv_frame(ours, 64, time.monotonic() + 0.1, spin_s=0.02)
        assert time.monotonic() - t0 >= 0.1


def test_an_empty_call_copies_the_slots_but_leaves_them_as_they_were():
    """An empty call is a call's path without the call: the slots' bytes copied (into the
    worker's own buffers) and digested, the slots themselves untouched."""
    from benchmarks.solexec import worker

    state = worker._State()
    outs = [torch.arange(6, dtype=torch.float32), torch.tensor([7, 8], dtype=torch.int64)]
    scratch = [torch.zeros_like(o) for o in outs]
    state.work["0.0"] = worker._Work([], outs, ["a", "b"], scratch)
    before = [o.clone() for o in outs]
    answer = worker._handle(state, {"op": "empty", "keys": ["0.0"], "id": 2}, ())
    assert answer == {"ok": True, "id": 2, "digests": [transport.digest(before)]}
    assert all(torch.equal(o, b) for o, b in zip(outs, before, strict=True))
    assert all(torch.equal(s, b) for s, b in zip(scratch, before, strict=True))


def test_the_worker_s_replies_do_not_go_through_a_json_dumps_replaced_later(monkeypatch):
    """The worker encodes its replies with the json.dumps it bound before any candidate
    code loaded: one the candidate puts in its place later never sees them."""
    import threading

    from benchmarks.solexec import worker

    seen = []
    real = json.dumps
    monkeypatch.setattr(json, "dumps", lambda obj, *a, **k: seen.append(obj) or real(obj))
    ours, theirs = socket.socketpair()
    thread = threading.Thread(target=worker.worker_main, args=(theirs,), daemon=True)
    thread.start()
    try:
        wire.send_frame(ours, pickle.dumps({"op": "close", "key": "none", "id": 7}))
        answer = wire.recv_frame(ours, 1 << 16, time.monotonic() + 5)
        assert json.loads(answer.payload) == {"ok": True, "id": 7}
        assert seen == []
        wire.send_frame(ours, pickle.dumps({"op": "exit"}))
        thread.join(5)
        assert not thread.is_alive()
    finally:
        ours.close()
        theirs.close()


def test_a_timed_round_trip_starts_a_pause_after_the_worker_s_last_answer():
    """Calls and empty calls alike start `idle_before_s` after the worker last answered
    (so the worker's wake-up is the same in both), and the clock holds only the trip."""
    import threading

    from benchmarks.solexec.link import WorkerLink

    ours, theirs = wire.socket_pair()
    heard: list[float] = []

    def echo():
        while True:
            try:
                frame = wire.recv_frame(theirs, 1 << 16)
            except wire.WireError:
                return
            heard.append(time.perf_counter())
            msg = pickle.loads(frame.payload)
            wire.send_frame(theirs, json.dumps({"ok": True, "id": msg["id"]}).encode())

    class Peer:  # the worker's end, answered from a thread of this process
        sock, pid = ours, os.getpid()

    thread = threading.Thread(target=echo, daemon=True)
    thread.start()
    try:
        link = WorkerLink(Peer(), 5.0, idle_before_s=0.05)
        link.request({"op": "init"}, 5.0)
        answered = time.perf_counter()
        ns, answer = link.timed("empty", [], watch_idle=False)
        assert answer["ok"] and heard[-1] - answered >= 0.05
        assert ns < 0.05e9  # the pause is before the clock, not in it
        time.sleep(0.08)  # idle long enough already: no pause added
        t0 = time.perf_counter()
        link.timed("call", [], watch_idle=False)
        assert heard[-1] - t0 < 0.04
    finally:
        ours.close()
        theirs.close()
        thread.join(5)


# ---------------------------------------------------------------------------- transport


def test_plan_aligns_slots_and_views_cover_exactly_their_bytes():
    specs = [(torch.float32, (3, 5)), (torch.bool, (7,)), (torch.float8_e4m3fn, (2, 2)),
             (torch.int64, ())]
    slots, size = transport.plan(specs)
    assert all(s.offset % transport.ALIGN == 0 for s in slots) and size >= slots[-1].offset + 8
    arena = torch.zeros(size, dtype=torch.uint8)
    views = [transport.view(arena, s) for s in slots]
    assert [(v.dtype, tuple(v.shape)) for v in views] == [(d, s) for d, s in specs]
    views[3].fill_(-1)
    assert int(arena.sum()) == 8 * 255  # the 0-d int64 slot and nothing else


CHILD = """
import pickle, socket, sys
import torch
from benchmarks.solexec import transport, wire
sock = socket.socket(fileno=int(sys.argv[1]))
frame = wire.recv_frame(sock, 1 << 20, accept_fds=True)
mapped = transport.Mapped(pickle.loads(frame.payload), frame.fds)
arena = mapped.tensor
arena[:16].view(torch.float32).add_(1.0)
if arena.is_cuda:
    torch.cuda.synchronize()
wire.send_frame(sock, b"done")
wire.recv_frame(sock, 16)
"""


@pytest.mark.parametrize("device", [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                  reason="a device arena needs a GPU")),
])
def test_an_arena_is_the_same_memory_in_another_process(device):
    """The transport on its own: the trusted side writes, another process attaches by the
    handle (a memfd on CPU, a CUDA virtual memory allocation's descriptor on GPU, both
    over SCM_RIGHTS), adds one, the trusted side reads the result in its own memory."""
    arena = transport.new_arena(4096, device)
    arena.tensor[:16].view(torch.float32).copy_(torch.arange(4.0))
    ours, theirs = wire.socket_pair()
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(theirs.fileno())],
                             pass_fds=(theirs.fileno(),), env={**os.environ, "PYTHONPATH": str(
                                 Path(__file__).resolve().parents[1])})
    theirs.close()
    try:
        handle, fds = arena.handle()
        wire.send_frame(ours, pickle.dumps(handle), fds)
        assert wire.recv_frame(ours, 16, time.monotonic() + 60).payload == b"done"
        got = arena.tensor[:16].view(torch.float32).cpu()
        assert got.tolist() == [1.0, 2.0, 3.0, 4.0]
        wire.send_frame(ours, b"bye")
    finally:
        child.wait(timeout=30)
        ours.close()
        arena.close()


# ---------------------------------------------------------------------------- timing path


def test_the_reference_as_a_solution_passes_every_check_on_every_fixture(problems, forks,
                                                                         tmp_path):
    """T_b's path: each fixture problem's reference, run as a candidate, is ok on every
    workload that can run here, and what cannot run is skipped with a reason."""
    for key, problem in problems.items():
        folder = reference_solution(problem, tmp_path / problem.name)
        result = evaluate(problem, folder, forks)
        for w in result.workloads:
            if skip_reason(problem, next(x for x in problem.workloads if x.uuid == w.uuid)):
                assert w.status == "skipped" and w.reason, (key, w)
            else:
                assert w.status == "ok", (key, w.uuid, w.reason, result.log_tail)
                assert len(w.times_ns) == FAST.reps == len(w.overhead_times_ns)
                assert len(w.late_overhead_times_ns) == FAST.reps
                assert w.calls_checked == FAST.warmup + FAST.reps
                assert w.max_abs_error is not None
        assert result.passed == any(w.status == "ok" for w in result.workloads)


def test_times_and_overhead_are_reported_and_the_net_time_follows_the_rule(problems, forks,
                                                                          tmp_path):
    problem = problems["L1/001_small_matmul"]
    folder = reference_solution(problem, tmp_path / "ref")
    result = evaluate(problem, folder, forks, replace(FAST, reps=5))
    for w in result.workloads:
        assert w.status == "ok"
        assert 0 < w.overhead_ns < 1e9 and 0 < w.median_ns < 1e9
        assert w.time_ns == net_time(w.times_ns, w.overhead_times_ns,
                                     w.late_overhead_times_ns)[0]
    shrunk = {w.uuid: w.axes["M"] for w in result.workloads}
    assert shrunk == {"mm-4": 4, "mm-4096": 16}  # shrunk to at most 256 elements a tensor


def test_net_time_subtracts_the_overhead_and_floors_at_its_spread():
    assert net_time([100, 110, 120], [10, 10, 10]) == (100.0, 110.0, 10.0)
    assert net_time([100, 100, 100], [90, 100, 130]) == (10.0, 100.0, 100.0)  # MAD floor
    assert net_time([5], [10]) == (1.0, 5.0, 10.0)


def test_the_overhead_follows_the_late_empty_calls_only_downwards():
    # the round trip fell after the calibration: the late empties are subtracted
    assert net_time([100, 110, 120], [40, 40, 40], [10, 12, 10]) == (100.0, 110.0, 10.0)
    # the late empties are slower (drift, or a candidate slowing them): the early ones count
    assert net_time([100, 110, 120], [10, 10, 10], [60, 60, 60]) == (100.0, 110.0, 10.0)
    # the floor is the larger spread: steadier late empties cannot lower it
    assert net_time([100, 100, 100], [90, 100, 130], [80, 80, 80]) == (20.0, 100.0, 80.0)
    assert net_time([100, 100, 100], [90, 100, 130], [99, 99, 99]) == (10.0, 100.0, 99.0)
    assert net_time([100, 100, 100], [99, 99, 99], [50, 90, 130]) == (40.0, 100.0, 90.0)
    assert net_time([100], [10], []) == net_time([100], [10])


def test_timed_rounds_never_call_a_workload_twice_in_a_row():
    import random

    rng, last, seen = random.Random(0), None, []
    for _ in range(200):
        order = round_order(["a", "b"], rng, last)
        seen += order
        last = order[-1]
    assert all(x != y for x, y in zip(seen, seen[1:], strict=False))


def test_workloads_too_big_to_share_memory_run_in_groups_of_their_own(problems, forks,
                                                                      tmp_path):
    fake = [WorkloadRun(problem=None, workload=None, key=i, entry=None, device="cpu",
                        threads=1, seeds=[], size=size) for i, size in enumerate([3, 3, 5, 1, 9])]
    assert [[p.key for p in g] for g in groups(fake, 6)] == [[0, 1], [2, 3], [4]]
    problem = problems["L1/001_small_matmul"]
    folder = reference_solution(problem, tmp_path / "ref")
    assert evaluate(problem, folder, forks, replace(FAST, group_mb=1e-6)).passed


def test_results_serialise_and_summarise(problems, forks, tmp_path):
    problem = problems["L2/001_scaled_add_with_scalars"]
    result = evaluate(problem, reference_solution(problem, tmp_path / "ref"), forks)
    again = ProblemEval.model_validate_json(result.model_dump_json())
    assert again.counts == {"ok": 1, "skipped": 1} and again.passed
    assert again.workloads == result.workloads


# ---------------------------------------------------------------------------- lost workers


def test_a_hung_worker_is_killed_and_recorded_as_a_timeout(problems, forks, tmp_path):
    problem = problems["L1/001_small_matmul"]
    folder = write_solution(tmp_path / "hang", """
        import time
        def run(A, B):
            time.sleep(3600)
    """)
    started = time.monotonic()
    result = evaluate(problem, folder, forks,
                      replace(FAST, call_timeout_s=0.5, warmup_timeout_s=0.5),
                      workloads=problem.workloads[:1])
    assert time.monotonic() - started < 10
    (w,) = result.workloads
    assert w.status == "timeout" and "no answer within 0.5 s" in w.reason


def test_a_first_call_may_compile_for_longer_than_a_timed_call_may_take(problems, forks,
                                                                        tmp_path):
    """The first call of a shape compiles (torch.compile, Triton): a warm-up call is
    allowed warmup_timeout_s; a timed call that slow is a timeout."""
    problem = problems["L1/001_small_matmul"]
    folder = write_solution(tmp_path / "compiles", """
        import time
        _seen = set()
        def run(A, B):
            if tuple(A.shape) not in _seen:
                _seen.add(tuple(A.shape))
                time.sleep(1.0)
            return A @ B.T
    """)
    timing = replace(FAST, call_timeout_s=0.5, warmup_timeout_s=5.0)
    result = evaluate(problem, folder, forks, timing, workloads=problem.workloads[:1])
    assert {w.status for w in result.workloads} == {"ok"}, result.workloads
    slow = write_solution(tmp_path / "slow-timed", """
        import time
        _calls = []
        def run(A, B):
            _calls.append(1)
            if len(_calls) > 1:
                time.sleep(1.0)
            return A @ B.T
    """)
    (w,) = evaluate(problem, slow, forks, timing, workloads=problem.workloads[:1]).workloads
    assert w.status == "timeout" and "no answer within 0.5 s" in w.reason


def test_a_solution_that_never_finishes_loading_times_out(problems, forks, tmp_path):
    problem = problems["L1/001_small_matmul"]
    folder = write_solution(tmp_path / "slow", """
        import time
        time.sleep(3600)
        def run(A, B):
            return A @ B.T
    """)
    result = evaluate(problem, folder, forks, replace(FAST, load_timeout_s=0.5))
    assert {w.status for w in result.workloads} == {"timeout"}
    assert "did not load" in result.load_error


@pytest.mark.parametrize(("body", "reason"), [
    ("import sys; sys.exit(3)", "exited with status 3"),
    ("import os; os.abort()", "killed by SIGABRT"),
], ids=["sys-exit", "abort"])
def test_a_crashing_worker_is_recorded_with_how_it_ended(problems, forks, tmp_path, body,
                                                         reason):
    problem = problems["L1/001_small_matmul"]
    folder = write_solution(tmp_path / "crash", f"""
        def run(A, B):
            {body}
    """)
    result = evaluate(problem, folder, forks)
    assert [w.status for w in result.workloads] == ["failed", "failed"]  # restarted for each
    assert all(reason in w.reason for w in result.workloads), result.workloads


def test_a_fresh_interpreter_worker_behaves_as_a_forked_one(problems, tmp_path):
    problem = problems["L1/001_small_matmul"]
    folder = reference_solution(problem, tmp_path / "ref")
    result = evaluate_problem(problem, folder, FAST, workloads=problem.workloads[:1],
                              launch=launch_subprocess, seed=1)
    assert result.passed, result


# a solution that writes the CPUs its worker may use into its build folder (its cwd)
WRITES_ITS_AFFINITY = """
    import os
    import torch

    def run(A, B):
        with open("affinity.txt", "w") as f:
            f.write(",".join(map(str, sorted(os.sched_getaffinity(0)))))
        return torch.matmul(A, B.T)
"""


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="pinning needs two CPUs")
def test_pinned_timing_puts_the_worker_and_the_trusted_side_each_on_a_cpu(problems, forks,
                                                                          tmp_path):
    from benchmarks.solexec.evaluate import pinned_cpus

    problem = problems["L1/001_small_matmul"]
    folder = write_solution(tmp_path / "sol", WRITES_ITS_AFFINITY)
    timing = replace(FAST, pin_cpus=True)
    ours, worker_cpu = pinned_cpus(timing)
    before = os.sched_getaffinity(0)
    assert ours == max(before) and worker_cpu == sorted(before)[-2]
    result = evaluate(problem, folder, forks, timing, workloads=problem.workloads[:1])
    assert result.passed, result
    assert (folder / "build" / "affinity.txt").read_text() == str(worker_cpu)
    assert os.sched_getaffinity(0) == before  # the trusted side's thread let go again
    assert pinned_cpus(FAST) is None
    assert pinned_cpus(replace(timing, threads=2)) is None  # its pool would share one CPU
    result = evaluate(problem, folder, forks, workloads=problem.workloads[:1])
    assert result.passed and (folder / "build" / "affinity.txt").read_text() != str(worker_cpu)


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="pinning needs two CPUs")
def test_the_worker_cpu_is_kept_awake_by_a_poller_of_the_lowest_priority(problems, forks,
                                                                        tmp_path):
    """With awake_cpu, a process polls at SCHED_IDLE on the worker's CPU while the
    evaluation runs (a sleeping worker's CPU never halts), and is gone afterwards; the
    worker, pinned there, still runs and passes."""
    import psutil

    from benchmarks.solexec.evaluate import awake_on, pinned_cpus

    problem = problems["L1/001_small_matmul"]
    folder = write_solution(tmp_path / "sol", WRITES_ITS_AFFINITY)
    timing = replace(FAST, pin_cpus=True, awake_cpu=True)
    _, worker_cpu = pinned_cpus(timing)
    with awake_on(worker_cpu) as said:
        assert said["said"] == f"polling on CPU {worker_cpu}"
        [poller] = [c for c in psutil.Process().children() if "SCHED_IDLE" in " ".join(
            c.cmdline())]
        assert poller.cpu_affinity() == [worker_cpu]
        assert os.sched_getscheduler(poller.pid) == os.SCHED_IDLE
        # it polls: never asleep (its share of a busy CPU may be nil, at SCHED_IDLE)
        assert all(poller.status() == psutil.STATUS_RUNNING for _ in range(20))
    assert not poller.is_running()
    result = evaluate(problem, folder, forks, timing, workloads=problem.workloads[:1])
    assert result.passed, result
    assert result.awake == f"polling on CPU {worker_cpu}"
    assert (folder / "build" / "affinity.txt").read_text() == str(worker_cpu)
    assert not [c for c in psutil.Process().children() if "SCHED_IDLE" in " ".join(
        c.cmdline())]
    # not asked, or not pinned: nothing polls, and the evaluation says so
    for other in (replace(timing, awake_cpu=False), replace(timing, pin_cpus=False)):
        result = evaluate(problem, folder, forks, other, workloads=problem.workloads[:1])
        assert result.passed and result.awake == ""


def test_a_poller_that_cannot_start_is_said_and_the_evaluation_goes_on(problems, forks,
                                                                       tmp_path, monkeypatch):
    import psutil

    import benchmarks.solexec.evaluate as evaluate_module

    others = {c.pid for c in psutil.Process().children()}  # the fixture's forkserver
    with evaluate_module.awake_on(None) as said:
        assert said["said"] == ""
    monkeypatch.setattr(evaluate_module, "POLLER_START_S", 1.0)
    for spinner, expected in [
            ("raise SystemExit('no such policy')", "not polling: no such policy"),
            ("import time\ntime.sleep(60)", "not polling: it did not start within 1 s"),
            ("import sys, time\nsys.stdout.write('hello\\n')\nsys.stdout.flush()\n"
             "time.sleep(60)", "not polling: it said b'hello'")]:
        monkeypatch.setattr(evaluate_module, "_SPINNER", spinner)
        started = time.monotonic()
        with evaluate_module.awake_on(0) as said:
            assert said["said"] == expected
        assert time.monotonic() - started < 10  # none is waited for longer than allowed
    monkeypatch.setattr(evaluate_module, "_SPINNER", "import sys, time\nsys.stdout.write("
                        "'polling\\n')\nsys.stdout.flush()\ntime.sleep(0.1)\nsys.exit(3)")
    with evaluate_module.awake_on(0) as said:
        time.sleep(0.5)
    assert said["said"] == "polling on CPU 0, until it exited early (status 3)"
    assert {c.pid for c in psutil.Process().children()} <= others  # pollers reaped
    monkeypatch.setattr(evaluate_module, "_SPINNER", "raise SystemExit('no such policy')")
    if hasattr(os, "sched_getaffinity") and len(os.sched_getaffinity(0)) >= 2:
        problem = problems["L1/001_small_matmul"]
        folder = write_solution(tmp_path / "sol", """
            import torch

            def run(A, B):
                return torch.matmul(A, B.T)
        """)
        result = evaluate(problem, folder, forks, replace(FAST, pin_cpus=True, awake_cpu=True),
                          workloads=problem.workloads[:1])
        assert result.passed and result.awake == "not polling: no such policy"


def test_exit_statuses_read_as_words():
    assert describe_exit(-9) == "the worker was killed by SIGKILL"
    assert describe_exit(2) == "the worker exited with status 2"
    assert "unknown" in describe_exit(None)


# ---------------------------------------------------------------------------- build


def test_files_are_checked_before_anything_runs(problems, tmp_path):
    problem = problems["L1/001_small_matmul"]
    cases = {
        "def run(A, B:\n": "does not parse",
        "def go(A, B):\n    return A\n": "no top-level `run`",
        "def run(B, A):\n    return A\n": "does not take the inputs",
        "async def run(A, B):\n    return A\n": "coroutine",
    }
    for i, (source, reason) in enumerate(cases.items()):
        folder = tmp_path / str(i)
        folder.mkdir()
        (folder / "solution.py").write_text(source)
        assert reason in check_files(problem, folder)
        built = build_solution(problem, folder, tmp_path / "build", FAST)
        assert not built.ok and built.stage == "files" and reason in built.reason
    assert "no solution.py" in check_files(problem, tmp_path)
    ok = write_solution(tmp_path / "ok", "import torch\nrun = torch.compile\n")
    assert check_files(problem, ok) is None  # bound otherwise: judged when it runs


def test_build_stages_report_import_errors_wrong_outputs_and_exceptions(problems, forks,
                                                                       tmp_path):
    problem = problems["L1/001_small_matmul"]
    cases = [
        ("import no_such_module\ndef run(A, B):\n    return A @ B.T\n", "load",
         "ModuleNotFoundError"),
        ("def run(A, B):\n    return A @ B.T + 1\n", "smoke", "incorrect"),
        ("def run(A, B):\n    raise ValueError('bad tile size')\n", "smoke", "bad tile size"),
        ("def run(A, B):\n    return A @ B.T\n", "done", ""),
    ]
    for i, (source, stage, reason) in enumerate(cases):
        folder = write_solution(tmp_path / str(i), source)
        built = build_solution(problem, folder, tmp_path / f"build{i}", FAST, launch=forks.launch)
        assert built.stage == stage and reason in built.reason, built
        assert built.ok == (stage == "done")
    assert "no_such_module" in build_solution(
        problem, tmp_path / "0", tmp_path / "b", FAST, launch=forks.launch).log_tail
    assert built.smoke is not None and built.smoke.uuid == "mm-4"  # the smallest workload


def test_cuda_cpp_without_nvcc_or_without_a_gpu_is_a_clear_build_failure(problems, tmp_path):
    problem = problems["L1/001_small_matmul"]
    folder = write_solution(tmp_path / "cu", "def run(A, B):\n    return A @ B.T\n")
    (folder / "kernel.cu").write_text("__global__ void k() {}\n")
    bare = {"PATH": "/nonexistent", "CUDA_HOME": "", "CUDA_PATH": ""}
    assert find_nvcc(bare) is None
    built = build_solution(problem, folder, tmp_path / "build", FAST, env=bare)
    assert built.stage == "toolchain" and "no nvcc" in built.reason
    fake = tmp_path / "cuda"
    (fake / "bin").mkdir(parents=True)
    (fake / "bin" / "nvcc").write_text("#!/bin/sh\n")
    (fake / "bin" / "nvcc").chmod(0o755)
    built = build_solution(problem, folder, tmp_path / "build", FAST,
                           env={**bare, "CUDA_HOME": str(fake)})
    assert built.stage == "toolchain" and "needs a GPU" in built.reason


@pytest.mark.skipif(importlib.util.find_spec("triton") is None,
                    reason="triton is not installed")
def test_a_triton_solution_builds_under_the_interpreter(problems, tmp_path):
    problem = problems["L2/001_scaled_add_with_scalars"]
    folder = write_solution(tmp_path / "triton", """
        import torch
        import triton
        import triton.language as tl

        @triton.jit
        def _axpy(x, y, off, out, alpha, n, BLOCK: tl.constexpr):
            i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
            m = i < n
            v = tl.load(x + i, mask=m) + alpha * tl.load(y + i, mask=m)
            tl.store(out + i, v + tl.load(off + i, mask=m).to(tl.float32), mask=m)

        def run(x, y, mask, offsets, alpha, add_noise, noise):
            out = torch.empty_like(x)
            _axpy[(triton.cdiv(x.numel(), 64),)](x, y, offsets, out, alpha, x.numel(), BLOCK=64)
            if add_noise:
                out = out + noise
            return out, int(mask.sum())
    """)
    built = build_solution(problem, folder, tmp_path / "build", FAST,
                           env={"TRITON_INTERPRET": "1"})
    assert built.ok, built


# ---------------------------------------------------------------------------- hidden


def test_hidden_workloads_are_new_valid_and_follow_the_listed_ones(problems):
    attn = problems["L2/002_causal_attention"]
    drawn = hidden_workloads(attn, 6, seed=3)
    assert len(drawn) == 6 and len({w.uuid for w in drawn}) == 6
    listed = {(w.axes["q_len"], w.axes["kv_len"]) for w in attn.workloads}
    for w in drawn:
        assert (w.axes["q_len"], w.axes["kv_len"]) not in listed
        assert w.axes["kv_len"] >= w.axes["q_len"]  # the order every listed workload keeps
        assert 16 <= w.axes["q_len"] <= 128 and w.tolerance == attn.workloads[0].tolerance
    pool = problems["Quant/001_fp8_patch_mean_pool"]
    assert all(w.axes["seq_len"] % 4 == 0 for w in hidden_workloads(pool, 4, seed=1))
    assert hidden_workloads(attn, 3, seed=9) == hidden_workloads(attn, 3, seed=9)


def test_axes_equal_in_every_listed_workload_are_drawn_as_one(problems):
    """Square shapes stay square, and the draw still finds new workloads (drawn apart,
    two axes almost never meet an order kept both ways)."""
    attn = problems["L2/002_causal_attention"]
    w = attn.workloads[0]
    square = tuple(replace(w, uuid=f"sq{n}", axes={**w.axes, "q_len": n, "kv_len": n})
                   for n in (32, 64, 256))
    problem = replace(attn, workloads=square)
    drawn = hidden_workloads(problem, 4, seed=3)
    assert len(drawn) == 4  # of 96, 128, 160, 192, 224: new, and no larger than 256
    assert all(w.axes["kv_len"] == w.axes["q_len"] for w in drawn)
    assert {w.axes["q_len"] for w in drawn} <= {96, 128, 160, 192, 224}


def test_hidden_workloads_need_no_more_memory_than_the_largest_listed_one(problems):
    """Axes drawn independently multiply: without a bound, a problem with several var axes
    draws workloads far larger than any it lists (terabytes, on the real suite)."""
    drawn_any = False
    for problem in problems.values():
        listed = [w for w in problem.workloads if skip_reason(problem, w) is None]
        if not listed:
            continue
        largest = max(estimate_bytes(problem, w) for w in listed)
        for w in hidden_workloads(problem, 8, seed=5):
            drawn_any = True
            assert estimate_bytes(problem, w) <= largest, (problem.key, w.axes)
    assert drawn_any


def test_held_out_workloads_split_the_listed_ones(problems):
    mm = problems["L1/001_small_matmul"]
    shown, held = held_out_workloads(mm, 0.5, seed=0)
    assert len(shown) == len(held) == 1
    assert {w.uuid for w in shown + held} == {w.uuid for w in mm.workloads}
    shown, held = held_out_workloads(problems["Quant/001_fp8_patch_mean_pool"], 0.5, seed=0)
    assert len(shown) == 1 and held == []


# ---------------------------------------------------------------------------- scoring glue


def test_workload_results_pair_candidate_and_baseline_times():
    def ev(status, t):
        return WorkloadEval(uuid="w", axes={}, status=status, time_ns=t)

    cand = ProblemEval(problem="L1/x", device="cpu", workloads=[ev("ok", 50.0)])
    base = ProblemEval(problem="L1/x", device="cpu", workloads=[ev("ok", 100.0)])
    (r,) = workload_results(cand, base, {"w": 10.0})
    assert workload_score(r) == sol_score(50.0, 100.0, 10.0)
    (r,) = workload_results(cand.model_copy(update={"workloads": [ev("incorrect", None)]}),
                            base, {"w": 10.0})
    assert workload_score(r) == 0.0


def test_a_forkserver_started_elsewhere_in_its_own_pid_namespace_serves_workers(problems,
                                                                                  tmp_path):
    """The campaign's shape: the forkserver is a step someone else started (its socket in
    AUTOLAB_CHANNEL_FD, its pids its own), driven here over that socket; the workers it
    forks are watched under the pids this process sees."""
    import os
    import shutil
    import subprocess
    import sys

    from benchmarks.solexec import wire
    from benchmarks.solexec.launch import PROJECT

    ours, theirs = wire.socket_pair()
    prefix = []
    if shutil.which("unshare") and subprocess.run(
            ["unshare", "--pid", "--fork", "--mount-proc", "true"],
            capture_output=True).returncode == 0:
        prefix = ["unshare", "--pid", "--fork", "--mount-proc"]
    env = {**os.environ, "AUTOLAB_CHANNEL_FD": str(theirs.fileno()), "PYTHONPATH": str(PROJECT)}
    proc = subprocess.Popen([*prefix, sys.executable, "-m", "benchmarks.solexec.worker",
                             "--forkserver"], env=env, pass_fds=(theirs.fileno(),),
                            stdin=subprocess.DEVNULL, start_new_session=True)
    theirs.close()
    try:
        with Forkserver(ctrl=ours) as server:
            problem = problems["L1/001_small_matmul"]
            folder = reference_solution(problem, tmp_path / "ref")
            result = evaluate(problem, folder, server)
            assert {w.status for w in result.workloads} == {"ok"}, result.log_tail
            worker = server.launch(tmp_path / "build2")
            try:
                assert worker.pid != proc.pid
                cmdline = " ".join(open(f"/proc/{worker.pid}/cmdline").read().split("\0"))
                assert "benchmarks.solexec.worker" in cmdline  # the worker, as seen from here
            finally:
                worker.close()
    finally:
        proc.wait(timeout=30)


def test_a_worker_that_prints_without_end_fills_no_disk(problems, forks, tmp_path):
    """Its output goes through a pipe of which only the tail is kept."""
    from benchmarks.solexec.launch import LOG_TAIL_BYTES

    problem = problems["L1/001_small_matmul"]
    folder = write_solution(tmp_path / "noisy", """
        import sys
        for i in range(20000):
            sys.stdout.write(f"line {i} " + "x" * 1000 + "\\n")
        sys.stdout.write("the end\\n")
        sys.stdout.flush()

        def run(A, B):
            return A @ B.T
    """)
    result = evaluate(problem, folder, forks)
    assert {w.status for w in result.workloads} == {"ok"}
    assert "the end" in result.log_tail and len(result.log_tail) <= 2 * LOG_TAIL_BYTES + 100


def test_the_log_keeps_a_bounded_tail_of_what_is_written_to_it():
    import os

    from benchmarks.solexec.launch import LOG_TAIL_BYTES, LogTail

    log = LogTail()
    fd = os.dup(log.fd)
    log.handed_over()
    for i in range(2000):
        os.write(fd, f"{i:06d}".encode() * 1000)
    os.write(fd, b"last words")
    os.close(fd)
    tail = log.tail(settle_s=5.0)
    assert len(tail) == LOG_TAIL_BYTES and tail.endswith("last words")
    assert len(log._buf) == LOG_TAIL_BYTES  # what is kept, not only what is shown


class FakeDriver:
    """libcuda's virtual memory calls as the transport makes them, recorded; `fail` names
    one that returns an error."""

    def __init__(self, fail: str = ""):
        self.calls, self.fail = [], fail

    def __getattr__(self, name):
        def call(*args):
            self.calls.append(name)
            if name == self.fail:
                return 2  # CUDA_ERROR_OUT_OF_MEMORY
            if name == "cuGetErrorName":
                args[1]._obj.value = b"CUDA_ERROR_OUT_OF_MEMORY"
            elif name == "cuMemGetAllocationGranularity":
                args[0]._obj.value = 2 << 20
            elif name in ("cuMemCreate", "cuMemAddressReserve"):
                args[0]._obj.value = 0x7F0000000000
            elif name == "cuMemExportToShareableHandle":
                args[0]._obj.value = os.open(os.devnull, os.O_RDONLY)
            return 0
        return call


def test_the_driver_structures_have_the_c_layout():
    """CUmemAllocationProp and CUmemAccessDesc as cuda.h lays them out on x86-64: a field
    out of place would ask the driver for another memory type or location."""
    import ctypes

    assert ctypes.sizeof(transport._AllocationProp) == 32
    assert transport._AllocationProp.location.offset == 8
    assert transport._AllocationProp.allocFlags.offset == 24
    assert ctypes.sizeof(transport._AccessDesc) == 12
    prop = transport._prop(3)
    assert (prop.type, prop.requestedHandleTypes, prop.location.type, prop.location.id) == \
        (1, 1, 1, 3)  # pinned, a POSIX descriptor, on device 3


@pytest.fixture
def fake_gpu(monkeypatch):
    """The transport's CUDA side with a stand-in driver and a host tensor for the mapping
    (filled with what an earlier user of the memory might have left)."""
    def driver(fail: str = "") -> FakeDriver:
        fake = FakeDriver(fail)
        monkeypatch.setattr(transport, "_DRIVER", [fake])
        return fake

    monkeypatch.setattr(transport, "_device_index", lambda device: 0)
    monkeypatch.setattr(transport, "_device_uuid", lambda index: f"GPU-{index}")
    monkeypatch.setattr(transport, "_vmm_tensor",
                        lambda handle, size, index: torch.full((size,), 0xAB, dtype=torch.uint8))
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a, **k: None)
    return driver


def test_a_device_arena_is_rounded_up_zeroed_and_shared_by_one_descriptor(fake_gpu):
    fake = fake_gpu()
    arena = transport.DeviceArena(5000, "cuda:0")
    handle, fds = arena.handle()
    assert handle == {"kind": "cuda", "size": 2 << 20, "uuid": "GPU-0"} and fds == (arena.fd,)
    assert arena.tensor.numel() == 2 << 20 and not arena.tensor.any()  # nothing left over
    # the creating reference is dropped at once: the mapping and the descriptor hold it
    assert fake.calls == ["cuMemGetAllocationGranularity", "cuMemCreate",
                          "cuMemExportToShareableHandle", "cuMemRelease"]
    fd = arena.fd
    arena.close()
    assert arena.fd == -1
    with pytest.raises(OSError):
        os.fstat(fd)


def test_a_device_arena_that_cannot_be_made_leaks_nothing_and_says_why(fake_gpu):
    """An arena the driver refuses is the evaluator's fault (ArenaError, which the
    evaluation does not take for the reference's), and leaves no handle or descriptor."""
    fake = fake_gpu(fail="cuMemExportToShareableHandle")
    with pytest.raises(transport.ArenaError, match=r"cuMemExportToShareableHandle failed: "
                       r"CUDA driver error 2 \(CUDA_ERROR_OUT_OF_MEMORY\)"):
        transport.DeviceArena(4096, "cuda:0")
    assert fake.calls[-1] == "cuMemRelease"
    fds_before = len(os.listdir("/proc/self/fd"))
    fake_gpu(fail="cuMemCreate")
    with pytest.raises(transport.ArenaError, match="cuMemCreate failed"):
        transport.DeviceArena(4096, "cuda:0")
    assert len(os.listdir("/proc/self/fd")) == fds_before


def test_a_mapping_that_fails_half_way_is_undone_and_a_whole_one_at_its_end(monkeypatch):
    """cuMemSetAccess refused: the range is unmapped and its address given back before the
    error surfaces; a mapping that worked is unmapped when torch drops the last view."""
    fake = FakeDriver(fail="cuMemSetAccess")
    monkeypatch.setattr(transport, "_DRIVER", [fake])
    with pytest.raises(RuntimeError, match="cuMemSetAccess failed"):
        transport._Mapping(handle=7, size=2 << 20, index=0)
    assert fake.calls == ["cuMemAddressReserve", "cuMemMap", "cuMemSetAccess",
                          "cuGetErrorName", "cuMemUnmap", "cuMemAddressFree"]
    fake = FakeDriver()
    monkeypatch.setattr(transport, "_DRIVER", [fake])
    synced = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda index: synced.append(index))
    mapping = transport._Mapping(handle=7, size=2 << 20, index=0)
    assert mapping.__cuda_array_interface__["data"] == (0x7F0000000000, False)
    assert mapping.__cuda_array_interface__["shape"] == (2 << 20,)
    del mapping
    assert synced == [0] and fake.calls[-2:] == ["cuMemUnmap", "cuMemAddressFree"]
    # the device cannot say its work is done (a broken context): left mapped, not freed
    fake.calls.clear()

    def broken(index):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(torch.cuda, "synchronize", broken)
    mapping = transport._Mapping(handle=7, size=2 << 20, index=0)
    del mapping
    assert "cuMemUnmap" not in fake.calls and "cuMemAddressFree" not in fake.calls


def test_the_worker_closes_every_descriptor_it_was_sent_even_on_a_bad_handle():
    with pytest.raises(ValueError, match="one descriptor, not 0"):
        transport.Mapped({"kind": "cuda", "size": 2 << 20, "uuid": "GPU-0"}, ())
    for handle, n in (({"kind": "cuda", "size": 2 << 20, "uuid": "GPU-0"}, 2),
                      ({"kind": "elsewhere"}, 1)):
        fds = [os.open(os.devnull, os.O_RDONLY) for _ in range(n)]
        with pytest.raises(ValueError):
            transport.Mapped(handle, fds)
        for fd in fds:
            with pytest.raises(OSError):
                os.fstat(fd)


def test_the_worker_maps_an_arena_only_on_the_gpu_it_was_made_on(fake_gpu, monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert transport._visible_index("GPU-1") == 0  # _device_index stands in: ordinal 0
    with pytest.raises(ValueError, match="GPU-7 is not among the 2 this process sees"):
        transport._visible_index("GPU-7")




def test_an_arena_the_machine_cannot_make_is_the_evaluator_s_fault_not_a_skip(
        problems, forks, tmp_path, monkeypatch):
    """A reference that cannot run a workload skips it; memory the trusted side cannot
    allocate is no verdict on any workload: the evaluation stops with the error."""
    problem = next(iter(problems.values()))
    folder = reference_solution(problem, tmp_path / "ref")

    def refused(size, device):
        raise transport.ArenaError(f"no device arena of {size} bytes on {device}: refused")

    monkeypatch.setattr(transport, "new_arena", refused)
    with pytest.raises(transport.ArenaError, match="refused"):
        evaluate(problem, folder, forks)


def test_device_mappings_are_placed_at_drawn_addresses_that_never_overlap(monkeypatch):
    """The worker's device mappings go into one range reserved per process, each at an
    offset drawn at random: no two live ones overlap, and where one lies says nothing of
    where the next will."""
    fake = FakeDriver()
    monkeypatch.setattr(transport, "_DRIVER", [fake])
    window = transport._Window()
    assert fake.calls == ["cuMemAddressReserve"] and window.base == 0x7F0000000000
    size = 64 << 20
    placed = [window.place(size) for _ in range(50)]
    assert all(window.base <= a and a + size <= window.base + window.size for a in placed)
    assert all(a % transport.ADDRESS_ALIGN == 0 for a in placed)
    spans = sorted(placed)
    assert all(b >= a + size for a, b in zip(spans, spans[1:], strict=False))
    assert len({a - placed[0] for a in placed[1:]}) == 49  # no fixed stride between them
    for a in placed:
        window.free(a)
    assert window.used == {}


def test_the_worker_gets_no_compiler_the_host_names_outside_the_sandbox(monkeypatch, tmp_path):
    """A host's CC/CXX may name a compiler the sandbox does not show (/opt/gcc/bin/gcc):
    passed on, every torch.compile or Triton build in the worker failed. Triton and
    Inductor take the system's compiler from PATH instead; the CUDA variables still pass."""
    from benchmarks.solexec.launch import worker_env

    monkeypatch.setenv("CC", "/opt/gcc/bin/gcc")
    monkeypatch.setenv("CXX", "/opt/gcc/bin/g++")
    monkeypatch.setenv("CUDA_HOME", "/usr/local/cuda")
    env = worker_env(tmp_path, tmp_path)
    assert "CC" not in env and "CXX" not in env
    assert env["CUDA_HOME"] == "/usr/local/cuda" and "/usr/bin" in env["PATH"].split(":")


def test_an_evaluation_says_where_its_time_went(problems, forks, tmp_path):
    """Per phase (workers started and calibrated, the solution loaded, inputs drawn and
    staged, round trips, checks, late empty calls): what a slow trial is slow at. A
    solution slower at its calls shows it in `call`, and the phases fit in the wall time."""
    problem = problems["L1/001_small_matmul"]
    fast = evaluate(problem, write_solution(tmp_path / "a", problem.reference), forks)
    slow = evaluate(problem, write_solution(tmp_path / "b", """
        import time

        import torch


        def run(A, B):
            time.sleep(0.05)
            return torch.matmul(A, B.T)
        """), forks)
    assert fast.passed and slow.passed
    want = {"start", "load", "draw", "pause", "stage", "warmup", "call", "check", "empty"}
    assert want <= set(fast.phase_s) and sum(fast.phase_s.values()) <= fast.wall_s
    timed_calls = FAST.reps * len([w for w in slow.workloads if w.status == "ok"])
    assert slow.phase_s["call"] - fast.phase_s["call"] >= 0.04 * timed_calls


def test_a_call_clocked_late_after_its_staging_is_not_counted(problems, forks, tmp_path,
                                                              monkeypatch):
    """A timed round trip whose clock starts later than `stage_gap_s` after its inputs
    were staged (this process descheduled) lets the worker see them unclocked: its time is
    not kept and the trip is made again on a fresh draw; a host where that keeps happening
    fails the workload (the worker may be what keeps it busy)."""
    import benchmarks.solexec.evaluate as evaluate_mod
    from benchmarks.solexec.link import CacheFlush

    calibrating = [False]
    real = evaluate_mod._calibrate

    def calibrate(*a, **k):  # the flush's own time, as calibrated, is allowed
        calibrating[0] = True
        try:
            return real(*a, **k)
        finally:
            calibrating[0] = False

    class StallingFlush(CacheFlush):  # this process descheduled after the staging
        def __call__(self) -> None:
            super().__call__()
            if not calibrating[0]:
                time.sleep(0.01)

    monkeypatch.setattr(evaluate_mod, "_calibrate", calibrate)
    monkeypatch.setattr(evaluate_mod, "CacheFlush", StallingFlush)
    problem = problems["L1/001_small_matmul"]
    folder = write_solution(tmp_path / "a", problem.reference)
    ok = evaluate(problem, folder, forks, replace(FAST, stage_gap_s=10.0))
    assert ok.passed and all(len(w.times_ns) == FAST.reps for w in ok.workloads)
    late = evaluate(problem, folder, forks, replace(FAST, stage_gap_s=0.001))
    assert {w.status for w in late.workloads} == {"failed"}
    assert all("after their inputs were staged" in w.reason for w in late.workloads)
