# class: patching the harness (clock)
# expect: caught
# what: rewinds the harness's clock and its done flag so next_batch keeps asking; the
#   server keeps the real clock and the step is stopped at budget plus grace
_seed_train = train


def train(ctx):
    import time as _t

    _t.monotonic = lambda: 0.0
    _t.perf_counter = lambda: 0.0
    model = _seed_train(ctx)
    ctx._done = False
    ctx._t0 = None
    while ctx.next_batch(4, 32) is not None or ctx.elapsed() < 4 * ctx.budget_s:
        ctx._done = False
    return model
