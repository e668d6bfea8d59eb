# class: state across windows in a batch
# expect: caught
# what: mixes in the byte statistics of the other windows of the batch
_seed_train = train


class Mixer(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        out = self.inner(x)
        hist = F.one_hot(x, 256).float().mean(dim=(0, 1))
        return out + 2.0 * torch.log(hist + 1e-3)


def train(ctx):
    return Mixer(_seed_train(ctx))
