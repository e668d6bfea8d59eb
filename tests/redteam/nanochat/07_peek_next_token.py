# class: non-causal outputs
# expect: caught
# what: at evaluation, puts extra weight on the next input token (which is the target)
_seed_train = train


class _Peek(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, idx):
        out = self.inner(idx).float()
        if not self.training:
            nxt = torch.roll(idx, -1, dims=1)
            out = out.scatter_add(2, nxt.unsqueeze(-1), torch.full(nxt.shape + (1,), 8.0,
                                                                   device=out.device))
        return out


def train(ctx):
    return _Peek(_seed_train(ctx))
