"""A vanilla GPT-2-style Transformer, trained for a fixed wall-clock budget on one GPU.

Contract (see README.md): train(ctx) returns an nn.Module whose forward(idx) maps a
(batch, T) int64 tensor of token ids, T <= ctx.eval_len, to (batch, T, vocab) logits.

Learned absolute positions, LayerNorm before each sublayer, a GELU MLP, embeddings tied
to the output layer, AdamW on everything with a linear warmup, a cosine decay by the
fraction of the time budget spent, and gradient clipping. Every size and rate is a
`NAME = value` line below. On CUDA it trains under bf16 autocast and torch.compile; on
the CPU it runs eagerly. The returned module is the plain, uncompiled one.
"""

import copy
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

# model
DEPTH = 8
MODEL_DIM = 512
N_HEAD = 8
MLP_RATIO = 4
# batch
SEQ_LEN = 2048
DEVICE_BATCH_SIZE = 64
TOTAL_BATCH_TOKENS = 131072
# optimisation
LR = 0.0015
MIN_LR_FRAC = 0.1
WARMUP_FRAC = 0.1
WEIGHT_DECAY = 0.1
ADAM_BETA1 = 0.9
ADAM_BETA2 = 0.95
GRAD_CLIP = 1.0
# hardware
COMPILE = True
COMPILE_WARMUP_STEPS = 2


def make_norm(dim: int) -> nn.Module:
    return nn.LayerNorm(dim)


class CausalSelfAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        assert MODEL_DIM % N_HEAD == 0, "MODEL_DIM must be a multiple of N_HEAD"
        self.n_head = N_HEAD
        self.head_dim = MODEL_DIM // N_HEAD
        self.c_q = nn.Linear(MODEL_DIM, MODEL_DIM, bias=False)
        self.c_k = nn.Linear(MODEL_DIM, MODEL_DIM, bias=False)
        self.c_v = nn.Linear(MODEL_DIM, MODEL_DIM, bias=False)
        self.c_proj = nn.Linear(MODEL_DIM, MODEL_DIM, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.c_q(x).view(B, T, self.n_head, self.head_dim)
        k = self.c_k(x).view(B, T, self.n_head, self.head_dim)
        v = self.c_v(x).view(B, T, self.n_head, self.head_dim)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        y = F.scaled_dot_product_attention(q.to(v.dtype), k.to(v.dtype), v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).reshape(B, T, MODEL_DIM))


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c_fc = nn.Linear(MODEL_DIM, MLP_RATIO * MODEL_DIM, bias=False)
        self.c_proj = nn.Linear(MLP_RATIO * MODEL_DIM, MODEL_DIM, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.gelu(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.ln1 = make_norm(MODEL_DIM)
        self.attn = CausalSelfAttention()
        self.ln2 = make_norm(MODEL_DIM)
        self.mlp = MLP()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    def __init__(self, vocab_size: int, max_len: int) -> None:
        super().__init__()
        self.wte = nn.Embedding(vocab_size, MODEL_DIM)
        self.wpe = nn.Embedding(max_len, MODEL_DIM)
        self.blocks = nn.ModuleList([Block() for _ in range(DEPTH)])
        self.ln_f = make_norm(MODEL_DIM)
        self.lm_head = nn.Linear(MODEL_DIM, vocab_size, bias=False)
        self.apply(self.init_module)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):  # the outputs of residual branches
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * DEPTH))
        self.lm_head.weight = self.wte.weight  # tied input and output embeddings

    @staticmethod
    def init_module(module: nn.Module) -> None:
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        T = idx.size(1)
        pos = torch.arange(T, device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        for block in self.blocks:
            x = block(x)
        logits = self.lm_head(self.ln_f(x)).float()
        if targets is None:
            return logits
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


# -- optimisation ---------------------------------------------------------------------------


def make_optimizers(model: GPT, cuda: bool) -> list[torch.optim.Optimizer]:
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


def lr_multiplier(progress: float) -> float:
    """Fraction of the peak rate by the fraction of the time budget spent: linear warmup,
    then a cosine decay to MIN_LR_FRAC."""
    if progress < WARMUP_FRAC:
        return max(progress / WARMUP_FRAC, 0.01)
    decay = min(1.0, (progress - WARMUP_FRAC) / max(1e-9, 1.0 - WARMUP_FRAC))
    return MIN_LR_FRAC + (1.0 - MIN_LR_FRAC) * 0.5 * (1.0 + math.cos(math.pi * decay))


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
    forward = torch.compile(model, dynamic=False) if cuda and COMPILE else model
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
                loss = forward(x, y)
            (loss / grad_accum).backward()
        lrm = lr_multiplier(progress())
        if GRAD_CLIP > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        for opt in optimizers:
            for group in opt.param_groups:
                group["lr"] = group["initial_lr"] * lrm
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
