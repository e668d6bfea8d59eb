"""Red team for the SOL-ExecBench evaluator: each test plants one hack in a candidate and
sees it caught, with the reason recorded; the honest reference, under the same settings,
passes every check. All on the small matmul fixture (C = A @ B.T) shrunk for CPU."""

from __future__ import annotations

import json
import statistics
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from benchmarks.solexec.evaluate import Timing, evaluate_problem, reference_solution
from benchmarks.solexec.hidden import evaluate_hidden, hidden_workloads
from benchmarks.solexec.launch import PROJECT, Forkserver
from benchmarks.solexec.link import net_time
from benchmarks.solexec.problems import load_problems

FIXTURES = Path(__file__).parent / "fixtures" / "solexec"
# three calls a round trip, as a GPU evaluation batches them: every hack meets the
# batched path (the unbatched one is tests/test_solexec_eval.py's)
FAST = Timing(warmup=1, reps=3, call_timeout_s=5.0, warmup_timeout_s=5.0, load_timeout_s=30.0,
              flush_bytes=1 << 16, max_elements=256, settle_s=0.02, idle_cpu_floor_ms=5.0, batch=3,
              stage_gap_s=0.05)


@pytest.fixture(scope="module")
def matmul():
    return next(p for p in load_problems(FIXTURES, ["L1"]) if p.name == "001_small_matmul")


@pytest.fixture(scope="module")
def forks():
    with Forkserver() as server:
        yield server


def evaluate(problem, forks, folder: Path, source: str | None, timing: Timing = FAST, **kw):
    if source is None:
        reference_solution(problem, folder)
    else:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "solution.py").write_text(textwrap.dedent(source))
    return evaluate_problem(problem, folder, timing, launch=forks.launch,
                            build_dir=folder / "build", seed=11, **kw)


def statuses(result) -> set[str]:
    return {w.status for w in result.workloads}


def test_the_honest_reference_passes_every_check(matmul, forks, tmp_path):
    result = evaluate(matmul, forks, tmp_path / "ref", None)
    assert result.passed, [(w.status, w.reason) for w in result.workloads]


def test_1_patched_clocks_do_not_move_the_trusted_clock(matmul, forks, tmp_path):
    """The candidate replaces every clock and synchronize it can reach in its process and
    works 20 ms a call; the time measured here still includes the 20 ms."""
    result = evaluate(matmul, forks, tmp_path / "clock", """
        import time
        import torch

        time.perf_counter = lambda: 0.0
        time.perf_counter_ns = lambda: 0
        time.monotonic = lambda: 0.0
        time.time = lambda: 0.0

        class Event:
            def __init__(self, *args, **kwargs): pass
            def record(self, *args): pass
            def synchronize(self): pass
            def elapsed_time(self, other): return 0.0

        torch.cuda.Event = Event
        torch.cuda.synchronize = lambda *args, **kwargs: None
        torch.cuda.current_stream = lambda *args, **kwargs: None

        def run(A, B):
            time.sleep(0.02)
            return A @ B.T
    """)
    assert statuses(result) == {"ok"}
    for w in result.workloads:
        assert min(w.times_ns) >= 20e6 and w.median_ns >= 20e6, w.times_ns


def test_a_round_trip_carries_several_calls_each_on_its_own_inputs_and_judged(
        matmul, forks, tmp_path):
    """Three calls a round trip: each is run, checked and counted, and the round trip's
    time less one overhead is shared by them. A candidate that works 20 ms a call takes
    60 ms a round trip and scores 20 ms a call, not 60 and not 20 less the overhead."""
    result = evaluate(matmul, forks, tmp_path / "trip", """
        import time

        def run(A, B):
            time.sleep(0.02)
            return A @ B.T
    """)
    assert statuses(result) == {"ok"}
    for w in result.workloads:
        assert w.calls_per_trip == 3 and w.calls_checked == (FAST.warmup + FAST.reps) * 3
        assert min(w.times_ns) >= 60e6 and len(w.times_ns) == FAST.reps
        assert 20e6 <= w.time_ns < 30e6, w.time_ns


def test_calls_per_round_trip_are_bounded_by_their_arenas():
    from benchmarks.solexec.material import batch_copies

    assert batch_copies(1 << 20, 16, 1 << 30) == 16
    assert batch_copies(256 << 20, 16, 1 << 30) == 4
    assert batch_copies(4 << 30, 16, 1 << 30) == 1  # larger than the bound: one, never none
    assert batch_copies(0, 16, 1 << 30) == 16


def test_1_slowing_the_empty_calls_cannot_inflate_the_subtracted_overhead(matmul, forks,
                                                                            tmp_path):
    """The overhead is timed before the solution is imported: a candidate that makes its
    worker answer empty calls 50 ms late changes nothing that is subtracted."""
    result = evaluate(matmul, forks, tmp_path / "empty", """
        import sys
        import time

        worker = next(m for m in list(sys.modules.values()) if hasattr(m, "worker_main"))
        handle = worker._handle

        def slow_empties(state, msg, fds):
            if msg["op"] == "empty":
                time.sleep(0.05)
            return handle(state, msg, fds)

        worker._handle = slow_empties

        def run(A, B):
            return A @ B.T
    """)
    assert statuses(result) == {"ok"}
    assert all(max(w.overhead_times_ns) < 50e6 for w in result.workloads)
    for w in result.workloads:  # the late empties were slowed, and are not what is subtracted
        assert min(w.late_overhead_times_ns) >= 50e6, w.late_overhead_times_ns
        net, _, subtracted = net_time(w.times_ns, w.overhead_times_ns, w.late_overhead_times_ns)
        assert w.calls_per_trip == 3  # the round trip's time is shared by its calls
        assert subtracted == statistics.median(w.overhead_times_ns)
        assert w.time_ns == net / w.calls_per_trip
        # never faster for it: their spread may raise the noise floor, never lower the time
        assert w.time_ns >= net_time(w.times_ns, w.overhead_times_ns)[0] / w.calls_per_trip


def test_1b_work_moved_into_the_empty_calls_counts_as_work_between_calls(matmul, forks,
                                                                         tmp_path):
    """The empty call after each timed call is no hiding place: 30 ms of CPU spent in each
    one is CPU used between calls, and fails the workloads."""
    result = evaluate(matmul, forks, tmp_path / "empty-cpu", """
        import sys
        import time

        worker = next(m for m in list(sys.modules.values()) if hasattr(m, "worker_main"))
        handle = worker._handle

        def busy_empties(state, msg, fds):
            if msg["op"] == "empty":
                end = time.thread_time() + 0.03
                while time.thread_time() < end:
                    pass
            return handle(state, msg, fds)

        worker._handle = busy_empties

        def run(A, B):
            return A @ B.T
    """, replace(FAST, batch=1))  # the empty calls are its subject: one call a trip
    assert statuses(result) == {"failed"}
    assert all("between calls" in w.reason for w in result.workloads), result.workloads


def test_2_a_thread_that_finishes_the_output_late_is_caught_at_the_answer(matmul, forks,
                                                                          tmp_path):
    result = evaluate(matmul, forks, tmp_path / "thread", """
        import threading
        import time
        import torch

        def run(A, B):
            out = torch.full((A.shape[0], B.shape[0]), float("nan"))
            def finish():
                time.sleep(0.05)
                torch.matmul(A, B.T, out=out)
            threading.Thread(target=finish, daemon=True).start()
            return out
    """)
    assert statuses(result) == {"incorrect"}
    assert all("call 1: output C: non-finite" in w.reason for w in result.workloads)


@pytest.mark.parametrize(("body", "reason"), [
    ("class Lazy(torch.Tensor):\n    pass\n"
     "def run(A, B):\n    return torch.Tensor._make_subclass(Lazy, A @ B.T)\n",
     "is a Lazy, not a plain torch.Tensor"),
    ("class Proxy:\n    def __init__(self, f):\n        self.f = f\n"
     "    def __getattr__(self, name):\n        return getattr(self.f(), name)\n"
     "def run(A, B):\n    return Proxy(lambda: A @ B.T)\n",
     "is a Proxy, not a plain torch.Tensor"),
    ("def run(A, B):\n    return (A @ B.T).to_sparse()\n", "not a dense one"),
    ("def run(A, B):\n    return (A @ B.T).double()\n", "expected torch.float32"),
    ("def run(A, B):\n    return torch.empty(A.shape[0], B.shape[0], device='meta')\n",
     "is on meta"),
], ids=["tensor-subclass", "proxy-object", "sparse", "wrong-dtype", "meta-device"])
def test_3_lazy_proxy_or_misdeclared_outputs_are_refused(matmul, forks, tmp_path, body, reason):
    result = evaluate(matmul, forks, tmp_path / "lazy", "import torch\n" + body)
    assert statuses(result) == {"failed"}
    assert all(reason in w.reason for w in result.workloads), result.workloads


def test_4_tampering_with_the_worker_changes_nothing_it_is_judged_by(matmul, forks, tmp_path):
    """The candidate rewrites the worker's call handling to claim success (with a digest
    of what is in the slots, so the answer is self-consistent) without computing anything,
    and writes files next to the harness. The verdict is reached here, from this process's
    own memory: incorrect. The files it wrote were in its own copy of the harness."""
    folder = tmp_path / "tamper"
    judge = (PROJECT / "benchmarks/solexec/evaluate.py").read_bytes()
    result = evaluate(matmul, forks, folder, """
        import pathlib
        import sys

        worker = next(m for m in list(sys.modules.values()) if hasattr(m, "worker_main"))
        transport = sys.modules["benchmarks.solexec.transport"]

        def claim(state, works, call_id):
            return {"ok": True, "id": call_id,
                    "digests": [transport.digest(work.outs) for work in works]}

        worker._call = claim
        worker._publish = lambda *args: None
        here = pathlib.Path(worker.__file__).parent
        (here / "evaluate.py").write_text("VERDICT = 'ok'\\n")
        (here / "verdict.json").write_text('{"status": "ok", "time_ns": 1}')
        pathlib.Path("tampered").write_text(str(here))

        def run(A, B):
            raise AssertionError("never called: the worker's call was replaced")
    """)
    assert statuses(result) == {"incorrect"}
    assert all("non-finite" in w.reason for w in result.workloads)  # the poisoned slots
    harness_copy = Path((folder / "build" / "tampered").read_text())
    assert not harness_copy.is_relative_to(PROJECT)
    assert (PROJECT / "benchmarks/solexec/evaluate.py").read_bytes() == judge
    assert not (PROJECT / "benchmarks/solexec/verdict.json").exists()


def test_4_a_forged_early_answer_cannot_pass(matmul, forks, tmp_path):
    """The worker's only power is to answer calls: an answer sent before the outputs exist
    (forged on the channel with the right call id) fails the digest at once."""
    result = evaluate(matmul, forks, tmp_path / "forge", """
        import gc
        import json
        import socket
        import sys

        wire = sys.modules["benchmarks.solexec.wire"]

        def run(A, B):
            call_id = sys._getframe(1).f_locals["call_id"]
            sock = next(o for o in gc.get_objects()
                        if isinstance(o, socket.socket) and o.fileno() >= 0)
            wire.send_frame(sock, json.dumps({"ok": True, "id": call_id, "digests": [0]}).encode())
            return A @ B.T
    """, workloads=matmul.workloads[:1])
    (w,) = result.workloads
    assert w.status == "failed" and "answered before its outputs were in place" in w.reason


@pytest.mark.parametrize(("key", "batch", "answered"), [
    ("(tuple(A.shape), tuple(B.shape))", 3, True),
    ("A.data_ptr()", 1, True),  # one call a trip: the arena's address repeats
    ("A.data_ptr()", 3, False),  # several: every trip maps them afresh, nothing repeats
], ids=["keyed-on-shapes", "keyed-on-pointer", "keyed-on-pointer-remapped"])
def test_5_outputs_cached_across_calls_meet_fresh_inputs(matmul, forks, tmp_path, key, batch,
                                                         answered):
    result = evaluate(matmul, forks, tmp_path / "cache", f"""
        _cache = {{}}

        def run(A, B):
            key = {key}
            if key not in _cache:
                _cache[key] = A @ B.T
            return _cache[key]
    """, replace(FAST, batch=batch))
    if not answered:  # the cache never answered: every call computed, correctly
        assert statuses(result) == {"ok"}, result.workloads
        return
    assert statuses(result) == {"incorrect"}
    # the first call computed; a later one met fresh inputs with the cached answer
    assert all(w.reason.startswith("call ") and not w.reason.startswith("call 1:")
               for w in result.workloads), result.workloads


def test_6_state_carried_from_one_workload_to_another_is_caught_by_interleaving(
        matmul, forks, tmp_path):
    """Correct whenever calls to one workload come in a row (as in a harness that runs
    workloads one after another, or within one round trip), wrong when it comes back to a
    workload after another's call: the timed rounds interleave the workloads, so it is
    caught."""
    result = evaluate(matmul, forks, tmp_path / "state", """
        import torch

        _seen = []

        def run(A, B):
            _seen.append(tuple(A.shape))
            if len(_seen) > 2 and _seen[-2] != _seen[-1] and _seen[-1] in _seen[:-2]:
                return torch.zeros(A.shape[0], B.shape[0])  # the plan of the other workload
            return A @ B.T
    """)
    assert "incorrect" in statuses(result)
    sequential = evaluate(matmul, forks, tmp_path / "state-seq", (tmp_path / "state" /
                          "solution.py").read_text(), workloads=matmul.workloads[:1])
    assert sequential.passed  # one workload alone: nothing to carry over


def test_7_writing_into_the_inputs_is_caught_against_a_pristine_copy(matmul, forks, tmp_path):
    result = evaluate(matmul, forks, tmp_path / "mutate", """
        def run(A, B):
            out = A @ B.T
            A.zero_()
            return out
    """)
    assert statuses(result) == {"failed"}
    assert all("wrote into its input 'A'" in w.reason for w in result.workloads)


CACHE_UPDATE = {
    "name": "001_cache_update",
    "axes": {"n": {"type": "var"}, "slots": {"type": "const", "value": 32},
             "d": {"type": "const", "value": 4}},
    "inputs": {"cache": {"shape": ["slots", "d"], "dtype": "float32"},
               "new": {"shape": ["n", "d"], "dtype": "float32"}},
    "outputs": {"cache_out": {"shape": ["slots", "d"], "dtype": "float32"},
                "total": {"shape": ["n"], "dtype": "float32"}},
    "reference": "def run(cache, new):\n    cache[: new.shape[0]] = new\n"
                 "    return cache, new.sum(-1)\n",
}


@pytest.mark.parametrize(("source", "status"), [
    (None, "ok"),  # the reference: updates the cache in place, as the definition does
    ("def run(cache, new):\n    out = cache.clone()\n    out[: new.shape[0]] = new\n"
     "    return out, new.sum(-1)\n", "ok"),  # leaves it alone: only outputs are judged
    ("def run(cache, new):\n    cache[: new.shape[0]] = new\n    total = new.sum(-1)\n"
     "    new.zero_()\n    return cache, total\n", "failed"),  # writes where it may not
], ids=["reference", "copies-the-cache", "writes-another-input"])
def test_7_inputs_the_reference_updates_in_place_may_be_updated(forks, tmp_path, source,
                                                                status):
    folder = tmp_path / "benchmark" / "L1" / "001_cache_update"
    folder.mkdir(parents=True)
    (folder / "definition.json").write_text(json.dumps(CACHE_UPDATE))
    (folder / "workload.jsonl").write_text(json.dumps(
        {"uuid": "n-8", "axes": {"n": 8}, "inputs": {"cache": {"type": "random"},
                                                    "new": {"type": "random"}}}) + "\n")
    (problem,) = load_problems(tmp_path)
    result = evaluate(problem, forks, tmp_path / "solution", source)
    (w,) = result.workloads
    assert w.status == status, w.reason
    if status == "failed":
        assert "wrote into its input 'new'" in w.reason


@pytest.mark.parametrize(("body", "reason"), [
    # a thread still running after the call (started in each timed call)
    ("import threading, time\n"
     "def run(A, B):\n"
     "    threading.Thread(target=time.sleep, args=(2.0,), daemon=True).start()\n"
     "    return A @ B.T\n", "more thread(s) running after the call"),
    # a child process still running after the call
    ("import subprocess\n"
     "def run(A, B):\n"
     "    subprocess.Popen(['sleep', '2'])\n"
     "    return A @ B.T\n", "child process(es) running after the call"),
    # background work that writes into the output slots after the answer
    # (it looks until it finds the call's work: one look may come before it exists)
    ("import gc, threading, time\n"
     "def _scribble():\n"
     "    for _ in range(200):\n"
     "        time.sleep(0.005)\n"
     "        work = [o for o in gc.get_objects() if type(o).__name__ == '_Work']\n"
     "        for o in work:\n"
     "            for t in o.outs:\n"
     "                t.fill_(7)\n"
     "        if work:\n"
     "            return\n"
     "def run(A, B):\n"
     "    threading.Thread(target=_scribble, daemon=True).start()\n"
     "    return A @ B.T\n", "in the background"),
], ids=["thread", "child-process", "late-write"])
def test_8_work_left_running_after_the_answer_is_caught(matmul, forks, tmp_path, body, reason):
    """The CPU analogue of work left on a side stream. On a GPU the worker's device-wide
    synchronize, taken before the candidate was imported, waits for every stream of its
    context inside the timed window, and the digest in the answer proves the outputs were
    in place when it answered; work enqueued after the answer by a thread is what these
    process checks are for."""
    result = evaluate(matmul, forks, tmp_path / "background", body,
                      replace(FAST, settle_s=0.05, batch=1))
    assert "failed" in statuses(result) and "ok" not in statuses(result), result.workloads
    assert any(reason in w.reason for w in result.workloads), result.workloads
    # several calls a trip: caught too (a scribble may land before a later call's answer,
    # which is then incorrect rather than changed after it)
    batched = evaluate(matmul, forks, tmp_path / "background-batched", body,
                       replace(FAST, settle_s=0.05))
    assert "ok" not in statuses(batched), batched.workloads


def test_8_cpu_burnt_between_calls_is_caught(matmul, forks, tmp_path):
    """A thread started at import (so it is there before warm-up ends) that works whenever
    the worker waits for a call: where the next inputs could be computed on unclocked."""
    result = evaluate(matmul, forks, tmp_path / "idle", """
        import threading

        def _spin():
            x = 0
            while True:
                x += 1

        threading.Thread(target=_spin, daemon=True).start()

        def run(A, B):
            return A @ B.T
    """, replace(FAST, reps=6))
    assert statuses(result) == {"failed"}
    assert all("between calls" in w.reason for w in result.workloads), result.workloads


def test_9_a_solution_specialised_to_the_visible_shapes_fails_hidden_workloads(
        matmul, forks, tmp_path):
    folder = tmp_path / "special"
    source = """
        import torch

        VISIBLE = {4, 4096}  # the row counts of workload.jsonl

        def run(A, B):
            if A.shape[0] in VISIBLE:
                return A @ B.T
            return torch.zeros(A.shape[0], B.shape[0])
    """
    timing = replace(FAST, max_elements=None)  # K=16, N=8: the real shapes are small
    visible = evaluate(matmul, forks, folder, source, timing)
    assert visible.passed
    hidden = evaluate_hidden(matmul, folder, timing, count=3, seed=5, launch=forks.launch,
                             build_dir=folder / "build")
    assert all(w.hidden for w in hidden.workloads) and not hidden.passed
    assert {w.status for w in hidden.workloads} == {"incorrect"}
    assert {w.uuid for w in hidden.workloads} == {
        w.uuid for w in hidden_workloads(matmul, 3, seed=5)}
    honest = evaluate_hidden(matmul, reference_solution(matmul, tmp_path / "ref"), timing,
                             count=3, seed=5, launch=forks.launch)
    assert honest.passed


def test_a_process_that_outlives_its_parent_is_still_seen(matmul, forks, tmp_path):
    """A daemon double-forked at import is no child of the worker's: the forkserver
    adopts it, and it counts as a process the worker left running."""
    result = evaluate(matmul, forks, tmp_path / "daemon", """
        import os
        import time

        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                time.sleep(60)
                os._exit(0)
            os._exit(0)
        os.wait()

        def run(A, B):
            return A @ B.T
    """)
    assert statuses(result) == {"failed"}
    assert all("child process" in w.reason for w in result.workloads), result.workloads



# Plain Python, nothing the static scan refuses: `run` keeps the views it is given. Were a
# round trip to carry several calls, their fresh inputs would all be in views it holds at
# the trip's first call: it would compute them all then (on a GPU, one batched launch;
# here 20 ms of latency paid once) and answer the others from what it kept.
LOOKAHEAD = """
    import time

    _copies = {}  # a workload's shapes -> each copy's input views, in the order called
    _ready = {}


    def run(A, B):
        copies = _copies.setdefault((tuple(A.shape), tuple(B.shape)), [])
        if all(a.data_ptr() != A.data_ptr() for a, _ in copies):
            copies.append((A, B))
            time.sleep(0.02)
            return A @ B.T
        if A.data_ptr() in _ready:
            return _ready.pop(A.data_ptr())
        time.sleep(0.02)
        for a, b in copies:
            if a.data_ptr() != A.data_ptr():
                _ready[a.data_ptr()] = a @ b.T
        return A @ B.T
"""


KEEPS_VIEWS = """
    _kept = []

    def run(A, B):
        ahead = [a @ b.T for a, b in _kept]  # whatever the views kept from earlier hold now
        _kept.append((A, B))
        return A @ B.T
"""


@pytest.mark.parametrize("device", [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                  reason="a device arena needs a GPU")),
])
def test_a_round_trip_s_calls_cannot_be_worked_on_ahead(matmul, forks, tmp_path, device):
    """Several calls a trip are staged before its first: a solution that keeps the views
    it was given and works ahead on them (plain Python, nothing the static scan refuses)
    would find the trip's other inputs in them. Each trip maps every arena afresh at an
    address drawn at random and unmaps the old mapping, so a kept view reaches nothing:
    looking ahead gains nothing, and reading a kept view is a crash."""
    from autolab.static_scan import static_findings
    from benchmarks.solexec.benchmark import SolExecProblem

    bench = SolExecProblem(matmul, "solexec", preset="gpu")
    # the scan does not stop it (the sleep, standing for a kernel's latency, aside)
    clean = textwrap.dedent(LOOKAHEAD).replace("import time\n", "").replace(
        "time.sleep(0.02)", "pass")
    assert static_findings("solution.py", clean, bench.allowed_imports,
                           bench.allowed_attrs) == []
    timing = replace(FAST, device=device)
    assert timing.batch == 3
    honest = evaluate(matmul, forks, tmp_path / "ref", None, timing)
    assert honest.passed, honest.workloads
    for batch in (1, 3):
        result = evaluate(matmul, forks, tmp_path / f"ahead-{batch}", LOOKAHEAD,
                          replace(timing, batch=batch))
        assert statuses(result) == {"ok"}
        assert all(w.time_ns >= 18e6 for w in result.workloads), [w.time_ns for w in
                                                                  result.workloads]
    kept = evaluate(matmul, forks, tmp_path / "kept", KEEPS_VIEWS, timing)
    assert "ok" not in statuses(kept), kept.workloads


@pytest.mark.parametrize("source", [
    """
import operator

_caller = operator.attrgetter("tb_frame.f_back.f_locals")


def run(A, B):
    try:
        raise KeyError(0)
    except KeyError as e:
        works = _caller(operator.attrgetter("__traceback__")(e)).get("works", [])
    return A @ B.T
""", """
from operator import methodcaller


def run(A, B):
    return methodcaller("__matmul__", B.T)(A)
""", """
import numpy as np
from torch.utils.data.datapipes.iter import FileOpener


def run(A, B):
    for _, stream in FileOpener(["/proc/self/maps"], mode="r"):
        text = stream.read()
    base = A.numpy().view(np.uint8).reshape(-1)
    rows = np.lib.stride_tricks.as_strided(base, shape=(2, 4), strides=(4096, 1))
    return A @ B.T
""", """
from torch._inductor.compile_worker.timer import sleep


def run(A, B):
    return A @ B.T
""", """
from torch.multiprocessing.spawn import time


def run(A, B):
    return A @ B.T
""", """
import torch

_Thread = torch.utils.data.dataloader.Thread


def run(A, B):
    return A @ B.T
"""], ids=["attrgetter-frames", "methodcaller", "maps-and-as-strided", "private-module-path",
        "refused-module-path", "thread-by-another-road"])
def test_the_scan_refuses_the_roads_to_memory_a_call_was_not_given(matmul, source):
    """Attribute access by a string name (the worker's frames through a traceback), reading
    /proc/self/maps, and a strided view reaching past its buffer: what a solution would use
    to find inputs it was not given. And the presets carry one call a round trip, so no
    other call's inputs exist in the worker while one runs."""
    from autolab.static_scan import static_findings
    from benchmarks.solexec.benchmark import TIMINGS, SolExecProblem

    bench = SolExecProblem(matmul, "solexec", preset="gpu")
    assert static_findings("solution.py", source, bench.allowed_imports,
                           bench.allowed_attrs) != []
    assert TIMINGS["gpu"].batch == TIMINGS["cpu"].batch == 1


# The worker's replies go through json.dumps, a module a solution reaches through torch's
# namespaces without importing it. Hooked, a reply sent after a call's inputs were
# staged and before its clock started (an untimed wake-up message was once there) would
# let the solution compute the call unclocked; nothing of the worker's runs there now,
# and the worker's own encoder was bound before the solution was imported.
_SLOW = """
import torch

_X = torch.ones(256, 256) / 256


def waste():  # milliseconds of CPU, standing for a slow kernel
    y = _X
    for _ in range(40):
        y = y @ _X
    return y
"""

HOOKED_REPLY = _SLOW + """
from torch.profiler.profiler import json  # the scan refuses it; the harness must not need it

_dumps = json.dumps
kept = {}
done = {}


def _hook(obj, *args, **kwargs):
    # a reply to an untimed request ({"ok", "id"}: no digests): work on the views kept
    if type(obj) is dict and len(obj) == 2 and obj.get("ok") is True:
        for key, (A, B) in kept.items():
            waste()
            done[key] = A @ B.T
    return _dumps(obj, *args, **kwargs)


json.dumps = _hook


def run(A, B):
    key = (A.data_ptr(), B.data_ptr())
    kept[key] = (A, B)
    out = done.pop(key, None)
    if out is not None:
        return out
    waste()
    return A @ B.T
"""


def test_a_hooked_reply_computes_nothing_before_the_clock(matmul, forks, tmp_path):
    from autolab.static_scan import static_findings
    from benchmarks.solexec.benchmark import SolExecProblem

    bench = SolExecProblem(matmul, "solexec", preset="gpu")
    # the scan refuses the road to json (and the evaluation must hold without the scan)
    assert static_findings("solution.py", HOOKED_REPLY, bench.allowed_imports,
                           bench.allowed_attrs) != []
    _gains_nothing(matmul, forks, tmp_path, HOOKED_REPLY, replace(FAST, batch=1, reps=5))


def _gains_nothing(matmul, forks, tmp_path, source: str, timing) -> None:
    """`source` either fails or is timed at least half as long as the same work done
    honestly inside the clock."""
    honest = evaluate(matmul, forks, tmp_path / "honest", _SLOW + """
def run(A, B):
    waste()
    return A @ B.T
""", timing)
    tried = evaluate(matmul, forks, tmp_path / "tried", source, timing)
    assert statuses(honest) == {"ok"}, honest.workloads
    for h, w in zip(honest.workloads, tried.workloads, strict=True):
        assert w.status != "ok" or w.time_ns >= 0.5 * h.time_ns, (h.time_ns, w.time_ns)


# A thread started at import (so it is among the threads counted after warm-up) watching
# the views `run` was given: were a call's inputs staged before the pause that precedes
# its clock, it would see them change and do the call's work there, unclocked.
WATCHER = _SLOW + """
import threading
import time

views = {}
ready = {}


def _watch():
    last = {}
    while True:
        time.sleep(0.001)
        for key, (A, B) in list(views.items()):
            seen = (float(A.reshape(-1)[-1]), float(B.reshape(-1)[-1]))
            if last.get(key) != seen:
                last[key] = seen
                a, b = A.clone(), B.clone()
                waste()
                ready[key] = (a, b, a @ b.T)


threading.Thread(target=_watch, daemon=True).start()


def run(A, B):
    key = (A.data_ptr(), B.data_ptr())
    views[key] = (A, B)
    found = ready.pop(key, None)
    if found is not None and torch.equal(found[0], A) and torch.equal(found[1], B):
        return found[2]
    waste()
    return A @ B.T
"""


def test_the_pause_before_a_call_comes_before_its_inputs_are_staged(matmul, forks, tmp_path):
    """Every timed round trip starts a pause after the worker's last answer; a call's
    inputs are staged after that pause, so a thread that watches for them finds them only
    when the call is about to start, and gains nothing."""
    _gains_nothing(matmul, forks, tmp_path, WATCHER,
                   replace(FAST, batch=1, reps=5, idle_before_s=0.05))


# -- the gap between a call's staging and its clock ------------------------------------

# idle threads started at import: counted in the baseline after warm-up, using no CPU
PADDED = """
import threading

import torch

_stop = threading.Event()
_pad = [threading.Thread(target=_stop.wait, daemon=True) for _ in range({n})]
for t in _pad:
    t.start()


def run(A, B):
    return A @ B.T
"""


def _gaps(monkeypatch) -> list[int]:
    """sent_ns minus the moment `timed` was entered, for every timed call: the trusted
    side's own work between the staging and the clock."""
    import time

    from benchmarks.solexec.link import WorkerLink

    seen: list[int] = []
    real = WorkerLink.timed

    def timed(self, op, keys, watch_idle, timeout_s=None):
        t = time.perf_counter_ns()
        out = real(self, op, keys, watch_idle, timeout_s)
        if watch_idle and op == "call":
            seen.append(self.sent_ns - t)
        return out

    monkeypatch.setattr(WorkerLink, "timed", timed)
    return seen


def test_the_gap_before_the_clock_does_not_grow_with_the_candidates_threads(
        matmul, forks, tmp_path, monkeypatch):
    """Reading the worker's CPU time (a file per thread) happens at the pause, before the
    staging: a solution holding many idle threads neither lengthens the unclocked window
    a watcher would use nor gets its trips discarded."""
    gaps = _gaps(monkeypatch)
    no_gap = replace(FAST, stage_gap_s=10.0)  # nothing discarded: only the gap is measured
    evaluate(matmul, forks, tmp_path / "plain", PADDED.format(n=0), no_gap)
    plain = sorted(gaps)[len(gaps) // 2]
    gaps.clear()
    padded = evaluate(matmul, forks, tmp_path / "pad", PADDED.format(n=200), no_gap)
    assert statuses(padded) == {"ok"}
    assert sorted(gaps)[len(gaps) // 2] < 2 * plain + 100_000, (plain, gaps)


def test_a_workload_judged_on_its_last_retry_keeps_that_result(matmul, forks, tmp_path):
    """Every trip is judged, counted or not: a wrong answer on the last trip allowed is
    the workload's result, not overwritten by the gap's."""
    wrong_late = """
import torch

calls = [0]


def run(A, B):
    calls[0] += 1
    out = A @ B.T
    return out + 1.0 if calls[0] >= 5 else out
"""
    result = evaluate(matmul, forks, tmp_path / "w", wrong_late,
                      replace(FAST, stage_gap_s=0.0), workloads=[matmul.workloads[0]])
    assert [w.status for w in result.workloads] == ["incorrect"]


def test_the_cpu_flush_takes_microseconds():
    """On a CPU the flush runs on one thread: a pool's wake-up on a busy host would put
    milliseconds between the staging and the clock."""
    import time

    from benchmarks.solexec.link import CacheFlush

    flush = CacheFlush("cpu", 1 << 16)
    took = []
    for _ in range(60):
        time.sleep(0.002)  # as before a call: idle since the last answer
        t = time.perf_counter_ns()
        flush()
        took.append(time.perf_counter_ns() - t)
    assert sorted(took)[len(took) // 2] < 500_000, sorted(took)[len(took) // 2]
