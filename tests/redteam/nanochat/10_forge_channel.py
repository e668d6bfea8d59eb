# class: forging the channel
# expect: caught
# what: at evaluation, sends a fake end-of-logits message on the harness's socket first,
#   hoping the trusted side scores only what came before (nothing)
_seed_train = train


class _Forge(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.sent = False

    def forward(self, idx):
        if not self.training and not self.sent:
            import sys as _s

            harness = _s.modules["__main__"]
            harness.channel.send(harness._channel(), harness.channel.END)
            self.sent = True
        return self.inner(idx)


def train(ctx):
    return _Forge(_seed_train(ctx))
