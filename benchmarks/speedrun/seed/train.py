"""A GPT-2-small speedrun in the style of the public record scripts, run on every rank.

Contract (see README.md): train(ctx) registers its model with ctx.set_model, asks
ctx.next_batch for each optimizer step's share of this rank, and returns when done. The
registered module's forward(idx) maps (batch, T) int64 tokens to (batch, T, vocab)
logits; the harness validates a saved copy of it every ctx.val_every steps.

The model: token embeddings, three value embeddings mixed into the attention values of
the first and last layers, rotary positions, RMS-normalised queries and keys, a
squared-ReLU MLP, parameter-free RMSNorm, U-net skips from the first half of the layers
to the second, learned mixes of the residual stream with the embedding, sliding-window
attention that masks across documents (long and short windows, growing during training),
a zero-initialised head with soft-capped logits. The optimiser: Muon for the blocks'
matrices (each rank orthogonalises its share, the updates are gathered), Adam for
embeddings, head and scalars; a stable rate, then a linear cooldown.

Every size and rate is a `NAME = value` line below. On CUDA the step runs under bf16
autocast and torch.compile, attention through flex_attention with block masks; on the
CPU, eagerly through scaled_dot_product_attention with dense masks. Validation uses the
dense path.
"""

import copy
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

# model
NUM_LAYERS = 12
MODEL_DIM = 768
HEAD_DIM = 128
MLP_RATIO = 4
NUM_VALUE_EMBEDS = 3
SOFTCAP = 15.0
ATTN_SCALE = 0.12
ROPE_BASE = 10000.0
VOCAB_MULTIPLE = 128
# attention windows, in tokens: "L" layers see the window, "S" layers half of it
WINDOW_PATTERN = "LSSS"
WINDOW_START = 128
WINDOW_END = 1792
# batch and schedule
TOTAL_BATCH_TOKENS = 131072
NUM_ITERATIONS = 1250
COOLDOWN_FRAC = 0.45
FINAL_LR_FRAC = 0.1
# optimisation
MUON_LR = 0.05
MUON_MOMENTUM = 0.95
MUON_MOMENTUM_START = 0.85
MUON_WARMUP_STEPS = 300
NS_STEPS = 5
EMBED_LR = 0.3
HEAD_LR = 0.008
SCALAR_LR = 0.04
ADAM_BETA1 = 0.8
ADAM_BETA2 = 0.95
# hardware
COMPILE = True
USE_FLEX = True
COMPILE_WARMUP_STEPS = 3


def norm(x: torch.Tensor) -> torch.Tensor:
    return F.rms_norm(x, (x.size(-1),))


def padded(vocab_size: int) -> int:
    return -(-vocab_size // VOCAB_MULTIPLE) * VOCAB_MULTIPLE


def is_long(layer: int) -> bool:
    return layer == NUM_LAYERS - 1 or WINDOW_PATTERN[layer % len(WINDOW_PATTERN)] == "L"


def window_at(progress: float) -> int:
    """The long layers' window at this fraction of training (short layers: half)."""
    return int(WINDOW_START + (WINDOW_END - WINDOW_START) * min(1.0, max(0.0, progress)))


# -- attention ------------------------------------------------------------------------------


def dense_masks(idx: torch.Tensor, window: int, eot_id: int) -> dict:
    """Boolean (B, 1, T, T) masks, long and short: causal, within the window, and within
    the document (each document starts with the end-of-text token)."""
    i = torch.arange(idx.size(1), device=idx.device)
    offset = i[:, None] - i[None, :]
    docs = (idx == eot_id).cumsum(1)
    same_doc = docs[:, :, None] == docs[:, None, :]
    return {long: ((offset >= 0) & (offset < max(1, w)))[None] & same_doc
            for long, w in ((True, window), (False, window // 2))}


def flex_masks(idx: torch.Tensor, window: int, eot_id: int, make) -> dict:
    """The same masks as flex block masks of one (1, T) sequence (`make` is a compiled
    create_block_mask): whole blocks outside them are skipped."""
    docs = (idx[0] == eot_id).cumsum(0)
    size = idx.size(1)

    def mask_for(w: torch.Tensor):
        def mask_mod(b, h, q, kv):
            return (q >= kv) & (q - kv < w) & (docs[q] == docs[kv])

        return make(mask_mod, None, None, size, size, device=idx.device)

    w = torch.tensor(window, device=idx.device)
    return {True: mask_for(w), False: mask_for(torch.clamp(w // 2, min=1))}


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask) -> torch.Tensor:
    """Attention on (B, T, H, D) tensors through a dense mask (SDPA) or a block mask (flex);
    in bf16 on a GPU."""
    dtype = torch.bfloat16 if q.is_cuda else torch.float32
    q, k, v = (t.transpose(1, 2).to(dtype) for t in (q, k, v))
    if isinstance(mask, torch.Tensor):
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None], scale=ATTN_SCALE)
    else:
        y = flex_attention(q, k, v, block_mask=mask, scale=ATTN_SCALE)
    return y.transpose(1, 2)


# -- the model ------------------------------------------------------------------------------


class Rotary(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        inv_freq = ROPE_BASE ** (-torch.arange(0, dim, 2, dtype=torch.float32) / dim)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Rotate (B, T, H, D) queries or keys by their position."""
        t = torch.arange(x.size(1), device=x.device, dtype=torch.float32)
        angles = (t[:, None] * self.inv_freq)[:, None, :]
        cos, sin = angles.cos(), angles.sin()
        x1, x2 = x.float().chunk(2, dim=-1)
        return torch.cat((x1 * cos + x2 * sin, x2 * cos - x1 * sin), dim=-1).type_as(x)


class CausalSelfAttention(nn.Module):
    def __init__(self, layer: int) -> None:
        super().__init__()
        assert MODEL_DIM % HEAD_DIM == 0, "MODEL_DIM must be a multiple of HEAD_DIM"
        self.n_head = MODEL_DIM // HEAD_DIM
        self.long = is_long(layer)
        bound = math.sqrt(3) * 0.5 * MODEL_DIM**-0.5
        self.qkv_w = nn.Parameter(torch.empty(3, MODEL_DIM, MODEL_DIM).uniform_(-bound, bound))
        self.lambdas = nn.Parameter(torch.tensor([0.5, 0.5]))  # values, value embeddings
        self.rotary = Rotary(HEAD_DIM)
        self.c_proj = nn.Linear(MODEL_DIM, MODEL_DIM, bias=False)
        nn.init.zeros_(self.c_proj.weight)

    def forward(self, x: torch.Tensor, ve, masks: dict) -> torch.Tensor:
        B, T, _ = x.shape
        qkv = F.linear(x, self.qkv_w.flatten(end_dim=1)).view(B, T, 3, self.n_head, HEAD_DIM)
        q, k, v = qkv.unbind(2)
        q, k = self.rotary(norm(q)), self.rotary(norm(k))
        v = self.lambdas[0] * v
        if ve is not None:
            v = v + self.lambdas[1] * ve.view_as(v)
        y = attend(q, k, v, masks[self.long])
        return self.c_proj(y.reshape(B, T, MODEL_DIM).type_as(x))


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c_fc = nn.Linear(MODEL_DIM, MLP_RATIO * MODEL_DIM, bias=False)
        self.c_proj = nn.Linear(MLP_RATIO * MODEL_DIM, MODEL_DIM, bias=False)
        nn.init.zeros_(self.c_proj.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.relu(self.c_fc(x)).square())


class Block(nn.Module):
    def __init__(self, layer: int) -> None:
        super().__init__()
        self.attn = CausalSelfAttention(layer)
        self.mlp = MLP()
        self.lambdas = nn.Parameter(torch.tensor([1.0, 0.0]))  # residual, embedding

    def forward(self, x: torch.Tensor, x0: torch.Tensor, ve, masks: dict) -> torch.Tensor:
        x = self.lambdas[0] * x + self.lambdas[1] * x0
        x = x + self.attn(norm(x), ve, masks)
        return x + self.mlp(norm(x))


class GPT(nn.Module):
    def __init__(self, vocab_size: int, eot_id: int) -> None:
        super().__init__()
        assert NUM_LAYERS >= 2 * NUM_VALUE_EMBEDS, "value embeddings need 2 layers each"
        self.vocab_size, self.eot_id = vocab_size, eot_id
        self.embed = nn.Embedding(padded(vocab_size), MODEL_DIM)
        self.value_embeds = nn.ModuleList(
            [nn.Embedding(padded(vocab_size), MODEL_DIM) for _ in range(NUM_VALUE_EMBEDS)])
        self.blocks = nn.ModuleList([Block(i) for i in range(NUM_LAYERS)])
        self.skip_weights = nn.Parameter(torch.ones(NUM_LAYERS // 2))
        self.lm_head = nn.Linear(MODEL_DIM, padded(vocab_size), bias=False)
        nn.init.zeros_(self.lm_head.weight)
        self.register_buffer("window", torch.tensor(WINDOW_END), persistent=False)

    def layer_value_embeds(self, idx: torch.Tensor) -> list:
        """Value embeddings for the first layers and, in the same order, the last ones."""
        ve = [emb(idx) for emb in self.value_embeds]
        n = len(ve)
        return ve + [None] * (NUM_LAYERS - 2 * n) + ve

    def hidden(self, idx: torch.Tensor, masks: dict) -> torch.Tensor:
        x = x0 = norm(self.embed(idx))
        ves = self.layer_value_embeds(idx)
        half, skips = NUM_LAYERS // 2, []
        for i, block in enumerate(self.blocks):
            if i >= NUM_LAYERS - half:  # the second half takes the first half's outputs
                x = x + self.skip_weights[i - (NUM_LAYERS - half)] * skips.pop()
            x = block(x, x0, ves[i], masks)
            if i < half:
                skips.append(x)
        return norm(x)

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        z = self.lm_head(h).float()
        return SOFTCAP * torch.tanh(z / SOFTCAP)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Validation: (B, T) tokens -> (B, T, vocab_size) logits, dense masks."""
        masks = dense_masks(idx, int(self.window), self.eot_id)
        return self.logits(self.hidden(idx, masks))[..., : self.vocab_size]

    def loss(self, x: torch.Tensor, y: torch.Tensor, masks: dict) -> torch.Tensor:
        logits = self.logits(self.hidden(x, masks))
        return F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1))


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


class Muon(torch.optim.Optimizer):
    """Orthogonalised Nesterov momentum for the blocks' matrices. Rank r orthogonalises
    every world_size-th matrix (keeping its momentum); one all-gather then gives every
    rank all the updates."""

    def __init__(self, params, comm, rank: int, world: int, lr: float, momentum: float):
        params = sorted(params, key=lambda p: -p.numel())  # shares of about equal size
        super().__init__(params, {"lr": lr, "momentum": momentum})
        self.comm, self.rank, self.world = comm, rank, world
        owned = [params[r :: world] for r in range(world)]
        self.owned = owned
        self.share = max(sum(p.numel() for p in ps) for ps in owned)

    @torch.no_grad()
    def step(self) -> None:
        group = self.param_groups[0]
        first = group["params"][0]
        updates = torch.zeros(self.world, self.share, device=first.device)
        at = 0
        for p in self.owned[self.rank]:
            state = self.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(p.grad)
            buf = state["momentum_buffer"]
            buf.lerp_(p.grad, 1 - group["momentum"])
            g = p.grad.lerp(buf, group["momentum"])
            scale = max(1.0, p.size(-2) / p.size(-1)) ** 0.5
            updates[self.rank, at : at + p.numel()] = orthogonalize(g, NS_STEPS).flatten() * scale
            at += p.numel()
        mine = updates[self.rank].clone()
        self.comm.all_gather_into_tensor(updates.view(-1), mine)
        for r, params in enumerate(self.owned):
            at = 0
            for p in params:
                u = updates[r, at : at + p.numel()].view_as(p)
                p.add_(u.to(p.dtype), alpha=-group["lr"])
                at += p.numel()


def average_grads(params: list, comm) -> None:
    """One all-reduce of every gradient, flattened together."""
    flat = torch.cat([p.grad.flatten() for p in params])
    comm.all_reduce(flat, "avg")
    at = 0
    for p in params:
        p.grad.copy_(flat[at : at + p.numel()].view_as(p.grad))
        at += p.numel()


def make_optimizers(model: GPT, ctx) -> tuple[torch.optim.Optimizer, Muon]:
    matrices = [p for p in model.blocks.parameters() if p.dim() >= 2]
    embeds = [model.embed.weight, *(e.weight for e in model.value_embeds)]
    head = [model.lm_head.weight]
    taken = {id(p) for p in matrices + embeds + head}
    scalars = [p for p in model.parameters() if id(p) not in taken]
    adam = torch.optim.Adam(
        [{"params": embeds, "lr": EMBED_LR}, {"params": head, "lr": HEAD_LR},
         {"params": scalars, "lr": SCALAR_LR}],
        betas=(ADAM_BETA1, ADAM_BETA2), eps=1e-10, fused=ctx.device.type == "cuda")
    muon = Muon(matrices, ctx.comm, ctx.rank, ctx.world_size, MUON_LR, MUON_MOMENTUM)
    return adam, muon


def lr_factor(step: int) -> float:
    """Stable, then a linear cooldown to FINAL_LR_FRAC over the last COOLDOWN_FRAC."""
    progress = step / NUM_ITERATIONS
    if progress < 1 - COOLDOWN_FRAC:
        return 1.0
    w = max(0.0, (1 - progress) / COOLDOWN_FRAC)
    return w + (1 - w) * FINAL_LR_FRAC


def muon_momentum(step: int) -> float:
    frac = min(1.0, step / max(1, MUON_WARMUP_STEPS))
    return (1 - frac) * MUON_MOMENTUM_START + frac * MUON_MOMENTUM


# -- training -------------------------------------------------------------------------------


def train(ctx) -> nn.Module:
    cuda = ctx.device.type == "cuda"
    seq_len = TOTAL_BATCH_TOKENS // ctx.world_size  # this rank's tokens per step
    model = GPT(ctx.vocab_size, ctx.eot_id).to(ctx.device)
    for p in model.parameters():  # identical replicas
        ctx.comm.broadcast(p.data, 0)
    ctx.set_model(model)
    adam, muon = make_optimizers(model, ctx)
    for group in adam.param_groups + muon.param_groups:
        group["initial_lr"] = group["lr"]
    params = list(model.parameters())
    flex = cuda and USE_FLEX
    make_mask = torch.compile(create_block_mask) if flex else None
    loss_fn = torch.compile(model.loss, dynamic=False) if cuda and COMPILE else model.loss
    autocast = torch.autocast(ctx.device.type, dtype=torch.bfloat16, enabled=cuda)

    def step(x: torch.Tensor, y: torch.Tensor, i: int) -> None:
        window = window_at(i / NUM_ITERATIONS)
        model.window.fill_(window)
        if flex:
            masks = flex_masks(x, window, ctx.eot_id, make_mask)
        else:
            masks = dense_masks(x, window, ctx.eot_id)
        with autocast:
            loss = loss_fn(x, y, masks)
        loss.backward()
        average_grads(params, ctx.comm)
        for group in adam.param_groups + muon.param_groups:
            group["lr"] = group["initial_lr"] * lr_factor(i)
        for group in muon.param_groups:
            group["momentum"] = muon_momentum(i)
        adam.step()
        muon.step()
        model.zero_grad(set_to_none=True)

    # compile and autotune on random tokens before the first batch, then undo those steps
    initial = copy.deepcopy(model.state_dict())
    initial_adam = copy.deepcopy(adam.state_dict())
    for _ in range(COMPILE_WARMUP_STEPS):
        step(*ctx.warmup_batch(1, seq_len), 0)
    model.load_state_dict(initial)
    adam.load_state_dict(initial_adam)
    muon.state.clear()

    for i in range(NUM_ITERATIONS):
        batch = ctx.next_batch(1, seq_len)
        if batch is None:
            break
        step(*batch, i)
    return model
