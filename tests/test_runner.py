"""run_trial turns whatever a candidate does into a Trial record, stages each step's inputs
just before it runs, checks what trusted code can check, and cleans up after it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from autolab import integrity
from autolab.records import Trial
from autolab.runner import TrialSetup, harness_version, run_trial, trial_setup
from autolab.sandbox import MARKER_ENV, isolation_mode
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

GUARD_FILES = [integrity.PROJECT / "benchmarks" / "__init__.py",
               integrity.PROJECT / "benchmarks" / "guard.py"]

# argv: step workspace inputs out seed [outputs of the steps it reads...]
HARNESS = """
import importlib.util, json, sys
from pathlib import Path
step, ws, inputs, out, seed = sys.argv[1:6]
paths = {"inputs": inputs, "out": out, "reads": sys.argv[6:], "workspace": ws}
GUARD
spec = importlib.util.spec_from_file_location("solution", Path(ws) / "solution.py")
solution = importlib.util.module_from_spec(spec)
spec.loader.exec_module(solution)
x = json.loads((Path(inputs) / "data.json").read_text())["x"]
value = getattr(solution, step)(x, int(seed), paths)
result = {"value": value, "calls": getattr(solution, "CALLS", 1)}
(Path(out) / "out.json").write_text(json.dumps(result))
"""
GUARD = "from benchmarks import guard\nguard.install()\n"


def budget_within_limit(ctx: TrialContext, score: Score) -> CheckResult:
    ok = score.budget_used <= ctx.budget.amount
    return CheckResult(name="budget_within_limit", passed=ok,
                       evidence=f"{score.budget_used:g} of {ctx.budget.amount} calls")


class FakeBench:
    """A benchmark in miniature: plain-python steps, JSON outputs, no torch.

    Each step calls solution.<step>(x, seed, paths); `reads` maps a step to the earlier
    steps whose outputs it may read. With `guarded`, the harness installs the guard before
    it imports the candidate, as real harnesses do."""

    name = "fake"
    metric = MetricSpec(name="score", direction=Direction.MAXIMIZE)
    editable_files = ("solution.py",)
    hardware = "cpu"
    distributions: tuple[str, ...] = ()
    allowed_imports = frozenset({"math"})

    def __init__(self, root: Path, *, guarded: bool = True, steps=("run",), reads=None,
                 step_timeout_s: float = 10, memory_mb: int = 300, wall_clock_s: float = 30):
        self.harness_dir = root / "harness"
        self.harness_dir.mkdir(parents=True)
        self.harness = self.harness_dir / "harness.py"
        self.harness.write_text(HARNESS.replace("GUARD\n", GUARD if guarded else ""))
        self.step_names = tuple(steps)
        self.reads = dict(reads or {})
        self.step_timeout_s = step_timeout_s
        self.budget = Budget(unit="calls", amount=10, wall_clock_s=wall_clock_s,
                             memory_mb=memory_mb)
        self.fail_score_with: Exception | None = None
        self.staged: list[tuple[str, list[str]]] = []  # (step, steps with outputs by then)

    def seed_files(self, variant: str = "default") -> dict[str, str]:
        return {"solution.py": "def run(x, seed, paths):\n    return x * 2\n"}

    def harness_files(self) -> list[Path]:
        return [self.harness]

    def sandbox_files(self) -> list[Path]:
        return [*GUARD_FILES, self.harness]

    def prepare(self, data_dir: Path | None, prepared_dir: Path) -> dict[str, str]:
        return {}

    def data_version(self, prepared_dir: Path) -> str:
        return "fake-data"

    def stage(self, ctx: TrialContext, step: str) -> None:
        done = [s for s in self.step_names if (ctx.outputs(s) / "out.json").exists()]
        self.staged.append((step, done))
        ctx.inputs(step).mkdir(parents=True, exist_ok=True)
        (ctx.inputs(step) / "data.json").write_text(json.dumps({"x": 21, "step": step}))
        ctx.secrets[step] = "staged"

    def steps(self, ctx: TrialContext) -> list[SandboxStep]:
        out = []
        for name in self.step_names:
            reads = tuple(self.reads.get(name, ()))
            argv = (ctx.python, str(self.harness), name, str(ctx.workspace),
                    str(ctx.inputs(name)), str(ctx.outputs(name)), str(ctx.seed),
                    *(str(ctx.outputs(r)) for r in reads))
            out.append(SandboxStep(name=name, argv=argv, timeout_s=self.step_timeout_s,
                                   reads=reads))
        return out

    def score(self, ctx: TrialContext) -> Score:
        if self.fail_score_with is not None:
            raise self.fail_score_with
        out = ctx.outputs(self.step_names[-1]) / "out.json"
        if not out.exists():
            raise TrialFailure("output", "no out.json")
        data = json.loads(out.read_text())
        return Score(metrics={"score": float(data["value"])}, budget_used=data["calls"])

    def audit_checks(self):
        return [budget_within_limit]

    def search_space(self) -> SearchSpace:
        return SearchSpace()

    def neutral_variant(self, files: dict[str, str], index: int) -> dict[str, str]:
        return {k: v + f"\n# {index}\n" for k, v in files.items()}


@pytest.fixture
def bench(tmp_path: Path) -> FakeBench:
    return FakeBench(tmp_path / "bench")


@pytest.fixture
def var_tmp() -> Path:
    """A folder outside /tmp: under bwrap the guard leaves the step's private /tmp to the
    mounts, so trial paths under /tmp would test the mounts, not the guard."""
    root = Path(tempfile.mkdtemp(prefix="autolab-runner-", dir="/var/tmp"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


def setup_for(bench: FakeBench, tmp_path: Path, **update) -> TrialSetup:
    setup = trial_setup(bench, tmp_path / "prepared", bench.budget, 1, isolation_mode())
    return setup.model_copy(update=update) if update else setup


def trial(bench: FakeBench, tmp_path: Path, solution: str, cand: str = "cand", **kw) -> Trial:
    files = {"solution.py": textwrap.dedent(solution)}
    kw.setdefault("prepared_dir", tmp_path / "prepared")
    setup = kw.pop("setup", None) or setup_for(bench, tmp_path)
    return run_trial(bench, cand, files, 7, "val", setup, work_root=tmp_path / "work", **kw)


def test_fake_bench_implements_protocol(bench: FakeBench) -> None:
    assert isinstance(bench, Benchmark)


def test_good_candidate(bench: FakeBench, tmp_path: Path, isolation: str) -> None:
    setup = setup_for(bench, tmp_path)
    assert setup.isolation == isolation
    t = trial(bench, tmp_path, "def run(x, seed, paths):\n    return x * 2 + seed\n",
              setup=setup)
    assert t.status == "ok" and t.failure is None, t.reason + t.log_tail
    assert t.metrics == {"score": 49.0} and t.budget_used == 1
    assert t.isolation == isolation
    assert [(c.name, c.passed) for c in t.checks] == [("budget_within_limit", True)]
    assert t.harness_hash_before == t.harness_hash_after == harness_version(bench)
    assert 0 < t.workload_s <= t.wall_s and t.finished_at >= t.started_at
    assert t.id == Trial.key("cand", 7, "val", setup.key()) and t.setup_key == setup.key()
    trial_dir = tmp_path / "work" / t.id
    assert sorted(p.name for p in trial_dir.iterdir()) == ["log.txt"]  # workspace gone
    assert "== run: ok" in (trial_dir / "log.txt").read_text()


def test_keep_outputs_and_leftovers_removed(bench: FakeBench, tmp_path: Path) -> None:
    good = "def run(x, seed, paths):\n    return 1.0\n"
    t = trial(bench, tmp_path, good, keep_outputs=True)
    trial_dir = tmp_path / "work" / t.id
    assert (trial_dir / "out" / "run" / "out.json").exists()
    assert (trial_dir / "ws" / "solution.py").exists()
    assert (trial_dir / "in" / "run" / "data.json").exists()
    (trial_dir / "ws" / "stale.txt").write_text("from a killed run")
    (trial_dir / "out" / "locked").mkdir()
    (trial_dir / "out" / "locked").chmod(0)
    t2 = trial(bench, tmp_path, good)
    assert t2.id == t.id and t2.status == "ok", t2.reason
    assert sorted(p.name for p in trial_dir.iterdir()) == ["log.txt"]


def test_crash(bench: FakeBench, tmp_path: Path, isolation: str) -> None:
    t = trial(bench, tmp_path, "def run(x, seed, paths):\n    return x / 0\n")
    assert (t.status, t.failure) == ("failed", "crash")
    assert t.reason == "run: exited 1: ZeroDivisionError: division by zero"
    assert "Traceback" in t.log_tail
    assert not (tmp_path / "work" / t.id / "ws").exists()


def test_hang_times_out(tmp_path: Path, isolation: str) -> None:
    bench = FakeBench(tmp_path / "bench", step_timeout_s=1.0)
    t0 = time.monotonic()
    t = trial(bench, tmp_path, "import time\ndef run(x, seed, paths):\n    time.sleep(1000)\n")
    assert time.monotonic() - t0 < 1.0 + 3
    assert (t.failure, t.reason) == ("timeout", "run: killed after 1.0 s time limit")


def test_steps_share_the_trial_wall_clock(tmp_path: Path) -> None:
    """Each step gets what is left of the trial's wall-clock budget, not its own limit."""
    bench = FakeBench(tmp_path / "bench", steps=("a", "b"), wall_clock_s=1.5,
                      step_timeout_s=30)
    code = """
        import time
        def a(x, seed, paths):
            time.sleep(0.8)
            return 1
        def b(x, seed, paths):
            time.sleep(1000)
    """
    t0 = time.monotonic()
    t = trial(bench, tmp_path, code)
    assert t.failure == "timeout" and t.reason.startswith("b: "), t.reason
    assert "killed after 0." in t.reason or "wall-clock budget spent" in t.reason
    assert time.monotonic() - t0 < 1.5 + 3
    assert t.workload_s <= 1.5 + 0.5


def test_oom(tmp_path: Path) -> None:
    bench = FakeBench(tmp_path / "bench", memory_mb=200)
    code = """
        import time
        def run(x, seed, paths):
            held = [b"x" * 50_000_000 for _ in range(60)]
            time.sleep(30)
            return len(held)
    """
    t = trial(bench, tmp_path, code)
    assert t.failure == "oom" and "over the 200 MB limit" in t.reason
    assert t.peak_rss_mb > 200


def test_nan(bench: FakeBench, tmp_path: Path) -> None:
    t = trial(bench, tmp_path, "def run(x, seed, paths):\n    return float('nan')\n")
    assert (t.status, t.failure) == ("failed", "nan")
    assert "score" in t.reason and t.metrics == {}


def test_missing_output_is_trial_failure(bench: FakeBench, tmp_path: Path) -> None:
    t = trial(bench, tmp_path, "import os\ndef run(x, seed, paths):\n    os._exit(0)\n")
    assert (t.failure, t.reason) == ("output", "no out.json")


def test_budget_audit(bench: FakeBench, tmp_path: Path) -> None:
    t = trial(bench, tmp_path, "CALLS = 11\ndef run(x, seed, paths):\n    return 1.0\n")
    assert t.failure == "budget" and t.reason == "used 11 of 10 calls"
    assert [c.passed for c in t.checks] == [False] and t.metrics == {"score": 1.0}


def test_escaping_file_path_is_refused(bench: FakeBench, tmp_path: Path) -> None:
    t = run_trial(bench, "cand", {"../../evil.py": "x = 1"}, 7, "val",
                  setup_for(bench, tmp_path), work_root=tmp_path / "work",
                  prepared_dir=tmp_path / "prepared")
    assert t.failure == "integrity" and "escapes" in t.reason
    assert not (tmp_path / "evil.py").exists()


def test_infrastructure_fault_propagates(bench: FakeBench, tmp_path: Path) -> None:
    bench.fail_score_with = RuntimeError("scorer bug")
    with pytest.raises(RuntimeError, match="scorer bug"):
        trial(bench, tmp_path, "def run(x, seed, paths):\n    return 1.0\n")
    (trial_dir,) = (tmp_path / "work").iterdir()
    assert sorted(p.name for p in trial_dir.iterdir()) == ["log.txt"]
    assert "infrastructure fault" in (trial_dir / "log.txt").read_text()


# -- staging: one step at a time, each seeing what it is given -------------------------------


TWO_STEPS = """
import json, os
from pathlib import Path
def a(x, seed, paths):
    return x + 1
def b(x, seed, paths):
    (earlier,) = paths["reads"]
    got = json.loads((Path(earlier) / "out.json").read_text())["value"]
    return got * 10 + json.loads((Path(paths["inputs"]) / "data.json").read_text())["x"]
"""


def test_steps_are_staged_one_at_a_time(tmp_path: Path, isolation: str) -> None:
    bench = FakeBench(tmp_path / "bench", steps=("a", "b"), reads={"b": ("a",)})
    t = trial(bench, tmp_path, TWO_STEPS)
    assert t.status == "ok", t.reason + t.log_tail
    assert t.metrics == {"score": 22 * 10 + 21}
    # b's inputs were staged only once a had run
    assert bench.staged == [("a", []), ("b", ["a"])]


@pytest.mark.parametrize("target", ["inputs-of-a", "outputs-of-a"])
def test_a_step_reads_only_its_inputs_and_the_outputs_it_names(
    var_tmp: Path, isolation: str, target: str
) -> None:
    """b does not declare that it reads a: a's inputs and outputs are outside its view."""
    tmp_path = var_tmp
    bench = FakeBench(tmp_path / "bench", steps=("a", "b"))
    where = "inputs" if target.startswith("inputs") else "out"
    code = f"""
        from pathlib import Path
        def a(x, seed, paths):
            return 1
        def b(x, seed, paths):
            other = Path(paths["{where}"]).parent / "a"
            return len((other / "{'data.json' if where == 'inputs' else 'out.json'}")
                       .read_text())
    """
    t = trial(bench, tmp_path, code)
    assert t.failure == "integrity", t.reason
    assert t.reason.startswith("b: runtime guard stopped the step: open: read ")
    assert "/a/" in t.reason and "outside the allowed paths" in t.reason


def test_prepared_dir_hidden_under_bwrap(tmp_path: Path, force_isolation) -> None:
    force_isolation("bwrap")
    bench = FakeBench(tmp_path / "bench", guarded=False)
    prepared = Path("/var/tmp") / f"autolab-prepared-{tmp_path.name}"
    prepared.mkdir(exist_ok=True)
    (prepared / "test_labels.txt").write_text("secret")
    code = f"""
        import os
        def run(x, seed, paths):
            return float(os.path.exists("{prepared}/test_labels.txt"))
    """
    try:
        t = trial(bench, tmp_path, code, prepared_dir=prepared)
    finally:
        (prepared / "test_labels.txt").unlink()
        prepared.rmdir()
    assert t.status == "ok" and t.metrics == {"score": 0.0}, t.reason


# -- what trusted code checks after the steps -------------------------------------------------


TAMPER = {
    "staged inputs": "Path(paths['inputs']) / 'data.json'",
    "candidate files": "Path(paths['workspace']) / 'solution.py'",
    "harness files": "Path({harness!r})",
}


def _tampering(target: str) -> str:
    """A candidate that appends a line to `target` (a Python expression for the path)."""
    return f"""
        from pathlib import Path
        def run(x, seed, paths):
            with open({target}, "a") as f:
                f.write("# the candidate was here\\n")
            return 1.0
    """


@pytest.mark.parametrize("what", sorted(TAMPER))
def test_tampering_is_caught_where_nothing_stops_it(
    tmp_path: Path, force_isolation, what: str
) -> None:
    """No namespaces, no guard: the write goes through, and the digests catch it."""
    force_isolation("none")
    bench = FakeBench(tmp_path / "bench", guarded=False)
    target = TAMPER[what].format(harness=str(bench.harness))
    code = _tampering(target)
    t = trial(bench, tmp_path, code)
    assert (t.status, t.failure) == ("failed", "integrity"), t.reason
    assert t.reason.startswith(f"{what} changed"), t.reason
    if what == "harness files":
        assert t.harness_hash_before != t.harness_hash_after


@pytest.mark.parametrize("what", sorted(TAMPER))
def test_tampering_is_stopped_by_the_guard(var_tmp: Path, isolation: str, what: str) -> None:
    tmp_path = var_tmp
    bench = FakeBench(tmp_path / "bench")
    target = TAMPER[what].format(harness=str(bench.harness))
    code = _tampering(target)
    before = bench.harness.read_text()
    t = trial(bench, tmp_path, code)
    assert t.failure == "integrity", t.reason
    assert t.reason.startswith("run: runtime guard stopped the step: open: write "), t.reason
    assert bench.harness.read_text() == before
    assert t.harness_hash_before == t.harness_hash_after


def test_tripwire_catches_writes_to_trusted_sources(
    tmp_path: Path, force_isolation, monkeypatch: pytest.MonkeyPatch
) -> None:
    force_isolation("none")
    bench = FakeBench(tmp_path / "bench", guarded=False)
    setup = setup_for(bench, tmp_path)
    project = tmp_path / "project"
    (project / "trusted").mkdir(parents=True)
    module = project / "trusted" / "module.py"
    module.write_text("TRUSTED = True\n")
    monkeypatch.setattr(integrity, "PROJECT", project)
    monkeypatch.setattr(integrity, "PROJECT_PACKAGES", ("trusted",))
    honest = trial(bench, tmp_path, "def run(x, seed, paths):\n    return 1.0\n", setup=setup)
    assert honest.status == "ok", honest.reason
    code = f"""
        def run(x, seed, paths):
            with open({str(module)!r}, "a") as f:
                f.write("TRUSTED = False\\n")
            return 1.0
    """
    t = trial(bench, tmp_path, code, cand="tamper", setup=setup)
    assert t.failure == "integrity" and t.reason.startswith("trusted files changed"), t.reason
    assert str(module) in t.reason


def test_kill_marked_before_a_rerun(
    bench: FakeBench, tmp_path: Path, live_processes, wait_until
) -> None:
    """A process left by an earlier attempt at the same trial (its orchestrator was killed)
    carries the marker that attempt recorded in the trial's folder; the next attempt kills
    it before it starts. Another run of the same trial id (another folder: another
    campaign, another process) has a marker of its own and is left alone."""
    setup = setup_for(bench, tmp_path)
    trial_id = Trial.key("cand", 7, "val", setup.key())
    (tmp_path / "work" / trial_id).mkdir(parents=True)
    (tmp_path / "work" / trial_id / "marker").write_text(f"{trial_id}-0123456789ab")
    tag = f"leftover-{trial_id}-{os.getpid()}"
    left = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1000)", tag],
                            env={**os.environ, MARKER_ENV: f"{trial_id}-0123456789ab"},
                            start_new_session=True)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1000)", tag],
                             env={**os.environ, MARKER_ENV: f"{trial_id}-elsewhere"},
                             start_new_session=True)
    alive_at_staging: list[bool] = []
    stage = bench.stage

    def watch(ctx: TrialContext, step: str) -> None:
        alive_at_staging.append(left.poll() is None and
                                psutil.Process(left.pid).status() != psutil.STATUS_ZOMBIE)
        stage(ctx, step)

    bench.stage = watch  # type: ignore[method-assign]
    try:
        assert wait_until(lambda: len(live_processes(tag)) == 2)
        t = trial(bench, tmp_path, "def run(x, seed, paths):\n    return 1.0\n", setup=setup)
        assert t.id == trial_id and t.status == "ok", t.reason
        assert alive_at_staging == [False]  # gone before the first step was staged
        assert not (tmp_path / "work" / trial_id / "marker").exists()  # done: nothing left
        assert left.wait(timeout=5) is not None
        assert other.poll() is None
    finally:
        for p in (left, other):
            p.kill()
            p.wait()


# -- what a trial id means --------------------------------------------------------------------


def test_trial_ids_differ_when_any_setup_field_differs(bench: FakeBench, tmp_path: Path) -> None:
    base = setup_for(bench, tmp_path)
    other = {
        "benchmark": "other", "harness": "0" * 64, "data": "other-data",
        "budget": base.budget.model_copy(update={"amount": base.budget.amount + 1}),
        "threads": base.threads + 1,
        "isolation": "none" if base.isolation != "none" else "bwrap",
        "runner": "other-runner", "libraries": {**base.libraries, "numpy": "0.0"},
        "device": "other-device",
    }
    assert set(other) == set(TrialSetup.model_fields)
    keys = {base.key()} | {base.model_copy(update={k: v}).key() for k, v in other.items()}
    assert len(keys) == len(other) + 1
    ids = {Trial.key("cand", 7, "val", k) for k in keys}
    assert len(ids) == len(keys)
    for budget_field in ("wall_clock_s", "memory_mb"):
        budget = base.budget.model_copy(update={budget_field: 2 * getattr(base.budget,
                                                                          budget_field)})
        assert base.model_copy(update={"budget": budget}).key() != base.key()
    assert len({Trial.key(c, s, sp, base.key()) for c, s, sp in
                [("cand", 7, "val"), ("other", 7, "val"), ("cand", 8, "val"),
                 ("cand", 7, "audit")]}) == 4


def test_setup_follows_the_harness_and_the_data(bench: FakeBench, tmp_path: Path) -> None:
    before = setup_for(bench, tmp_path)
    assert before == setup_for(bench, tmp_path)
    bench.harness.write_text(bench.harness.read_text() + "\n# changed\n")
    changed = setup_for(bench, tmp_path)
    assert changed.harness != before.harness and changed.key() != before.key()
    bench.data_version = lambda prepared_dir: "other-data"  # type: ignore[method-assign]
    assert setup_for(bench, tmp_path).key() not in (before.key(), changed.key())


def test_steps_import_the_harness_from_a_copy_not_the_project(tmp_path, monkeypatch):
    """Nothing of the project tree is on a step's import path or in its view: the harness
    files are copied into the trial, so a file saved in the project cannot be reached."""
    from autolab import runner as runner_mod
    from autolab.integrity import PROJECT
    from benchmarks import get_benchmark

    seen = []
    real = runner_mod.run_sandboxed

    def spy(argv, view, limits, env_extra=None, **kw):
        seen.append(view)
        return real(argv, view, limits, env_extra, **kw)

    monkeypatch.setattr(runner_mod, "run_sandboxed", spy)
    noop = get_benchmark("noop")
    prepared = tmp_path / "prepared"
    setup = runner_mod.trial_setup(noop, prepared, noop.budget, 1, "none")
    t = runner_mod.run_trial(noop, "c", noop.seed_files(), 1, "val", setup,
                             work_root=tmp_path / "work", prepared_dir=prepared,
                             keep_outputs=True)
    assert t.status == "ok", t.reason
    (view,) = seen
    (copy,) = view.pythonpath
    assert not any(Path(p).resolve().is_relative_to(PROJECT) for p in (*view.read, copy))
    files = sorted(p.relative_to(copy).as_posix() for p in copy.rglob("*") if p.is_file())
    assert files == sorted(Path(f).resolve().relative_to(PROJECT).as_posix()
                           for f in noop.sandbox_files())


class ShmBench(FakeBench):
    """One step with a private /dev/shm and a channel: the companion links a file of the
    host's /dev/shm into the step's, then tells the step to look."""

    def __init__(self, root: Path, probe: str, private: bool = True):
        super().__init__(root, guarded=False)
        self.probe, self.private, self.seen_shm = probe, private, []

    def steps(self, ctx: TrialContext) -> list[SandboxStep]:
        (step,) = super().steps(ctx)
        return [step.model_copy(update={"channel": True, "private_shm": self.private})]

    def companion(self, ctx: TrialContext, step: str):
        def serve(link) -> None:
            self.seen_shm.append(link.shm)
            if link.shm is not None:
                os.link(f"/dev/shm/{self.probe}", link.shm / self.probe)
            link.conn.sendall(b"go")
            link.finished.wait()

        return serve


SHM_PROBE = """
import os, socket
def run(x, seed, paths):
    s = socket.socket(fileno=int(os.environ["AUTOLAB_CHANNEL_FD"]))
    s.recv(2)
    seen = sorted(os.listdir("/dev/shm"))
    linked = open("/dev/shm/{probe}").read() if "{probe}" in seen else ""
    open("/dev/shm/left-{probe}", "w").write("state for the next trial")
    return len(linked) * 1000 + len(seen)
"""


@pytest.mark.parametrize("private", [True, False])
def test_a_private_dev_shm_holds_only_what_the_trusted_side_links(
        tmp_path: Path, force_isolation, private: bool) -> None:
    """Under bwrap a step sees none of the host's /dev/shm: with private_shm, only the file
    its companion hard-linked there, and what it writes there goes with the trial."""
    import uuid

    force_isolation("bwrap")
    probe = f"autolab-probe-{uuid.uuid4().hex[:12]}"
    host_file, canary = Path("/dev/shm") / probe, Path("/dev/shm") / f"{probe}-canary"
    host_file.write_text("12345")
    canary.write_text("the host's own")
    try:
        bench = ShmBench(tmp_path / "bench", probe, private)
        t = trial(bench, tmp_path, SHM_PROBE.replace("{probe}", probe))
        assert t.status == "ok", t.reason + t.log_tail
        # private: the linked probe (5 bytes) and nothing of the host's but it
        # (the probe and the file the step wrote); otherwise an empty /dev/shm
        assert t.metrics == {"score": 5 * 1000 + 1} if private else {"score": 0}
        (shm,) = bench.seen_shm
        if private:
            assert shm.name.startswith(f"autolab-{t.id}-") and shm.name.endswith("-run")
            assert not shm.exists()  # gone with the trial
        else:
            assert shm is None
        assert not list(Path("/dev/shm").glob(f"autolab-{t.id}-*"))
        assert not (Path("/dev/shm") / f"left-{probe}").exists()  # never reached the host
    finally:
        host_file.unlink(missing_ok=True)
        canary.unlink()


class OptionalBench(FakeBench):
    """`run` scores; `extra` after it is optional (a profile, say)."""

    def __init__(self, root: Path, **kw):
        super().__init__(root, steps=("run", "extra"), step_timeout_s=3, **kw)

    def steps(self, ctx: TrialContext) -> list[SandboxStep]:
        run, extra = super().steps(ctx)
        return [run, extra.model_copy(update={"optional": True})]

    def score(self, ctx: TrialContext) -> Score:
        data = json.loads((ctx.outputs("run") / "out.json").read_text())
        return Score(metrics={"score": float(data["value"])}, budget_used=data["calls"])


@pytest.mark.parametrize("extra,outcome", [
    ("raise RuntimeError('boom')", "ok"),
    ("import time; time.sleep(60)", "ok"),
    ("open('/etc/hostname').read()", "integrity"),  # the guard's stop still counts
])
def test_an_optional_step_fails_only_itself_unless_the_guard_stops_it(
        tmp_path: Path, extra: str, outcome: str) -> None:
    bench = OptionalBench(tmp_path / "bench")
    code = f"def run(x, seed, paths):\n    return 5\n\ndef extra(x, seed, paths):\n    {extra}\n"
    t = trial(bench, tmp_path, code)
    if outcome == "ok":
        assert t.status == "ok" and t.metrics == {"score": 5.0}, t.reason + t.log_tail
        assert "== extra: optional, so the trial goes on" in t.log_tail
    else:
        assert t.failure == "integrity" and t.reason.startswith("extra: "), t.reason


def test_what_a_step_keeps_in_its_private_dev_shm_counts_as_its_memory(
        tmp_path: Path, force_isolation) -> None:
    import uuid

    force_isolation("bwrap")
    probe = f"autolab-probe-{uuid.uuid4().hex[:12]}"
    (Path("/dev/shm") / probe).write_text("12345")
    try:
        bench = ShmBench(tmp_path / "bench", probe)  # 300 MB of memory
        code = SHM_PROBE.replace("{probe}", probe).replace(
            "    return len(linked)",
            "    f = open('/dev/shm/big', 'wb')\n"
            "    for _ in range(400):\n        f.write(b'x' * (1 << 20))\n"  # 1 MB at a time
            "    import time; time.sleep(2)\n    return len(linked)")
        t = trial(bench, tmp_path, code)
        assert t.failure == "oom" and "resident memory" in t.reason, t.reason + t.log_tail
    finally:
        (Path("/dev/shm") / probe).unlink(missing_ok=True)


def test_a_flood_of_files_in_a_private_dev_shm_is_over_any_limit(tmp_path: Path) -> None:
    from autolab.sandbox import UNCOUNTABLE, folder_bytes

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x").write_bytes(b"x" * 8192)
    assert 8192 <= folder_bytes(tmp_path) < UNCOUNTABLE
    for i in range(6):
        (tmp_path / f"f{i}").write_text("")
    assert folder_bytes(tmp_path, most=5) == UNCOUNTABLE


def test_a_marker_file_that_is_not_ours_is_not_obeyed(tmp_path: Path, live_processes,
                                                      wait_until) -> None:
    """A step without bwrap could write its trial's marker file: a pattern or another
    trial's marker there must not make the next attempt kill or delete anything else."""
    from autolab.runner import clear_leftovers

    trial_dir = tmp_path / "abcdef0123456789"
    trial_dir.mkdir()
    tag = f"other-trial-{os.getpid()}-{tmp_path.name}"
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1000)", tag],
                             env={**os.environ, MARKER_ENV: "fedcba9876543210-0123456789ab"},
                             start_new_session=True)
    try:
        assert wait_until(lambda: len(live_processes(tag)) == 1)
        for planted in ("fedcba9876543210-0123456789ab", "*"):
            (trial_dir / "marker").write_text(planted)
            clear_leftovers(trial_dir)
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_the_device_cache_is_given_back_after_every_trial(bench: FakeBench, tmp_path: Path,
                                                          monkeypatch) -> None:
    """The trusted side of a trial runs in a long-lived process: what torch cached on the
    device for it is released after the trial, ok or not, so that the next trial's
    sandboxed processes can have it."""
    import types

    released: list[str] = []
    fake_cuda = types.SimpleNamespace(is_available=lambda: True, is_initialized=lambda: True,
                                      empty_cache=lambda: released.append("empty"))
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=fake_cuda))
    t = trial(bench, tmp_path, "def run(x, seed, paths):\n    return x * 2 + seed\n")
    assert t.status == "ok", t.reason + t.log_tail
    assert released == ["empty"]
    t = trial(bench, tmp_path, "def run(x, seed, paths):\n    raise SystemExit(3)\n",
              cand="crash")
    assert t.status != "ok" and released == ["empty", "empty"]
    fake_cuda.is_initialized = lambda: False  # a process that never used the GPU
    trial(bench, tmp_path, "def run(x, seed, paths):\n    return 1.0\n", cand="other")
    assert released == ["empty", "empty"]

    def broken() -> None:  # a device whose context failed: the CUDA error comes back here
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    fake_cuda.is_initialized, fake_cuda.empty_cache = (lambda: True), broken
    t = trial(bench, tmp_path, "def run(x, seed, paths):\n    return x * 2 + seed\n",
              cand="after-a-fault")
    assert t.status == "ok" and t.metrics == {"score": 49.0}  # the trial's result stands
