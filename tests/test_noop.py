"""noop: the overhead benchmark scores value() plus trusted noise shaped like a real
benchmark's (a part shared by every candidate at a seed, a part of each trial's own)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from autolab.runner import run_trial, trial_setup
from autolab.sandbox import isolation_mode
from benchmarks import get_benchmark
from benchmarks.noop.benchmark import SHARED_NOISE, TRIAL_NOISE, noise
from benchmarks.protocol import EditNotApplicable, TrialContext, TrialFailure

BENCH = get_benchmark("noop")
SEED = BENCH.seed_files()["solution.py"]


def make_ctx(tmp: Path, seed: int = 0, candidate_id: str = "cand") -> TrialContext:
    root = tmp / f"{candidate_id}-{seed}"
    (root / "ws").mkdir(parents=True, exist_ok=True)
    return TrialContext(
        workspace=root / "ws", inputs_dir=root / "in", outputs_dir=root / "out",
        prepared_dir=tmp / "prep", candidate_id=candidate_id, seed=seed, split="val",
        budget=BENCH.budget, python=sys.executable,
    )  # fmt: skip


def run_unsandboxed(ctx: TrialContext, source: str = SEED) -> float:
    """The harness as a plain subprocess: what the benchmark's own logic gives."""
    (ctx.workspace / "solution.py").write_text(source)
    BENCH.prepare(None, ctx.prepared_dir)
    for step in BENCH.steps(ctx):
        BENCH.stage(ctx, step.name)
        ctx.outputs(step.name).mkdir(parents=True, exist_ok=True)
        res = subprocess.run(step.argv, cwd=ctx.workspace, capture_output=True, text=True,
                             timeout=step.timeout_s)
        assert res.returncode == 0, res.stderr
    score = BENCH.score(ctx)
    assert score.budget_used == 1 and score.evidence["raw_value"] == float(
        json.loads((ctx.outputs("run") / "result.json").read_text())["value"])
    assert all(check(ctx, score).passed for check in BENCH.audit_checks())
    return score.metrics["value"]


def test_seed_scores_value_plus_offset_plus_small_noise(tmp_path):
    values = [run_unsandboxed(make_ctx(tmp_path, seed)) for seed in (0, 1, 2)]
    assert all(abs(v - 3.5) < 0.3 for v in values)
    assert len(set(values)) == 3
    assert run_unsandboxed(make_ctx(tmp_path / "again", 1)) == values[1]
    assert values[0] - 3.5 == pytest.approx(noise(0, "cand"))


def test_noise_is_reproducible_per_seed_and_candidate():
    assert noise(5, "a") == noise(5, "a")
    assert noise(5, "a") != noise(5, "b")
    assert noise(5, "a") != noise(6, "a")


def test_noise_has_a_shared_and_an_own_part():
    """Across seeds, two candidates' noise is strongly but not perfectly correlated: the
    shared part (sd 0.05) is common, the own part (sd 0.02) is not. Pairing on seeds
    removes the first and leaves a difference of sd 0.02 * sqrt(2)."""
    seeds = range(3000)
    a = np.array([noise(s, "a") for s in seeds])
    b = np.array([noise(s, "b") for s in seeds])
    total_sd = np.hypot(SHARED_NOISE, TRIAL_NOISE)
    assert a.std() == pytest.approx(total_sd, rel=0.08)
    assert abs(a.mean()) < 4 * total_sd / np.sqrt(len(a))
    expected_corr = SHARED_NOISE**2 / total_sd**2  # 0.86
    assert np.corrcoef(a, b)[0, 1] == pytest.approx(expected_corr, abs=0.03)
    assert (a - b).std() == pytest.approx(TRIAL_NOISE * np.sqrt(2), rel=0.08)


def test_neutral_variants_differ_per_index_and_keep_the_value(tmp_path):
    files = BENCH.seed_files()
    variants = [BENCH.neutral_variant(files, i) for i in range(4)]
    texts = [v["solution.py"] for v in variants]
    assert len({SEED, *texts}) == 5
    for i, text in enumerate(texts):
        assert abs(run_unsandboxed(make_ctx(tmp_path, 3, f"v{i}"), text) - 3.5) < 0.3
    raw = {json.loads((tmp_path / f"v{i}-3" / "out" / "run" / "result.json").read_text())
           ["value"] for i in range(4)}
    assert raw == {3.5}


def test_edits_and_knobs_change_the_value(tmp_path):
    space = BENCH.search_space()
    assert {k.name for k in space.knobs} == {"VALUE", "OFFSET"}
    assert all(f"\n{k.name} = " in SEED for k in space.knobs)
    edits = {e.name: e for e in space.edits}
    source = edits["drop_offset"].apply(SEED)
    source = edits["shrink_value"].apply(source, factor=0.5)
    for name, params in (("drop_offset", {}), ("shrink_value", {"factor": 0.5})):
        with pytest.raises(EditNotApplicable):
            edits[name].apply(source, **params)
    ctx = make_ctx(tmp_path)
    assert run_unsandboxed(ctx, source) - noise(0, "cand") == pytest.approx(1.5)


@pytest.mark.parametrize(
    ("result", "kind"),
    [('{"value": NaN, "calls": 1}', "nan"), ("{", "output"), ('{"calls": 1}', "output"),
     ('{"value": "x"}', "output"), ("[" * 5000, "output"), (None, "output")],
    ids=["nan", "garbled", "no-value", "not-a-number", "oversized", "missing"],
)
def test_unscorable_results_raise(tmp_path, result, kind):
    ctx = make_ctx(tmp_path)
    if result is not None:
        ctx.outputs("run").mkdir(parents=True)
        (ctx.outputs("run") / "result.json").write_text(result)
    with pytest.raises(TrialFailure) as err:
        BENCH.score(ctx)
    assert err.value.kind == kind


def test_harness_path_never_imports_torch(tmp_path):
    ctx = make_ctx(tmp_path)
    (ctx.workspace / "solution.py").write_text(SEED)
    ctx.outputs("run").mkdir(parents=True)
    (argv,) = (s.argv for s in BENCH.steps(ctx))
    probe = (
        "import json, runpy, sys\n"
        f"sys.argv = {list(argv[2:])!r}\n"
        "runpy.run_module('benchmarks.noop.harness', run_name='__main__')\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith(('torch', 'bench', "
        "'numpy')))))\n"
    )
    res = subprocess.run([sys.executable, "-c", probe], cwd=ctx.workspace,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    loaded = json.loads(res.stdout)
    assert not any(m.startswith(("torch", "numpy", "benchmarks.tinylm")) for m in loaded)
    assert json.loads((ctx.outputs("run") / "result.json").read_text())["value"] == 3.5


def test_seed_passes_a_sandboxed_trial(tmp_path, isolation):
    BENCH.prepare(None, tmp_path / "prep")
    setup = trial_setup(BENCH, tmp_path / "prep", BENCH.budget, 1, isolation_mode())
    trial = run_trial(BENCH, "seed", BENCH.seed_files(), 3, "val", setup,
                      work_root=tmp_path / "trials", prepared_dir=tmp_path / "prep")
    assert trial.status == "ok", trial.reason + trial.log_tail
    assert trial.isolation == isolation
    assert trial.metrics["value"] == pytest.approx(3.5 + noise(3, "seed"))
    assert trial.evidence["raw_value"] == 3.5
    assert trial.wall_s < 5


def test_a_solution_that_reads_outside_is_stopped(tmp_path, isolation):
    BENCH.prepare(None, tmp_path / "prep")
    setup = trial_setup(BENCH, tmp_path / "prep", BENCH.budget, 1, isolation_mode())
    cheat = SEED + "\nLEAK = open('/etc/hostname').read()\n"
    trial = run_trial(BENCH, "cheat", {"solution.py": cheat}, 3, "val", setup,
                      work_root=tmp_path / "trials", prepared_dir=tmp_path / "prep")
    assert trial.failure == "integrity", trial.reason
    assert "runtime guard stopped the step: open: read /etc/hostname" in trial.reason
