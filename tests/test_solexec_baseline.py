"""The baseline script (perf/solexec_baseline.py): compiled references prewarmed side by
side, then timed from the compiler cache they filled. Slow: real inductor compiles."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import pytest

from benchmarks.solexec.evaluate import Timing
from benchmarks.solexec.problems import load_problems

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures" / "solexec" / "benchmark"
PROBLEM = "L1/002_rmsnorm_custom_inputs"


@pytest.fixture(scope="module")
def baseline_script():
    spec = importlib.util.spec_from_file_location(
        "solexec_baseline", ROOT / "perf" / "solexec_baseline.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _compiled(cache: Path) -> set[Path]:
    return {p.relative_to(cache) for p in (cache / "inductor").rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def warmed(baseline_script, tmp_path_factory):
    """The problem's compiled reference prewarmed into a fresh cache."""
    problem = next(p for p in load_problems(FIXTURES, ["L1"]) if p.key == PROBLEM)
    cache = tmp_path_factory.mktemp("baseline") / "cache"
    args = argparse.Namespace(data_dir=FIXTURES, device="cpu", max_elements=256,
                              cache_dir=cache)
    return problem, cache, baseline_script.prewarm([problem], args, timeout_s=600)


@pytest.mark.slow
def test_a_prewarmed_problem_is_timed_from_the_cache_without_compiling_again(
        baseline_script, warmed):
    problem, cache, warm = warmed
    assert warm["exit_codes"] == [0], warm
    compiled = _compiled(cache)
    assert any("fxgraph" in str(p) for p in compiled), sorted(compiled)[:10]

    from benchmarks.solexec import baseline

    envs: list[dict] = []
    real = baseline.launch_subprocess

    def recording(build_dir, *, env=None, **kw):
        envs.append(dict(env or {}))
        return real(build_dir, env=env, **kw)

    timing = Timing(device="cpu", warmup=1, reps=2, max_elements=256, stage_gap_s=0.05)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(baseline, "launch_subprocess", recording)
        row = baseline_script.one_problem(problem, timing, {}, ["compile"], cache)
    assert row["compile"]["counts"] == {"ok": len(problem.workloads)}, [
        w.get("reason") for w in row["compile"]["workloads"]]
    # the timed workers were pointed at the cache (so "nothing added" means "read from it")
    assert envs and all(e.get("TORCHINDUCTOR_CACHE_DIR", "").startswith(str(cache))
                        for e in envs), envs
    assert _compiled(cache) == compiled  # every graph and kernel came from the cache


@pytest.mark.slow
def test_jobs_need_a_cache_and_the_output_records_each_prewarm(baseline_script, warmed,
                                                               tmp_path):
    cache = warmed[1]  # already warm: this test checks the bookkeeping, not the compiler
    with pytest.raises(SystemExit):
        baseline_script.main(["--data-dir", str(FIXTURES), "--out", str(tmp_path / "x.json"),
                              "--jobs", "2"])
    out = tmp_path / "baseline.json"
    baseline_script.main(["--data-dir", str(FIXTURES), "--problem", PROBLEM, "--device", "cpu",
                          "--max-elements", "256", "--modes", "eager,compile", "--warmup", "1",
                          "--reps", "2", "--out", str(out), "--jobs", "2",
                          "--cache-dir", str(cache), "--quiet"])
    done = json.loads(out.read_text())
    assert [w["problems"] for w in done["prewarm"]] == [[PROBLEM]]
    assert done["prewarm"][0]["exit_codes"] == [0]
    times = baseline_script.baseline_times(done["rows"][0])
    assert len(times) == 2 and all("t_b_ns" in t for t in times.values()), times


@pytest.mark.slow
def test_a_prewarm_past_its_time_leaves_no_process_behind(baseline_script, tmp_path):
    psutil = pytest.importorskip("psutil")
    problem = next(p for p in load_problems(FIXTURES, ["L1"]) if p.key == PROBLEM)
    cache = tmp_path / "cache"
    args = argparse.Namespace(data_dir=FIXTURES, device="cpu", max_elements=256,
                              cache_dir=cache)
    warm = baseline_script.prewarm([problem], args, timeout_s=8)
    assert warm["exit_codes"] != [0]  # stopped while compiling
    def uses_this_cache(p) -> bool:  # the prewarm process or a worker it started
        try:
            return (str(cache) in " ".join(p.cmdline())
                    or p.environ().get("TORCHINDUCTOR_CACHE_DIR", "").startswith(str(cache)))
        except psutil.Error:
            return False

    left = [p for p in psutil.process_iter() if uses_this_cache(p)]
    assert left == [], [p.cmdline() for p in left]
