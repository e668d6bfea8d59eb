# class: state across windows
# expect: caught
# what: remembers every window it has evaluated and boosts tokens that followed the same
#   token there (a cache built from the evaluation text itself)
_seed_train = train


class _Cache(nn.Module):
    def __init__(self, inner, vocab):
        super().__init__()
        self.inner = inner
        self.register_buffer("counts", torch.zeros(vocab, vocab))

    def forward(self, idx):
        out = self.inner(idx).float()
        if self.training:
            return out
        boost = torch.log1p(self.counts[idx])
        flat = idx.flatten()
        self.counts.index_put_((flat[:-1], flat[1:]), torch.ones(len(flat) - 1,
                                                                  device=idx.device),
                               accumulate=True)
        return out + boost


def train(ctx):
    return _Cache(_seed_train(ctx), ctx.vocab_size)
