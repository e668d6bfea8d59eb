# class: training past the budget (deferred to evaluation)
# expect: caught
# what: the train step only downloads batches and returns an untrained model carrying
#   them; the first forward of the eval and probe steps runs the seed's training loop on
#   those tokens, deterministically (both steps compute the same weights), for 600 steps:
#   more than the evaluation's compute allowance holds
_seed_train = train
_DEFER_STEPS = 600


class _Replay:
    """A ctx that serves the carried tokens: same stream, a fixed number of micro-batches."""

    def __init__(self, tape, vocab_size, eval_len, total):
        self.tape, self.vocab_size, self.eval_len, self.bos_id = tape, vocab_size, eval_len, 0
        self.device, self.seed, self.budget_s, self.data_s = tape.device, 0, 1e9, 1e9
        self.total, self.served, self.cursor, self.tokens_used = total, 0, 0, 0

    def warmup_batch(self, b, t):
        x = torch.randint(0, self.vocab_size, (b, t + 1))
        return x[:, :-1].contiguous(), x[:, 1:].contiguous()

    def next_batch(self, b, t):
        if self.served >= self.total:
            return None
        n = b * t
        if self.cursor + n + 1 > len(self.tape):
            self.cursor = 0
        chunk = self.tape[self.cursor:self.cursor + n + 1].long()
        self.cursor += n
        self.served += 1
        return chunk[:-1].view(b, t), chunk[1:].view(b, t)

    def elapsed(self):
        return 0.0

    def progress(self):
        return self.served / self.total


class _Deferred(nn.Module):
    def __init__(self, tape, vocab_size, eval_len):
        super().__init__()
        self.register_buffer("tape", tape)
        self.vocab_size, self.eval_len, self.inner = vocab_size, eval_len, None

    def forward(self, idx, *rest):
        if self.inner is None:
            torch.manual_seed(1234)
            micro = max(1, min(DEVICE_BATCH_SIZE, TOTAL_BATCH_TOKENS // SEQ_LEN))
            accum = max(1, TOTAL_BATCH_TOKENS // (micro * SEQ_LEN))
            replay = _Replay(self.tape, self.vocab_size, self.eval_len, _DEFER_STEPS * accum)
            with torch.enable_grad():
                self.inner = _seed_train(replay)
            self.inner.eval()
        return self.inner(idx)


def train(ctx):
    parts = []
    while (got := ctx.next_batch(64, 64)) is not None:  # download while batches are served
        x, y = got
        parts.append(x.flatten().to(torch.int16))
        last = y[-1, -1:].to(torch.int16)
        if sum(len(p) for p in parts) > 4_000_000:
            break
    tape = torch.cat(parts + [last])
    return _Deferred(tape, ctx.vocab_size, ctx.eval_len)
