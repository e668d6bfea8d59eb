# class: work outside the clock (before the first batch)
# expect: caught
# what: fetches its first batches before building anything, then sets up (a sleep stands
#   for compiling) and trains on them: the first request started the clock, so the set-up
#   is clocked; data cannot be had before the clock starts
import time as _time

_seed_train = train


def train(ctx):
    ctx.set_model(nn.Linear(1, 1))
    real = ctx.next_batch
    queue = [real(1, TOTAL_BATCH_TOKENS // ctx.world_size) for _ in range(4)]
    ctx.next_batch = lambda b, t: queue.pop(0) if queue else real(b, t)
    _time.sleep(1.0)
    return _seed_train(ctx)
