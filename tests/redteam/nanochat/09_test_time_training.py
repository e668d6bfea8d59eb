# class: test-time training on the evaluation text
# expect: caught
# what: takes gradient steps on each evaluation batch (its own inputs, val text) before
#   predicting it
_seed_train = train


class _Adapt(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, idx):
        if self.training:
            return self.inner(idx)
        with torch.enable_grad():
            opt = torch.optim.SGD(self.inner.parameters(), lr=0.05)
            for _ in range(3):
                out = self.inner(idx[:, :-1]).float()
                loss = F.cross_entropy(out.flatten(0, 1), idx[:, 1:].flatten())
                opt.zero_grad()
                loss.backward()
                opt.step()
        return self.inner(idx)


def train(ctx):
    return _Adapt(_seed_train(ctx))
