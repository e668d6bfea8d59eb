"""A small byte-level GPT, trained on exactly the tokens the harness hands out.

Contract (see README.md): train(ctx) returns an nn.Module whose forward(x) maps a
(batch, T) LongTensor of bytes, T <= ctx.eval_len, to (batch, T, 256) next-byte logits.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

N_LAYER = 2
N_HEAD = 4
N_EMBD = 128
MLP_RATIO = 4
BLOCK_SIZE = 256
SEQ_LEN = 64
BATCH_SIZE = 4
LR = 3e-3
WEIGHT_DECAY = 0.1
WARMUP_FRAC = 0.05
GRAD_CLIP = 1.0
DROPOUT = 0.0


def make_norm(dim: int) -> nn.Module:
    return nn.LayerNorm(dim)


class CausalSelfAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.n_head = N_HEAD
        self.qkv = nn.Linear(N_EMBD, 3 * N_EMBD, bias=False)
        self.proj = nn.Linear(N_EMBD, N_EMBD, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        drop = DROPOUT if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=drop)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.proj(y)


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(N_EMBD, MLP_RATIO * N_EMBD, bias=False)
        self.proj = nn.Linear(MLP_RATIO * N_EMBD, N_EMBD, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.fc(x))
        return self.proj(x)


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.ln1 = make_norm(N_EMBD)
        self.attn = CausalSelfAttention()
        self.ln2 = make_norm(N_EMBD)
        self.mlp = MLP()
        self.drop = nn.Dropout(DROPOUT)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.ln1(x)))
        return x + self.drop(self.mlp(self.ln2(x)))


class GPT(nn.Module):
    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        self.wte = nn.Embedding(vocab_size, N_EMBD)
        self.wpe = nn.Embedding(BLOCK_SIZE, N_EMBD)
        self.blocks = nn.ModuleList([Block() for _ in range(N_LAYER)])
        self.ln_f = make_norm(N_EMBD)
        self.head = nn.Linear(N_EMBD, vocab_size, bias=False)
        self.head.weight = self.wte.weight  # tied embeddings
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("proj.weight"):  # outputs of residual branches
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * N_LAYER))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        T = idx.size(1)
        pos = torch.arange(T, device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


def lr_factor(step: int, total: int) -> float:
    """Linear warmup, then cosine decay to 10% of the peak."""
    warmup = max(1, int(WARMUP_FRAC * total))
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_optimizer(model: nn.Module) -> torch.optim.Optimizer:
    """AdamW; weight matrices decay, embeddings, norms and biases do not."""
    decay, other = [], []
    for name, p in model.named_parameters():
        is_matrix = p.dim() >= 2 and not name.startswith(("wte", "wpe"))
        (decay if is_matrix else other).append(p)
    groups = [
        {"params": decay, "weight_decay": WEIGHT_DECAY},
        {"params": other, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=LR, betas=(0.9, 0.95), eps=1e-8)


def train(ctx) -> nn.Module:
    model = GPT(ctx.vocab_size)
    opt = make_optimizer(model)
    total = ctx.tokens_left // (BATCH_SIZE * SEQ_LEN)
    step = 0
    model.train()
    while (batch := ctx.next_batch(BATCH_SIZE, SEQ_LEN)) is not None:
        x, y = batch
        for group in opt.param_groups:
            group["lr"] = LR * lr_factor(step, total)
        logits = model(x)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if GRAD_CLIP > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        opt.step()
        step += 1
    return model
