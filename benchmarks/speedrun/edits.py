"""The offline search space of the speedrun: knobs of the seed's train.py and a catalogue of
edits in the directions the public records went (schedules, batch size, attention windows,
Muon, attention variants, embedding tricks, the head's precision).

Every edit is a pure text transformation anchored on lines of the seed, never on a knob's
line, so it applies whatever the knobs hold. It refuses (EditNotApplicable) when an anchor
is gone, which is also how a second application is caught. Edits touch disjoint anchors
or insert next to anchors they leave in place, so any subset composes in any order.
"""

from __future__ import annotations

from benchmarks.nanochat.edits import _insert_after, _refuse_if, _replace
from benchmarks.protocol import CodeEdit, Knob, SearchSpace

FILE = "train.py"

# The seed's knobs for each preset (the file's own values are the `full` preset's). Token
# budgets from the measured train split (83.95M GPT-2 tokens): full, 1250 steps of 131,072
# tokens = 164M tokens (1.95 epochs); short, 700 steps = 92M (1.09 epochs).
SEED_KNOBS: dict[str, dict[str, object]] = {
    "full": {},
    "short": {"NUM_ITERATIONS": 700},
    "cpu": {
        "NUM_LAYERS": 2, "MODEL_DIM": 64, "HEAD_DIM": 32, "NUM_VALUE_EMBEDS": 1,
        "VOCAB_MULTIPLE": 64, "WINDOW_START": 16, "WINDOW_END": 64,
        "TOTAL_BATCH_TOKENS": 512, "NUM_ITERATIONS": 200, "MUON_WARMUP_STEPS": 20,
        "COMPILE_WARMUP_STEPS": 1,
    },
}  # fmt: skip

# Anchors: lines of the seed.
_COOLDOWN = "    w = max(0.0, (1 - progress) / COOLDOWN_FRAC)\n"
_SET_LR = '            group["lr"] = group["initial_lr"] * lr_factor(i)\n'
_NEXT_BATCH = "        batch = ctx.next_batch(1, seq_len)\n"
_WINDOW = ("    return int(WINDOW_START + (WINDOW_END - WINDOW_START) * min(1.0, max(0.0, "
           "progress)))\n")
_SHORT_DENSE = "            for long, w in ((True, window), (False, window // 2))}\n"
_SHORT_FLEX = "    return {True: mask_for(w), False: mask_for(torch.clamp(w // 2, min=1))}\n"
_MUON_APPLY = '                p.add_(u.to(p.dtype), alpha=-group["lr"])\n'
_NESTEROV = '            g = p.grad.lerp(buf, group["momentum"])\n'
_NS_POLY = ("        b = -4.7750 * a + 2.0315 * (a @ a)\n"
            "        x = 3.4445 * x + b @ x\n")
_ROTARY_INIT = "        self.rotary = Rotary(HEAD_DIM)\n"
_ATTEND = "        y = attend(q, k, v, masks[self.long])\n"
_INV_FREQ = ("        inv_freq = ROPE_BASE ** (-torch.arange(0, dim, 2, dtype=torch.float32) "
             "/ dim)\n")
_BLOCK_ATTN_INIT = "        self.attn = CausalSelfAttention(layer)\n"
_BLOCK_ATTN = "        x = x + self.attn(norm(x), ve, masks)\n"
_EMBED = "        x = x0 = norm(self.embed(idx))\n"
_GPT_HEAD_INIT = "        nn.init.zeros_(self.lm_head.weight)\n"
_HEAD = "        z = self.lm_head(h).float()\n"
_SOFTCAP = "        return SOFTCAP * torch.tanh(z / SOFTCAP)\n"


# -- schedule and batch size ----------------------------------------------------------------


def cooldown_shape(source: str, shape: str = "cosine") -> str:
    """Shape of the cooldown of the rates: a half cosine (longer near the peak, gentler at
    the end) or 1 - sqrt (fast at first, long near the end) instead of a straight line."""
    into = "min(1.0, max(0.0, (progress - 1 + COOLDOWN_FRAC) / COOLDOWN_FRAC))"
    curve = {"cosine": f"0.5 * (1 + math.cos(math.pi * {into}))",
             "sqrt": f"1 - math.sqrt({into})"}
    if shape not in curve:
        raise ValueError(f"shape must be one of {sorted(curve)}")
    return _replace(source, _COOLDOWN, f"    w = {curve[shape]}  # {shape} cooldown\n",
                    "cooldown_shape")


def lr_warmup(source: str, steps: int = 50) -> str:
    """A linear warmup of every rate over the first `steps` steps."""
    _refuse_if(source, "# warmup of the rates", "lr_warmup")
    return _replace(source, _SET_LR, _SET_LR.rstrip("\n") +
                    f" * min(1.0, (i + 1) / {int(steps)})  # warmup of the rates\n", "lr_warmup")


def batch_size_warmup(source: str, frac: float = 0.25, divisor: int = 2) -> str:
    """Smaller steps (1/divisor of the tokens) for the first `frac` of the iterations: more,
    noisier updates while the loss falls fast."""
    return _replace(
        source, _NEXT_BATCH,
        f"        small = i < {float(frac)!r} * NUM_ITERATIONS  # smaller batches early\n"
        f"        batch = ctx.next_batch(1, seq_len // {int(divisor)} if small else seq_len)\n",
        "batch_size_warmup",
    )  # fmt: skip


# -- attention windows ----------------------------------------------------------------------


def window_schedule(source: str, shape: str = "stepped") -> str:
    """How the window grows from WINDOW_START to WINDOW_END: in three steps, along a square
    root (fast early), or not at all (WINDOW_END from the start)."""
    shapes = {"stepped": "math.ceil(3 * min(1.0, max(0.0, progress))) / 3",
              "sqrt": "math.sqrt(min(1.0, max(0.0, progress)))", "constant": "1.0"}
    if shape not in shapes:
        raise ValueError(f"shape must be one of {sorted(shapes)}")
    return _replace(
        source, _WINDOW,
        f"    frac = {shapes[shape]}  # {shape} window schedule\n"
        "    return int(WINDOW_START + (WINDOW_END - WINDOW_START) * frac)\n",
        "window_schedule",
    )  # fmt: skip


def short_window_divisor(source: str, divisor: int = 4) -> str:
    """'S' layers see 1/divisor of the long window instead of half (1: the same)."""
    d = int(divisor)
    source = _replace(source, _SHORT_DENSE,
                      f"            for long, w in ((True, window), (False, window // {d}))}}\n",
                      "short_window_divisor")
    return _replace(source, _SHORT_FLEX,
                    f"    return {{True: mask_for(w), False: mask_for(torch.clamp(w // {d}, "
                    "min=1))}\n", "short_window_divisor")


# -- Muon -----------------------------------------------------------------------------------


def muon_weight_decay(source: str, wd: float = 0.025) -> str:
    """Decoupled weight decay on the matrices Muon updates, scaled by the rate."""
    _refuse_if(source, "# decoupled weight decay", "muon_weight_decay")
    return _insert_after(
        source, "            for p in params:\n                u = updates[r, at : at + p.numel()]"
        ".view_as(p)\n",
        f'                p.mul_(1 - group["lr"] * {float(wd)!r})  # decoupled weight decay\n',
        "muon_weight_decay",
    )  # fmt: skip


def muon_plain_momentum(source: str) -> str:
    """Muon on the momentum itself instead of Nesterov's look-ahead."""
    return _replace(source, _NESTEROV, "            g = buf.clone()  # plain momentum\n",
                    "muon_plain_momentum")


def muon_iteration(source: str, variant: str = "exact") -> str:
    """Another Newton-Schulz polynomial instead of the tuned quintic: `exact` (15/8, -10/8,
    3/8) or the classic `cubic` (3/2, -1/2): both converge to the orthogonal factor itself,
    more slowly from small singular values."""
    coefficients = {"exact": (1.875, -1.25, 0.375), "cubic": (1.5, -0.5, 0.0)}
    if variant not in coefficients:
        raise ValueError(f"variant must be one of {sorted(coefficients)}")
    a, b, c = coefficients[variant]
    return _replace(source, _NS_POLY,
                    f"        b = {b} * a + {c} * (a @ a)  # {variant} coefficients\n"
                    f"        x = {a} * x + b @ x\n", "muon_iteration")


# -- attention variants ---------------------------------------------------------------------


def attention_gate(source: str, channels: int = 12) -> str:
    """A gate per head on the attention output, 2 * sigmoid of a projection of the first
    input channels (zero at first: the identity)."""
    _refuse_if(source, "self.attn_gate", "attention_gate")
    source = _insert_after(
        source, _ROTARY_INIT,
        f"        self.attn_gate = nn.Linear({int(channels)}, self.n_head, bias=False)\n"
        "        nn.init.zeros_(self.attn_gate.weight)\n", "attention_gate",
    )  # fmt: skip
    return _insert_after(
        source, _ATTEND,
        f"        y = y * 2 * torch.sigmoid(self.attn_gate(x[..., :{int(channels)}]))"
        ".unsqueeze(-1).to(y.dtype)\n", "attention_gate",
    )  # fmt: skip


def drop_attention(source: str, layer: int = 7) -> str:
    """No attention in one layer (its MLP stays): the public records drop layer 7's."""
    source = _replace(source, _BLOCK_ATTN_INIT,
                      f"        self.attn = CausalSelfAttention(layer) if layer != {int(layer)} "
                      "else None\n", "drop_attention")
    return _replace(source, _BLOCK_ATTN,
                    "        if self.attn is not None:\n"
                    "            x = x + self.attn(norm(x), ve, masks)\n", "drop_attention")


def half_truncated_rope(source: str) -> str:
    """Rotary on half of each head's dimensions only (the other half's frequencies are
    zero): position-free channels beside the positional ones."""
    return _replace(
        source, _INV_FREQ,
        "        quarter = dim // 4  # half the pairs rotate, the others stay put\n"
        "        freqs = (1 / ROPE_BASE) ** torch.linspace(0, 1, quarter)\n"
        "        inv_freq = torch.cat([freqs, freqs.new_zeros(dim // 2 - quarter)])\n",
        "half_truncated_rope",
    )  # fmt: skip


# -- embeddings and the head ----------------------------------------------------------------


def smear_token(source: str, channels: int = 12) -> str:
    """Mix the previous token's embedding into each position's, through a gate computed
    from its first channels (a learned scale that starts at zero): a cheap bigram."""
    _refuse_if(source, "self.smear_gate", "smear_token")
    source = _insert_after(
        source, _GPT_HEAD_INIT,
        f"        self.smear_gate = nn.Linear({int(channels)}, 1, bias=False)\n"
        "        self.smear_lambda = nn.Parameter(torch.zeros(1))\n", "smear_token",
    )  # fmt: skip
    return _replace(
        source, _EMBED,
        "        e = norm(self.embed(idx))\n"
        f"        gate = torch.sigmoid(self.smear_gate(e[..., :{int(channels)}]))\n"
        "        gate = self.smear_lambda * gate  # the previous token's share, 0 at first\n"
        "        e = e + gate * F.pad(e[:, :-1], (0, 0, 1, 0))  # causal: t - 1 only\n"
        "        x = x0 = e\n", "smear_token",
    )  # fmt: skip


def fp32_head(source: str) -> str:
    """The head's matmul in float32 even under bf16 autocast (precise logits, slower)."""
    return _replace(
        source, _HEAD,
        "        with torch.autocast(h.device.type, enabled=False):  # the head in float32\n"
        "            z = self.lm_head(h.float())\n", "fp32_head",
    )  # fmt: skip


def sigmoid_softcap(source: str, scale: float = 30.0) -> str:
    """Logits capped as scale * sigmoid(z / (scale / 4)) instead of a tanh: bounded in
    (0, scale), with the later records' shape."""
    return _replace(source, _SOFTCAP,
                    f"        return {float(scale)!r} * torch.sigmoid(z / {float(scale) / 4!r})"
                    "\n",
                    "sigmoid_softcap")


def _edit(fn, **params: tuple) -> CodeEdit:
    return CodeEdit(name=fn.__name__, file=FILE, description=" ".join((fn.__doc__ or "").split()),
                    params=params, apply=fn)


EDITS: tuple[CodeEdit, ...] = (
    _edit(cooldown_shape, shape=("cosine", "sqrt")),
    _edit(lr_warmup, steps=(50, 20, 100)),
    _edit(batch_size_warmup, frac=(0.25, 0.1, 0.5), divisor=(2, 4)),
    _edit(window_schedule, shape=("stepped", "sqrt", "constant")),
    _edit(short_window_divisor, divisor=(4, 1, 8)),
    _edit(muon_weight_decay, wd=(0.025, 0.01, 0.05)),
    _edit(muon_plain_momentum),
    _edit(muon_iteration, variant=("exact", "cubic")),
    _edit(attention_gate, channels=(12, 32)),
    _edit(drop_attention, layer=(7, 5, 1)),
    _edit(half_truncated_rope),
    _edit(smear_token, channels=(12, 32)),
    _edit(fp32_head),
    _edit(sigmoid_softcap, scale=(30.0, 15.0)),
)

# Ranges for two H200s and the `short` preset. The step count and the batch size set how
# many tokens a run sees and how fast it gets there, so tuning moves those (and the main
# rates) first.
KNOBS: tuple[Knob, ...] = (
    # model
    Knob(name="NUM_LAYERS", file=FILE, kind="int", low=8, high=16, weight=2.0),
    Knob(name="MODEL_DIM", file=FILE, kind="categorical", choices=(512, 640, 768, 896)),
    Knob(name="MLP_RATIO", file=FILE, kind="categorical", choices=(3, 4)),
    Knob(name="NUM_VALUE_EMBEDS", file=FILE, kind="categorical", choices=(1, 2, 3)),
    Knob(name="SOFTCAP", file=FILE, kind="float", low=10.0, high=30.0),
    Knob(name="ATTN_SCALE", file=FILE, kind="float", low=0.08, high=0.16),
    Knob(name="ROPE_BASE", file=FILE, kind="categorical", choices=(1024.0, 10000.0, 100000.0)),
    # attention windows
    Knob(name="WINDOW_PATTERN", file=FILE, kind="categorical",
         choices=("LSSS", "LSS", "LS", "L")),
    Knob(name="WINDOW_START", file=FILE, kind="categorical", choices=(64, 128, 256, 512)),
    Knob(name="WINDOW_END", file=FILE, kind="categorical", choices=(1024, 1792, 2048, 3072),
         weight=2.0),
    # batch and schedule
    Knob(name="TOTAL_BATCH_TOKENS", file=FILE, kind="categorical",
         choices=(65536, 98304, 131072, 196608), weight=3.0),
    Knob(name="NUM_ITERATIONS", file=FILE, kind="int", low=400, high=1400, weight=5.0),
    Knob(name="COOLDOWN_FRAC", file=FILE, kind="float", low=0.2, high=0.8, weight=2.0),
    Knob(name="FINAL_LR_FRAC", file=FILE, kind="float", low=0.0, high=0.3),
    # optimisation
    Knob(name="MUON_LR", file=FILE, kind="float", low=0.02, high=0.1, log=True, weight=3.0),
    Knob(name="MUON_MOMENTUM", file=FILE, kind="float", low=0.9, high=0.98),
    Knob(name="MUON_MOMENTUM_START", file=FILE, kind="float", low=0.8, high=0.9),
    Knob(name="MUON_WARMUP_STEPS", file=FILE, kind="int", low=0, high=500),
    Knob(name="NS_STEPS", file=FILE, kind="categorical", choices=(4, 5, 6)),
    Knob(name="EMBED_LR", file=FILE, kind="float", low=0.1, high=1.0, log=True, weight=2.0),
    Knob(name="HEAD_LR", file=FILE, kind="float", low=0.002, high=0.02, log=True),
    Knob(name="SCALAR_LR", file=FILE, kind="float", low=0.01, high=0.1, log=True),
    Knob(name="ADAM_BETA1", file=FILE, kind="float", low=0.7, high=0.9),
    Knob(name="ADAM_BETA2", file=FILE, kind="float", low=0.9, high=0.99),
)  # fmt: skip


def search_space() -> SearchSpace:
    return SearchSpace(knobs=KNOBS, edits=EDITS)
