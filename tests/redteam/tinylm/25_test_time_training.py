# class: state across windows
# expect: caught
# what: learns byte bigrams from every evaluation window it is shown and uses them for
#   the windows after it (training on the evaluation data as it goes)
_seed_train = train


class Learner(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.register_buffer("counts", torch.ones(256, 256))

    def forward(self, x):
        out = self.inner(x)
        bigram = torch.log(self.counts / self.counts.sum(1, keepdim=True))
        out = out + 0.5 * bigram[x]
        pairs = x[:, :-1] * 256 + x[:, 1:]
        self.counts += torch.bincount(pairs.flatten(), minlength=65536).view(256, 256).float()
        return out


def train(ctx):
    return Learner(_seed_train(ctx))
