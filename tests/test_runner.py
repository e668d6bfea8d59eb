"""run_trial turns whatever a candidate does into a Trial record, and cleans up after it."""

from __future__ import annotations

import json
import textwrap
import time
from pathlib import Path

import pytest

from autolab.records import Trial
from autolab.runner import harness_version, run_trial
from benchmarks.protocol import (
    Benchmark,
    Budget,
    CheckResult,
    Direction,
    MetricSpec,
    SandboxStep,
    Score,
    SearchSpace,
    TrialContext,
    TrialFailure,
)

HARNESS = """
import json, os, sys
sys.path.insert(0, os.getcwd())
import solution
seed, inputs = int(sys.argv[1]), sys.argv[2]
x = json.load(open(os.path.join(inputs, "data.json")))["x"]
value = solution.solve(x, seed)
json.dump({"value": value, "calls": getattr(solution, "CALLS", 1)}, open("out.json", "w"))
"""


def budget_within_limit(ctx: TrialContext, score: Score) -> CheckResult:
    ok = score.budget_used <= ctx.budget.amount
    return CheckResult(name="budget_within_limit", passed=ok,
                       evidence=f"{score.budget_used:g} of {ctx.budget.amount} calls")


class FakeBench:
    """A benchmark in miniature: one plain-python step, a JSON output, no torch."""

    name = "fake"
    metric = MetricSpec(name="score", direction=Direction.MAXIMIZE)
    editable_files = ("solution.py",)
    hardware = "cpu"

    def __init__(self, root: Path, step_timeout_s: float = 10, memory_mb: int = 300):
        self.harness_dir = root / "harness"
        self.harness_dir.mkdir(parents=True)
        self.harness = self.harness_dir / "harness.py"
        self.harness.write_text(HARNESS)
        self.step_timeout_s = step_timeout_s
        self.budget = Budget(unit="calls", amount=10, wall_clock_s=30, memory_mb=memory_mb)
        self.fail_score_with: Exception | None = None

    def seed_files(self, variant: str = "default") -> dict[str, str]:
        return {"solution.py": "def solve(x, seed):\n    return x * 2\n"}

    def harness_files(self) -> list[Path]:
        return [self.harness]

    def prepare(self, data_dir: Path | None, prepared_dir: Path) -> dict[str, str]:
        return {}

    def stage_inputs(self, ctx: TrialContext) -> None:
        (ctx.inputs_dir / "data.json").write_text(json.dumps({"x": 21}))

    def steps(self, ctx: TrialContext) -> list[SandboxStep]:
        argv = (ctx.python, str(self.harness), str(ctx.seed), str(ctx.inputs_dir))
        return [SandboxStep(name="train", argv=argv, timeout_s=self.step_timeout_s,
                            readable=(str(self.harness_dir), str(ctx.inputs_dir)))]

    def score(self, ctx: TrialContext) -> Score:
        if self.fail_score_with is not None:
            raise self.fail_score_with
        out = ctx.workspace / "out.json"
        if not out.exists():
            raise TrialFailure("output", "no out.json")
        data = json.loads(out.read_text())
        return Score(metrics={"score": float(data["value"])}, budget_used=data["calls"])

    def audit_checks(self):
        return [budget_within_limit]

    def search_space(self) -> SearchSpace:
        return SearchSpace()


@pytest.fixture
def bench(tmp_path: Path) -> FakeBench:
    return FakeBench(tmp_path / "bench")


def trial(bench: FakeBench, tmp_path: Path, solution: str, **kw) -> Trial:
    files = {"solution.py": textwrap.dedent(solution)}
    kw.setdefault("prepared_dir", tmp_path / "prepared")
    return run_trial(bench, "cand", files, 7, "val", bench.budget,
                     work_root=tmp_path / "work", **kw)


def test_fake_bench_implements_protocol(bench: FakeBench) -> None:
    assert isinstance(bench, Benchmark)


def test_good_candidate(bench: FakeBench, tmp_path: Path, isolation: str) -> None:
    t = trial(bench, tmp_path, "def solve(x, seed):\n    return x * 2 + seed\n")
    assert t.status == "ok" and t.failure is None, t.reason
    assert t.metrics == {"score": 49.0} and t.budget_used == 1
    assert t.isolation == isolation
    assert [c.passed for c in t.checks] == [True]
    assert t.harness_hash_before == t.harness_hash_after != ""
    assert 0 < t.workload_s <= t.wall_s and t.finished_at >= t.started_at
    expected_id = Trial.key("cand", 7, "val", harness_version(bench),
                            bench.budget.model_dump(mode="json"))
    assert t.id == expected_id
    trial_dir = tmp_path / "work" / t.id
    assert sorted(p.name for p in trial_dir.iterdir()) == ["log.txt"]  # workspace gone
    assert "== train: ok" in (trial_dir / "log.txt").read_text()


def test_keep_outputs_and_leftovers_removed(bench: FakeBench, tmp_path: Path) -> None:
    good = "def solve(x, seed):\n    return 1.0\n"
    t = trial(bench, tmp_path, good, keep_outputs=True)
    ws = tmp_path / "work" / t.id / "ws"
    assert (ws / "out.json").exists() and (ws / "solution.py").exists()
    (ws / "stale.txt").write_text("from a killed run")
    (ws / "locked").mkdir()
    (ws / "locked").chmod(0)
    t2 = trial(bench, tmp_path, good)
    assert t2.id == t.id and t2.status == "ok"
    assert not ws.exists()


def test_crash(bench: FakeBench, tmp_path: Path, isolation: str) -> None:
    t = trial(bench, tmp_path, "def solve(x, seed):\n    return x / 0\n")
    assert (t.status, t.failure) == ("failed", "crash")
    assert t.reason == "train: exited 1: ZeroDivisionError: division by zero"
    assert "Traceback" in t.log_tail
    assert not (tmp_path / "work" / t.id / "ws").exists()


def test_hang_times_out(tmp_path: Path, isolation: str) -> None:
    bench = FakeBench(tmp_path / "bench", step_timeout_s=1.0)
    t0 = time.monotonic()
    t = trial(bench, tmp_path, "import time\ndef solve(x, seed):\n    time.sleep(1000)\n")
    assert time.monotonic() - t0 < 1.0 + 2
    assert (t.failure, t.reason) == ("timeout", "train: killed after 1.0 s time limit")


def test_oom(tmp_path: Path) -> None:
    bench = FakeBench(tmp_path / "bench", memory_mb=200)
    code = """
        import time
        def solve(x, seed):
            held = [b"x" * 50_000_000 for _ in range(60)]
            time.sleep(30)
            return len(held)
    """
    t = trial(bench, tmp_path, code)
    assert t.failure == "oom" and "over the 200 MB limit" in t.reason
    assert t.peak_rss_mb > 200


def test_nan(bench: FakeBench, tmp_path: Path, isolation: str) -> None:
    t = trial(bench, tmp_path, "def solve(x, seed):\n    return float('nan')\n")
    assert (t.status, t.failure) == ("failed", "nan")
    assert "score" in t.reason and t.metrics == {}


def test_missing_output_is_trial_failure(bench: FakeBench, tmp_path: Path) -> None:
    t = trial(bench, tmp_path, "import os\ndef solve(x, seed):\n    os._exit(0)\n")
    assert (t.failure, t.reason) == ("output", "no out.json")


def test_budget_audit(bench: FakeBench, tmp_path: Path) -> None:
    t = trial(bench, tmp_path, "CALLS = 11\ndef solve(x, seed):\n    return 1.0\n")
    assert t.failure == "budget" and "budget_within_limit" in t.reason
    assert [c.passed for c in t.checks] == [False] and t.metrics == {"score": 1.0}


def test_escaping_file_path_is_refused(bench: FakeBench, tmp_path: Path) -> None:
    t = run_trial(bench, "cand", {"../../evil.py": "x = 1"}, 7, "val", bench.budget,
                  work_root=tmp_path / "work", prepared_dir=tmp_path / "prepared")
    assert t.failure == "integrity" and "escapes" in t.reason
    assert not (tmp_path / "evil.py").exists()


TAMPER = """
import os
def solve(x, seed):
    with open(os.environ["HARNESS_PATH"], "a") as f:
        f.write("# the candidate was here\\n")
    return 1.0
"""


def test_harness_tampering(bench: FakeBench, tmp_path: Path, isolation: str) -> None:
    """Without bwrap the write succeeds and is caught; under bwrap the harness is read-only."""
    t = trial(bench, tmp_path, TAMPER, env_extra={"HARNESS_PATH": str(bench.harness)})
    assert t.status == "failed"
    if isolation == "bwrap":
        assert t.failure == "crash" and "Read-only file system" in t.reason
        assert t.harness_hash_before == t.harness_hash_after
    else:
        assert t.failure == "integrity" and "harness.py" in t.reason
        assert t.harness_hash_before != t.harness_hash_after


def test_prepared_dir_hidden_under_bwrap(
    bench: FakeBench, tmp_path: Path, force_isolation
) -> None:
    force_isolation("bwrap")
    prepared = Path("/var/tmp") / f"autolab-prepared-{tmp_path.name}"
    prepared.mkdir(exist_ok=True)
    (prepared / "test_labels.txt").write_text("secret")
    code = f"""
        import os
        def solve(x, seed):
            return float(os.path.exists("{prepared}/test_labels.txt"))
    """
    try:
        t = trial(bench, tmp_path, code, prepared_dir=prepared)
    finally:
        (prepared / "test_labels.txt").unlink()
        prepared.rmdir()
    assert t.status == "ok" and t.metrics == {"score": 0.0}


def test_infrastructure_fault_propagates(bench: FakeBench, tmp_path: Path) -> None:
    bench.fail_score_with = RuntimeError("scorer bug")
    with pytest.raises(RuntimeError, match="scorer bug"):
        trial(bench, tmp_path, "def solve(x, seed):\n    return 1.0\n")
    (trial_dir,) = (tmp_path / "work").iterdir()
    assert sorted(p.name for p in trial_dir.iterdir()) == ["log.txt"]
    assert "infrastructure fault" in (trial_dir / "log.txt").read_text()


def test_a_step_reads_only_the_inputs_it_names(tmp_path: Path, force_isolation) -> None:
    """Under bwrap, inputs staged for another step (e.g. eval windows) stay out of reach."""
    force_isolation("bwrap")
    bench = FakeBench(tmp_path)
    bench.steps = lambda ctx: [SandboxStep(
        name="train", argv=(ctx.python, str(bench.harness), "0", str(ctx.inputs_dir)),
        timeout_s=30, readable=(str(bench.harness_dir),))]
    t = trial(bench, tmp_path, "def solve(x, seed):\n    return x\n")
    assert t.status == "failed" and "data.json" in t.reason


def test_campaign_folders_are_hidden_but_the_trial_sees_its_own(tmp_path: Path, force_isolation):
    """The whole work root is hidden; the workspace and named inputs come back on top."""
    force_isolation("bwrap")
    bench = FakeBench(tmp_path)
    secret = tmp_path / "work" / "archive" / "test_split.bin"
    secret.parent.mkdir(parents=True)
    secret.write_text("answers")
    probe = f"open({str(secret)!r}).read()\ndef solve(x, seed):\n    return x\n"
    t = trial(bench, tmp_path, probe)
    assert t.status == "failed" and "FileNotFoundError" in t.reason, t.reason
    ok = trial(bench, tmp_path, "def solve(x, seed):\n    return x * 2 + seed\n")
    assert ok.status == "ok", ok.reason
