"""The offline search space of tinylm: knobs of the seed's train.py and a catalogue of edits.

Each edit is a pure text transformation anchored on lines of the seed. It refuses
(EditNotApplicable) when an anchor is gone, which is also how a second application is
caught. Edits touch disjoint anchors, so any subset composes in any order.
"""

from __future__ import annotations

from benchmarks.protocol import CodeEdit, EditNotApplicable, Knob, SearchSpace

FILE = "train.py"


def _replace(source: str, old: str, new: str, edit: str) -> str:
    if source.count(old) != 1:
        raise EditNotApplicable(f"{edit}: anchor not found (or not unique): {old.strip()[:60]!r}")
    return source.replace(old, new, 1)


def _refuse_if(source: str, marker: str, edit: str) -> None:
    if marker in source:
        raise EditNotApplicable(f"{edit}: already applied")


# -- architecture ---------------------------------------------------------------------------

_ATTN_CLASS = "class CausalSelfAttention(nn.Module):\n"
_DROP_LINE = "        drop = DROPOUT if self.training else 0.0\n"
_V_LINE = "        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)\n"

_ROTARY_FN = '''def rotary(x: torch.Tensor, base: float = {base}) -> torch.Tensor:
    """Rotary position embedding on (B, H, T, D): positions become relative in q.k."""
    T, D = x.size(-2), x.size(-1)
    inv_freq = base ** (-torch.arange(0, D, 2, dtype=torch.float32, device=x.device) / D)
    angles = torch.arange(T, dtype=torch.float32, device=x.device)[:, None] * inv_freq
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)


'''


def rotary(source: str, base: float = 10000.0) -> str:
    """Rotary embeddings in attention instead of the learned absolute position table."""
    _refuse_if(source, "def rotary(", "rotary")
    source = _replace(
        source,
        "        T = idx.size(1)\n        pos = torch.arange(T, device=idx.device)\n"
        "        x = self.wte(idx) + self.wpe(pos)\n",
        "        x = self.wte(idx)\n",
        "rotary",
    )
    source = _replace(source, "        self.wpe = nn.Embedding(BLOCK_SIZE, N_EMBD)\n", "", "rotary")
    helper = _ROTARY_FN.format(base=float(base))
    source = _replace(source, _ATTN_CLASS, helper + _ATTN_CLASS, "rotary")
    apply_line = "        q, k = rotary(q), rotary(k)\n"
    return _replace(source, _DROP_LINE, apply_line + _DROP_LINE, "rotary")


def qk_norm(source: str) -> str:
    """RMS-normalise queries and keys per head before attention (bounded attention logits)."""
    _refuse_if(source, "F.rms_norm(q", "qk_norm")
    line = "        q, k = F.rms_norm(q, (q.size(-1),)), F.rms_norm(k, (k.size(-1),))\n"
    return _replace(source, _V_LINE, _V_LINE + line, "qk_norm")


def token_shift(source: str, init: float = 0.5) -> str:
    """Mix each position's attention input with the previous position's (a learned gate)."""
    _refuse_if(source, "self.shift_gate", "token_shift")
    source = _replace(
        source,
        "        self.attn = CausalSelfAttention()\n",
        "        self.attn = CausalSelfAttention()\n"
        f"        self.shift_gate = nn.Parameter(torch.full((N_EMBD,), {float(init)}))\n",
        "token_shift",
    )
    return _replace(
        source,
        "        x = x + self.drop(self.attn(self.ln1(x)))\n",
        "        h = self.ln1(x)\n"
        "        h = h + self.shift_gate * F.pad(h, (0, 0, 1, -1))  # previous position's input\n"
        "        x = x + self.drop(self.attn(h))\n",
        "token_shift",
    )


def relu_squared(source: str) -> str:
    """Squared-ReLU activation in the MLP instead of GELU."""
    return _replace(
        source,
        "        x = F.gelu(self.fc(x))\n",
        "        x = F.relu(self.fc(x)).square()\n",
        "relu_squared",
    )


def rmsnorm(source: str) -> str:
    """RMSNorm (no mean subtraction, no bias) instead of LayerNorm."""
    old, new = "    return nn.LayerNorm(dim)\n", "    return nn.RMSNorm(dim)\n"
    return _replace(source, old, new, "rmsnorm")


def zero_init_proj(source: str) -> str:
    """Start every residual branch at zero, so each block begins as the identity."""
    return _replace(
        source,
        "                nn.init.normal_(p, std=0.02 / math.sqrt(2 * N_LAYER))\n",
        "                nn.init.zeros_(p)\n",
        "zero_init_proj",
    )


# -- optimisation ---------------------------------------------------------------------------

_SCHEDULE = '''def lr_factor(step: int, total: int) -> float:
    """Linear warmup, then cosine decay to 10% of the peak."""
    warmup = max(1, int(WARMUP_FRAC * total))
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))
'''

_WARMDOWN = '''def lr_factor(step: int, total: int) -> float:
    """Linear warmup, constant, then a linear warmdown to zero over the last steps."""
    warmup = max(1, int(WARMUP_FRAC * total))
    if step < warmup:
        return (step + 1) / warmup
    warmdown = max(1, int({frac} * total))
    return min(1.0, max(0.0, (total - step) / warmdown))
'''


def warmdown_schedule(source: str, frac: float = 0.4) -> str:
    """Trapezoidal schedule: hold the peak rate, then decay linearly to zero."""
    return _replace(source, _SCHEDULE, _WARMDOWN.format(frac=float(frac)), "warmdown_schedule")


def adam_betas(source: str, beta1: float = 0.9, beta2: float = 0.99) -> str:
    """Other AdamW momentum constants than the seed's (0.9, 0.95)."""
    return _replace(
        source, "betas=(0.9, 0.95)", f"betas=({float(beta1)}, {float(beta2)})", "adam_betas"
    )


EDITS: tuple[CodeEdit, ...] = (
    CodeEdit(name="rotary", file=FILE, description=rotary.__doc__ or "",
             params={"base": (1000.0, 10000.0)}, apply=rotary),
    CodeEdit(name="token_shift", file=FILE, description=token_shift.__doc__ or "",
             params={"init": (0.25, 0.5, 1.0)}, apply=token_shift),
    CodeEdit(name="qk_norm", file=FILE, description=qk_norm.__doc__ or "", apply=qk_norm),
    CodeEdit(name="relu_squared", file=FILE, description=relu_squared.__doc__ or "",
             apply=relu_squared),
    CodeEdit(name="rmsnorm", file=FILE, description=rmsnorm.__doc__ or "", apply=rmsnorm),
    CodeEdit(name="zero_init_proj", file=FILE, description=zero_init_proj.__doc__ or "",
             apply=zero_init_proj),
    CodeEdit(name="warmdown_schedule", file=FILE, description=warmdown_schedule.__doc__ or "",
             params={"frac": (0.2, 0.4, 0.6)}, apply=warmdown_schedule),
    CodeEdit(name="adam_betas", file=FILE, description=adam_betas.__doc__ or "",
             params={"beta1": (0.8, 0.9), "beta2": (0.9, 0.99)}, apply=adam_betas),
)  # fmt: skip

KNOBS: tuple[Knob, ...] = (
    Knob(name="N_LAYER", file=FILE, kind="int", low=1, high=4),
    Knob(name="N_EMBD", file=FILE, kind="categorical", choices=(64, 96, 128, 192)),
    Knob(name="MLP_RATIO", file=FILE, kind="categorical", choices=(2, 3, 4)),
    Knob(name="BATCH_SIZE", file=FILE, kind="categorical", choices=(2, 4, 8, 16)),
    Knob(name="SEQ_LEN", file=FILE, kind="categorical", choices=(32, 64, 128, 256)),
    Knob(name="LR", file=FILE, kind="float", low=1e-3, high=1e-2, log=True),
    Knob(name="WEIGHT_DECAY", file=FILE, kind="float", low=0.0, high=0.2),
    Knob(name="WARMUP_FRAC", file=FILE, kind="float", low=0.0, high=0.1),
    Knob(name="DROPOUT", file=FILE, kind="float", low=0.0, high=0.2),
)


def search_space() -> SearchSpace:
    return SearchSpace(knobs=KNOBS, edits=EDITS)
