# class: state across windows at an unprobed position
# expect: caught
# what: at the last position of each window, uses byte-pair counts of every window it has
#   been shown (a cache of the evaluation text)
import math

_seed_train = train


class LastPositionCache(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.counts = None

    def forward(self, x):
        logp = F.log_softmax(self.inner(x).float(), dim=-1)
        if self.training:
            return logp
        if self.counts is None:
            self.counts = torch.full((256, 256), 0.05)
        pairs = x[:, :-1] * 256 + x[:, 1:]
        self.counts += torch.bincount(pairs.flatten(), minlength=65536).view(256, 256).float()
        cache = torch.log(self.counts / self.counts.sum(1, keepdim=True))
        last = torch.logaddexp(logp[:, -1] + math.log(0.5), cache[x[:, -1]] + math.log(0.5))
        out = logp.clone()
        out[:, -1] = last
        return out


def train(ctx):
    return LastPositionCache(_seed_train(ctx))
