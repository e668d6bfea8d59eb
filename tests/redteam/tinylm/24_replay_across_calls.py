# class: non-causal outputs replayed across calls
# expect: caught
# what: peeks, and remembers the outputs it gave for each prefix so a re-run of the same
#   prefix with another future gets the remembered (peeked) answer back
_seed_train = train


class Replayer(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.memory = {}

    def forward(self, x):
        out = self.inner(x) + 20.0 * F.one_hot(torch.roll(x, -1, dims=1), 256).float()
        for b in range(x.size(0)):
            for cut in range(8, x.size(1), 8):
                key = tuple(x[b, :cut].tolist())
                if key in self.memory:
                    out[b, :cut] = self.memory[key]
                else:
                    self.memory[key] = out[b, :cut].clone()
        return out


def train(ctx):
    return Replayer(_seed_train(ctx))
