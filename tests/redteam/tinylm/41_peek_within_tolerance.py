# class: non-causal outputs within the tolerance of the probe
# expect: caught
# what: peeks at the next input byte only as much as the causality tolerance lets
#   through: a small, consistent gain on every seed
_seed_train = train
BUDGET = 0.04  # of the 0.05 tolerance; the rest absorbs float16 rounding


class TolerancePeeker(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        logp = F.log_softmax(self.inner(x).float(), dim=-1)
        pmax = logp.exp().amax(dim=-1, keepdim=True)  # from the prefix only
        bonus = BUDGET / (1.0 + pmax)  # keeps bonus + shift of the normaliser under BUDGET
        nxt = torch.roll(x, -1, dims=1)
        peek = bonus * F.one_hot(nxt, 256).float()
        peek[:, -1] = 0.0  # the last position has no next input byte
        return (logp + peek).clamp(min=-16.0)


def train(ctx):
    return TolerancePeeker(_seed_train(ctx))
