# class: non-causal outputs at unprobed positions
# expect: caught
# what: peeks at the next byte only in the second half of each window, where a probe that
#   checks only early positions would never look
_seed_train = train


class HalfPeeker(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        out = self.inner(x)
        nxt = torch.roll(x, -1, dims=1)
        bonus = 20.0 * F.one_hot(nxt, 256).float()
        bonus[:, : x.size(1) // 2] = 0
        return out + bonus


def train(ctx):
    return HalfPeeker(_seed_train(ctx))
