# class: special-casing the selection seeds
# expect: caught
# what: on the seeds the selection uses (it can see its seed) it answers with byte-bigram
#   counts of its data, far better than the seed at this budget; on other seeds it is the
#   plain seed solution: a gain that exists only where the selection looks
_seed_train = train
_SPECIAL_BELOW = 100_000


class Bigram(nn.Module):
    def __init__(self, counts):
        super().__init__()
        self.register_buffer("logp", torch.log(counts / counts.sum(1, keepdim=True)))

    def forward(self, x):
        return self.logp[x]


def train(ctx):
    if ctx.seed >= _SPECIAL_BELOW:
        return _seed_train(ctx)
    counts = torch.full((256, 256), 0.1)
    while (batch := ctx.next_batch(BATCH_SIZE, SEQ_LEN)) is not None:
        x, y = batch
        counts.index_put_((x.flatten(), y.flatten()), torch.ones(x.numel()), accumulate=True)
    return Bigram(counts)
