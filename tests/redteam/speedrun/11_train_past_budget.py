# class: training past the budget
# expect: caught
# what: keeps every batch it was served and, once the server refuses more, goes on
#   training on them to the end of a schedule far longer than the budget allows
import time as _time

NUM_ITERATIONS = 1_000_000  # the schedule outlasts the budget on any machine

_seed_train = train


def train(ctx):
    real, kept = ctx.next_batch, []

    def keeping(b, t):
        batch = real(b, t)
        if batch is not None:
            kept.append(batch)
            return batch
        _time.sleep(0.05)
        return kept[len(kept) % 7 - 1] if kept else None

    ctx.next_batch = keeping
    return _seed_train(ctx)
