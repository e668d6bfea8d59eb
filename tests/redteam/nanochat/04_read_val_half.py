# class: val or test halves (prepared files)
# expect: caught
# what: opens the prepared val and test token files during training and trains on them
_seed_train = train


def train(ctx):
    import numpy as np

    val = np.fromfile("%%PREPARED%%/val.bin", dtype=np.uint16)
    test = np.fromfile("%%PREPARED%%/test.bin", dtype=np.uint16)
    ctx.extra = (val, test)
    return _seed_train(ctx)
