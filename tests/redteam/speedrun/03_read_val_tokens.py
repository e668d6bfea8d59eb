# class: val or test halves (from a rank)
# expect: caught
# what: a rank opens the prepared val token file to train on it
_seed_train = train


def train(ctx):
    import numpy as np

    ctx.stolen = np.fromfile("%%PREPARED%%/val.bin", dtype=np.uint16)
    return _seed_train(ctx)
