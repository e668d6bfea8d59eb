"""SOL-ExecBench problems as campaign members (benchmarks/solexec/benchmark.py, family.py):
a trial is the forkserver in the sandbox, driven by the trusted companion; prepare measures
T_b and prices T_SOL; the score is the SOL score; failures are failed trials."""

from __future__ import annotations

import copy
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from autolab.records import content_key
from autolab.runner import run_trial, trial_setup
from autolab.sandbox import MARKER_ENV, available_modes, isolation_mode
from benchmarks import get_family

FIXTURES = Path(__file__).parent / "fixtures" / "solexec" / "benchmark"
MEMBER = "L1-001_small_matmul"


@pytest.fixture(scope="module")
def family(request):
    mp = pytest.MonkeyPatch()
    mp.setenv("AUTOLAB_SOLEXEC_DIR", str(FIXTURES))
    request.addfinalizer(mp.undo)
    return get_family("solexec-cpu")


def with_runner(member):
    """The member, given the runner its prepare times T_b with (as the lab gives it)."""
    from autolab.runner import give_trial_runner

    give_trial_runner(member, isolation_mode("auto"))
    return member


@pytest.fixture(scope="module")
def member(family):
    return with_runner(family.member(MEMBER))


@pytest.fixture(scope="module")
def prepared(member, tmp_path_factory):
    folder = tmp_path_factory.mktemp("solexec") / "data"
    member.prepare(None, folder)
    return folder


def _trial(member, prepared, tmp_path, files, seed=1000, split="val", cache_root=None):
    setup = trial_setup(member, prepared, member.budget, threads=1,
                        isolation=isolation_mode("auto"))
    cid = content_key("files", files)[:16]
    return run_trial(member, cid, files, seed, split, setup, work_root=tmp_path / "trials",
                     prepared_dir=prepared, cache_root=cache_root)


def test_the_family_lists_runnable_problems_and_relates_them(family):
    members = family.members()
    assert MEMBER in members and all("/" not in m for m in members)
    assert family.member(MEMBER).name == f"solexec-cpu/{MEMBER}"
    assert any(r.startswith("category:") for r in family.relations(MEMBER))
    with pytest.raises(KeyError):
        family.member("L1-nope")


def test_prepare_measures_a_baseline_for_every_split(member, prepared):
    import json

    table = json.loads((prepared / "baseline.json").read_text())
    assert set(table["splits"]) == {"val", "audit", "test"}
    val = table["splits"]["val"]
    assert val and all(v["t_b_ns"] > 0 and v["t_sol_ns"] > 0 for v in val.values()), val
    assert member.data_version(prepared) == member.data_version(prepared)


def test_the_reference_scores_and_a_broken_kernel_fails(member, prepared,
                                                                       tmp_path):
    trial = _trial(member, prepared, tmp_path, member.seed_files())
    assert trial.status == "ok", (trial.reason, trial.log_tail[-2000:])
    assert 0.0 < trial.metrics["sol_score"] <= 1.0
    assert trial.evidence["workloads"] == len(member.problem.workloads)
    # each val workload's T_k, T_b and score, in order: their scores make the trial's
    t_k, t_b, scores = ([float(x) for x in str(trial.evidence[k]).split()] for k in (
        "workload_t_k_us", "workload_t_b_us", "workload_scores"))
    assert len(t_k) == len(t_b) == len(scores) == trial.evidence["workloads"]
    assert all(x > 0 for x in t_k + t_b)
    assert abs(sum(scores) / len(scores) - trial.metrics["sol_score"]) < 1e-3
    table = json.loads((prepared / "baseline.json").read_text())["splits"]["val"]
    assert sorted(t_b) == sorted(round(v["t_b_ns"] / 1e3, 1) for v in table.values()
                                 if "t_b_ns" in v)

    wrong = {"solution.py": "def run(A, B):\n    return (A @ B.T) * 1.5\n"}
    bad = _trial(member, prepared, tmp_path, wrong)
    assert bad.status != "ok" and "incorrect" in bad.reason, bad.reason


def test_a_control_of_the_reference_runs_before_any_of_the_candidates_code(
        member, prepared, tmp_path, monkeypatch):
    """With control_reps, a trial first times the reference (trusted code, its own
    worker) and records how fast it ran: before the build step, where the candidate's
    code first runs. A control that fails is said and the trial goes on; without
    control_reps there is none."""
    import time
    from dataclasses import replace

    import benchmarks.solexec.baseline as baseline
    import benchmarks.solexec.build as build

    calls: list[tuple[str, float]] = []
    real_control, real_build = baseline.control_run, build.build_solution

    def control(problem, workloads, timing):
        found = real_control(problem, workloads, timing)
        calls.append(("control", time.monotonic()))
        return found

    def building(*args, **kw):
        calls.append(("build", time.monotonic()))
        return real_build(*args, **kw)

    monkeypatch.setattr(baseline, "control_run", control)
    monkeypatch.setattr(build, "build_solution", building)
    monkeypatch.setattr(member, "timing", replace(member.timing, control_reps=2))
    trial = _trial(member, prepared, tmp_path, member.seed_files())
    assert trial.status == "ok", (trial.reason, trial.log_tail[-2000:])
    assert [c[0] for c in calls] == ["control", "build"], calls
    assert trial.evidence["control_median_us"] > 0 and trial.evidence["control_wall_s"] > 0
    calls.clear()
    monkeypatch.setattr(baseline, "control_run", lambda *a: {"error": "no reference here"})
    trial = _trial(member, prepared, tmp_path, member.seed_files(), seed=1001)
    assert trial.status == "ok" and trial.evidence["control_error"] == "no reference here"
    monkeypatch.setattr(member, "timing", replace(member.timing, control_reps=0))
    trial = _trial(member, prepared, tmp_path, member.seed_files(), seed=1002)
    assert trial.status == "ok" and not [k for k in trial.evidence if "control" in k]


def test_the_audit_split_times_workloads_the_candidate_never_saw(member, prepared, tmp_path):
    from benchmarks.solexec.benchmark import split_workloads

    shown = {w.uuid for w in member.problem.workloads}
    hidden = {w.uuid for w in split_workloads(member.problem, "audit")}
    assert hidden and not hidden & shown
    trial = _trial(member, prepared, tmp_path, member.seed_files(), split="audit")
    assert trial.status == "ok", (trial.reason, trial.log_tail[-2000:])
    # a hidden split's trial keeps no workload's time: it would describe the workload
    assert not [k for k in trial.evidence if k.startswith("workload_")]


def test_techniques_are_edits_of_the_solution(member):
    space = member.search_space()
    names = [e.name for e in space.edits]
    assert "compile_default" in names
    edit = next(e for e in space.edits if e.name == "compile_default")
    text = edit.apply(member.seed_files()["solution.py"])
    assert "torch.compile" in text
    # the offline proposer's first try and prior odds come from the technique library
    from benchmarks.solexec.search.techniques import TECHNIQUES

    for e in space.edits:
        t = TECHNIQUES[e.name]
        assert e.weight == t.weight and e.defaults == {k: t.defaults[k] for k in e.params}
    graph = next(e for e in space.edits if e.name == "cuda_graph")
    assert graph.weight > 1 and graph.defaults == {"inner": "eager", "max_elements": 1 << 20}


@pytest.fixture(scope="module")
def prefect_api(request):
    from helpers import prefect_test_server

    prefect_test_server(request)


@pytest.mark.slow
def test_a_family_campaign_over_two_problems_runs_the_loop_on_each(family, tmp_path,
                                                                   prefect_api):
    import json

    from helpers import write_params

    from autolab.archive import campaign_archive
    from autolab.config import load_params
    from autolab.family import member_params
    from autolab.records import Decision, Trial
    from flows.campaign import campaign

    members = [MEMBER, "L1-002_rmsnorm_custom_inputs"]
    params_path = write_params(
        tmp_path, benchmark="solexec-cpu", max_proposals=99,
        campaign={"name": "kernels", "threads": 1},
        evaluation={"min_seeds": 2, "max_seeds": 2, "test_seeds": 2, "screen": False},
        audit={"replication_seeds": 2},
        proposer={"kind": "offline", "operators": {"improve": 1.0}},
        family={"members": members, "rounds": 1, "proposals_per_round": 1},
    )
    result = campaign(params_path=str(params_path))
    params = load_params(params_path)
    for m in members:
        archive = campaign_archive(member_params(params, "solexec-cpu", m), create=False)
        record = archive.campaign()
        assert record.benchmark == f"solexec-cpu/{m}" and record.status == "finished"
        trials = archive.all(Trial)
        assert trials and {t.isolation for t in trials} == {isolation_mode("auto")}
        assert len(archive.all(Decision)) == 1
        assert any(t.status == "ok" and 0 < t.metrics["sol_score"] <= 1 for t in trials)
    summary = json.loads((tmp_path / "reports" / "kernels" / "family.json").read_text())
    assert result["family"] == "solexec-cpu"
    assert {r["member"] for r in summary["members"]} == set(members)


def test_seeds_and_every_technique_pass_the_static_scan(family):
    """What the offline catalogue writes is not refused at audit level 0 (references use
    torch, math, enum and typing; Triton kernels @triton.jit and tl.load)."""
    from autolab.static_scan import static_findings

    edits = 0
    for name in family.members():
        member = family.member(name)
        seed = member.seed_files()["solution.py"]
        assert static_findings("solution.py", seed, member.allowed_imports,
                               member.allowed_attrs) == [], name
        for edit in member.search_space().edits:
            try:
                text = edit.apply(seed)
            except Exception:  # noqa: BLE001 - EditNotApplicable: not for this problem
                continue
            edits += 1
            assert static_findings("solution.py", text, member.allowed_imports,
                                   member.allowed_attrs) == [], (name, edit.name)
    assert edits >= 10


def test_the_joint_campaign_names_at_least_40_members_across_categories(monkeypatch):
    from autolab.config import load_params
    from benchmarks.solexec.benchmark import DEFAULT_DATA

    params = load_params(Path(__file__).parents[1] / "benchmarks" / "solexec" / "params-gpu.yaml")
    assert params.campaign.benchmark == "solexec"
    members = params.family.members
    assert len(members) >= 40 and len(set(members)) == len(members)
    if not DEFAULT_DATA.is_dir():
        pytest.skip("the SOL-ExecBench dataset is not beside the project")
    monkeypatch.setenv("AUTOLAB_SOLEXEC_DIR", str(DEFAULT_DATA))
    assert set(members) <= set(get_family("solexec").members())


def test_a_process_left_behind_fails_the_trial(member, prepared, tmp_path):
    """A solution that leaves a double-forked daemon when imported: the forkserver adopts
    it, so it is seen running beside the worker (and would be killed before the next)."""
    src = """
import os, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        time.sleep(600)
    os._exit(0)
os.wait()


def run(A, B):
    return A @ B.T
"""
    trial = _trial(member, prepared, tmp_path, {"solution.py": src})
    assert trial.status != "ok" and "child process" in trial.reason, trial.reason


def _secrets(statuses, table=None):
    workloads = [{"uuid": f"w{i}", "status": st, "reason": r, "time_ns": 2000.0}
                 for i, (st, r) in enumerate(statuses)]
    table = table or {f"w{i}": {"t_b_ns": 4000.0, "t_sol_ns": 1000.0}
                      for i in range(len(statuses))}
    return {"build": {"ok": True, "wall_s": 1.0}, "eval": {"workloads": workloads},
            "baseline": table}


@pytest.mark.parametrize("status,reason,kind", [
    ("incorrect", "call 1: 3% of elements off", "output"),
    ("timeout", "no answer within 10 s", "timeout"),
    ("failed", "it answered before its outputs were in place", "integrity"),
    ("failed", "its outputs changed after it answered", "integrity"),
    ("skipped", "out of memory beside it", "integrity"),
    ("failed", "run failed: ValueError: boom", "crash"),
])
def test_a_failed_workload_fails_the_trial_with_its_kind(status, reason, kind):
    from benchmarks.protocol import TrialFailure
    from benchmarks.solexec.benchmark import score_trial

    with pytest.raises(TrialFailure) as err:
        score_trial("L1/x", _secrets([("ok", ""), (status, reason)]), "val")
    assert err.value.kind == kind, err.value


def test_the_score_counts_the_workloads_the_reference_runs_and_no_fewer():
    from benchmarks.protocol import TrialFailure
    from benchmarks.solexec.benchmark import score_trial

    score = score_trial("L1/x", _secrets([("ok", ""), ("ok", "")]), "val")
    # T_k 2000, T_b 4000, T_SOL 1000: S = 1 / (1 + 1000 / 3000) = 0.75 on both
    assert score.metrics["sol_score"] == pytest.approx(0.75) and score.budget_used == 2
    # a workload the reference cannot run here is not part of the problem here
    table = {"w0": {"t_b_ns": 4000.0, "t_sol_ns": 1000.0}, "w1": {"status": "skipped"}}
    assert score_trial("L1/x", _secrets([("ok", ""), ("skipped", "no T_b")], table),
                       "val").budget_used == 1
    # one with a baseline that the trial left out fails it
    table = {**table, "w9": {"t_b_ns": 1.0, "t_sol_ns": 1.0}}
    with pytest.raises(TrialFailure) as err:
        score_trial("L1/x", _secrets([("ok", ""), ("ok", "")], table), "val")
    assert err.value.kind == "integrity"
    with pytest.raises(RuntimeError):  # the evaluator's own fault is not the candidate's
        score_trial("L1/x", {"error": "OSError: disk full"}, "val")


def test_a_time_below_the_speed_of_light_fails_the_trial():
    """No kernel passes T_SOL: a workload timed under it (beyond the noise allowed) is a
    hack or a wrong estimate, and fails the trial rather than scoring 1.0; a time just
    above it scores, and the trial keeps its smallest T_k / T_SOL."""
    from benchmarks.protocol import TrialFailure
    from benchmarks.solexec.benchmark import BELOW_SOL, score_trial

    secrets = _secrets([("ok", ""), ("ok", "")])
    secrets["eval"]["workloads"][1]["time_ns"] = 1000.0 * BELOW_SOL * 0.99
    with pytest.raises(TrialFailure) as err:
        score_trial("L1/x", secrets, "val")
    assert err.value.kind == "integrity" and "speed-of-light" in err.value.reason
    # on a hidden split the reason says the kind only: T_SOL would give its size away
    hidden = _secrets([("ok", ""), ("ok", "")], {"w0": {"t_b_ns": 4000.0, "t_sol_ns": 1000.0},
                                                  "hidden-0-M4096": {"t_b_ns": 4e6,
                                                                     "t_sol_ns": 123456.0}})
    hidden["eval"]["workloads"][1].update(uuid="hidden-0-M4096", time_ns=100.0)
    with pytest.raises(TrialFailure) as err:
        score_trial("L1/x", hidden, "audit")
    assert "123" not in err.value.reason and "4096" not in err.value.reason
    # the noise of what was subtracted: within three spreads of the empties, not a hack
    secrets["eval"]["workloads"][1]["overhead_times_ns"] = [10_000.0, 10_100.0, 10_200.0]
    assert score_trial("L1/x", secrets, "val").metrics["sol_score"] > 0
    # the CPU preset's T_SOL is a stand-in's, priced on shapes it does not time
    del secrets["eval"]["workloads"][1]["overhead_times_ns"]
    assert score_trial("L1/x", secrets, "val", sol_check=False).metrics["sol_score"] > 0
    secrets["eval"]["workloads"][1]["time_ns"] = 1000.0 * BELOW_SOL * 1.01
    score = score_trial("L1/x", secrets, "val")
    assert score.evidence["min_tk_over_tsol"] == pytest.approx(BELOW_SOL * 1.01)
    assert score.evidence["max_workload_score"] == 1.0


def test_a_failure_on_a_hidden_split_does_not_describe_its_workloads():
    from benchmarks.protocol import TrialFailure
    from benchmarks.solexec.benchmark import score_trial

    secrets = _secrets([("ok", ""), ("failed", "run failed: output 'C' is (4096, 7)")])
    secrets["eval"]["workloads"][1]["uuid"] = "hidden-0-M4096"
    secrets["baseline"]["hidden-0-M4096"] = secrets["baseline"].pop("w1")
    with pytest.raises(TrialFailure) as err:
        score_trial("L1/x", secrets, "audit")
    assert "4096" not in err.value.reason and err.value.kind == "crash", err.value.reason
    with pytest.raises(TrialFailure) as err:
        score_trial("L1/x", secrets, "val")
    assert "hidden-0-M4096" in err.value.reason  # on val the proposer may know its shapes


def test_a_baseline_from_another_device_is_measured_again(member, tmp_path):
    import json

    folder = tmp_path / "data"
    member.prepare(None, folder)
    table = json.loads((folder / "baseline.json").read_text())
    table["device"] = "NVIDIA H100 80GB HBM3"
    (folder / "baseline.json").write_text(json.dumps(table))
    member.prepare(None, folder)
    assert json.loads((folder / "baseline.json").read_text())["device"] == "cpu"


def test_a_baseline_of_other_hidden_workloads_is_measured_again(member, tmp_path):
    """A table measured before the hidden draws changed times workloads the splits no
    longer hold: kept, every audit trial would fail on workloads not evaluated."""
    import json

    from benchmarks.solexec.benchmark import split_workloads

    folder = tmp_path / "data"
    member.prepare(None, folder)
    table = json.loads((folder / "baseline.json").read_text())
    old = next(iter(table["splits"]["audit"]))
    table["splits"]["audit"]["hidden-9-M1"] = table["splits"]["audit"].pop(old)
    (folder / "baseline.json").write_text(json.dumps(table))
    assert member.prewarm(folder) != "T_b already measured here"
    member.prepare(None, folder)
    again = json.loads((folder / "baseline.json").read_text())
    assert set(again["splits"]["audit"]) == {w.uuid for w in split_workloads(member.problem,
                                                                             "audit")}


def test_a_baseline_timed_with_other_calls_a_round_trip_is_measured_again(member, tmp_path):
    """T_b and the candidates' times are taken alike: a table whose round trips carried
    another number of calls than the member's timing does now is measured again."""
    import json

    folder = tmp_path / "data"
    member.prepare(None, folder)
    table = json.loads((folder / "baseline.json").read_text())
    assert table["calls_per_trip"] == member.timing.batch
    assert member._measured_here(folder / "baseline.json")
    table["calls_per_trip"] = member.timing.batch + 15
    (folder / "baseline.json").write_text(json.dumps(table))
    assert not member._measured_here(folder / "baseline.json")
    member.prepare(None, folder)
    again = json.loads((folder / "baseline.json").read_text())
    assert again["calls_per_trip"] == member.timing.batch
    # and one whose empty calls were another protocol's (what was subtracted differs)
    from benchmarks.solexec.evaluate import PROTOCOL

    assert again["protocol"] == PROTOCOL
    again["protocol"] = PROTOCOL - 1
    (folder / "baseline.json").write_text(json.dumps(again))
    assert not member._measured_here(folder / "baseline.json")
    del again["protocol"]  # a table from before the protocol was recorded
    (folder / "baseline.json").write_text(json.dumps(again))
    assert not member._measured_here(folder / "baseline.json")
    # and one timed with the processes pinned otherwise than they are now
    again["protocol"] = PROTOCOL
    again["pin_cpus"] = not member.timing.pin_cpus
    (folder / "baseline.json").write_text(json.dumps(again))
    assert not member._measured_here(folder / "baseline.json")
    again["pin_cpus"] = member.timing.pin_cpus
    (folder / "baseline.json").write_text(json.dumps(again))
    assert member._measured_here(folder / "baseline.json")
    # and one whose worker's CPU was kept awake otherwise than it is now
    assert again["awake_cpu"] == member.timing.awake_cpu
    again["awake_cpu"] = not member.timing.awake_cpu
    (folder / "baseline.json").write_text(json.dumps(again))
    assert not member._measured_here(folder / "baseline.json")
    del again["awake_cpu"]  # a table from before it was recorded: not kept awake
    (folder / "baseline.json").write_text(json.dumps(again))
    assert member._measured_here(folder / "baseline.json") == (not member.timing.awake_cpu)


def test_a_baseline_whose_poller_did_not_run_throughout_is_measured_again(member, prepared,
                                                                          monkeypatch):
    """Where the timing keeps the worker's CPU awake (the GPU preset), a T_b table counts
    only if no mode's run had a poller that failed or stopped early: one that ran without
    it times T_b slower than the candidates are timed. A table prepared so passes."""
    from dataclasses import replace

    table = json.loads((prepared / "baseline.json").read_text())
    monkeypatch.setattr(member, "timing", replace(member.timing, pin_cpus=True,
                                                  awake_cpu=True))
    folder = prepared.parent / "awake"
    folder.mkdir(exist_ok=True)
    cases = [({"eager": "polling on CPU 1"}, True),
             ({"eager": "polling on CPU 1", "compile": "polling on CPU 1"}, True),
             ({"eager": ""}, True),  # nothing pinned (one CPU): the trials have none either
             ({}, True),  # no mode ran
             ({"eager": "not polling: it exited"}, False),
             ({"eager": "polling on CPU 1", "compile": "not polling: it exited"}, False),
             ({"eager": "polling on CPU 1, until it exited early (status 1)"}, False),
             (None, False)]  # a table from before it was recorded
    for said, kept in cases:
        (folder / "baseline.json").write_text(json.dumps(
            {**table, "pin_cpus": True, "awake_cpu": True, "awake": said}))
        assert member._measured_here(folder / "baseline.json") == kept, said
    member.prepare(None, folder)  # measured again here, pinned, the poller on
    table = json.loads((folder / "baseline.json").read_text())
    assert table["awake_cpu"] and table["awake"] and member._measured_here(
        folder / "baseline.json")


def test_a_trial_in_turns_scales_t_b_by_the_reference_beside_it(member, prepared, tmp_path,
                                                               monkeypatch):
    """With the timing in turns, a trial (sandboxed, as a campaign's) times the reference
    beside the candidate and scores against T_b scaled by it: every workload in turns,
    each T_b the table's times what the reference ran at over its eager time there. The
    table keeps eager times for that; one from before them is measured again."""
    from dataclasses import replace

    table = json.loads((prepared / "baseline.json").read_text())
    assert table["eager_times"] and all(
        v["eager_ns"] == v["t_b_ns"] for v in table["splits"]["val"].values()
        if v.get("mode") == "eager")
    monkeypatch.setattr(member, "timing", replace(member.timing, paired=True))
    assert member._measured_here(prepared / "baseline.json")
    old = prepared.parent / "before-turns"
    old.mkdir(exist_ok=True)
    (old / "baseline.json").write_text(json.dumps({
        k: v for k, v in table.items() if k != "eager_times"}))
    assert not member._measured_here(old / "baseline.json")
    trial = _trial(member, prepared, tmp_path, member.seed_files())
    assert trial.status == "ok", (trial.reason, trial.log_tail[-2000:])
    n = trial.evidence["workloads"]
    assert trial.evidence["turns"] == "in turns with the reference"
    assert trial.evidence["turns_workloads"] == n
    # each workload's T_b is the table's times the reference's time in turns over its
    # eager time there, held within the cap (the CPU preset's T_b is eager): their median
    # is the trial's drift
    import statistics

    t_b = [float(x) for x in str(trial.evidence["workload_t_b_us"]).split()]
    table_t_b = [v["t_b_ns"] / 1e3 for v in table["splits"]["val"].values()]
    assert len(t_b) == len(table_t_b) == n  # both in the split's order
    drifts = [a / b for a, b in zip(t_b, table_t_b, strict=True)]
    assert statistics.median(drifts) == pytest.approx(trial.evidence["turns_drift"], rel=0.02)


def test_a_prewarm_whose_workloads_ran_out_of_memory_is_not_taken_as_done(family, tmp_path,
                                                                         monkeypatch):
    """Out of memory inside the worker or while drawing inputs is a workload's status,
    not an exception: the prewarm still says it failed (so the family retries it alone)
    and leaves no marker that would skip it next time."""
    import benchmarks.solexec.baseline as baseline
    import benchmarks.solexec.benchmark as bench

    monkeypatch.setitem(bench.BASELINE_MODES, "cpu", ("eager", "compile"))
    row = {"compile": {"workloads": [
        {"uuid": "w0", "status": "ok", "reason": ""},
        {"uuid": "w1", "status": "skipped",
         "reason": "the reference cannot run it: OutOfMemoryError: CUDA out of memory."}]}}
    monkeypatch.setattr(baseline, "run_modes", lambda *a, **k: row)
    member, folder = with_runner(family.member(MEMBER)), tmp_path / "data"
    (folder / "compile-cache").mkdir(parents=True)  # what run_modes makes
    said = member.prewarm(folder)
    assert said.startswith("failed: 1 workloads ran out of memory"), said
    assert not (folder / "compile-cache" / bench.PREWARMED).exists()
    row["compile"]["workloads"].pop()
    assert member.prewarm(folder) == "compiled"


def test_prewarming_fills_the_compile_cache_that_prepare_then_reads(family, tmp_path,
                                                                   monkeypatch):
    """The family's prewarm step compiles a member's reference untimed; the timed prepare
    that follows compiles nothing more (every graph and kernel comes from the cache)."""
    import benchmarks.solexec.benchmark as bench

    monkeypatch.setitem(bench.BASELINE_MODES, "cpu", ("eager", "compile"))
    member, folder = with_runner(family.member(MEMBER)), tmp_path / "data"
    cache = folder / "compile-cache"

    def compiled() -> set[str]:
        return {str(p.relative_to(cache)) for part in ("inductor", "triton")
                for p in (cache / part).rglob("*") if p.is_file()}

    assert member.prewarm(folder) == "compiled"
    assert member.prewarm(folder) == "already prewarmed here"  # the flow's after the CLI's
    warmed = compiled()
    assert any(f.startswith("inductor/") for f in warmed)
    assert not (folder / "baseline.json").exists()  # nothing was measured
    info = member.prepare(None, folder)
    assert int(info["workloads with T_b"]) > 0
    import json

    table = json.loads((folder / "baseline.json").read_text())
    # the timed run, a trial of its own, found everything it compiled in its copy of the
    # cache (and the cache itself is as the prewarm left it)
    assert table["compiled_in_run"] == {"eager": 0, "compile": 0}
    assert compiled() == warmed
    assert member.prewarm(folder) == "T_b already measured here"


def test_the_family_prewarms_members_in_processes_of_their_own(family, tmp_path):
    """The flow's prewarm step: each member's `prewarm` in a spawned process (which finds
    the problems through the environment); on the CPU preset T_b does not compile."""
    from helpers import write_params

    from autolab.config import load_params
    from autolab.family import prewarm_members
    from benchmarks import get_family as family_named

    members = [MEMBER, "L1-002_rmsnorm_custom_inputs"]
    params = load_params(write_params(tmp_path, benchmark="solexec-cpu",
                                      family={"members": members, "prewarm_jobs": 2}))
    assert prewarm_members(params, family, members, 2) == {m: "nothing to compile"
                                                           for m in members}
    assert prewarm_members(params, family, members, 0) == {}
    (tmp_path / "n").mkdir()
    noop = load_params(write_params(tmp_path / "n", benchmark="noop-family"))
    nf = family_named("noop-family")
    assert prewarm_members(noop, nf, list(nf.members())[:2], 2) == {}  # no prewarm: none


def test_a_members_prewarm_says_how_much_device_memory_it_needs(family):
    """What the family's prewarm admits members by: nothing on a CPU; on a GPU at least the
    largest workload's arena, three times over, and two CUDA contexts."""
    from benchmarks.solexec.benchmark import SolExecProblem, split_workloads
    from benchmarks.solexec.material import estimate_bytes

    cpu = family.member(MEMBER)
    assert cpu.prewarm_memory(None) == 0
    gpu = SolExecProblem(cpu.problem, "solexec", preset="gpu")
    sizes = [estimate_bytes(gpu.problem, w) for s in ("val", "audit", "test")
             for w in split_workloads(gpu.problem, s)]
    need = gpu.prewarm_memory(None)
    assert 4 * max(sizes) + (2 << 30) <= need <= sum(sizes) + 3 * max(sizes) + (2 << 30)


def test_t_b_is_measured_by_sandboxed_trials_of_the_reference(member, tmp_path, monkeypatch):
    """T_b comes from the path a candidate's time does: a trial of the reference through
    the runner (the sandboxed kernel step), one per mode; a table measured any other way
    is measured again."""
    import json

    import autolab.runner as runner

    calls = []
    real = runner.run_trial

    def spy(bench, cid, files, *a, **k):
        calls.append((bench.tb_mode, cid, files))
        return real(bench, cid, files, *a, **k)

    monkeypatch.setattr(runner, "run_trial", spy)
    folder = tmp_path / "data"
    member.prepare(None, folder)
    assert [(m, f) for m, _, f in calls] == [("eager", member.seed_files())]
    table = json.loads((folder / "baseline.json").read_text())
    assert table["measured_as"] == "trial"
    assert table["isolation"] == isolation_mode("auto")
    assert member._measured_here(folder / "baseline.json")
    assert not (folder / "reference-runs").exists()  # its trials leave nothing behind
    del table["measured_as"]  # timed in a worker started outside the sandbox
    (folder / "baseline.json").write_text(json.dumps(table))
    assert not member._measured_here(folder / "baseline.json")
    member.prepare(None, folder)
    assert len(calls) == 2
    assert json.loads((folder / "baseline.json").read_text())["measured_as"] == "trial"


def test_a_reference_that_fails_in_its_trial_says_why(member, tmp_path, monkeypatch):
    """A T_b run that fails (here the reference's build) leaves no table, and prepare
    names the reason the trial gave."""
    import benchmarks.solexec.baseline as baseline

    monkeypatch.setattr(baseline, "reference_files", lambda problem, mode: {
        "solution.py": "def run(*args):\n    raise ValueError('reference broken here')\n"})
    with pytest.raises(RuntimeError, match="reference broken here"):
        member.prepare(None, tmp_path / "data")
    assert not (tmp_path / "data" / "baseline.json").exists()


# -- T_b's own trials: failures, isolation, leftovers ------------------------------------

def _spy_trials(monkeypatch) -> list:
    import autolab.runner as runner

    seen, real = [], runner.run_trial

    def spy(bench, cid, files, seed, split, setup, **k):
        trial = real(bench, cid, files, seed, split, setup, **k)
        seen.append((bench.tb_mode, setup.isolation, trial))
        return trial

    monkeypatch.setattr(runner, "run_trial", spy)
    return seen


# -- 1. a failed trial's own reason (timeout, guard, OOM) is replaced by the companion's --

def test_a_t_b_trial_that_times_out_says_it_timed_out(member, tmp_path, monkeypatch):
    import benchmarks.solexec.baseline as baseline
    import benchmarks.solexec.benchmark as bench

    seen = _spy_trials(monkeypatch)
    monkeypatch.setattr(bench, "TB_WALL_CLOCK_S", 0.0)
    monkeypatch.setattr(baseline, "COMPILE_CALL_TIMEOUT_S", 0.0)
    member = with_runner(copy.copy(member))  # its budget shortened, this test's alone
    member.budget = member.budget.model_copy(update={"wall_clock_s": 6.0})
    real = baseline.reference_files
    monkeypatch.setattr(baseline, "reference_files", lambda p, mode: {"solution.py": real(
        p, mode)["solution.py"] + "\nimport time\n_r = run\n\ndef run(*a):\n"
        "    time.sleep(3)\n    return _r(*a)\n"})
    with pytest.raises(RuntimeError) as err:
        member.prepare(None, tmp_path / "data")
    (_, _, trial), = seen
    assert trial.failure == "timeout"  # what the runner knew, and what prepare says
    assert "T_b run (eager) failed: timeout" in str(err.value), str(err.value)
    assert not (tmp_path / "data" / "baseline.json").exists()


# -- 2. a mode whose whole trial fails is dropped without a trace; the table is kept -----

def test_a_mode_that_does_not_build_is_recorded_beside_the_table(member, tmp_path,
                                                                monkeypatch):
    """The reference that does not build in one mode (here compile's smoke call fails):
    T_b is the other mode's, and the table says why that one is missing."""
    import benchmarks.solexec.baseline as baseline
    import benchmarks.solexec.benchmark as bench

    monkeypatch.setitem(bench.BASELINE_MODES, "cpu", ("eager", "compile"))
    real = baseline.reference_files
    monkeypatch.setattr(baseline, "reference_files", lambda p, mode: real(p, "eager")
                        if mode == "eager" else {"solution.py": "def run(*a):\n"
                                                 "    raise MemoryError('compile lost')\n"})
    folder = tmp_path / "data"
    member.prepare(None, folder)
    table = json.loads((folder / "baseline.json").read_text())
    assert "compile lost" in table["mode_errors"]["compile"]
    assert {w["mode"] for w in table["splits"]["val"].values()} == {"eager"}


# -- 3. T_b's isolation is `auto`, the campaign's is params' sandbox.isolation ----------

@pytest.mark.skipif("unshare" not in available_modes() or "bwrap" not in available_modes(),
                    reason="needs unshare and bwrap")
def test_t_b_runs_under_the_campaigns_isolation(member, tmp_path, monkeypatch):
    from helpers import write_params

    from autolab.config import load_params
    from autolab.lab import open_lab
    from tasks.prepare import prepare_data

    monkeypatch.delenv("AUTOLAB_SANDBOX", raising=False)
    params = load_params(write_params(
        tmp_path, benchmark=f"solexec-cpu/{MEMBER}", sandbox={"isolation": "unshare"},
        campaign={"name": "tb-iso"}, tracking={"mlflow": False},
        proposer={"kind": "offline"}))
    lab = open_lab(params)
    seen = _spy_trials(monkeypatch)
    prepare_data.fn(lab)
    assert lab.setup.isolation == "unshare"  # every candidate's trial
    table = json.loads((lab.prepared_dir / "baseline.json").read_text())
    assert [iso for _, iso, _ in seen] == ["unshare"], seen
    assert table["isolation"] == lab.setup.isolation


def test_a_table_of_another_isolation_is_measured_again(member, tmp_path):
    folder = tmp_path / "data"
    member.prepare(None, folder)
    table = json.loads((folder / "baseline.json").read_text())
    table["isolation"] = "none" if table["isolation"] != "none" else "bwrap"
    (folder / "baseline.json").write_text(json.dumps(table))
    assert not member._measured_here(folder / "baseline.json")


# -- 4. prepare removes the markers that would reap a killed prepare's processes --------

def test_a_killed_prepares_trial_processes_are_reaped(member, tmp_path):
    import benchmarks.solexec.benchmark as bench
    from autolab.records import Trial
    from autolab.runner import trial_setup
    from benchmarks.solexec.baseline import COMPILE_CALL_TIMEOUT_S

    folder = tmp_path / "data"
    folder.mkdir(parents=True)
    n = sum(len(ws) for ws in member._splits.values())
    budget = member.budget.model_copy(update={"wall_clock_s": max(
        member.budget.wall_clock_s or 0.0,
        bench.TB_WALL_CLOCK_S + n * COMPILE_CALL_TIMEOUT_S)})
    run = copy.copy(member)
    run.tb_mode = "eager"
    setup = trial_setup(run, folder, budget, threads=1, isolation=isolation_mode())
    tid = Trial.key("reference-eager", 0, "val", setup.key())
    trial_dir = folder / "reference-runs" / "trials" / tid
    trial_dir.mkdir(parents=True)
    marker = f"{tid}-{secrets.token_hex(6)}"
    (trial_dir / "marker").write_text(marker)  # as the killed attempt left it
    # a worker the killed attempt forked (isolation none: pdeathsig reaches the first only)
    left = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"],
                            env={**os.environ, MARKER_ENV: marker})
    try:
        member.prepare(None, folder)
        try:
            left.wait(timeout=3)
        except subprocess.TimeoutExpired:
            pytest.fail("the killed prepare's worker still runs beside the T_b measurement")
    finally:
        if left.poll() is None:
            left.kill()
            left.wait()


# -- sanity (these pass): counting, no leak into normal trials -------------------------

def test_a_compile_without_prewarm_is_counted_in_the_table(member, tmp_path,
                                                                  monkeypatch):
    import benchmarks.solexec.benchmark as bench

    monkeypatch.setitem(bench.BASELINE_MODES, "cpu", ("eager", "compile"))
    folder = tmp_path / "data"
    member.prepare(None, folder)
    table = json.loads((folder / "baseline.json").read_text())
    assert table["compiled_in_run"]["eager"] == 0 and table["compiled_in_run"]["compile"] > 0
    assert not (folder / "reference-runs").exists()


COMPILING = """
import os
from pathlib import Path

# stands in for a compiler: what it builds goes into the worker's Triton cache
_cache = Path(os.environ["TRITON_CACHE_DIR"])
_cache.mkdir(parents=True, exist_ok=True)
(_cache / "kernel.bin").write_bytes(b"compiled for the visible shapes")


def run(A, B):
    return {body}
"""


def test_a_candidates_compiles_are_kept_for_its_later_trials_only(member, prepared, tmp_path):
    """The build cache of a candidate's first passing val trial is copied into each of its
    later trials' build folders; a hidden split's trial, a failed trial and another
    candidate keep nothing and see nothing."""
    store = tmp_path / "store"
    files = {"solution.py": COMPILING.format(body="A @ B.T")}
    kept = store / content_key("files", files)[:16] / "build-cache"

    audit = _trial(member, prepared, tmp_path, files, split="audit", cache_root=store)
    assert audit.status == "ok", (audit.reason, audit.log_tail[-2000:])
    assert not kept.exists()  # the hidden shapes' compiles never reach a val trial

    wrong = {"solution.py": COMPILING.format(body="(A @ B.T) * 1.5")}
    bad = _trial(member, prepared, tmp_path, wrong, cache_root=store)
    assert bad.status != "ok"
    assert not (store / content_key("files", wrong)[:16] / "build-cache").exists()

    first = _trial(member, prepared, tmp_path, files, cache_root=store)
    assert first.status == "ok", (first.reason, first.log_tail[-2000:])
    assert first.evidence["build_cache_reused"] == 0
    assert first.evidence["build_cache_kept"] == "kept 1 files"
    assert (kept / "files" / "triton" / "kernel.bin").read_bytes() == (
        b"compiled for the visible shapes")

    later = _trial(member, prepared, tmp_path, files, seed=1001, cache_root=store)
    assert later.status == "ok", (later.reason, later.log_tail[-2000:])
    assert later.evidence["build_cache_reused"] == 1
    assert later.evidence["build_cache_kept"] == "already kept"

    hidden = _trial(member, prepared, tmp_path, files, split="audit", cache_root=store)
    assert hidden.status == "ok" and "build_cache_reused" not in hidden.evidence

    other = {"solution.py": COMPILING.format(body="(B @ A.T).T")}
    seen = _trial(member, prepared, tmp_path, other, cache_root=store)
    assert seen.status == "ok", (seen.reason, seen.log_tail[-2000:])
    assert seen.evidence["build_cache_reused"] == 0


def _outside(tmp_path):
    """A folder outside the build folder, laid out like a compile cache (the prewarm's
    cache of the reference, hidden workloads included, is one)."""
    secret = tmp_path / "outside"
    for sub in ("inductor", "triton", "compile-cache/inductor", "torch_extensions"):
        (secret / sub).mkdir(parents=True, exist_ok=True)
        (secret / sub / "targets.json").write_text("T_b of every workload")
    return secret


def _kept_bytes(kept):
    return {str(f.relative_to(kept / "files")): f.read_bytes()
            for f in (kept / "files").rglob("*") if f.is_file()} if kept.exists() else {}


def test_a_kept_cache_that_cannot_be_restored_is_compiled_again_not_a_fault(
        member, prepared, tmp_path, monkeypatch):
    from benchmarks.solexec import build

    store = tmp_path / "store"
    files = {"solution.py": COMPILING.format(body="A @ B.T")}
    first = _trial(member, prepared, tmp_path, files, cache_root=store)
    assert first.evidence["build_cache_kept"] == "kept 1 files"

    def broken(kept, build_dir):
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(build, "restore_build_cache", broken)
    later = _trial(member, prepared, tmp_path, files, seed=1001, cache_root=store)
    assert later.status == "ok", (later.reason, later.log_tail[-2000:])
    assert later.evidence["build_cache_reused"] == 0
    assert "RecursionError" in later.evidence["build_cache_not_reused"]
    # dropped, and kept again from this trial
    assert later.evidence["build_cache_kept"] == "kept 1 files"


def test_keeping_a_build_cache_copies_regular_files_and_follows_no_link(tmp_path, monkeypatch):
    from benchmarks.solexec import build

    secret = _outside(tmp_path)
    step = tmp_path / "step"
    b = step / "build"
    (b / "triton" / "ab").mkdir(parents=True)
    (b / "compile-cache" / "inductor" / "fx").mkdir(parents=True)
    (b / "triton" / "ab" / "k.cubin").write_bytes(b"cubin")
    (b / "compile-cache" / "inductor" / "fx" / "g.py").write_text("graph")
    (b / "triton" / "leak").symlink_to(secret / "triton" / "targets.json")
    (b / "triton" / "dir").symlink_to(secret, target_is_directory=True)
    (b / "torch_extensions").symlink_to(secret / "torch_extensions", target_is_directory=True)
    os.mkfifo(b / "triton" / "pipe")
    (b / "elsewhere.bin").write_bytes(b"not a cache")

    assert build.keep_build_cache(step, tmp_path / "kept") == "kept 2 files"
    assert _kept_bytes(tmp_path / "kept") == {"triton/ab/k.cubin": b"cubin",
                                              "compile-cache/inductor/fx/g.py": b"graph"}
    assert build.keep_build_cache(step, tmp_path / "kept") == "already kept"

    fresh = tmp_path / "xxxx" / "build"  # a path as long as the one it was kept from
    assert build.restore_build_cache(tmp_path / "kept", fresh) == (2, "")
    assert (fresh / "triton" / "ab" / "k.cubin").read_bytes() == b"cubin"
    n, why = build.restore_build_cache(tmp_path / "kept", tmp_path / "longer" / "build")
    assert n == 0 and "another length" in why and not (tmp_path / "longer").exists()

    monkeypatch.setattr(build, "KEPT_MAX_BYTES", 4)
    assert build.keep_build_cache(step, tmp_path / "small").startswith("not kept")
    assert not (tmp_path / "small").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".small-")]


@pytest.mark.parametrize("link", ["build", "build/compile-cache", "build/triton"])
def test_a_link_anywhere_on_the_way_to_the_caches_is_not_followed(tmp_path, link):
    """The candidate may replace its build folder, or a folder between it and a cache,
    with a link to somewhere else on the host: nothing is read through it."""
    from benchmarks.solexec import build

    secret = _outside(tmp_path)
    step = tmp_path / "step"
    (step / "build" / "compile-cache" / "inductor").mkdir(parents=True)
    (step / "build" / "triton").mkdir(parents=True)
    target = step / link
    for p in sorted(target.rglob("*"), reverse=True):
        p.rmdir()
    target.rmdir()
    target.symlink_to(secret, target_is_directory=True)
    assert build.keep_build_cache(step, tmp_path / "kept") == "kept 0 files"
    assert _kept_bytes(tmp_path / "kept") == {}


def test_a_folder_swapped_for_a_link_while_it_is_read_leads_nowhere(tmp_path, monkeypatch):
    """Each folder is opened, without following a link, when the walk reaches it, and read
    through that descriptor: the one being read when both are renamed and replaced by links
    to the outside is still read where it was, the other is skipped."""
    from benchmarks.solexec import build

    secret = _outside(tmp_path)
    step = tmp_path / "step"
    for sub in ("a", "z"):
        (step / "build" / "triton" / sub).mkdir(parents=True)
        (step / "build" / "triton" / sub / f"{sub}.bin").write_bytes(sub.encode())
    real, swapped = build._copy_file, []

    def copy_then_swap(dir_fd, name, out):
        if not swapped:
            for sub in ("a", "z"):
                here = step / "build" / "triton" / sub
                here.rename(here.with_name(sub + "-moved"))
                here.symlink_to(secret / "triton", target_is_directory=True)
            swapped.append(True)
        return real(dir_fd, name, out)

    monkeypatch.setattr(build, "_copy_file", copy_then_swap)
    assert build.keep_build_cache(step, tmp_path / "kept") == "kept 1 files"
    assert _kept_bytes(tmp_path / "kept") in ({"triton/a/a.bin": b"a"},
                                              {"triton/z/z.bin": b"z"})


def test_a_build_folder_too_deep_or_too_large_is_not_kept(tmp_path, monkeypatch):
    from benchmarks.solexec import build

    step = tmp_path / "step"
    deep = step / "build" / "triton"
    for i in range(build.KEPT_MAX_DEPTH + 1):
        deep = deep / f"d{i}"
    deep.mkdir(parents=True)
    (deep / "k.bin").write_bytes(b"k")
    assert build.keep_build_cache(step, tmp_path / "kept").startswith(
        "not kept: folders more than")
    assert not (tmp_path / "kept").exists()

    shallow = tmp_path / "shallow"
    (shallow / "build" / "triton").mkdir(parents=True)
    (shallow / "build" / "triton" / "big.bin").write_bytes(b"x" * 64)
    monkeypatch.setattr(build, "KEPT_MAX_FILE_BYTES", 16)
    assert "larger than" in build.keep_build_cache(shallow, tmp_path / "kept")
    monkeypatch.setattr(build, "KEPT_MAX_FILE_BYTES", 1 << 20)
    assert "too long" in build.keep_build_cache(shallow, tmp_path / "kept", deadline_s=-1.0)
    assert build.keep_build_cache(shallow, tmp_path / "kept") == "kept 1 files"

    wide = tmp_path / "wide"  # empty folders count too
    for i in range(8):
        (wide / "build" / "triton" / f"d{i}").mkdir(parents=True)
    monkeypatch.setattr(build, "KEPT_MAX_FILES", 5)
    assert "more than 5 files and folders" in build.keep_build_cache(wide, tmp_path / "w")


def test_old_build_caches_are_pruned(tmp_path):
    from benchmarks.solexec import build

    for i in range(5):
        (tmp_path / f"c{i}" / "build-cache").mkdir(parents=True)
        (tmp_path / f"c{i}" / "profile.json").write_text("{}")
        os.utime(tmp_path / f"c{i}" / "build-cache", (1000 + i, 1000 + i))
    build.prune_build_caches(tmp_path, "build-cache", keep=2)
    assert sorted(p.parent.name for p in tmp_path.glob("*/build-cache")) == ["c3", "c4"]
    assert len(list(tmp_path.glob("*/profile.json"))) == 5  # the rest of each store stays


def test_a_kept_cache_names_the_new_build_folder_wherever_it_named_the_old(tmp_path):
    """Compiled artifacts hold the absolute path of the folder they were built in (inductor
    pickles its autotuners with their best-config file's path): restored elsewhere, every
    occurrence names the new folder, at the same length, so a pickle stays loadable."""
    import pickle

    from benchmarks.solexec import build

    old, new = tmp_path / "trials" / "aaaa" / "build", tmp_path / "trials" / "bbbb" / "build"
    (old / "compile-cache" / "inductor" / "nx").mkdir(parents=True)
    config = old / "compile-cache" / "inductor" / "nx" / "k.best_config"
    (config.parent / "k.pkl").write_bytes(pickle.dumps({"best_config": str(config)}))
    (old / "triton").mkdir()
    (old / "triton" / "launcher.so").write_bytes(b"\x7fELF" + str(old).encode() + b"\0rest")
    assert build.keep_build_cache(old.parent, tmp_path / "kept") == "kept 2 files"
    assert build.restore_build_cache(tmp_path / "kept", new) == (2, "")
    got = pickle.loads((new / "compile-cache" / "inductor" / "nx" / "k.pkl").read_bytes())
    assert got == {"best_config": str(new / "compile-cache" / "inductor" / "nx" /
                                      "k.best_config")}
    assert (new / "triton" / "launcher.so").read_bytes() == (
        b"\x7fELF" + str(new).encode() + b"\0rest")


def test_the_workers_import_the_compiler_first_for_a_solution_that_compiles(
        member, prepared, tmp_path):
    """A solution that calls torch.compile gets workers told to import the compiler before
    their guard (the forkserver's flag); it runs as any other trial."""
    from benchmarks.protocol import TrialContext

    def argv(source: str) -> tuple:
        ws = tmp_path / content_key("files", {"s": source})[:8]
        ws.mkdir()
        (ws / "solution.py").write_text(source)
        ctx = TrialContext(workspace=ws, inputs_dir=tmp_path / "in",
                           outputs_dir=tmp_path / "out", prepared_dir=prepared, seed=1,
                           split="val", budget=member.budget, python=sys.executable)
        return member.steps(ctx)[0].argv

    compiled = ("import torch as _t\n\n\ndef _ref(A, B):\n    return A @ B.T\n\n\n"
                "run = _t.compile(_ref, backend='eager', dynamic=False)\n")
    assert argv(compiled)[-1] == "--preload-compiler"
    assert "--preload-compiler" not in argv(member.seed_files()["solution.py"])

    trial = _trial(member, prepared, tmp_path, {"solution.py": compiled})
    assert trial.status == "ok", (trial.reason, trial.log_tail[-2000:])


def test_a_worker_told_to_preload_imports_the_compiler_before_its_guard(tmp_path):
    """The forkserver's flag reaches the workers it forks: the compiler's modules are in
    sys.modules before the guard goes in, so the candidate's import finds them loaded."""
    code = ("import sys\n"
            "from benchmarks.solexec import worker\n"
            "from benchmarks import guard\n"
            "order = []\n"
            "guard.install = lambda *a, **k: order.append(('guard', 'torch._dynamo' in "
            "sys.modules))\n"
            "worker._load = lambda path: order.append('load')\n"
            "worker._preload = sys.argv[1] == 'on'\n"
            "state = worker._State()\n"
            "print(worker._handle(state, {'op': 'load', 'path': '.'}, ())['ok'], order)\n")
    out = {}
    for flag in ("on", "off"):
        done = subprocess.run([sys.executable, "-c", code, flag], capture_output=True,
                              text=True, cwd=Path(__file__).parents[1], timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        out[flag] = done.stdout.strip()
    assert out == {"on": "True [('guard', True), 'load']",
                   "off": "True [('guard', False), 'load']"}


def test_pruning_beside_another_trials_pruning_does_not_raise(tmp_path, monkeypatch):
    """A store removed by another trial between the listing and its stat is passed over."""
    from benchmarks.solexec import build

    for i in range(4):
        (tmp_path / f"c{i}" / "build-cache").mkdir(parents=True)
    real_stat, gone = os.stat, tmp_path / "c2" / "build-cache"

    def racing(path, *a, **k):
        if str(path) == str(gone) and not removed:
            os.rmdir(gone)  # the other trial's prune, just now
            removed.append(gone)
        return real_stat(path, *a, **k)

    removed: list = []

    monkeypatch.setattr(build.os, "stat", racing)
    build.prune_build_caches(tmp_path, "build-cache", keep=1)
    assert len(list(tmp_path.glob("*/build-cache"))) == 1
