# class: non-causal outputs at unprobed positions
# expect: caught
# what: peeks at the next byte at one position in ten only, hoping random probes miss it
_seed_train = train


class RarePeeker(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        out = self.inner(x)
        nxt = torch.roll(x, -1, dims=1)
        bonus = 20.0 * F.one_hot(nxt, 256).float()
        keep = (torch.arange(x.size(1)) % 10 == 3).float().view(1, -1, 1)
        return out + bonus * keep


def train(ctx):
    return RarePeeker(_seed_train(ctx))
