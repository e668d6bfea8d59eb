"""A nanochat-style GPT, trained for a fixed wall-clock budget on one GPU.

Contract (see README.md): train(ctx) returns an nn.Module whose forward(idx) maps a
(batch, T) int64 tensor of token ids, T <= ctx.eval_len, to (batch, T, vocab) logits.

The model: rotary positions, RMS-normalised queries and keys, a squared-ReLU MLP,
parameter-free RMSNorm, untied embedding and unembedding, soft-capped logits, value
embeddings mixed into the attention values through per-head gates, per-layer residual
scalars with a skip from the embedding, and layers that alternate between a sliding
window and full causal attention. The optimiser: Muon (orthogonalised momentum) for the
blocks' matrices, AdamW for embeddings, unembedding and scalars; the rates follow the
fraction of the time budget spent (constant, then a linear warmdown).

Every size and rate is a `NAME = value` line below. On CUDA the model trains under bf16
autocast and torch.compile (sliding windows through flex_attention); on the CPU it runs
eagerly. The returned module is the plain, uncompiled one: its forward uses SDPA only.
"""

import copy
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

# model
DEPTH = 8
MODEL_DIM = 512
HEAD_DIM = 128
MLP_RATIO = 4
WINDOW_PATTERN = "SSSL"  # per layer, repeated: S = sliding window, L = full; the last is L
SHORT_WINDOW = 1024
SOFTCAP = 15.0
VE_GATE_CHANNELS = 32
ROPE_BASE = 10000.0
# batch
SEQ_LEN = 2048
DEVICE_BATCH_SIZE = 64
TOTAL_BATCH_TOKENS = 131072
# optimisation
MATRIX_LR = 0.04
EMBED_LR = 0.6
UNEMBED_LR = 0.004
SCALAR_LR = 0.5
WEIGHT_DECAY = 0.2
ADAM_BETA1 = 0.8
ADAM_BETA2 = 0.95
MUON_MOMENTUM = 0.95
MUON_WARMUP_STEPS = 100
NS_STEPS = 5
GRAD_CLIP = 0.0
WARMUP_FRAC = 0.0
WARMDOWN_FRAC = 0.5
FINAL_LR_FRAC = 0.0
# hardware
COMPILE = True
USE_FLEX = True
COMPILE_WARMUP_STEPS = 2


def norm(x: torch.Tensor) -> torch.Tensor:
    return F.rms_norm(x, (x.size(-1),))


def has_value_embed(layer: int) -> bool:
    """Value embeddings on every other layer, the last one included."""
    return layer % 2 == (DEPTH - 1) % 2


def layer_window(layer: int) -> int:
    """How far back a layer attends: SHORT_WINDOW for an 'S' layer, 0 (everything) for 'L'."""
    if layer == DEPTH - 1 or WINDOW_PATTERN[layer % len(WINDOW_PATTERN)] == "L":
        return 0
    return SHORT_WINDOW


def rotary_tables(length: int, head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    inv_freq = ROPE_BASE ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.arange(length, dtype=torch.float32)[:, None] * inv_freq
    return angles.cos()[:, None, :], angles.sin()[:, None, :]  # (T, 1, head_dim / 2)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (B, T, H, D) queries or keys by their position: q.k then sees offsets only."""
    d = x.size(-1) // 2
    x1, x2 = x[..., :d], x[..., d:]
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat((x1 * cos + x2 * sin, x2 * cos - x1 * sin), dim=-1)


def sliding_window(length: int, window: int, device: torch.device) -> torch.Tensor:
    """Boolean (T, T) mask, True where query i may attend to key j: i - window < j <= i."""
    i = torch.arange(length, device=device)
    offset = i[:, None] - i[None, :]
    return (offset >= 0) & (offset < window)


def sliding_block_mask(length: int, window: int, device: torch.device):
    """The same mask for flex_attention, whose kernels skip the blocks it leaves out."""

    def mask_mod(b, h, q_idx, kv_idx):
        return (q_idx >= kv_idx) & (q_idx - kv_idx < window)

    return create_block_mask(mask_mod, None, None, length, length, device=device)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int, masks) -> torch.Tensor:
    """Causal attention on (B, T, H, D) tensors; window > 0 keeps the last `window` keys.
    `masks` (window -> flex block mask, training on CUDA only) selects flex_attention."""
    T, dtype = q.size(1), v.dtype
    q, k, v = q.to(dtype).transpose(1, 2), k.to(dtype).transpose(1, 2), v.transpose(1, 2)
    if masks is not None and window in masks:
        y = flex_attention(q, k, v, block_mask=masks[window])
    elif 0 < window < T:
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=sliding_window(T, window, q.device))
    else:
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    return y.transpose(1, 2)


class CausalSelfAttention(nn.Module):
    def __init__(self, vocab_size: int, layer: int) -> None:
        super().__init__()
        assert MODEL_DIM % HEAD_DIM == 0, "MODEL_DIM must be a multiple of HEAD_DIM"
        self.layer = layer
        self.n_head = MODEL_DIM // HEAD_DIM
        self.head_dim = HEAD_DIM
        self.window = layer_window(layer)
        self.c_q = nn.Linear(MODEL_DIM, MODEL_DIM, bias=False)
        self.c_k = nn.Linear(MODEL_DIM, MODEL_DIM, bias=False)
        self.c_v = nn.Linear(MODEL_DIM, MODEL_DIM, bias=False)
        self.c_proj = nn.Linear(MODEL_DIM, MODEL_DIM, bias=False)
        bound = math.sqrt(3 / MODEL_DIM)
        for lin in (self.c_q, self.c_k, self.c_v):
            nn.init.uniform_(lin.weight, -bound, bound)
        nn.init.zeros_(self.c_proj.weight)
        self.value_embed = None
        if has_value_embed(layer):
            self.value_embed = nn.Embedding(vocab_size, MODEL_DIM)
            self.ve_gate = nn.Linear(VE_GATE_CHANNELS, self.n_head, bias=False)
            nn.init.uniform_(self.value_embed.weight, -bound, bound)
            nn.init.zeros_(self.ve_gate.weight)  # 2 * sigmoid(0) = 1: fully mixed in at first

    def forward(self, x: torch.Tensor, idx: torch.Tensor, rope: tuple, masks) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.c_q(x).view(B, T, self.n_head, self.head_dim)
        k = self.c_k(x).view(B, T, self.n_head, self.head_dim)
        v = self.c_v(x).view(B, T, self.n_head, self.head_dim)
        if self.value_embed is not None:  # value embedding, through a per-head gate in (0, 2)
            gate = 2 * torch.sigmoid(self.ve_gate(x[..., :VE_GATE_CHANNELS])).unsqueeze(-1)
            v = v + gate * self.value_embed(idx).view_as(v).to(v.dtype)
        q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
        q, k = norm(q), norm(k)
        y = attend(q, k, v, self.window, masks)
        return self.c_proj(y.reshape(B, T, MODEL_DIM))


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c_fc = nn.Linear(MODEL_DIM, MLP_RATIO * MODEL_DIM, bias=False)
        self.c_proj = nn.Linear(MLP_RATIO * MODEL_DIM, MODEL_DIM, bias=False)
        bound = math.sqrt(3 / MODEL_DIM)
        nn.init.uniform_(self.c_fc.weight, -bound, bound)
        nn.init.zeros_(self.c_proj.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.relu(self.c_fc(x)).square())


class Block(nn.Module):
    def __init__(self, vocab_size: int, layer: int) -> None:
        super().__init__()
        self.attn = CausalSelfAttention(vocab_size, layer)
        self.mlp = MLP()

    def forward(self, x: torch.Tensor, idx: torch.Tensor, rope: tuple, masks) -> torch.Tensor:
        x = x + self.attn(norm(x), idx, rope, masks)
        return x + self.mlp(norm(x))


class GPT(nn.Module):
    def __init__(self, vocab_size: int, max_len: int) -> None:
        super().__init__()
        self.wte = nn.Embedding(vocab_size, MODEL_DIM)
        self.blocks = nn.ModuleList([Block(vocab_size, i) for i in range(DEPTH)])
        self.lm_head = nn.Linear(MODEL_DIM, vocab_size, bias=False)
        self.resid_lambdas = nn.Parameter(torch.ones(DEPTH))
        self.x0_lambdas = nn.Parameter(torch.full((DEPTH,), 0.1))
        nn.init.normal_(self.wte.weight, std=1.0)
        nn.init.normal_(self.lm_head.weight, std=0.001)
        cos, sin = rotary_tables(max_len, HEAD_DIM)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, masks=None):
        T = idx.size(1)
        rope = (self.cos[:T], self.sin[:T])
        x = norm(self.wte(idx))
        x0 = x
        for i, block in enumerate(self.blocks):
            x = self.resid_lambdas[i] * x + self.x0_lambdas[i] * x0
            x = block(x, idx, rope, masks)
        logits = self.lm_head(norm(x)).float()
        logits = SOFTCAP * torch.tanh(logits / SOFTCAP)
        if targets is None:
            return logits
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


# -- optimisation ---------------------------------------------------------------------------


def orthogonalize(g: torch.Tensor, steps: int) -> torch.Tensor:
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


def make_optimizers(model: GPT, cuda: bool) -> list[torch.optim.Optimizer]:
    """Muon for the blocks' matrices; AdamW for embeddings, the unembedding and scalars."""
    scale = (MODEL_DIM / 768) ** -0.5  # the AdamW rates were tuned at width 768
    embeds = [m.weight for m in model.modules() if isinstance(m, nn.Embedding)]
    head = [model.lm_head.weight]
    taken = {id(p) for p in embeds + head}
    matrices = [p for p in model.blocks.parameters() if p.dim() == 2 and id(p) not in taken]
    taken |= {id(p) for p in matrices} | {id(model.resid_lambdas)}
    scalars = [p for p in model.parameters() if id(p) not in taken]
    groups = [
        {"params": embeds, "lr": EMBED_LR * scale},
        {"params": head, "lr": UNEMBED_LR * scale},
        {"params": [model.resid_lambdas], "lr": SCALAR_LR * 0.01},
        {"params": scalars, "lr": SCALAR_LR},
    ]
    adam = torch.optim.AdamW([g for g in groups if g["params"]], betas=(ADAM_BETA1, ADAM_BETA2),
                             eps=1e-10, weight_decay=0.0, fused=cuda)
    muon = Muon(matrices, lr=MATRIX_LR, momentum=MUON_MOMENTUM, weight_decay=WEIGHT_DECAY,
                compiled=cuda and COMPILE)
    return [adam, muon]


def lr_multiplier(progress: float) -> float:
    """Fraction of the peak rate by the fraction of the time budget spent: warmup,
    constant, then a linear warmdown to FINAL_LR_FRAC."""
    if progress < WARMUP_FRAC:
        return max(progress / WARMUP_FRAC, 0.01)
    if WARMDOWN_FRAC <= 0 or progress < 1.0 - WARMDOWN_FRAC:
        return 1.0
    cooldown = max(0.0, (1.0 - progress) / WARMDOWN_FRAC)
    return cooldown + (1.0 - cooldown) * FINAL_LR_FRAC


def block_masks(model: GPT, device: torch.device) -> dict:
    """Flex block masks of the sliding-window layers at the training length."""
    windows = {block.attn.window for block in model.blocks}
    return {w: sliding_block_mask(SEQ_LEN, w, device) for w in windows if 0 < w < SEQ_LEN}


def train(ctx) -> nn.Module:
    cuda = ctx.device.type == "cuda"
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    model = GPT(ctx.vocab_size, max(SEQ_LEN, ctx.eval_len)).to(ctx.device)
    optimizers = make_optimizers(model, cuda)
    for opt in optimizers:
        for group in opt.param_groups:
            group["initial_lr"] = group["lr"]
            group["initial_wd"] = group["weight_decay"]
    forward = torch.compile(model, dynamic=False) if cuda and COMPILE else model
    masks = block_masks(model, ctx.device) if cuda and USE_FLEX else None
    autocast = torch.autocast(ctx.device.type, dtype=torch.bfloat16, enabled=cuda)
    # Rows per forward pass: DEVICE_BATCH_SIZE, or fewer when the whole batch is smaller.
    micro_batch = max(1, min(DEVICE_BATCH_SIZE, TOTAL_BATCH_TOKENS // SEQ_LEN))
    grad_accum = max(1, TOTAL_BATCH_TOKENS // (micro_batch * SEQ_LEN))

    def run_step(get_batch, progress) -> bool:
        """One optimizer step over grad_accum micro-batches; False once the data runs out."""
        for _ in range(grad_accum):
            batch = get_batch(micro_batch, SEQ_LEN)
            if batch is None:
                return False
            x, y = batch
            with autocast:
                loss = forward(x, y, masks)
            (loss / grad_accum).backward()
        lrm = lr_multiplier(progress())
        if GRAD_CLIP > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        for opt in optimizers:
            for group in opt.param_groups:
                group["lr"] = group["initial_lr"] * lrm
                group["weight_decay"] = group["initial_wd"] * (1.0 - min(1.0, progress()))
            opt.step()
        model.zero_grad(set_to_none=True)
        return True

    # compile and autotune on random tokens before the clock starts, then undo those steps
    initial = copy.deepcopy(model.state_dict())
    initial_opt = [copy.deepcopy(opt.state_dict()) for opt in optimizers]
    for _ in range(COMPILE_WARMUP_STEPS):
        run_step(ctx.warmup_batch, lambda: 0.0)
    model.load_state_dict(initial)
    for opt, state in zip(optimizers, initial_opt, strict=True):
        opt.load_state_dict(state)

    step, queued = 0, None
    while run_step(ctx.next_batch, ctx.progress):
        step += 1
        if cuda:  # at most one step queued on the GPU, so that the end comes on time
            done, queued = queued, torch.cuda.Event()
            queued.record()
            if done is not None:
                done.synchronize()
    model.zero_grad(set_to_none=True)
    return model
