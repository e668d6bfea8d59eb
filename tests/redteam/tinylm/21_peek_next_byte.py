# class: non-causal outputs
# expect: caught
# what: a model whose prediction at each position looks at the next input byte
_seed_train = train


class Peeker(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        out = self.inner(x)
        nxt = torch.roll(x, -1, dims=1)
        return out + 20.0 * F.one_hot(nxt, 256).float()


def train(ctx):
    return Peeker(_seed_train(ctx))
