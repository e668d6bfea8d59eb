"""nanochat seeds and edit catalogue on the CPU: both seeds (shrunk by CPU_KNOBS) train
through a fake harness context, learn a learnable stream, and return causal models whose
forward gives (B, T, V) logits; every edit applies to the seeds it targets, refuses the
others and a second application, trains, and composes with the rest."""

from __future__ import annotations

import itertools
import math
import random
import types
import warnings
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F

from autolab.proposers.knobs import find_knob, set_knob
from autolab.static_scan import static_findings
from benchmarks.nanochat.benchmark import NanoChat
from benchmarks.nanochat.edits import CPU_KNOBS, EDITS, KNOBS, MUON_CODE, search_space
from benchmarks.protocol import EditNotApplicable

SEED_DIR = "benchmarks/nanochat/seed"
VOCAB, EVAL_LEN = 512, 64
# which seeds each edit is written for; it must refuse the other one
TARGETS = {
    "token_shift_qk": {"strong", "weak"},
    "weight_averaging": {"strong", "weak"},
    "batch_size_warmup": {"strong", "weak"},
    "hashed_ngram_values": {"strong"},
    "value_embeds_all_layers": {"strong"},
    "cosine_warmdown": {"strong"},
    "rotary": {"weak"},
    "rmsnorm": {"weak"},
    "relu_squared": {"weak"},
    "qk_norm": {"weak"},
    "logit_softcap": {"weak"},
    "zero_init_proj": {"weak"},
    "untie_head": {"weak"},
    "muon": {"weak"},
    "decaying_weight_decay": {"weak"},
    "warmdown_schedule": {"weak"},
}
BY_NAME = {e.name: e for e in EDITS}


def raw_seed(variant: str) -> str:
    with open(f"{SEED_DIR}/{variant}/train.py") as f:
        return f.read()


def cpu_seed(variant: str) -> str:
    source = raw_seed(variant)
    for name, value in CPU_KNOBS[variant].items():
        source = set_knob(source, name, value)
    return source


SEEDS = {v: cpu_seed(v) for v in ("strong", "weak")}


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """Small matrices are far faster on one thread than on several."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # flex_attention run eagerly on the CPU says so
        yield
    torch.set_num_threads(threads)


class FakeCtx:
    """What the harness hands train(): consecutive windows of a token stream, a clock that
    counts batches instead of seconds, random tokens for warm-up."""

    def __init__(self, stream: torch.Tensor, n_batches: int) -> None:
        self.vocab_size, self.eval_len, self.bos_id, self.seed = VOCAB, EVAL_LEN, 0, 0
        self.device = torch.device("cpu")
        self.budget_s = float(n_batches)
        self.stream, self.n_batches = stream, n_batches
        self.given, self.pos, self.tokens_used = 0, 0, 0

    def next_batch(self, batch_size: int, seq_len: int):
        if self.given >= self.n_batches:
            return None
        self.given += 1
        n = batch_size * seq_len
        if self.pos + n + 1 > len(self.stream):
            self.pos = 0
        chunk = self.stream[self.pos : self.pos + n + 1]
        self.pos += n
        self.tokens_used += n
        return chunk[:-1].view(batch_size, seq_len), chunk[1:].view(batch_size, seq_len)

    def warmup_batch(self, batch_size: int, seq_len: int):
        x = torch.randint(0, self.vocab_size, (batch_size, seq_len + 1))
        return x[:, :-1].contiguous(), x[:, 1:].contiguous()

    def elapsed(self) -> float:
        return float(self.given)

    def progress(self) -> float:
        return self.given / self.n_batches if self.n_batches else 1.0


def bigram_stream(n: int = 8000, seed: int = 0) -> torch.Tensor:
    """Each token determines the next (a random permutation): learnable from the bigrams."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(VOCAB, generator=g)
    out = [int(torch.randint(0, VOCAB, (1,), generator=g))]
    for _ in range(n - 1):
        out.append(int(perm[out[-1]]))
    return torch.tensor(out)


STREAM = bigram_stream()


def load(source: str) -> types.ModuleType:
    compile(source, "train.py", "exec")
    module = types.ModuleType("candidate_train")
    exec(compile(source, "train.py", "exec"), module.__dict__)
    return module


def train(source: str, n_batches: int = 3, seed: int = 0):
    module = load(source)
    torch.manual_seed(seed)
    model = module.train(FakeCtx(STREAM, n_batches))
    model.eval()
    return module, model


def eval_loss(model: torch.nn.Module) -> float:
    x = STREAM[1000 : 1000 + 4 * EVAL_LEN + 1]
    with torch.no_grad():
        logits = model(x[:-1].view(4, EVAL_LEN))
    return F.cross_entropy(logits.reshape(-1, VOCAB), x[1:].reshape(-1)).item()


def check_logits_and_causality(model: torch.nn.Module) -> None:
    x = torch.randint(0, VOCAB, (3, EVAL_LEN))
    with torch.no_grad():
        logits = model(x)
        assert logits.shape == (3, EVAL_LEN, VOCAB)
        assert logits.is_floating_point() and torch.isfinite(logits).all()
        short = model(x[:, :17])  # any T up to eval_len, same logits as the prefix
        assert short.shape == (3, 17, VOCAB)
        torch.testing.assert_close(short, logits[:, :17], atol=1e-4, rtol=1e-4)
        for t in (0, 20, EVAL_LEN - 2):
            changed = x.clone()
            changed[:, t + 1 :] = torch.randint(0, VOCAB, changed[:, t + 1 :].shape)
            after = model(changed)
            torch.testing.assert_close(after[:, : t + 1], logits[:, : t + 1], atol=1e-4, rtol=1e-4)
            assert not torch.allclose(after[:, t + 1 :], logits[:, t + 1 :])


def first_params(edit) -> dict:
    return {name: values[0] for name, values in edit.params.items()}


# -- seeds ----------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["strong", "weak"])
def test_seed_learns_and_returns_causal_logits(variant):
    module, model = train(SEEDS[variant], n_batches=40)
    assert type(model).__name__ == "GPT" and not hasattr(model, "_orig_mod")
    assert all(p.device.type == "cpu" for p in model.parameters())
    loss = eval_loss(model)
    # ln(512) = 6.24 at chance; a bigram table is all there is to learn
    assert loss < {"strong": 1.0, "weak": 5.3}[variant], loss
    check_logits_and_causality(model)


@pytest.mark.parametrize("variant", ["strong", "weak"])
def test_compile_warmup_steps_are_undone(variant):
    """With no training batch at all, train() returns the model as initialised: the
    warm-up steps on random tokens leave no trace."""
    module = load(SEEDS[variant])
    torch.manual_seed(3)
    model = module.train(FakeCtx(STREAM, 0))
    torch.manual_seed(3)
    fresh = module.GPT(VOCAB, EVAL_LEN)
    for (name, a), b in zip(model.state_dict().items(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("variant", ["strong", "weak"])
@pytest.mark.parametrize(("total", "rows"), [(512, [4, 4]), (128, [2]), (64, [1])])
def test_a_step_draws_the_whole_batch_and_no_more(variant, total, rows):
    """TOTAL_BATCH_TOKENS is what one optimizer step sees, also below one device batch
    (4 rows of 64 here): the rows per forward pass shrink instead of staying at 4."""
    source = set_knob(SEEDS[variant], "TOTAL_BATCH_TOKENS", total)
    module = load(source)
    ctx = FakeCtx(STREAM, n_batches=3 * len(rows))
    drawn: list[int] = []  # rows of each batch served
    serve = ctx.next_batch

    def next_batch(batch_size: int, seq_len: int):
        batch = serve(batch_size, seq_len)
        if batch is not None:
            drawn.append(batch_size)
        return batch

    ctx.next_batch = next_batch
    torch.manual_seed(0)
    module.train(ctx)
    assert drawn[: len(rows)] == rows and sum(drawn) * 64 == 3 * total


def test_strong_flex_attention_matches_sdpa():
    """Training on CUDA goes through flex_attention block masks; the returned model's
    forward uses SDPA with an explicit mask. Both must give the same logits."""
    module, model = train(SEEDS["strong"], n_batches=3)
    assert {b.attn.window for b in model.blocks} == {0, 16}  # both kinds of layer
    masks = module.block_masks(model, torch.device("cpu"))
    x = torch.randint(0, VOCAB, (2, EVAL_LEN))
    with torch.no_grad():
        torch.testing.assert_close(model(x, None, masks), model(x), atol=1e-4, rtol=1e-4)


def test_cpu_knobs_are_knob_lines_and_knobs_fit_the_seeds():
    for variant, knobs in CPU_KNOBS.items():
        raw = raw_seed(variant)
        for name in knobs:
            assert find_knob(raw, name) is not None, (variant, name)
    seen = set()
    for variant in ("strong", "weak"):
        raw = raw_seed(variant)
        for knob in KNOBS:
            line = find_knob(raw, knob.name)
            if line is None:
                continue
            seen.add(knob.name)
            if knob.kind == "categorical":
                assert line.value in knob.choices, (variant, knob.name, line.value)
            else:
                assert knob.low <= line.value <= knob.high, (variant, knob.name, line.value)
    muon_only = {"MATRIX_LR", "MUON_MOMENTUM", "MUON_WARMUP_STEPS", "NS_STEPS"}
    assert {k.name for k in KNOBS} - seen <= muon_only


def test_seeds_and_edited_seeds_pass_the_static_scan():
    def findings(source: str) -> list[str]:
        return static_findings("train.py", source, NanoChat.allowed_imports,
                               NanoChat.allowed_attrs)

    for variant in ("strong", "weak"):
        assert findings(raw_seed(variant)) == []
        for name, targets in TARGETS.items():
            if variant in targets:
                edit = BY_NAME[name]
                assert findings(edit.apply(SEEDS[variant], **first_params(edit))) == [], name


def test_muon_code_is_the_strong_seeds():
    assert MUON_CODE in raw_seed("strong")


# -- edits ----------------------------------------------------------------------------------


def test_catalogue():
    space = search_space()
    assert space.edits == EDITS and space.knobs == KNOBS
    names = [e.name for e in EDITS]
    assert len(names) >= 10 and len(set(names)) == len(names)
    assert set(names) == set(TARGETS)
    assert len({k.name for k in KNOBS}) == len(KNOBS)
    for edit in EDITS:
        assert edit.file == "train.py" and len(edit.description) > 30
        assert all(values for values in edit.params.values())


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_edit_applies_to_its_seeds_only(name):
    edit = BY_NAME[name]
    for variant, source in SEEDS.items():
        if variant not in TARGETS[name]:
            with pytest.raises(EditNotApplicable):
                edit.apply(source, **first_params(edit))
            continue
        combos = [dict(zip(edit.params, v, strict=True))
                  for v in itertools.product(*edit.params.values())]
        for params in combos:
            edited = edit.apply(source, **params)
            assert edited != source
            compile(edited, "train.py", "exec")
            with pytest.raises(EditNotApplicable):
                edit.apply(edited, **params)
        _, model = train(edit.apply(source, **first_params(edit)), n_batches=3)
        check_logits_and_causality(model)


@pytest.mark.parametrize("variant", ["strong", "weak"])
def test_edits_compose_in_any_order(variant):
    source = SEEDS[variant]
    mine = [BY_NAME[n] for n in sorted(TARGETS) if variant in TARGETS[n]]
    for a, b in itertools.permutations(mine, 2):
        compile(b.apply(a.apply(source, **first_params(a)), **first_params(b)), "train.py", "exec")
    rng = random.Random(0)
    finals = []
    for _ in range(3):
        order = rng.sample(mine, len(mine))
        edited = source
        for edit in order:
            edited = edit.apply(edited, **first_params(edit))
        compile(edited, "train.py", "exec")
        finals.append(edited)
    _, model = train(finals[0], n_batches=3)
    check_logits_and_causality(model)


def test_weak_seed_fully_modernised_learns():
    source = SEEDS["weak"]
    for name in ("rotary", "rmsnorm", "relu_squared", "qk_norm", "logit_softcap",
                 "zero_init_proj", "untie_head", "muon", "warmdown_schedule"):
        source = BY_NAME[name].apply(source, **first_params(BY_NAME[name]))
    _, model = train(source, n_batches=40)
    assert eval_loss(model) < 4.2  # the plain weak seed: 4.7 after the same 40 batches


def test_strong_only_edits_reach_the_weak_seed_once_it_has_their_code():
    weak = SEEDS["weak"]
    assert "cosine_warmdown" in TARGETS and "weak" not in TARGETS["cosine_warmdown"]
    with_warmdown = BY_NAME["warmdown_schedule"].apply(weak)
    compile(BY_NAME["cosine_warmdown"].apply(with_warmdown), "train.py", "exec")


def test_edits_survive_any_knob_values():
    """Anchors are code lines, never knob lines: rewriting knobs first changes nothing."""
    rng = random.Random(1)
    for variant in ("strong", "weak"):
        source = raw_seed(variant)
        for knob in KNOBS:
            if find_knob(source, knob.name) is None:
                continue
            if knob.kind == "categorical":
                value = rng.choice(knob.choices)
            elif knob.kind == "int":
                value = rng.randint(int(knob.low), int(knob.high))
            else:
                value = rng.uniform(knob.low, knob.high)
            source = set_knob(source, knob.name, value)
        for name, targets in TARGETS.items():
            if variant in targets:
                BY_NAME[name].apply(source, **first_params(BY_NAME[name]))


def test_ngram_hashes_differ_per_layer_and_look_back_only():
    module = load(BY_NAME["hashed_ngram_values"].apply(SEEDS["strong"], order=3, buckets=4093))
    idx = torch.randint(0, VOCAB, (2, 50))
    ids = [module.ngram_ids(idx, layer, 3, 4093) for layer in range(3)]
    assert all(int(i.min()) >= 0 and int(i.max()) < 4093 for i in ids)
    assert not torch.equal(ids[0], ids[1]) and not torch.equal(ids[1], ids[2])
    changed = idx.clone()
    changed[:, 30:] = (changed[:, 30:] + 1) % VOCAB
    assert torch.equal(module.ngram_ids(changed, 0, 3, 4093)[:, :30], ids[0][:, :30])
    same = torch.tensor([[5, 7, 9, 5, 7, 9]])  # equal trigrams land in equal buckets
    h = module.ngram_ids(same, 1, 3, 4093)[0]
    assert h[2] == h[5] and not math.isnan(float(h[2]))
