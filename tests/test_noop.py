"""noop: the overhead benchmark scores value() plus trusted seeded noise, and stays light."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import get_benchmark
from benchmarks.noop.benchmark import noise
from benchmarks.protocol import EditNotApplicable, TrialContext, TrialFailure

BENCH = get_benchmark("noop")
SEED = BENCH.seed_files()["solution.py"]


def make_ctx(tmp: Path, seed: int = 0) -> TrialContext:
    ws = tmp / f"ws{seed}"
    ws.mkdir(parents=True, exist_ok=True)
    return TrialContext(
        workspace=ws,
        inputs_dir=tmp / f"in{seed}",
        prepared_dir=tmp / "prep",
        seed=seed,
        split="val",
        budget=BENCH.budget,
        python=sys.executable,
    )


def run(ctx: TrialContext, source: str = SEED) -> float:
    (ctx.workspace / "solution.py").write_text(source)
    BENCH.prepare(None, ctx.prepared_dir)
    BENCH.stage_inputs(ctx)
    for step in BENCH.steps(ctx):
        res = subprocess.run(
            step.argv, cwd=ctx.workspace, capture_output=True, text=True, timeout=step.timeout_s
        )
        assert res.returncode == 0, res.stderr
    score = BENCH.score(ctx)
    assert score.budget_used == 1
    assert all(check(ctx, score).passed for check in BENCH.audit_checks())
    return score.metrics["value"]


def test_seed_scores_value_plus_offset_plus_small_seeded_noise(tmp_path):
    values = [run(make_ctx(tmp_path, seed)) for seed in (0, 1, 2)]
    assert all(abs(v - 3.5) < 0.01 for v in values)
    assert len(set(values)) == 3
    assert run(make_ctx(tmp_path / "again", 1)) == values[1]
    assert values[0] - 3.5 == pytest.approx(noise(0))


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
    assert abs(run(make_ctx(tmp_path), source) - 1.5) < 0.01


@pytest.mark.parametrize(
    ("result", "kind"), [('{"value": NaN, "calls": 1}', "nan"), ("{", "output"), (None, "output")]
)
def test_unscorable_results_raise(tmp_path, result, kind):
    ctx = make_ctx(tmp_path)
    if result is not None:
        (ctx.workspace / "out").mkdir()
        (ctx.workspace / "out" / "result.json").write_text(result)
    with pytest.raises(TrialFailure) as err:
        BENCH.score(ctx)
    assert err.value.kind == kind


def test_harness_path_never_imports_torch(tmp_path):
    ctx = make_ctx(tmp_path)
    (ctx.workspace / "solution.py").write_text(SEED)
    (argv,) = (s.argv for s in BENCH.steps(ctx))
    probe = (
        "import json, runpy, sys\n"
        f"sys.argv = {list(argv[2:])!r}\n"
        "runpy.run_module('benchmarks.noop.harness', run_name='__main__')\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith(('torch', 'bench')))))\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", probe], cwd=ctx.workspace, capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0, res.stderr
    loaded = json.loads(res.stdout)
    assert "torch" not in loaded and "benchmarks.tinylm" not in loaded
    assert json.loads((ctx.workspace / "out" / "result.json").read_text())["value"] == 3.5


def test_seed_passes_a_sandboxed_trial(tmp_path):
    runner = pytest.importorskip("autolab.runner")
    BENCH.prepare(None, tmp_path / "prep")
    trial = runner.run_trial(
        BENCH, "seed", BENCH.seed_files(), 3, "val", BENCH.budget,
        work_root=tmp_path / "trials", prepared_dir=tmp_path / "prep",
    )  # fmt: skip
    assert trial.status == "ok", trial.reason + trial.log_tail
    assert trial.metrics["value"] == pytest.approx(3.5 + noise(3))
    assert trial.wall_s < 5
