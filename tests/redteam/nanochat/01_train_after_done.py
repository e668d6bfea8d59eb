# class: training past the budget (cached batches)
# expect: caught
# what: keeps every batch it was served and trains on them again for three budgets after
#   the server said the budget was spent
_seed_train = train


class _Keep:
    def __init__(self, ctx):
        self.ctx, self.kept = ctx, []
        self.vocab_size, self.eval_len, self.bos_id = ctx.vocab_size, ctx.eval_len, ctx.bos_id
        self.seed, self.device, self.budget_s = ctx.seed, ctx.device, ctx.budget_s

    def next_batch(self, b, t):
        out = self.ctx.next_batch(b, t)
        if out is not None:
            self.kept.append(out)
        return out

    def warmup_batch(self, b, t):
        return self.ctx.warmup_batch(b, t)

    def elapsed(self):
        return self.ctx.elapsed()

    def progress(self):
        return self.ctx.progress()

    @property
    def tokens_used(self):
        return self.ctx.tokens_used


def train(ctx):
    import time

    keep = _Keep(ctx)
    model = _seed_train(keep)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    stop = time.monotonic() + 3 * ctx.budget_s
    while keep.kept and time.monotonic() < stop:
        for x, y in keep.kept:
            loss = F.cross_entropy(model(x).float().flatten(0, 1), y.flatten())
            opt.zero_grad()
            loss.backward()
            opt.step()
            if time.monotonic() > stop:
                break
    return model
