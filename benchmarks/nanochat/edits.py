"""The offline search space of nanochat: knobs of the seeds' train.py and a catalogue of edits.

Two seeds share this catalogue. `seed/strong` is a nanochat-style GPT; `seed/weak` is a
vanilla GPT with AdamW, and most of the edits below modernise it one technique at a time
(each of those refuses on the strong seed, which already has it). Every edit is a pure
text transformation anchored on lines of a seed, never on a knob's line, so it applies
whatever the knobs hold. It refuses (EditNotApplicable) when an anchor is gone, which is
also how a second application is caught. Edits touch disjoint anchors or insert next to
anchors they leave in place, so any subset composes in any order.
"""

from __future__ import annotations

from collections.abc import Sequence

from benchmarks.protocol import CodeEdit, EditNotApplicable, Knob, SearchSpace

FILE = "train.py"

# Knob values that shrink each seed to a model that trains in seconds on a CPU (the `cpu`
# preset: 512-token vocabulary, 64-token windows). Applied with the knob rewriter.
CPU_KNOBS: dict[str, dict[str, object]] = {
    "strong": {
        "DEPTH": 2, "MODEL_DIM": 64, "HEAD_DIM": 32, "SHORT_WINDOW": 16, "SEQ_LEN": 64,
        "DEVICE_BATCH_SIZE": 4, "TOTAL_BATCH_TOKENS": 256, "MUON_WARMUP_STEPS": 10,
        "COMPILE_WARMUP_STEPS": 1,
    },
    "weak": {
        "DEPTH": 2, "MODEL_DIM": 64, "N_HEAD": 2, "SEQ_LEN": 64, "DEVICE_BATCH_SIZE": 4,
        "TOTAL_BATCH_TOKENS": 256, "COMPILE_WARMUP_STEPS": 1,
    },
}  # fmt: skip


def _replace(source: str, old: str, new: str, edit: str) -> str:
    if source.count(old) != 1:
        raise EditNotApplicable(f"{edit}: anchor not found (or not unique): {old.strip()[:60]!r}")
    return source.replace(old, new, 1)


def _insert_after(source: str, anchor: str, text: str, edit: str) -> str:
    return _replace(source, anchor, anchor + text, edit)


def _insert_before(source: str, anchor: str, text: str, edit: str) -> str:
    return _replace(source, anchor, text + anchor, edit)


def _refuse_if(source: str, markers: str | Sequence[str], edit: str) -> None:
    for marker in [markers] if isinstance(markers, str) else markers:
        if marker in source:
            raise EditNotApplicable(f"{edit}: already applied or present ({marker.strip()!r})")


def _add_constants(source: str, section: str, lines: str, edit: str) -> str:
    """New `NAME = value` lines at the top of a section of settings ('# model', ...)."""
    return _insert_after(source, f"# {section}\n", lines, edit)


# Lines both seeds share.
_ATTN_CLASS = "class CausalSelfAttention(nn.Module):\n"
_PROJ_INIT = "        self.c_proj = nn.Linear(MODEL_DIM, MODEL_DIM, bias=False)\n"
_K_LINE = "        k = self.c_k(x).view(B, T, self.n_head, self.head_dim)\n"
_V_LINE = "        v = self.c_v(x).view(B, T, self.n_head, self.head_dim)\n"
_ACCUM_LOOP = "        for _ in range(grad_accum):\n"
_BACKWARD = "            (loss / grad_accum).backward()\n"
_INITIAL_LR = '            group["initial_lr"] = group["lr"]\n'
_SET_LR = '                group["lr"] = group["initial_lr"] * lrm\n'
_LOOP_START = "    step, queued = 0, None\n"
_STEP_DONE = "        step += 1\n"
_RETURN = "    model.zero_grad(set_to_none=True)\n    return model\n"


# -- architecture: both seeds ---------------------------------------------------------------


def token_shift_qk(source: str, channels: int = 32) -> str:
    """Causal token shift of queries and keys: each position's q and k take in the previous
    position's, per head, through a learned gate (tanh of a projection of the first
    input channels, zero at first). Strictly causal: a cheap way for attention to match
    on two-token patterns from the first steps."""
    _refuse_if(source, "self.shift_gate", "token_shift_qk")
    source = _insert_after(
        source, _PROJ_INIT,
        f"        self.shift_gate = nn.Linear({int(channels)}, 2 * self.n_head, bias=False)\n"
        "        nn.init.zeros_(self.shift_gate.weight)  # tanh(0) = 0: no shift at first\n",
        "token_shift_qk",
    )  # fmt: skip
    return _insert_after(
        source, _K_LINE,
        f"        shift = torch.tanh(self.shift_gate(x[..., :{int(channels)}]))\n"
        "        shift = shift.view(B, T, 2, self.n_head, 1)  # per position and head\n"
        "        q = q + shift[:, :, 0] * F.pad(q, (0, 0, 0, 0, 1, 0))[:, :T]  # q of t - 1\n"
        "        k = k + shift[:, :, 1] * F.pad(k, (0, 0, 0, 0, 1, 0))[:, :T]  # k of t - 1\n",
        "token_shift_qk",
    )  # fmt: skip


# -- architecture: the strong seed -----------------------------------------------------------

_NGRAM_FN = '''def ngram_ids(idx: torch.Tensor, layer: int, order: int, buckets: int):
    """Hash bucket of the n-gram ending at each position: this token and the order - 1
    before it (0 stands in before the window's start). Each layer hashes with its own
    multipliers, so n-grams that collide in one layer's table are apart in the others'."""
    h = torch.zeros_like(idx)
    for j in range(order):
        prev = idx if j == 0 else F.pad(idx[:, :-j], (j, 0))
        h = h + prev * (1000003 + 7919 * (layer * order + j))
    return h % buckets


'''


def hashed_ngram_values(source: str, order: int = 2, buckets: int = 16381) -> str:
    """Hashed bigram (order 2) or trigram (order 3) embeddings added to the attention values
    of the value-embedding layers, each through its own per-head gate like the value
    embeddings. Every layer hashes the n-grams with different multipliers into a table of
    `buckets` rows (a prime), so collisions differ from layer to layer. Strictly causal."""
    _refuse_if(source, "def ngram_ids(", "hashed_ngram_values")
    source = _insert_before(source, _ATTN_CLASS, _NGRAM_FN, "hashed_ngram_values")
    source = _insert_before(
        source, "        self.value_embed = None\n",
        "        self.ngram = None\n"
        "        if has_value_embed(layer):  # hashed n-gram embedding, through its own gate\n"
        f"            self.ngram = nn.Embedding({int(buckets)}, MODEL_DIM)\n"
        "            self.ngram_gate = nn.Linear(VE_GATE_CHANNELS, self.n_head, bias=False)\n"
        "            nn.init.uniform_(self.ngram.weight, -bound, bound)\n"
        "            nn.init.zeros_(self.ngram_gate.weight)\n",
        "hashed_ngram_values",
    )  # fmt: skip
    return _insert_before(
        source, "        q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)\n",
        "        if self.ngram is not None:  # hashed n-grams, a hash of this layer's own\n"
        "            gate = 2 * torch.sigmoid(self.ngram_gate(x[..., :VE_GATE_CHANNELS]))\n"
        f"            ids = ngram_ids(idx, self.layer, {int(order)}, {int(buckets)})\n"
        "            v = v + gate.unsqueeze(-1) * self.ngram(ids).view_as(v).to(v.dtype)\n",
        "hashed_ngram_values",
    )  # fmt: skip


def value_embeds_all_layers(source: str) -> str:
    """Value embeddings (and anything keyed on them) on every layer, not every other one."""
    return _replace(
        source, "    return layer % 2 == (DEPTH - 1) % 2\n", "    return True\n",
        "value_embeds_all_layers",
    )  # fmt: skip


# -- architecture: modernising the weak seed --------------------------------------------------

_ROTARY_FN = '''def rotary(x: torch.Tensor, base: float = {base}) -> torch.Tensor:
    """Rotate (B, T, H, D) queries or keys by their position: q.k then sees offsets only."""
    T, D = x.size(1), x.size(-1)
    inv_freq = base ** (-torch.arange(0, D, 2, dtype=torch.float32, device=x.device) / D)
    angles = torch.arange(T, dtype=torch.float32, device=x.device)[:, None] * inv_freq
    cos, sin = angles.cos()[:, None, :].to(x.dtype), angles.sin()[:, None, :].to(x.dtype)
    x1, x2 = x[..., : D // 2], x[..., D // 2 :]
    return torch.cat((x1 * cos + x2 * sin, x2 * cos - x1 * sin), dim=-1)


'''


def rotary(source: str, base: float = 10000.0) -> str:
    """Rotary position embeddings on queries and keys instead of the learned table of
    absolute positions (weak seed)."""
    _refuse_if(source, "rotary", "rotary")
    source = _replace(source, "        self.wpe = nn.Embedding(max_len, MODEL_DIM)\n", "", "rotary")
    source = _replace(
        source,
        "        T = idx.size(1)\n        pos = torch.arange(T, device=idx.device)\n"
        "        x = self.wte(idx) + self.wpe(pos)\n",
        "        x = self.wte(idx)\n",
        "rotary",
    )
    source = _insert_before(source, _ATTN_CLASS, _ROTARY_FN.format(base=float(base)), "rotary")
    return _insert_before(
        source, "        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)\n",
        "        q, k = rotary(q), rotary(k)\n", "rotary",
    )  # fmt: skip


def rmsnorm(source: str) -> str:
    """RMSNorm (no mean subtraction, no bias) instead of LayerNorm (weak seed)."""
    return _replace(source, "    return nn.LayerNorm(dim)\n", "    return nn.RMSNorm(dim)\n",
                    "rmsnorm")


def relu_squared(source: str) -> str:
    """Squared-ReLU activation in the MLP instead of GELU (weak seed)."""
    return _replace(
        source,
        "        return self.c_proj(F.gelu(self.c_fc(x)))\n",
        "        return self.c_proj(F.relu(self.c_fc(x)).square())\n",
        "relu_squared",
    )


def qk_norm(source: str) -> str:
    """RMS-normalise queries and keys per head before attention: bounded attention logits,
    which tolerate higher learning rates (weak seed)."""
    _refuse_if(source, "norm(q", "qk_norm")
    return _insert_after(
        source, _V_LINE,
        "        q, k = F.rms_norm(q, (q.size(-1),)), F.rms_norm(k, (k.size(-1),))\n", "qk_norm",
    )  # fmt: skip


def logit_softcap(source: str, cap: float = 15.0) -> str:
    """Soft-cap the output logits, cap * tanh(logits / cap): no runaway logits (weak seed)."""
    _refuse_if(source, "SOFTCAP", "logit_softcap")
    source = _add_constants(source, "model", f"SOFTCAP = {float(cap)!r}\n", "logit_softcap")
    return _insert_after(
        source, "        logits = self.lm_head(self.ln_f(x)).float()\n",
        "        logits = SOFTCAP * torch.tanh(logits / SOFTCAP)\n", "logit_softcap",
    )  # fmt: skip


def zero_init_proj(source: str) -> str:
    """Start every residual branch's output projection at zero, so that each block begins
    as the identity (weak seed)."""
    return _replace(
        source,
        "                nn.init.normal_(p, std=0.02 / math.sqrt(2 * DEPTH))\n",
        "                nn.init.zeros_(p)\n",
        "zero_init_proj",
    )


def untie_head(source: str) -> str:
    """Separate input embedding and output layer instead of one tied matrix (weak seed)."""
    return _replace(
        source,
        "        self.lm_head.weight = self.wte.weight  # tied input and output embeddings\n",
        "",
        "untie_head",
    )


# -- optimisation ---------------------------------------------------------------------------

# The Muon optimiser exactly as the strong seed has it (a test keeps the two the same).
MUON_CODE = '''def orthogonalize(g: torch.Tensor, steps: int) -> torch.Tensor:
    """Newton-Schulz iteration (quintic; in bf16 on a GPU) towards the nearest
    semi-orthogonal matrix of each (..., rows, cols) slice."""
    x = g.bfloat16() if g.is_cuda else g.float()
    tall = x.size(-2) > x.size(-1)
    if tall:
        x = x.mT
    x = x / (x.norm(dim=(-2, -1), keepdim=True) + 1e-7)
    for _ in range(steps):
        a = x @ x.mT
        b = -4.7750 * a + 2.0315 * (a @ a)
        x = 3.4445 * x + b @ x
    if tall:
        x = x.mT
    return x


def muon_update(grads: torch.Tensor, buf: torch.Tensor, momentum: torch.Tensor,
                steps: int) -> torch.Tensor:
    """Nesterov momentum, orthogonalised; scaled up for matrices taller than wide."""
    buf.lerp_(grads, 1 - momentum)
    update = orthogonalize(grads.lerp(buf, momentum), steps)
    return update * max(1.0, grads.size(-2) / grads.size(-1)) ** 0.5


class Muon(torch.optim.Optimizer):
    """Orthogonalised momentum for 2-D weights. Matrices of one shape share a group and are
    orthogonalised as one stack; the momentum ramps up from 0.85 over MUON_WARMUP_STEPS;
    weight decay is cautious (only where the update and the weight agree in sign)."""

    def __init__(self, params, lr: float, momentum: float, weight_decay: float,
                 compiled: bool) -> None:
        params = list(params)
        shapes = sorted({tuple(p.shape) for p in params})
        groups = [{"params": [p for p in params if tuple(p.shape) == s]} for s in shapes]
        super().__init__(groups, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay})
        self.update_fn = torch.compile(muon_update, dynamic=False) if compiled else muon_update

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = torch.stack([p.grad for p in params])
            state = self.state[params[0]]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(grads)
                state["momentum"] = torch.zeros((), device=grads.device)
                state["step"] = 0
            state["step"] += 1
            ramp = min(1.0, state["step"] / max(1, MUON_WARMUP_STEPS))
            state["momentum"].fill_(0.85 + ramp * (group["momentum"] - 0.85))
            updates = self.update_fn(grads, state["momentum_buffer"], state["momentum"], NS_STEPS)
            lr, wd = group["lr"], group["weight_decay"]
            for p, u in zip(params, updates.unbind(0), strict=True):
                u = u.to(p.dtype)
                p.sub_(p * (u * p > 0), alpha=lr * wd)
                p.sub_(u, alpha=lr)
'''

_WEAK_OPTIMIZERS = '''def make_optimizers(model: GPT, cuda: bool) -> list[torch.optim.Optimizer]:
    """AdamW; weight matrices decay, embeddings, norms and biases do not."""
    decay, other = [], []
    for name, p in model.named_parameters():
        is_matrix = p.dim() >= 2 and not name.startswith(("wte", "wpe"))
        (decay if is_matrix else other).append(p)
    groups = [
        {"params": decay, "weight_decay": WEIGHT_DECAY},
        {"params": other, "weight_decay": 0.0},
    ]
    return [torch.optim.AdamW(groups, lr=LR, betas=(ADAM_BETA1, ADAM_BETA2), fused=cuda)]
'''

_MUON_OPTIMIZERS = '''def make_optimizers(model: GPT, cuda: bool) -> list[torch.optim.Optimizer]:
    """Muon for the blocks' weight matrices; AdamW for embeddings, head, norms and biases."""
    matrices = [p for p in model.blocks.parameters() if p.dim() == 2]
    taken = {id(p) for p in matrices}
    other = [p for p in model.parameters() if id(p) not in taken]
    adam = torch.optim.AdamW(other, lr=LR, betas=(ADAM_BETA1, ADAM_BETA2), weight_decay=0.0,
                             fused=cuda)
    muon = Muon(matrices, lr=MATRIX_LR, momentum=MUON_MOMENTUM, weight_decay=WEIGHT_DECAY,
                compiled=cuda and COMPILE)
    return [adam, muon]
'''


def muon(source: str, lr: float = 0.02) -> str:
    """Muon (Newton-Schulz orthogonalised Nesterov momentum, cautious weight decay) for the
    blocks' weight matrices; AdamW stays for embeddings, the head, norms and biases (weak
    seed). Adds MATRIX_LR, MUON_MOMENTUM, MUON_WARMUP_STEPS and NS_STEPS."""
    _refuse_if(source, "class Muon(", "muon")
    source = _replace(source, _WEAK_OPTIMIZERS, MUON_CODE + "\n\n" + _MUON_OPTIMIZERS, "muon")
    return _add_constants(
        source, "optimisation",
        f"MATRIX_LR = {float(lr)!r}\nMUON_MOMENTUM = 0.95\nMUON_WARMUP_STEPS = 100\nNS_STEPS = 5\n",
        "muon",
    )  # fmt: skip


def decaying_weight_decay(source: str) -> str:
    """Scale every group's weight decay by the fraction of the budget left, so that it
    fades to zero at the end of training (weak seed; the strong seed has it)."""
    _refuse_if(source, "initial_wd", "decaying_weight_decay")
    source = _insert_after(
        source, _INITIAL_LR, '            group["initial_wd"] = group["weight_decay"]\n',
        "decaying_weight_decay",
    )  # fmt: skip
    line = 'group["weight_decay"] = group["initial_wd"] * (1.0 - min(1.0, progress()))\n'
    return _insert_after(source, _SET_LR, " " * 16 + line, "decaying_weight_decay")


def weight_averaging(source: str, start: float = 0.7, decay: float = 0.95) -> str:
    """Average the weights over the last part of training and return the average: from
    progress `start` on, an exponential moving average with `decay` per step (a plain
    mean while fewer steps than 1 / (1 - decay) went in; decay 1.0 is the plain mean of
    every step since `start`). Costs one lerp per parameter per step and one copy at the
    end."""
    _refuse_if(source, "averaged", "weight_averaging")
    source = _insert_before(
        source, _LOOP_START,
        "    params = list(model.parameters())\n"
        "    average, averaged = [p.detach().clone() for p in params], 0\n",
        "weight_averaging",
    )  # fmt: skip
    source = _insert_after(
        source, _STEP_DONE,
        f"        if ctx.progress() >= {float(start)!r}:  # average the last weights\n"
        "            averaged += 1\n"
        "            with torch.no_grad():\n"
        "                for a, p in zip(average, params, strict=True):\n"
        f"                    a.lerp_(p, max(1.0 / averaged, 1.0 - {float(decay)!r}))\n",
        "weight_averaging",
    )  # fmt: skip
    return _insert_before(
        source, _RETURN,
        "    if averaged:  # return the average\n"
        "        with torch.no_grad():\n"
        "            for a, p in zip(average, params, strict=True):\n"
        "                p.copy_(a)\n",
        "weight_averaging",
    )  # fmt: skip


def batch_size_warmup(source: str, frac: float = 0.2) -> str:
    """Half the batch (half the gradient-accumulation steps) for the first `frac` of the
    budget: more, noisier steps while the loss falls fast."""
    _refuse_if(source, "range(accum)", "batch_size_warmup")
    source = _replace(
        source, _ACCUM_LOOP,
        f"        small = progress() < {float(frac)!r}  # half the batch early in training\n"
        "        accum = max(1, grad_accum // 2) if small else grad_accum\n"
        "        for _ in range(accum):\n",
        "batch_size_warmup",
    )  # fmt: skip
    return _replace(source, _BACKWARD, "            (loss / accum).backward()\n",
                    "batch_size_warmup")


# -- schedules ------------------------------------------------------------------------------

_COSINE_DECAY = (
    "    decay = min(1.0, (progress - WARMUP_FRAC) / max(1e-9, 1.0 - WARMUP_FRAC))\n"
    "    return MIN_LR_FRAC + (1.0 - MIN_LR_FRAC) * 0.5 * (1.0 + math.cos(math.pi * decay))\n"
)
_LINEAR_WARMDOWN = (
    "    if WARMDOWN_FRAC <= 0 or progress < 1.0 - WARMDOWN_FRAC:\n"
    "        return 1.0\n"
    "    cooldown = max(0.0, (1.0 - progress) / WARMDOWN_FRAC)\n"
)


def warmdown_schedule(source: str, frac: float = 0.5) -> str:
    """Trapezoidal schedule instead of the cosine: hold the peak rate, then decay linearly
    to MIN_LR_FRAC over the last `frac` of the budget (weak seed; adds WARMDOWN_FRAC)."""
    _refuse_if(source, "WARMDOWN_FRAC", "warmdown_schedule")
    source = _replace(
        source, _COSINE_DECAY,
        _LINEAR_WARMDOWN + "    return cooldown + (1.0 - cooldown) * MIN_LR_FRAC\n",
        "warmdown_schedule",
    )  # fmt: skip
    source = _replace(
        source, "    then a cosine decay to MIN_LR_FRAC.\"\"\"\n",
        "    constant, then a linear warmdown to MIN_LR_FRAC.\"\"\"\n", "warmdown_schedule",
    )  # fmt: skip
    return _add_constants(source, "optimisation", f"WARMDOWN_FRAC = {float(frac)!r}\n",
                          "warmdown_schedule")


def cosine_warmdown(source: str) -> str:
    """Warmdown shaped as a half cosine instead of a straight line: longer near the peak
    rate, gentler at the end."""
    return _replace(
        source,
        "    cooldown = max(0.0, (1.0 - progress) / WARMDOWN_FRAC)\n",
        "    into = min(1.0, (progress - 1.0 + WARMDOWN_FRAC) / WARMDOWN_FRAC)  # 0 -> 1\n"
        "    cooldown = 0.5 * (1.0 + math.cos(math.pi * into))\n",
        "cosine_warmdown",
    )


def _edit(fn, **params: tuple) -> CodeEdit:
    return CodeEdit(name=fn.__name__, file=FILE, description=" ".join((fn.__doc__ or "").split()),
                    params=params, apply=fn)


EDITS: tuple[CodeEdit, ...] = (
    # both seeds
    _edit(token_shift_qk, channels=(32, 16)),
    _edit(weight_averaging, start=(0.7, 0.5, 0.85), decay=(0.95, 0.9, 0.98, 1.0)),
    _edit(batch_size_warmup, frac=(0.2, 0.1, 0.4)),
    # the strong seed
    _edit(hashed_ngram_values, order=(2, 3), buckets=(16381, 4093, 65521)),
    _edit(value_embeds_all_layers),
    _edit(cosine_warmdown),
    # modernising the weak seed
    _edit(rotary, base=(10000.0, 1000.0, 100000.0)),
    _edit(rmsnorm),
    _edit(relu_squared),
    _edit(qk_norm),
    _edit(logit_softcap, cap=(15.0, 30.0)),
    _edit(zero_init_proj),
    _edit(untie_head),
    _edit(muon, lr=(0.02, 0.04)),
    _edit(decaying_weight_decay),
    _edit(warmdown_schedule, frac=(0.5, 0.3, 0.7)),
)

# Ranges for one H100 and a 60 s budget. A knob absent from a seed (N_HEAD in the strong
# one, MATRIX_LR in the weak one before the `muon` edit) is simply not read there. Weights are
# the prior of a fixed wall-clock budget: the batch size sets how many optimizer steps fit in
# it and the depth how many tokens each parameter sees, so tuning moves those (and the main
# learning rates) first.
KNOBS: tuple[Knob, ...] = (
    # model
    Knob(name="DEPTH", file=FILE, kind="int", low=4, high=12, weight=4.0),
    Knob(name="MODEL_DIM", file=FILE, kind="categorical", choices=(384, 512, 640, 768),
         weight=2.0),
    Knob(name="HEAD_DIM", file=FILE, kind="categorical", choices=(64, 128)),
    Knob(name="N_HEAD", file=FILE, kind="categorical", choices=(4, 8)),
    Knob(name="MLP_RATIO", file=FILE, kind="categorical", choices=(2, 3, 4)),
    Knob(name="WINDOW_PATTERN", file=FILE, kind="categorical",
         choices=("SSSL", "SSL", "SL", "L")),
    Knob(name="SHORT_WINDOW", file=FILE, kind="categorical", choices=(256, 512, 1024)),
    Knob(name="SOFTCAP", file=FILE, kind="float", low=10.0, high=30.0),
    Knob(name="VE_GATE_CHANNELS", file=FILE, kind="categorical", choices=(16, 32)),
    # batch
    Knob(name="SEQ_LEN", file=FILE, kind="categorical", choices=(1024, 2048)),
    Knob(name="DEVICE_BATCH_SIZE", file=FILE, kind="categorical", choices=(16, 32, 64)),
    Knob(name="TOTAL_BATCH_TOKENS", file=FILE, kind="categorical",
         choices=(32768, 65536, 131072, 262144, 524288), weight=5.0),
    # optimisation
    Knob(name="MATRIX_LR", file=FILE, kind="float", low=0.01, high=0.08, log=True, weight=3.0),
    Knob(name="EMBED_LR", file=FILE, kind="float", low=0.1, high=1.2, log=True, weight=2.0),
    Knob(name="UNEMBED_LR", file=FILE, kind="float", low=0.001, high=0.016, log=True),
    Knob(name="SCALAR_LR", file=FILE, kind="float", low=0.1, high=1.0, log=True),
    Knob(name="LR", file=FILE, kind="float", low=5e-4, high=4e-3, log=True, weight=3.0),
    Knob(name="WEIGHT_DECAY", file=FILE, kind="float", low=0.0, high=0.4),
    Knob(name="ADAM_BETA1", file=FILE, kind="float", low=0.7, high=0.95),
    Knob(name="ADAM_BETA2", file=FILE, kind="float", low=0.9, high=0.99),
    Knob(name="MUON_MOMENTUM", file=FILE, kind="float", low=0.85, high=0.98),
    Knob(name="MUON_WARMUP_STEPS", file=FILE, kind="int", low=0, high=300),
    Knob(name="NS_STEPS", file=FILE, kind="categorical", choices=(4, 5, 6)),
    Knob(name="GRAD_CLIP", file=FILE, kind="float", low=0.0, high=2.0),
    Knob(name="WARMUP_FRAC", file=FILE, kind="float", low=0.0, high=0.15),
    Knob(name="WARMDOWN_FRAC", file=FILE, kind="float", low=0.2, high=0.8, weight=3.0),
    Knob(name="FINAL_LR_FRAC", file=FILE, kind="float", low=0.0, high=0.2),
    Knob(name="MIN_LR_FRAC", file=FILE, kind="float", low=0.0, high=0.2),
)  # fmt: skip


def search_space() -> SearchSpace:
    return SearchSpace(knobs=KNOBS, edits=EDITS)
