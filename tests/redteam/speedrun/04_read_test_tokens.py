# class: val or test halves (from a rank)
# expect: caught
# what: a rank opens the prepared test token file (the confirmation split)
_seed_train = train


def train(ctx):
    import numpy as np

    ctx.stolen = np.fromfile("%%PREPARED%%/test.bin", dtype=np.uint16)
    return _seed_train(ctx)
