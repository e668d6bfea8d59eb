# class: training past the budget
# expect: caught
# what: keeps every batch it was served and, once the server refuses more, goes on
#   training on them to the end of its schedule
import time as _time

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
