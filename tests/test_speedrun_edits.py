"""The speedrun's offline catalogue: every edit applies to each preset's seed, refuses a
second application, composes with the others in any order, and the result still trains
and predicts causally (a few steps of the CPU seed in this process, one rank)."""

from __future__ import annotations

import importlib.util
import itertools
import sys
from pathlib import Path

import pytest
import torch

from autolab.static_scan import static_findings
from benchmarks import get_benchmark
from benchmarks.protocol import EditNotApplicable
from benchmarks.speedrun.edits import EDITS, KNOBS, SEED_KNOBS

PRESETS = ("speedrun", "speedrun-full", "speedrun-cpu")
CPU_PARAMS = {"drop_attention": {"layer": 1}}  # the CPU seed has two layers


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models: one thread, or a busy machine's cores spin against each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def first_params(edit) -> dict:
    return {k: v[0] for k, v in edit.params.items()}


def test_the_catalogue_covers_the_record_directions():
    names = {e.name for e in EDITS}
    assert len(EDITS) >= 8 and all(e.description for e in EDITS)
    for wanted in ("cooldown_shape", "batch_size_warmup", "window_schedule", "muon_weight_decay",
                   "attention_gate", "smear_token", "fp32_head"):
        assert wanted in names
    assert {"NUM_ITERATIONS", "TOTAL_BATCH_TOKENS", "MUON_LR", "WINDOW_END"} <= {
        k.name for k in KNOBS}


@pytest.mark.parametrize("name", PRESETS)
def test_every_edit_applies_once_with_every_parameter_and_is_clean(name):
    bench = get_benchmark(name)
    seed = bench.seed_files()["train.py"]
    for knob, value in SEED_KNOBS[bench.preset.name].items():
        assert f"\n{knob} = {value!r}\n" in seed
    for edit in EDITS:
        combos = itertools.product(*edit.params.values()) if name == "speedrun" else [
            [v[0] for v in edit.params.values()]]  # the presets differ in knob values only
        for values in combos:
            edited = edit.apply(seed, **dict(zip(edit.params, values, strict=True)))
            assert edited != seed
            assert static_findings("train.py", edited, bench.allowed_imports,
                                   bench.allowed_attrs) == [], edit.name
        with pytest.raises(EditNotApplicable):
            edit.apply(edit.apply(seed, **first_params(edit)), **first_params(edit))


def test_all_edits_compose_in_any_order():
    seed = get_benchmark("speedrun-cpu").seed_files()["train.py"]
    results = []
    for order in (EDITS, EDITS[::-1], EDITS[3:] + EDITS[:3]):
        src = seed
        for edit in order:
            src = edit.apply(src, **first_params(edit))
        compile(src, "train.py", "exec")
        results.append(src)
    assert len({len(r) for r in results}) == 1


class OneRank:
    """The collectives of a single process."""

    world_size = 1

    def all_reduce(self, tensor, op="avg", async_op=False):
        return None

    def all_gather_into_tensor(self, output, tensor, async_op=False):
        output.copy_(tensor)

    def broadcast(self, tensor, src=0, async_op=False):
        return None


class Ctx:
    vocab_size, eot_id, val_len, val_every, seed = 257, 256, 64, 10, 0
    device, rank, world_size, comm = torch.device("cpu"), 0, 1, OneRank()

    def __init__(self, steps: int):
        self.left, self.model = steps, None
        self.gen = torch.Generator().manual_seed(0)

    def set_model(self, model):
        self.model = model

    def warmup_batch(self, b, t):
        x = torch.randint(0, 257, (b, t + 1), generator=self.gen)
        return x[:, :-1], x[:, 1:]

    def next_batch(self, b, t):
        if self.left == 0:
            return None
        self.left -= 1
        return self.warmup_batch(b, t)


def run_seed(source: str, tmp_path: Path, steps: int = 2):
    path = tmp_path / "train.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("train", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["train"] = module
    try:
        spec.loader.exec_module(module)
        ctx = Ctx(steps)
        module.train(ctx)
    finally:
        sys.modules.pop("train", None)
    return ctx.model


def assert_predicts_causally(model) -> None:
    x = torch.randint(0, 256, (2, 64), generator=torch.Generator().manual_seed(1))
    y = x.clone()
    y[:, 40:] = (y[:, 40:] + 7) % 256  # other text after position 39
    model.eval()
    with torch.no_grad():
        a, b = model(x), model(y)
    assert a.shape == (2, 64, 257) and torch.isfinite(a).all()
    assert torch.allclose(a[:, :40], b[:, :40], atol=1e-5)


@pytest.mark.parametrize("edit", EDITS, ids=lambda e: e.name)
def test_each_edit_trains_and_predicts_causally(edit, tmp_path):
    torch.manual_seed(0)
    seed = get_benchmark("speedrun-cpu").seed_files()["train.py"]
    params = first_params(edit) | CPU_PARAMS.get(edit.name, {})
    assert_predicts_causally(run_seed(edit.apply(seed, **params), tmp_path))


def test_the_seed_and_all_edits_together_train_and_predict_causally(tmp_path):
    torch.manual_seed(0)
    seed = get_benchmark("speedrun-cpu").seed_files()["train.py"]
    assert_predicts_causally(run_seed(seed, tmp_path))
    for edit in EDITS:
        seed = edit.apply(seed, **first_params(edit) | CPU_PARAMS.get(edit.name, {}))
    assert_predicts_causally(run_seed(seed, tmp_path))
